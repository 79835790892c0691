//! The dashboard in a real browser: headless Chromium (driven through
//! chromedriver by fantoccini) against a real `pgtrail serve` process over
//! a store filled by trigger capture from a real cluster.
//!
//! Needs the `chromium` and `chromium-driver` Debian packages (CI installs
//! them) and the `pgtrail` binary built (`cargo build -p pgtrail`; a
//! workspace test run builds it). Without Chromium the test fails, unless
//! `PGTRAIL_TEST_SKIP_BROWSER` is set. `PGTRAIL_SCREENSHOTS=1` also writes
//! the screenshots in `docs/img/` that docs/dashboard.md shows.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use pgtrail_testkit::Cluster;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `pgtrail` binary next to this test's own build.
fn pgtrail_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGTRAIL_BIN") {
        return bin.into();
    }
    // This test runs from target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("pgtrail"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p pgtrail) or set PGTRAIL_BIN",
        bin.display()
    );
    bin
}

fn pgtrail(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(pgtrail_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("PGTRAIL_STORE")
        .output()
        .expect("run pgtrail");
    assert!(
        out.status.success(),
        "pgtrail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `pgtrail serve` on `listen`, and the address it says it listens on.
fn serve(dir: &Path, store: &str, listen: &str, extra: &[&str]) -> (Process, String) {
    let mut child = Command::new(pgtrail_bin())
        .args(["--store", store, "serve", "--listen", listen])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pgtrail serve");
    let stderr = child.stderr.take().expect("stderr");
    let process = Process(child);
    let mut lines = BufReader::new(stderr).lines();
    let mut said = String::new();
    let address = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("pgtrail serve did not say where it listens: {said}"))
            .expect("read stderr");
        said.push_str(&line);
        if let Some(at) = line.split("listening on http://").nth(1) {
            break at.trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (process, address)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Chromium headless through chromedriver on a free port.
async fn browser() -> Option<(Process, Client)> {
    if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
        if std::env::var_os("PGTRAIL_TEST_SKIP_BROWSER").is_some() {
            eprintln!("SKIPPED: {CHROMIUM} or {CHROMEDRIVER} missing and PGTRAIL_TEST_SKIP_BROWSER is set (apt-get install chromium chromium-driver)");
            return None;
        }
        panic!("{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver, or set PGTRAIL_TEST_SKIP_BROWSER to skip");
    }
    let port = free_port();
    let driver = Process(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let mut args = vec!["--headless=new", "--disable-gpu", "--window-size=1280,900"];
    if rustix_is_root() {
        args.push("--no-sandbox");
    }
    let capabilities = serde_json::json!({
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
    });
    let capabilities = capabilities.as_object().cloned().expect("object");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connected = ClientBuilder::rustls()
            .expect("tls")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match connected {
            Ok(client) => return Some((driver, client)),
            Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn rustix_is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

async fn screenshot(client: &Client, name: &str) {
    if std::env::var_os("PGTRAIL_SCREENSHOTS").is_none() {
        return;
    }
    let png = client.screenshot().await.expect("screenshot");
    let path = workspace().join("docs/img").join(name);
    std::fs::create_dir_all(path.parent().expect("dir")).expect("docs/img");
    std::fs::write(&path, png).expect("write screenshot");
}

async fn rows(client: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for cell in client
        .find_all(Locator::Css("#results td.time a"))
        .await
        .expect("rows")
    {
        out.push(cell.attr("href").await.expect("href").unwrap_or_default());
    }
    out
}

/// Waits until `check` holds on the page's source, or fails naming `what`.
async fn until(client: &Client, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let source = client.source().await.expect("source");
        if check(&source) {
            return source;
        }
        assert!(Instant::now() < deadline, "{what}: {source}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_search_row_history_revert_sql_live_tail_and_refusal() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("browser").await.expect("database");
    let db = url.rsplit('/').next().expect("db").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    // Trigger capture's store is in the audited database (`pgtrail install`).
    let store = url.clone();
    cluster
        .psql(
            &db,
            "create table public.orders (id int primary key, note text, total int)",
        )
        .expect("table");
    pgtrail(dir.path(), &["install", "--db", &url]);
    pgtrail(dir.path(), &["track", "--db", &url, "public.orders"]);
    cluster
        .psql(
            &db,
            "insert into public.orders values (1, 'first', 10), (2, '<script>alert(1)</script>', 5);
             update public.orders set total = 12, note = 'changed' where id = 1;",
        )
        .expect("changes");
    pgtrail(dir.path(), &["drain", "--db", &url]);
    let (_server, address) = serve(dir.path(), &store, "127.0.0.1:0", &[]);
    let base = format!("http://{address}");

    // Search: all three changes, then `op:update` narrows to the one update.
    client.goto(&format!("{base}/")).await.expect("search page");
    let all = rows(&client).await;
    assert_eq!(all.len(), 3, "{all:?}");
    screenshot(&client, "search.png").await;
    let input = client
        .find(Locator::Css("input[name=q]"))
        .await
        .expect("search box");
    input
        .send_keys("op:update table:orders")
        .await
        .expect("type");
    input.send_keys("\u{E007}").await.expect("enter");
    until(&client, "search narrowed", |s| s.contains("op:update")).await;
    let narrowed = rows(&client).await;
    assert_eq!(narrowed.len(), 1, "{narrowed:?}");
    // The markup in a row value is text on the page, not an element.
    assert!(client
        .find_all(Locator::Css("main script"))
        .await
        .expect("find")
        .is_empty());

    // A row's history shows the diff; revert SQL for its first version.
    client
        .find(Locator::Css("#results td a[href^='/rows/']"))
        .await
        .expect("row link")
        .click()
        .await
        .expect("open row");
    let source = until(&client, "row page", |s| s.contains("id=\"history\"")).await;
    assert!(
        source.contains("<td class=\"before\">10</td><td class=\"after\">12</td>"),
        "{source}"
    );
    client
        .find(Locator::Css("#expand-all"))
        .await
        .expect("expand all")
        .click()
        .await
        .expect("expand");
    until(&client, "expanded", |s| s.contains("<details open")).await;
    let diff = client
        .find(Locator::Css("#history details table.diff"))
        .await
        .expect("diff table");
    assert!(
        diff.is_displayed().await.expect("displayed"),
        "expanded diff is visible"
    );
    screenshot(&client, "row.png").await;
    let reverts = client
        .find_all(Locator::LinkText("revert to this version"))
        .await
        .expect("revert links");
    reverts
        .last()
        .expect("the insert's")
        .click()
        .await
        .expect("revert");
    let sql = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#revert-sql"))
        .await
        .expect("revert sql")
        .text()
        .await
        .expect("text");
    assert!(sql.contains("UPDATE \"public\".\"orders\" AS t"), "{sql}");
    assert!(sql.contains("\"total\":10"), "{sql}");
    screenshot(&client, "revert.png").await;

    // The live tail shows a change made while the page is open.
    client
        .goto(&format!("{base}/?tail=1"))
        .await
        .expect("tail page");
    until(&client, "tail on", |s| s.contains("id=\"tail\"")).await;
    cluster
        .psql(&db, "insert into public.orders values (3, 'live', 1)")
        .expect("insert during the test");
    pgtrail(dir.path(), &["drain", "--db", &url]);
    until(&client, "the live tail shows row 3", |s| s.contains("id=3")).await;
    screenshot(&client, "tail.png").await;

    // "Older" swaps the next page in below the first, without a reload.
    cluster
        .psql(
            &db,
            "insert into public.orders select i, 'bulk', i from generate_series(10, 64) i",
        )
        .expect("bulk insert");
    pgtrail(dir.path(), &["drain", "--db", &url]);
    client
        .goto(&format!("{base}/?q=table:orders"))
        .await
        .expect("search page");
    assert_eq!(rows(&client).await.len(), 50);
    client
        .find(Locator::LinkText("Older"))
        .await
        .expect("older")
        .click()
        .await
        .expect("click older");
    let deadline = Instant::now() + Duration::from_secs(15);
    let all = loop {
        let all = rows(&client).await;
        if all.len() > 50 || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // 2 inserts, 1 update, the live insert, 55 bulk inserts: each once.
    assert_eq!(all.len(), 59, "{all:?}");
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 59, "no event twice");
    assert!(client
        .current_url()
        .await
        .expect("url")
        .as_str()
        .ends_with("table:orders"));

    // An event's page: the chain and every field.
    client
        .goto(&format!("{base}/events/1"))
        .await
        .expect("event page");
    let source = until(&client, "event page", |s| s.contains("prev_hash")).await;
    assert!(source.contains("Its place in the chain"), "{source}");
    screenshot(&client, "event.png").await;

    // Off loopback, a page without a credential is refused: the browser
    // gets no event, only the door.
    let (_open, address) = serve(dir.path(), &store, "0.0.0.0:0", &["--insecure-http"]);
    let port = address.rsplit(':').next().expect("port");
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .expect("refused page");
    let source = client.source().await.expect("source");
    assert!(!source.contains("id=\"results\""), "{source}");
    assert!(!source.contains("orders"), "{source}");
    screenshot(&client, "refused.png").await;

    client.close().await.expect("close browser");
}

/// The schema-change page shows a migration's commands grouped under its
/// transaction (a long command collapsed, opened with a click, no
/// script); the sessions page counts failed logins; and once a viewer's
/// token exists, the viewer logs in and sees masked values masked and no
/// statement parameters, where the local operator (an auditor) saw them.
#[tokio::test(flavor = "multi_thread")]
async fn browser_schema_changes_sessions_and_a_viewer_sees_masked_values_and_no_parameters() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("pages").await.expect("database");
    let db = url.rsplit('/').next().expect("db").to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    cluster
        .psql(
            &db,
            "create table public.orders (id int primary key, card text, total int)",
        )
        .expect("table");
    pgtrail(dir.path(), &["install", "--db", &url]);
    pgtrail(
        dir.path(),
        &[
            "track",
            "--db",
            &url,
            "public.orders",
            "--mask",
            "card",
            "--mask-mode",
            "redact",
        ],
    );
    // A migration: three commands in one transaction, one of them long.
    cluster
        .psql(
            &db,
            "begin;
             alter table public.orders add column shipped_at timestamptz;
             create index orders_shipped_idx on public.orders (shipped_at);
             create function public.order_total_positive() returns trigger language plpgsql as $$
             begin
               if new.total < 0 then raise exception 'total must not be negative'; end if;
               return new;
             end $$;
             commit;",
        )
        .expect("migration");
    cluster
        .psql(
            &db,
            "insert into public.orders (id, card, total) values (1, '4111111111111111', 10)",
        )
        .expect("insert");
    pgtrail(dir.path(), &["drain", "--db", &url]);
    // What the proxy would record (no proxy runs here): logins, one
    // failing, and a statement with parameters.
    let store = pgtrail_store::open::open(&url).await.expect("store");
    let now = chrono::Utc::now();
    let failed = Some(("28P01", "password authentication failed for user \"admin\""));
    let mut proxied = vec![
        pgtrail_testkit::proxy_events::login(now, "admin", &db, "203.0.113.9", failed),
        pgtrail_testkit::proxy_events::login(now, "admin", &db, "203.0.113.9", failed),
        pgtrail_testkit::proxy_events::login(now, "app", &db, "10.0.0.2", None),
        pgtrail_testkit::proxy_events::disconnect(now, "app", &db, "10.0.0.2", 95_000_000, 12),
    ];
    let mut statement = pgtrail_testkit::proxy_events::statement(
        now,
        "app",
        "UPDATE",
        "WRITE",
        &["public.orders"],
        "UPDATE orders SET total = $1 WHERE id = $2",
        0,
    );
    statement.params = Some(vec![
        serde_json::json!("param-secret-9731"),
        serde_json::json!(1),
    ]);
    proxied.push(pgtrail_testkit::proxy_events::failed(
        statement,
        "23514",
        "new row violates check constraint",
    ));
    let receipt = store.append(&proxied).await.expect("append");
    let statement_seq = receipt.first_seq.expect("seq") + 4;
    let (_server, address) = serve(dir.path(), &url, "127.0.0.1:0", &[]);
    let base = format!("http://{address}");

    // The schema-change page: one transaction, its commands in order.
    client.goto(&format!("{base}/ddl")).await.expect("ddl page");
    let source = until(&client, "ddl page", |s| s.contains("id=\"migrations\"")).await;
    let sections = client
        .find_all(Locator::Css("section.migration"))
        .await
        .expect("migrations");
    assert_eq!(sections.len(), 1, "one transaction: {source}");
    let commands = sections[0]
        .find_all(Locator::Css("table.commands tbody tr"))
        .await
        .expect("commands");
    assert_eq!(commands.len(), 3, "{source}");
    let first = commands[0].text().await.expect("text");
    assert!(first.contains("ALTER TABLE"), "{first}");
    let second = commands[1].text().await.expect("text");
    assert!(second.contains("CREATE INDEX"), "{second}");
    // psql sent the migration as one query string, which trigger capture
    // records for each command: shown once.
    assert!(
        second.contains("the same query string as above"),
        "{second}"
    );
    // The long function is collapsed; a click opens it, no script needed.
    let body = client
        .find(Locator::Css("td.sql details pre"))
        .await
        .expect("collapsed sql");
    assert!(!body.is_displayed().await.expect("displayed"));
    client
        .find(Locator::Css("td.sql details summary"))
        .await
        .expect("summary")
        .click()
        .await
        .expect("open");
    assert!(body.is_displayed().await.expect("displayed"));
    assert!(body
        .text()
        .await
        .expect("text")
        .contains("total must not be negative"));
    screenshot(&client, "ddl.png").await;
    // Words over the SQL narrow; the transaction's events are one click away.
    client
        .goto(&format!("{base}/ddl?q=payroll"))
        .await
        .expect("ddl search");
    until(&client, "no match", |s| s.contains("id=\"no-results\"")).await;

    // The sessions page counts the failed logins per user and address.
    client
        .goto(&format!("{base}/sessions"))
        .await
        .expect("sessions page");
    let source = until(&client, "sessions page", |s| {
        s.contains("id=\"failed-logins\"")
    })
    .await;
    assert!(
        source.contains("1 min 35 s"),
        "the disconnect's duration: {source}"
    );
    let counts = client
        .find(Locator::Css("#failed-logins table.counts tbody tr"))
        .await
        .expect("counts")
        .text()
        .await
        .expect("text");
    assert!(counts.contains("admin") && counts.contains('2'), "{counts}");
    // The local operator is an auditor: parameters are shown.
    assert!(source.contains("param-secret-9731"), "{source}");
    screenshot(&client, "sessions.png").await;

    // A viewer's token: from now on only tokens get in.
    let token = pgtrail(
        dir.path(),
        &[
            "--store", &url, "token", "create", "--name", "vera", "--role", "viewer",
        ],
    );
    let token = token.trim().to_string();
    client
        .goto(&format!("{base}/sessions"))
        .await
        .expect("refused");
    let input = client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("input[name=token]"))
        .await
        .expect("login form");
    input.send_keys(&token).await.expect("type token");
    input.send_keys("\u{E007}").await.expect("enter");
    let source = until(&client, "the viewer's sessions page", |s| {
        s.contains("vera (viewer)") && s.contains("id=\"failed-logins\"")
    })
    .await;
    assert!(!source.contains("param-secret-9731"), "{source}");
    client
        .goto(&format!("{base}/events/{statement_seq}"))
        .await
        .expect("statement page");
    let source = until(&client, "statement page", |s| {
        s.contains("UPDATE orders SET total")
    })
    .await;
    assert!(!source.contains("param-secret-9731"), "{source}");
    // The masked card is masked on the search page and the row's page.
    client
        .goto(&format!("{base}/?q=table:orders"))
        .await
        .expect("search");
    until(&client, "search as viewer", |s| s.contains("vera (viewer)")).await;
    client
        .goto(&format!("{base}/rows/public.orders/id=1"))
        .await
        .expect("row page");
    let source = until(&client, "row page", |s| s.contains("id=\"history\"")).await;
    assert!(source.contains("***"), "masked: {source}");
    assert!(!source.contains("4111111111111111"), "{source}");
    screenshot(&client, "viewer.png").await;
    client.close().await.expect("close browser");
}
