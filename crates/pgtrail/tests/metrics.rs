//! `/metrics` scraped over HTTP from a real `pgtrail run` (trigger capture
//! and the proxy of one database, the dashboard, and `[metrics] listen`)
//! after real capture: the counters moved by exactly what was captured,
//! the exposition is Prometheus's text format, the door wants a token once
//! tokens exist, a scrape records no access event, and neither a table name
//! an application chose nor a password nor a token reaches the exposition.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::running::{http_get as get, Running, Service};
use crate::support::pgtrail_in;

const PASSWORD: &str = "s3cret-pw";

fn pgtrail(s: &Service, args: &[&str]) -> crate::support::Run {
    pgtrail_in(s.dir.path(), args, &[], None)
}

/// A scrape: every sample by its series (`name{labels}` as rendered), and
/// the text. Checks the text format on the way: each sample's family has
/// a `# TYPE` line before it, and every value is a number.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = HashMap::new();
        let mut types: HashMap<String, String> = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP "),
                    "only HELP and TYPE comments: {line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
            };
            let name = series.split('{').next().expect("name");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(
                types.contains_key(family),
                "a sample before its # TYPE: {line}"
            );
            samples.insert(series.to_string(), value);
        }
        Scrape {
            text,
            samples,
            types,
        }
    }

    /// The value of `series`, 0 when absent (a counter not yet incremented).
    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }
}

fn scrape(address: &str, token: &str) -> Scrape {
    let (status, body) = get(address, "/metrics", Some(token));
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body)
}

