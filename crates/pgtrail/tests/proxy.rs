//! `pgtrail proxy` as a user runs it, its trail counted against ground
//! truth: clients run statements through it, each carrying a unique marker
//! (a literal), and remember which results they received. Whatever happens
//! to pgtrail (kill -9 under load, in both durability modes), to the store
//! (stopped while clients run) or to the spool (full), every statement
//! whose result reached a client is in the store exactly once, and nothing
//! is duplicated.
//!
//! These tests run the binary cargo builds for this package
//! (`CARGO_BIN_EXE_pgtrail`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind, Source};
use pgtrail_testkit::{Cluster, ClusterOptions};

/// A running `pgtrail proxy`, killed with SIGKILL (and reaped) when dropped.
struct Proxy {
    child: Child,
    address: String,
    stderr: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Starts `pgtrail --store STORE proxy …` in `dir` and waits for
    /// `listening on`.
    /// A proxy in front of `cluster` with `[proxy] <setting>` in its
    /// config file and a SQLite store in `dir`; the store's URL.
    fn logging(dir: &Path, cluster: &Cluster, setting: &str) -> (Self, String) {
        let store = format!("sqlite:{}", dir.join("trail.db").display());
        let config = dir.join("pgtrail.toml");
        std::fs::write(&config, format!("[proxy]\n{setting}\n")).expect("config");
        let config = config.to_str().expect("utf-8 path");
        let proxy = Proxy::start(
            dir,
            &store,
            &upstream(cluster),
            &[],
            &[("PGTRAIL_CONFIG", config)],
        );
        (proxy, store)
    }

    fn start(dir: &Path, store: &str, upstream: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr = dir.join(format!(
            "proxy-{}.err",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let spool = dir.join("spool");
        let mut command = Command::new(env!("CARGO_BIN_EXE_pgtrail"));
        command
            .args(["--store", store, "proxy", "--listen", "127.0.0.1:0"])
            .args(["--upstream", upstream])
            .args(["--spool-dir", spool.to_str().expect("utf-8 path")])
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start pgtrail proxy");
        Proxy::listening(child, stderr)
    }

    /// Waits until `child` (`pgtrail proxy`, or `pgtrail run` with a proxy
    /// part) says `listening on` in `stderr`.
    fn listening(child: Child, stderr: PathBuf) -> Self {
        let mut proxy = Proxy {
            child,
            address: String::new(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        proxy.address = loop {
            if let Some(address) = proxy
                .log()
                .lines()
                .find_map(|l| l.split("listening on ").nth(1).map(str::to_string))
            {
                break address;
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                panic!("pgtrail exited ({status}): {}", proxy.log());
            }
            assert!(Instant::now() < deadline, "not listening: {}", proxy.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        proxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@{}/postgres", self.address)
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "clean stop: {status}: {}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "did not stop: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

fn upstream(cluster: &Cluster) -> String {
    format!("{}?sslmode=disable", cluster.url("postgres"))
}

async fn connect(url: &str) -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// The statement for marker `n` of client `c`: INSERTs and SELECTs,
/// simple and extended protocol, the marker a literal in the text.
fn statement(c: usize, n: usize) -> (String, String) {
    let marker = format!("m{c}x{n}y");
    let sql = if n % 2 == 0 {
        format!("INSERT INTO marks (marker) VALUES ('{marker}')")
    } else {
        format!("SELECT '{marker}' AS marker")
    };
    (marker, sql)
}

/// Markers whose result reached a client: the ground truth.
type Acked = Arc<Mutex<BTreeSet<String>>>;

/// `clients` clients running marked statements through `url` until `stop`
/// or their connection ends; each marker is added to `acked` once its
/// result arrived. Returns the tasks.
fn load(
    url: &str,
    clients: usize,
    first: usize,
    acked: &Acked,
    refused: &Arc<Mutex<Vec<String>>>,
    stop: &Arc<AtomicBool>,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in first..first + clients {
        let (url, acked, refused, stop) = (
            url.to_string(),
            acked.clone(),
            refused.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let Some(client) = connect(&url).await else {
                return;
            };
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let (marker, sql) = statement(c, n);
                let result = if n % 4 == 1 {
                    // Extended protocol, the marker still in the text.
                    client.query(&sql, &[]).await.map(drop)
                } else {
                    client.simple_query(&sql).await.map(drop)
                };
                match result {
                    Ok(()) => {
                        acked.lock().expect("lock").insert(marker);
                    }
                    Err(error) => match error.code() {
                        Some(code) => {
                            refused.lock().expect("lock").push(code.code().to_string());
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        None => return, // the connection ended
                    },
                }
            }
        });
    }
    tasks
}

/// Proxy statement events in `store` by marker: how many of each.
async fn counts(store: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for event in events(store).await {
        if event.source != Source::Proxy || event.kind != Kind::Statement {
            continue;
        }
        if let Some(marker) = event.sql.as_deref().and_then(marker_of) {
            *out.entry(marker).or_default() += 1;
        }
    }
    out
}

async fn events(store: &str) -> Vec<Event> {
    let Ok(store) = pgtrail_store::open(store).await else {
        return Vec::new();
    };
    store.scan(0, 10_000_000).await.unwrap_or_default()
}

fn marker_of(sql: &str) -> Option<String> {
    let start = sql.find("'m")? + 1;
    let end = start + sql[start..].find('\'')?;
    Some(sql[start..end].to_string())
}

/// Waits until every acknowledged marker is in the store.
async fn wait_for_trail(
    store: &str,
    acked: &BTreeSet<String>,
    proxy: &Proxy,
) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = counts(store).await;
        let missing = acked.iter().filter(|m| !counts.contains_key(*m)).count();
        if missing == 0 {
            return counts;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged statements never reached the store: {}",
            acked.len(),
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every acknowledged marker exactly once; nothing twice.
fn assert_exactly_once(acked: &BTreeSet<String>, counts: &BTreeMap<String, usize>) {
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicated events: {twice:?}");
    for marker in acked {
        assert_eq!(
            counts.get(marker),
            Some(&1),
            "{marker}: its result reached the client"
        );
    }
}

fn verify(dir: &Path, store: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["--store", store, "verify"])
        .current_dir(dir)
        .output()
        .expect("pgtrail verify");
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn marks_table(cluster: &Cluster) {
    cluster
        .psql(
            "postgres",
            "CREATE TABLE marks (id bigserial PRIMARY KEY, marker text NOT NULL)",
        )
        .expect("table");
}

/// kill -9 of pgtrail while 6 clients run INSERTs and SELECTs through it;
/// restarted on the same spool and store, it drains: each statement whose
/// result reached a client is stored once.
async fn killed_under_load(durability: &str) {
    let cluster = Cluster::start().expect("cluster");
    marks_table(&cluster).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", tmp.path().join("trail.db").display());
    let proxy = Proxy::start(
        tmp.path(),
        &store,
        &upstream(&cluster),
        &["--durability", durability],
        &[],
    );

    let acked: Acked = Arc::default();
    let refused = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load(&proxy.url(), 6, 0, &acked, &refused, &stop);
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 400 {
        assert!(Instant::now() < deadline, "load too slow: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.kill9();
    while tokio::time::timeout(Duration::from_secs(30), clients.join_next())
        .await
        .expect("clients end with the proxy")
        .is_some()
    {}
    let acked = acked.lock().expect("lock").clone();
    assert!(
        refused.lock().expect("lock").is_empty(),
        "no statement failed"
    );

    let proxy = Proxy::start(
        tmp.path(),
        &store,
        &upstream(&cluster),
        &["--durability", durability],
        &[],
    );
    let counts = wait_for_trail(&store, &acked, &proxy).await;
    proxy.stop();
    assert_exactly_once(&acked, &counts);
    // The inserted rows the clients saw are in the table too (sanity of
    // the ground truth).
    let inserted = cluster
        .psql("postgres", "SELECT count(*) FROM marks")
        .expect("count");
    let acked_inserts = acked.iter().filter(|m| {
        m.split(['x', 'y'])
            .nth(1)
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n % 2 == 0)
    });
    assert!(inserted.trim().parse::<usize>().expect("number") >= acked_inserts.count());
    verify(tmp.path(), &store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_and_duplicates_nothing_async() {
    killed_under_load("async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_and_duplicates_nothing_strict() {
    killed_under_load("strict").await;
}

/// A Postgres store on its own cluster, stopped and started again on the
/// same port.
struct StoreCluster {
    dir: PathBuf,
    port: u16,
    cluster: Option<Cluster>,
}

impl StoreCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pgtrail-proxy-store-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        let cluster = Cluster::start_with(ClusterOptions {
            data_dir: Some(dir.clone()),
            ..ClusterOptions::default()
        })
        .expect("store cluster");
        StoreCluster {
            dir,
            port: cluster.port(),
            cluster: Some(cluster),
        }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    fn stop(&mut self) {
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop().expect("stop");
        }
    }

    fn start_again(&mut self) {
        self.cluster = Some(
            Cluster::start_with(ClusterOptions {
                data_dir: Some(self.dir.clone()),
                port: Some(self.port),
                ..ClusterOptions::default()
            })
            .expect("start again"),
        );
    }
}

impl Drop for StoreCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The store goes away while clients run: results keep flowing (the events
/// wait in the spool: the store's count does not move while the clients'
/// does), and every event lands once it is back. A slow or absent store
/// never holds a result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_goes_away_results_flow_and_events_land_when_it_is_back() {
    let cluster = Cluster::start().expect("cluster");
    marks_table(&cluster).await;
    let mut store_cluster = StoreCluster::start();
    let store = store_cluster.url();
    let tmp = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(tmp.path(), &store, &upstream(&cluster), &[], &[]);
    let client = connect(&proxy.url()).await.expect("connect");
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        let (marker, sql) = statement(0, n);
        client.simple_query(&sql).await.expect("statement");
        acked.insert(marker);
    }
    wait_for_trail(&store, &acked, &proxy).await;

    store_cluster.stop();
    for n in 20..220 {
        let (marker, sql) = statement(0, n);
        client
            .simple_query(&sql)
            .await
            .expect("results flow while the store is away");
        acked.insert(marker);
    }
    // Their events wait in the spool meanwhile.
    let spooled: u64 = std::fs::read_dir(tmp.path().join("spool"))
        .expect("spool dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        spooled > 200 * 100,
        "the events wait in the spool: {spooled} bytes"
    );
    store_cluster.start_again();
    let counts = wait_for_trail(&store, &acked, &proxy).await;
    proxy.stop();
    assert_exactly_once(&acked, &counts);
    verify(tmp.path(), &store);
}

/// The store away and the spool full (`spool_max_mb = 1`): fail_closed
/// refuses new statements in-protocol with SQLSTATE 53400, and every
/// statement that got a result is in the trail once the store is back; then
/// statements are served again. A refusal inside a transaction block fails
/// the block on the server, as any failed statement would: a later COMMIT
/// cannot commit the rest of it without the refused statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_fails_closed_with_53400_and_loses_nothing() {
    let cluster = Cluster::start().expect("cluster");
    marks_table(&cluster).await;
    let mut store_cluster = StoreCluster::start();
    let store = store_cluster.url();
    store_cluster.stop();
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [("PGTRAIL_PROXY__SPOOL_MAX_MB", "1")];
    let proxy = Proxy::start(tmp.path(), &store, &upstream(&cluster), &[], &env);
    // A transaction block open when the trail fills.
    let in_block = connect(&proxy.url()).await.expect("connect");
    in_block
        .batch_execute("BEGIN; INSERT INTO marks (marker) VALUES ('only with its block')")
        .await
        .expect("the block's first statement runs");

    let acked: Acked = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = load(&proxy.url(), 4, 0, &acked, &refused, &stop);
    // Until the trail is full: refusals come, or every client is held on
    // a statement whose event waits for room (then no client asks for
    // more, and the block's statement below is the one refused).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut seen, mut quiet_since) = ((0, 0), Instant::now());
    while refused.lock().expect("lock").len() < 10 {
        assert!(Instant::now() < deadline, "never full: {}", proxy.log());
        let now = (
            acked.lock().expect("lock").len(),
            refused.lock().expect("lock").len(),
        );
        if now != seen {
            (seen, quiet_since) = (now, Instant::now());
        } else if seen.0 > 0 && quiet_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let error = in_block
        .simple_query("INSERT INTO marks (marker) VALUES ('refused in the block')")
        .await
        .expect_err("refused while the trail is full");
    assert_eq!(
        error.code().map(|c| c.code()),
        Some("53400"),
        "refused in-protocol: {error}"
    );
    // A new login is refused too while the trail is full.
    let url = proxy.url();
    let login = tokio_postgres::connect(&url, tokio_postgres::NoTls);
    let error = match tokio::time::timeout(Duration::from_secs(30), login)
        .await
        .expect("a login is refused, not held")
    {
        Ok(_) => None,
        Err(error) => error.code().map(|c| c.code().to_string()),
    };
    assert_eq!(
        error.as_deref(),
        Some("53400"),
        "a new login gets FATAL 53400"
    );

    // Clients whose statement ran while the spool filled wait for its
    // event to fit: they finish once the store is back.
    store_cluster.start_again();
    while tokio::time::timeout(Duration::from_secs(120), clients.join_next())
        .await
        .expect("held results are released once the spool drains")
        .is_some()
    {}
    let codes: BTreeSet<_> = refused.lock().expect("lock").iter().cloned().collect();
    assert!(
        codes.iter().all(|code| code == "53400"),
        "refused with 53400 only: {codes:?}"
    );
    let acked = acked.lock().expect("lock").clone();
    let counts = wait_for_trail(&store, &acked, &proxy).await;
    assert_exactly_once(&acked, &counts);
    // Drained: statements are taken again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let login = tokio::time::timeout(Duration::from_secs(30), connect(&url));
        if let Some(client) = login.await.expect("a login is answered") {
            if client.simple_query("SELECT 'mafterxy'").await.is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "still refusing: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The block failed with its refused statement: its COMMIT rolls back.
    in_block
        .simple_query("COMMIT")
        .await
        .expect("a COMMIT of a failed block is answered (ROLLBACK)");
    let committed = cluster
        .psql(
            "postgres",
            "SELECT count(*) FROM marks WHERE marker = 'only with its block'",
        )
        .expect("count");
    assert_eq!(
        committed.trim(),
        "0",
        "a block missing its refused statement was committed"
    );
    proxy.stop();
    verify(tmp.path(), &store);
}

/// fail_open: a full spool drops events and serves on; the drop is
/// counted and lands in the store as an `alarm` event once it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_fails_open_and_the_drop_is_an_alarm() {
    let cluster = Cluster::start().expect("cluster");
    marks_table(&cluster).await;
    let mut store_cluster = StoreCluster::start();
    let store = store_cluster.url();
    store_cluster.stop();
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("PGTRAIL_PROXY__SPOOL_MAX_MB", "1"),
        ("PGTRAIL_PROXY__WHEN_FULL", "fail_open"),
    ];
    let proxy = Proxy::start(tmp.path(), &store, &upstream(&cluster), &[], &env);
    let client = connect(&proxy.url()).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    // The spool counts drops durably in dropped.json before serving on.
    while !tmp.path().join("spool").join("dropped.json").exists() {
        assert!(Instant::now() < deadline, "never full: {}", proxy.log());
        for _ in 0..100 {
            let (_, sql) = statement(0, n);
            client
                .simple_query(&sql)
                .await
                .expect("served, full or not");
            n += 1;
        }
    }
    // `status --check` says so loudly meanwhile, and fails the check.
    let spool = tmp.path().join("spool");
    let status = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args([
            "--store",
            &store,
            "status",
            "--check",
            "--db",
            &upstream(&cluster),
        ])
        .env("PGTRAIL_PROXY__LISTEN", "127.0.0.1:0")
        .env("PGTRAIL_PROXY__SPOOL_DIR", &spool)
        .current_dir(tmp.path())
        .output()
        .expect("pgtrail status");
    let said = String::from_utf8_lossy(&status.stdout);
    assert!(said.contains("DROPPED"), "status: {said}");
    assert!(!status.status.success(), "status --check fails: {said}");
    store_cluster.start_again();
    let deadline = Instant::now() + Duration::from_secs(120);
    let alarm = loop {
        let found = events(&store)
            .await
            .into_iter()
            .find(|e| e.kind == Kind::Alarm);
        if let Some(alarm) = found {
            break alarm;
        }
        assert!(Instant::now() < deadline, "no alarm: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let dropped = alarm
        .context
        .as_ref()
        .and_then(|c| c.get("dropped_events"))
        .and_then(|v| v.as_u64())
        .unwrap_or_default();
    assert!(
        dropped > 0,
        "the alarm counts the dropped events: {alarm:?}"
    );
    proxy.stop();
    verify(tmp.path(), &store);
}

/// `pgtrail run` with `[proxy] listen` runs the proxy as one of its parts:
/// a statement through it is in the store, and SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgtrail_run_runs_the_proxy_as_a_part() {
    let cluster = Cluster::start().expect("cluster");
    marks_table(&cluster).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", tmp.path().join("trail.db").display());
    let stderr = tmp.path().join("run.err");
    let spool = tmp.path().join("spool");
    let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["--store", &store, "run"])
        .env("PGTRAIL_PROXY__LISTEN", "127.0.0.1:0")
        .env("PGTRAIL_PROXY__UPSTREAM", upstream(&cluster))
        .env("PGTRAIL_PROXY__SPOOL_DIR", &spool)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start pgtrail run");
    let run = Proxy::listening(child, stderr);
    let client = connect(&run.url())
        .await
        .expect("connect through run's proxy");
    let (marker, sql) = statement(0, 0);
    client.simple_query(&sql).await.expect("insert");
    let acked = BTreeSet::from([marker]);
    let counts = wait_for_trail(&store, &acked, &run).await;
    assert_exactly_once(&acked, &counts);
    drop(client);
    run.stop();
    verify(tmp.path(), &store);
}

/// `pgtrail proxy --tls-cert --tls-key --require-tls`, with libpq: a client
/// in the clear is refused (28000, nothing reaches the server), one with
/// sslmode=verify-full against the proxy's certificate gets through.
#[tokio::test]
async fn proxy_serves_tls_from_flags_and_requires_it() {
    let cluster = Cluster::start().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = pgtrail_testkit::TestCa::new("pgtrail test CA").expect("ca");
    let cert = ca.server(&["localhost"]).expect("cert");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (cert_file, key_file) = (
        write("proxy.crt", &cert.cert_pem),
        write("proxy.key", &cert.key_pem),
    );
    let ca_file = write("ca.pem", &ca.cert_pem());
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let store = format!("sqlite:{}", dir.path().join("trail.db").display());
    let proxy = Proxy::start(
        dir.path(),
        &store,
        &upstream,
        &[
            "--tls-cert",
            &cert_file,
            "--tls-key",
            &key_file,
            "--require-tls",
        ],
        &[],
    );
    let port = proxy
        .address
        .rsplit(':')
        .next()
        .expect("a port")
        .to_string();
    let psql = |sslmode: &str| {
        let conninfo = format!(
            "host=localhost port={port} user=postgres dbname=postgres sslmode={sslmode} sslrootcert={ca_file}"
        );
        Command::new(cluster.binaries().program("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-w",
                "-d",
                &conninfo,
                "-c",
                "SELECT 'through TLS'",
            ])
            .output()
            .expect("psql")
    };
    let plain = psql("disable");
    assert!(!plain.status.success());
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(stderr.contains("this proxy requires TLS"), "{stderr}");
    let tls = psql("verify-full");
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&tls.stdout).trim(), "through TLS");
    // The login the proxy refused is a failed-login event, from where it came.
    proxy.stop();
    let refused: Vec<Event> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::Session && e.sqlstate.as_deref() == Some("28000"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].db_user.as_deref(), Some("postgres"));
    assert_eq!(refused[0].client_addr.as_deref(), Some("127.0.0.1"));
}

/// A login the server refuses (here: a database that does not exist,
/// 3D000) is a failed CONNECT in the trail with who tried, from where, and
/// the SQLSTATE; a successful session is a CONNECT and a DISCONNECT with
/// its statement count.
#[tokio::test]
async fn failed_and_successful_logins_are_session_events_in_the_trail() {
    let cluster = Cluster::start().expect("cluster");
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", tmp.path().join("trail.db").display());
    let proxy = Proxy::start(tmp.path(), &store, &upstream(&cluster), &[], &[]);
    let refused = tokio_postgres::connect(
        &format!("postgres://postgres@{}/no_such_db", proxy.address),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("the server refuses the login");
    assert_eq!(refused.code().map(|c| c.code()), Some("3D000"), "{refused}");
    let client = connect(&proxy.url()).await.expect("connect");
    client.simple_query("SELECT 1").await.expect("select");
    drop(client);
    // Let the session end before the proxy stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.stop();
    let sessions: Vec<Event> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.source == Source::Proxy && e.kind == Kind::Session)
        .collect();
    let failed: Vec<&Event> = sessions
        .iter()
        .filter(|e| e.sqlstate.as_deref() == Some("3D000"))
        .collect();
    assert_eq!(failed.len(), 1, "{sessions:?}");
    let failed = failed[0];
    assert_eq!(failed.operation.as_deref(), Some("CONNECT"));
    assert_eq!(failed.db_user.as_deref(), Some("postgres"));
    assert_eq!(failed.database.as_deref(), Some("no_such_db"));
    assert_eq!(failed.client_addr.as_deref(), Some("127.0.0.1"));
    assert!(failed.client_port.is_some());
    assert!(failed
        .error
        .as_deref()
        .is_some_and(|m| m.contains("no_such_db")));
    // The session that logged in: its CONNECT, then its DISCONNECT with
    // the statement it ran.
    let logged_in: Vec<&Event> = sessions
        .iter()
        .filter(|e| e.database.as_deref() == Some("postgres"))
        .collect();
    let ops: Vec<&str> = logged_in
        .iter()
        .filter_map(|e| e.operation.as_deref())
        .collect();
    assert_eq!(ops, ["CONNECT", "DISCONNECT"], "{sessions:?}");
    assert!(logged_in.iter().all(|e| e.sqlstate.is_none()));
    assert_eq!(
        logged_in[1]
            .context
            .as_ref()
            .and_then(|c| c.get("statements"))
            .and_then(|n| n.as_u64()),
        Some(1)
    );
}

/// A `select` of a string when `standard_conforming_strings` is on; when it
/// is off, a `select` of `'` and then a DELETE of every row of `table`.
fn hidden_delete(table: &str) -> String {
    format!(r"select '\'' ; delete from {table}; -- '")
}

/// The same in one statement (a Parse takes only one): a `select` of a
/// string when on, a DELETE in a WITH when off.
fn hidden_delete_in_one_statement(table: &str) -> String {
    format!(
        r"with x as (select '\''), d as (delete from {table} returning 1) select * from x, d -- ') select * from x"
    )
}

/// One frame of the frontend protocol.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = u32::try_from(body.len() + 4).expect("small frame");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Parse, Bind and Execute of `sql` (unnamed statement and portal), no Sync.
fn parse_bind_execute(sql: &str) -> Vec<u8> {
    let mut parse = b"\0".to_vec();
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(b"\0\0\0");
    let mut out = frame(b'P', &parse);
    out.extend(frame(b'B', b"\0\0\0\0\0\0\0\0"));
    out.extend(frame(b'E', b"\0\0\0\0\0"));
    out
}

/// The proxy's statement events in `store` once `done` holds of them,
/// polled for up to a minute; `awaited` names what for the failure.
async fn statements_when(
    store: &str,
    proxy: &Proxy,
    awaited: &str,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statements: Vec<Event> = events(store)
            .await
            .into_iter()
            .filter(|e| e.source == Source::Proxy && e.kind == Kind::Statement)
            .collect();
        if done(&statements) {
            return statements;
        }
        assert!(
            Instant::now() < deadline,
            "{awaited} is not in the trail: {statements:#?}\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `event`'s text was read both ways for `setting`.
fn ambiguous_by(event: &Event, setting: &str) -> bool {
    event
        .context
        .as_ref()
        .and_then(|c| c.get("ambiguous"))
        .and_then(|v| v.as_str())
        == Some(setting)
}

/// A client session speaking raw frontend protocol (texts need not be
/// UTF-8, pipelines need no client library's consent).
struct RawSession(std::net::TcpStream);

impl RawSession {
    /// Logs in as `user` to database `postgres` (trust).
    fn login(address: &str, user: &str) -> RawSession {
        let stream = std::net::TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut startup = Default::default();
        pgtrail_wire::frontend::encode_startup(
            &mut startup,
            &[("user", user), ("database", "postgres")],
        );
        let mut session = RawSession(stream);
        session.send(&startup);
        session
    }

    /// Sends `bytes` and returns every backend frame's tag up to
    /// ReadyForQuery.
    fn send(&mut self, bytes: &[u8]) -> Vec<u8> {
        use std::io::{Read, Write};
        self.0.write_all(bytes).expect("send");
        let mut tags = Vec::new();
        let mut header = [0u8; 5];
        loop {
            self.0.read_exact(&mut header).expect("frame header");
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut body = vec![0u8; usize::try_from(len).expect("len") - 4];
            self.0.read_exact(&mut body).expect("frame body");
            tags.push(header[0]);
            if header[0] == b'Z' {
                return tags;
            }
        }
    }
}

impl Drop for RawSession {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = self.0.write_all(&frame(b'X', b""));
    }
}

/// Logs in as `user` with the frontend protocol, sends `messages` then a
/// Sync, and returns every backend frame's tag up to ReadyForQuery.
fn pipeline(address: &str, user: &str, messages: &[u8]) -> Vec<u8> {
    let mut batch = messages.to_vec();
    batch.extend(frame(b'S', b""));
    RawSession::login(address, user).send(&batch)
}

/// Logs in as `user`, sends each of `texts` as a simple Query (raw bytes:
/// they need not be UTF-8) and returns each one's backend frame tags up to
/// its ReadyForQuery.
fn simple_queries(address: &str, user: &str, texts: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut session = RawSession::login(address, user);
    texts
        .iter()
        .map(|text| {
            let mut body = text.to_vec();
            body.push(0);
            session.send(&frame(b'Q', &body))
        })
        .collect()
}

/// Attacker: an application role (`app`) behind a proxy that logs only
/// DDL (`log = ["ddl"]`) sets a client encoding whose characters may end
/// in the byte 0x5C (SJIS), and sends `select E'<c>'; drop table victim;
/// --'` where `<c>` is such a character. The server converts the text
/// first and runs the DROP; to a reader of the bytes as UTF-8 the 0x5C is
/// a backslash escaping the quote, and the DROP is inside a string. The
/// DROP runs, and the trail holds it as DDL naming `victim`, marked
/// ambiguous by `client_encoding`. The same text without the high byte
/// has a real `\'`, which the server refuses in such an encoding
/// (`backslash_quote`): it drops nothing, and the trail names no table
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_hidden_by_a_multibyte_encoding_is_in_the_trail() {
    let cluster = Cluster::start().expect("cluster");
    let admin = cluster.connect("postgres").await.expect("admin");
    admin
        .batch_execute(
            "create role app login;
             create table victim (id int); create table bystander (id int);
             alter table victim owner to app; alter table bystander owner to app;",
        )
        .await
        .expect("schema");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (proxy, store) = Proxy::logging(tmp.path(), &cluster, r#"log = ["ddl"]"#);
    let hidden = |table: &str, character: &[u8]| {
        [
            &b"select E'"[..],
            character,
            b"'; drop table ",
            table.as_bytes(),
            b"; --'",
        ]
        .concat()
    };
    // SJIS 0x81 0x5C is one character for the server.
    let attack = hidden("victim", &[0x81, 0x5C]);
    // The same with a lone backslash: a `\'` the server refuses (22P06).
    let harmless = hidden("bystander", b"\\");
    let answers = simple_queries(
        &proxy.address,
        "app",
        &[b"set client_encoding = 'SJIS'", &attack, &harmless],
    );
    assert!(
        !answers[0].contains(&b'E') && !answers[1].contains(&b'E') && answers[2].contains(&b'E'),
        "{answers:?}"
    );
    // The attack happened: the server dropped victim, and not bystander.
    let exists = |table: &'static str| {
        let admin = &admin;
        async move {
            admin
                .query_one("select to_regclass($1) is not null", &[&table])
                .await
                .expect("to_regclass")
                .get::<_, bool>(0)
        }
    };
    assert!(!exists("victim").await, "the DROP ran");
    assert!(
        exists("bystander").await,
        "the server refused the real backslash"
    );

    let statements = statements_when(&store, &proxy, "the DROP of victim", |statements| {
        statements.iter().any(|e| {
            e.class.as_deref() == Some("DDL")
                && e.objects.iter().any(|o| o.contains("victim"))
                && ambiguous_by(e, "client_encoding")
        })
    })
    .await;
    assert!(
        !statements
            .iter()
            .any(|e| e.objects.iter().any(|o| o.contains("bystander"))),
        "the harmless text, failed, names no table: {statements:#?}"
    );
    proxy.stop();
    verify(tmp.path(), &store);
}

/// Attacker: an application role (`app`) behind a proxy that logs only
/// writes (`log = ["write", "role"]`) turns `standard_conforming_strings`
/// off, in every way a session can, to make a DELETE read as a SELECT of a
/// string (issue 11). Each DELETE really runs (its rows are gone) and the
/// trail holds a WRITE event naming its table, marked ambiguous. A
/// password set while the setting is off is stored nowhere, not even in
/// part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hidden_with_standard_conforming_strings_off_are_in_the_trail() {
    let cluster = Cluster::start().expect("cluster");
    let admin = cluster.connect("postgres").await.expect("admin");
    admin
        .batch_execute(
            "create role app login;
             create table t_a (id int); create table t_b (id int); create table t_c (id int);
             create table t_d (id int); create table t_e (id int);
             insert into t_a values (1); insert into t_b values (1); insert into t_c values (1);
             insert into t_d values (1); insert into t_e values (1);
             grant all on t_a, t_b, t_c, t_d, t_e to app;",
        )
        .await
        .expect("schema");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (proxy, store) = Proxy::logging(tmp.path(), &cluster, r#"log = ["write", "role"]"#);
    let app = format!("postgres://app@{}/postgres", proxy.address);

    // (a) SET, then the text in the next message.
    let a = connect(&app).await.expect("connect a");
    a.simple_query("set standard_conforming_strings = off")
        .await
        .expect("set");
    a.simple_query(&hidden_delete("t_a")).await.expect("a");
    // The password case, in the same session (the setting is off).
    a.simple_query(r"alter role app password 'Xq7\'Zk9'")
        .await
        .expect("password");

    // (b) SET and the text in one Query: the server reads the whole
    // message with the setting still on, so no DELETE runs; the proxy
    // cannot tell, and records the union (WRITE, ambiguous).
    let b = connect(&app).await.expect("connect b");
    b.simple_query(&format!(
        "set standard_conforming_strings = off; {}",
        hidden_delete("t_b")
    ))
    .await
    .expect("b");

    // (c) Extended protocol: the SET and the text in one pipeline, no Sync
    // between (the proxy hears the new setting only at ReadyForQuery).
    let mut c = parse_bind_execute("set standard_conforming_strings = off");
    c.extend(parse_bind_execute(&hidden_delete_in_one_statement("t_c")));
    let tags = pipeline(&proxy.address, "app", &c);
    assert!(!tags.contains(&b'E'), "the pipeline ran: {tags:?}");

    // (d) Startup options.
    let d = connect(&format!(
        "{app}?options=-c%20standard_conforming_strings%3Doff"
    ))
    .await
    .expect("connect d");
    d.simple_query(&hidden_delete("t_d")).await.expect("d");

    // (e) set_config.
    let e = connect(&app).await.expect("connect e");
    e.simple_query("select set_config('standard_conforming_strings', 'off', false)")
        .await
        .expect("set_config");
    e.simple_query(&hidden_delete("t_e")).await.expect("e");

    // The attack happened: every DELETE but (b)'s ran.
    for (table, rows) in [("t_a", 0), ("t_b", 1), ("t_c", 0), ("t_d", 0), ("t_e", 0)] {
        let row = admin
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .expect("count");
        assert_eq!(row.get::<_, i64>(0), rows, "{table}");
    }

    // And the trail holds a WRITE event for each, marked ambiguous.
    let statements = statements_when(&store, &proxy, "a WRITE event", |statements| {
        ["t_a", "t_b", "t_c", "t_d", "t_e"].iter().all(|table| {
            statements.iter().any(|e| {
                e.class.as_deref() == Some("WRITE")
                    && e.objects.iter().any(|o| o.contains(table))
                    && ambiguous_by(e, "standard_conforming_strings")
            })
        })
    })
    .await;
    // The password statement is recorded (ROLE) without any part of the password.
    assert!(
        statements
            .iter()
            .any(|e| e.class.as_deref() == Some("ROLE")),
        "{statements:#?}"
    );
    for event in &statements {
        let text = serde_json::to_string(event).expect("json");
        assert!(!text.contains("Xq7") && !text.contains("Zk9"), "{text}");
    }
    drop((a, b, d, e));
    proxy.stop();
    verify(tmp.path(), &store);
}