/// Waits until `done` holds for a scrape; returns that scrape.
async fn until(
    address: &str,
    token: &str,
    run: &Running,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = scrape(address, token);
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {}\n{}",
            now.text,
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The address after `prefix` on a line of `run`'s stderr.
async fn address_after(run: &Running, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(address) = crate::running::address_in(&run.stderr(), prefix) {
            return address;
        }
        assert!(Instant::now() < deadline, "no '{prefix}': {}", run.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Events in the store matching `args`.
fn count(s: &Service, args: &[&str]) -> usize {
    let mut all = vec!["log", "--limit", "100000", "--format", "jsonl"];
    all.extend_from_slice(args);
    pgtrail(s, &all).events().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_of_pgtrail_run_counts_exactly_what_was_captured_and_leaks_nothing() {
    // Attacker: an application that names a table to forge a label.
    let s = Service::new(
        "metrics",
        r#"create table t (id int primary key, v text);
           create table "x"",evil=""1" (id int primary key);"#,
    )
    .await;
    pgtrail(&s, &["install", "--db", &s.url]).ok();
    pgtrail(&s, &["track", "--db", &s.url, "public.t"]).ok();
    pgtrail(&s, &["track", "--db", &s.url, r#"public."x"",evil=""1""#]).ok();
    // A store URL with a password (trust ignores it): it must not leak.
    let secret_url = s
        .url
        .replacen("postgres@", &format!("postgres:{PASSWORD}@"), 1);
    assert_ne!(secret_url, s.url);
    let upstream = format!("{}?sslmode=disable", s.cluster.url("postgres"));
    std::fs::write(
        s.dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{secret_url}\"\n[triggers]\ndb = \"{secret_url}\"\ndrain_interval_ms = 100\n\
             [proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nspool_dir = \"{spool}\"\n\
             bypass_alarm = false\n\
             [server]\nlisten = \"127.0.0.1:0\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            spool = s.dir.path().join("spool").display(),
        ),
    )
    .expect("config");
    // A token exists: the door wants it, loopback or not.
    let token = pgtrail(
        &s,
        &[
            "token",
            "create",
            "--name",
            "prometheus",
            "--role",
            "viewer",
        ],
    )
    .ok()
    .trim()
    .to_string();

    let run = s.start(&[]);
    let server = address_after(&run, "pgtrail serve: listening on http://").await;
    let metrics_only = address_after(&run, "metrics: serving /metrics on ").await;
    let proxy = address_after(&run, "pgtrail proxy: listening on ").await;

    // Who may scrape: a token (a viewer's suffices), on both listeners.
    for address in [&server, &metrics_only] {
        let (status, body) = get(address, "/metrics", None);
        assert_eq!(status, 401, "no token: {body}");
        assert!(
            !body.contains("pgtrail_"),
            "nothing without a token: {body}"
        );
        let (status, _) = get(address, "/metrics", Some("pgt_not-a-token"));
        assert_eq!(status, 401, "a wrong token");
    }
    let (status, _) = get(&metrics_only, "/api/v1/events", Some(&token));
    assert_eq!(status, 404, "the metrics listener serves /metrics only");

    let before = scrape(&server, &token);
    let row_changes = r#"pgtrail_events_appended_total{source="trigger",kind="row_change"}"#;
    let base_rows = before.value(row_changes);

    // Direct: 5 rows of t, 2 of the hostile table, and a rolled-back row
    // (never captured, so never counted).
    s.insert(1..=5).await;
    s.client
        .batch_execute(r#"insert into "x"",evil=""1" values (1), (2)"#)
        .await
        .expect("hostile table");
    s.client
        .batch_execute("begin; insert into t values (100, 'undone'); rollback")
        .await
        .expect("rolled back");
    // Through the proxy: three reads and one write (a row change too).
    let app = connect(&format!("postgres://postgres@{proxy}/{}", s.db)).await;
    for _ in 0..3 {
        app.batch_execute("select 1").await.expect("read");
    }
    app.batch_execute("insert into t values (10, 'through the proxy')")
        .await
        .expect("write");

    let after = until(&server, &token, &run, "8 row changes counted", |m| {
        m.value(row_changes) >= base_rows + 8.0
            && m.value(r#"pgtrail_events_appended_total{source="proxy",kind="statement"}"#) >= 4.0
    })
    .await;
    assert_eq!(after.value(row_changes), base_rows + 8.0, "{}", after.text);
    assert_eq!(
        count(&s, &["--source", "trigger", "--kind", "row_change"]) as f64,
        after.value(row_changes),
        "the counter agrees with the store"
    );
    // Statements by class: exactly what the client sent.
    assert_eq!(
        after.value(r#"pgtrail_proxy_statements_total{class="READ"}"#),
        3.0,
        "{}",
        after.text
    );
    assert_eq!(
        after.value(r#"pgtrail_proxy_statements_total{class="WRITE"}"#),
        1.0
    );
    assert_eq!(
        after.value(r#"pgtrail_events_appended_total{source="proxy",kind="statement"}"#),
        4.0
    );
    assert_eq!(
        after.value("pgtrail_proxy_sessions"),
        1.0,
        "one client open"
    );
    assert_eq!(after.value("pgtrail_proxy_refused_total"), 0.0);
    // Added latency: one observation per statement, a real histogram.
    assert_eq!(
        after.value("pgtrail_proxy_added_latency_seconds_count"),
        4.0
    );
    assert_eq!(
        after.value(r#"pgtrail_proxy_added_latency_seconds_bucket{le="+Inf"}"#),
        4.0
    );
    assert!(after.value("pgtrail_proxy_added_latency_seconds_sum") > 0.0);
    for family in [
        "pgtrail_append_seconds",
        "pgtrail_append_batch_events",
        "pgtrail_proxy_added_latency_seconds",
    ] {
        assert_eq!(
            after.types.get(family).map(String::as_str),
            Some("histogram"),
            "{family}"
        );
        let count = after.value(&format!("{family}_count"));
        assert!(count > 0.0, "{family}_count");
        assert_eq!(
            after.value(&format!("{family}_bucket{{le=\"+Inf\"}}")),
            count,
            "{family}: +Inf bucket = count"
        );
    }
    for (family, kind) in [
        ("pgtrail_events_appended_total", "counter"),
        ("pgtrail_proxy_sessions", "gauge"),
        ("pgtrail_spool_bytes", "gauge"),
        // The dashboard's access spool beside the proxy's, on its own gauge.
        ("pgtrail_access_spool_bytes", "gauge"),
        ("pgtrail_alarms_total", "counter"),
    ] {
        assert_eq!(after.types.get(family).map(String::as_str), Some(kind));
    }
    assert!(after
        .samples
        .contains_key(r#"pgtrail_alarms_total{alarm="seq_gap"}"#));
    // The inbox's backlog, measured after drain passes, drains to nothing.
    until(&server, &token, &run, "nothing pending", |m| {
        m.samples.get("pgtrail_trigger_pending_rows") == Some(&0.0)
            && m.samples.get("pgtrail_trigger_oldest_pending_seconds") == Some(&0.0)
    })
    .await;

    // The client leaves: the gauge falls, the session is counted closed.
    drop(app);
    let closed = until(&server, &token, &run, "the session ended", |m| {
        m.value(r#"pgtrail_proxy_sessions_total{outcome="closed"}"#) == 1.0
    })
    .await;
    assert_eq!(closed.value("pgtrail_proxy_sessions"), 0.0);

    // Scraping reads no event, so it records none.
    let accesses = || count(&s, &["--source", "server", "--kind", "access"]);
    let before_scrapes = accesses();
    for _ in 0..3 {
        scrape(&server, &token);
        scrape(&metrics_only, &token);
    }
    assert_eq!(accesses(), before_scrapes, "no access event per scrape");

    // Nothing from the data, the configuration or the door.
    let both = [scrape(&server, &token), scrape(&metrics_only, &token)];
    for m in &both {
        for leak in ["evil", PASSWORD, &token, "postgres://", &s.db] {
            assert!(!m.text.contains(leak), "'{leak}' in the exposition");
        }
        assert!(m.value(row_changes) >= base_rows + 8.0);
    }
    // One process, one recorder: both listeners show the same counters.
    assert_eq!(both[0].value(row_changes), both[1].value(row_changes));
    run.stop().await;
}
