//! `pgtrail run` as the one long-running process, and `pgtrail status` on
//! replication slots: a real cluster, the real binary, a SQLite store.

use std::path::Path;
use std::time::{Duration, Instant};

use pgtrail_core::Event;
use pgtrail_testkit::{Cluster, ClusterOptions};

use crate::running::{Running, Service};
use crate::support::pgtrail_in;

/// A `Service` and the URL of the store `pgtrail run` captures into.
struct Setup {
    service: Service,
    store: String,
}

impl std::ops::Deref for Setup {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl Setup {
    async fn new(prefix: &str, schema_sql: &str) -> Setup {
        let service = Service::new(prefix, schema_sql).await;
        let store = format!("sqlite:{}", service.store_file().display());
        Setup { service, store }
    }

    /// Writes pgtrail.toml: the store, then `sections`.
    fn config(&self, sections: &str) {
        let text = format!("[store]\nurl = \"{}\"\n{sections}", self.store);
        std::fs::write(self.dir.path().join("pgtrail.toml"), text).expect("write config");
    }

    /// Runs pgtrail to completion in the directory; asserts success.
    fn ok(&self, args: &[&str]) -> String {
        pgtrail_in(self.dir.path(), args, &[], None)
            .ok()
            .to_string()
    }

    fn status(&self) -> serde_json::Value {
        pgtrail_in(
            self.dir.path(),
            &["status", "--db", &self.url, "--format", "json"],
            &[],
            None,
        )
        .json()
    }

    /// The `cdc` row changes in the store, oldest first (not the alarms
    /// `run` records, e.g. while the slot is missing).
    fn cdc_events(&self) -> Vec<Event> {
        if self.store.starts_with("sqlite:") && !self.store_file().exists() {
            return Vec::new();
        }
        let mut events = pgtrail_in(
            self.dir.path(),
            &[
                "log",
                "--source",
                "cdc",
                "--kind",
                "row_change",
                "--limit",
                "100000",
                "--format",
                "jsonl",
            ],
            &[],
            None,
        )
        .events();
        events.reverse();
        events
    }

    /// Waits until the store holds `n` cdc events.
    async fn wait_for_events(&self, n: usize, run: &mut Running) -> Vec<Event> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let events = self.cdc_events();
            if events.len() >= n {
                return events;
            }
            if let Ok(Some(status)) = run.0.try_wait() {
                panic!("pgtrail run exited ({status}): {}", run.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} events after 60 s; pgtrail run said: {}",
                events.len(),
                run.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The `id` of each event's row, in store order.
fn ids(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| {
            let pk = e.pk.as_ref().expect("pk");
            pk["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| pk["id"].as_i64())
                .unwrap_or_else(|| panic!("id in {pk:?}"))
        })
        .collect()
}

fn assert_exactly(events: &[Event], n: i64) {
    let mut seen = ids(events);
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<_>>(),
        "each row once, none lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_captures_across_a_stop_and_a_kill() {
    let s = Setup::new(
        "run_restart",
        "create table t (id int primary key, v text);",
    )
    .await;
    s.set_up_capture();
    s.config(&format!(
        "[replication]\ndb = \"{}\"\nbatch_wait_ms = 10\n",
        s.url
    ));

    // A batch waits a minute (flags over the file): a stop stores the batch in hand.
    let run = s.start(&["--batch-wait-ms", "60000"]);
    s.insert(1..=49).await;
    // A position inside the last transaction: only its commit reaches past it.
    let inside: String = s
        .client
        .query_one(
            "insert into t (id, v) values (50, 'v50') returning pg_current_wal_insert_lsn()::text",
            &[],
        )
        .await
        .expect("insert")
        .get(0);
    s.wait_until_received(&inside, &run).await;
    assert!(s.cdc_events().is_empty(), "the batch is still in hand");
    let stderr = run.stop().await;
    assert!(stderr.contains("capturing database"), "{stderr}");
    assert_exactly(&s.cdc_events(), 50);

    // Written while nothing runs: the slot keeps them.
    s.insert(51..=100).await;
    let mut run = s.start(&[]);
    s.wait_for_events(100, &mut run).await;
    // Killed in the middle of a write load: what was not confirmed is sent again.
    let writes = {
        let client = s.cluster.connect(&s.db).await.expect("connect");
        tokio::spawn(async move {
            for id in 101..=300 {
                client
                    .execute("insert into t (id, v) values ($1, 'w')", &[&id])
                    .await
                    .expect("insert");
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.signal("-KILL");
    let (code, _) = run.wait().await;
    assert_ne!(code, 0, "killed");
    writes.await.expect("writes");

    let mut run = s.start(&[]);
    let events = s.wait_for_events(300, &mut run).await;
    run.stop().await;
    // Nothing arrives late after the stop.
    let events_after = s.cdc_events();
    assert_eq!(events_after.len(), events.len());
    assert_exactly(&events_after, 300);
    s.ok(&["verify"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_seals_triggers_and_captures_side_by_side() {
    let s = Setup::new(
        "run_both",
        "create table a (id int primary key, v text); create table t (id int primary key, v text);",
    )
    .await;
    s.ok(&["install", "--db", &s.url]);
    s.ok(&["track", "--db", &s.url, "public.a"]);
    // The configuration names before the glossary (`[capture]`,
    // `seal_interval_ms`) still work: deprecated aliases.
    s.config(&format!(
        "[triggers]\ndb = \"{url}\"\nseal_interval_ms = 100\n[capture]\ndb = \"{url}\"\nbatch_wait_ms = 10\n",
        url = s.url
    ));

    // Capture is configured but has no slot yet: an operator must act, so
    // the whole process stops (sealing included) and says why.
    let (code, stderr) = s.start(&[]).wait().await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("error: logical replication failed") && stderr.contains("does not exist"),
        "{stderr}"
    );

    s.set_up_capture();
    let mut run = s.start(&[]);
    for id in 1..=20 {
        s.client
            .execute("insert into a (id, v) values ($1, 'a')", &[&id])
            .await
            .expect("insert a");
    }
    s.insert(1..=20).await;
    let events = s.wait_for_events(20, &mut run).await;
    assert!(events.iter().all(|e| e.table.as_deref() == Some("t")));
    wait_for_sealed(&s, 20, &run).await;
    let stderr = run.stop().await;
    assert!(
        stderr.contains("draining trigger capture") && stderr.contains("capturing database"),
        "{stderr}"
    );
    assert_exactly(&s.cdc_events(), 20);
}

/// Waits until trigger capture has sealed `n` events of table `a`.
async fn wait_for_sealed(s: &Setup, n: usize, run: &Running) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sealed = s
            .cluster
            .psql(
                &s.db,
                "select count(*) from pgtrail.events where table_name = 'a'",
            )
            .expect("psql");
        if sealed.trim() == n.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sealed {sealed} of {n}: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outage_pauses_capture_only() {
    let mut s = Setup::new(
        "run_outage",
        "create table a (id int primary key, v text); create table t (id int primary key, v text);",
    )
    .await;
    s.ok(&["install", "--db", &s.url]);
    s.ok(&["track", "--db", &s.url, "public.a"]);
    s.set_up_capture();
    // Capture stores into a Postgres store on a second cluster, which goes
    // down and comes back on the same port.
    let store_dir =
        std::env::temp_dir().join(format!("pgtrail-test-store-{}", uuid::Uuid::now_v7()));
    let options = |port| ClusterOptions {
        data_dir: Some(store_dir.clone()),
        port,
        ..ClusterOptions::default()
    };
    let mut store_cluster = Cluster::start_with(options(None)).expect("store cluster");
    let port = store_cluster.port();
    s.store = store_cluster
        .create_database("store")
        .await
        .expect("store db");
    s.config(&format!(
        "[triggers]\ndb = \"{url}\"\ndrain_interval_ms = 100\n[replication]\ndb = \"{url}\"\nbatch_wait_ms = 10\n",
        url = s.url
    ));
    let insert_a = |ids: std::ops::RangeInclusive<i32>| {
        let client = &s.client;
        async move {
            for id in ids {
                client
                    .execute("insert into a (id, v) values ($1, 'a')", &[&id])
                    .await
                    .expect("insert a");
            }
        }
    };

    let mut run = s.start(&[]);
    insert_a(1..=10).await;
    s.insert(1..=10).await;
    s.wait_for_events(10, &mut run).await;
    wait_for_sealed(&s, 10, &run).await;

    store_cluster.stop().expect("stop the store");
    insert_a(11..=20).await;
    s.insert(11..=20).await;
    // Sealing goes on while capture waits for its store.
    wait_for_sealed(&s, 20, &run).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        run.0.try_wait().expect("try_wait").is_none(),
        "still running: {}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("the slot keeps the WAL"),
        "the outage is reported: {}",
        run.stderr()
    );

    let store_cluster = Cluster::start_with(options(Some(port))).expect("store back");
    let events = s.wait_for_events(20, &mut run).await;
    run.stop().await;
    assert_exactly(&events, 20);
    s.ok(&["verify"]);
    drop(store_cluster);
    let _ = std::fs::remove_dir_all(&store_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_slot_and_its_lag() {
    let s = Setup::new("run_status", "create table t (id int primary key, v text);").await;
    // Neither capture path set up: status still answers.
    let status = s.status();
    assert!(status["triggers"].is_null(), "{status}");
    assert_eq!(status["slots"], serde_json::json!([]), "{status}");

    s.set_up_capture();
    s.config(&format!(
        "[replication]\ndb = \"{}\"\nbatch_wait_ms = 10\nlag_warn_mb = 1\n",
        s.url
    ));
    let status = s.status();
    let slot = &status["slots"][0];
    assert_eq!(slot["slot"], "pgtrail", "{status}");
    assert_eq!(slot["active"], false, "{status}");
    assert!(slot["confirmed_flush_lsn"].is_string(), "{status}");

    // The consumer is stopped and writes happen: the lag grows, past the threshold.
    let before = slot["lag_bytes"].as_i64().expect("lag_bytes");
    s.client
        .batch_execute("insert into t select g, repeat('x', 200) from generate_series(1, 10000) g")
        .await
        .expect("bulk insert");
    let status = s.status();
    let slot = &status["slots"][0];
    let lag = slot["lag_bytes"].as_i64().expect("lag_bytes");
    assert!(lag > before && lag > 1024 * 1024, "{status}");
    assert!(
        slot["warning"]
            .as_str()
            .is_some_and(|w| w.contains("behind") && w.contains("no consumer")),
        "{status}"
    );
    let text = pgtrail_in(
        s.dir.path(),
        &["status", "--db", &s.url, "--format", "table"],
        &[],
        None,
    );
    let text = text.ok();
    assert!(
        text.contains("not installed") && text.contains("pgtrail") && text.contains("warning:"),
        "{text}"
    );
    // A monitor asks with --check: the warning makes the exit status 1.
    let check = |s: &Setup| {
        pgtrail_in(
            s.dir.path(),
            &["status", "--db", &s.url, "--check", "--format", "json"],
            &[],
            None,
        )
    };
    let checked = check(&s);
    assert_eq!(checked.code, 1, "{checked:?}");

    // With `pgtrail run` consuming: connected, with its pid, and caught up.
    let mut run = s.start(&[]);
    s.wait_for_events(10_000, &mut run).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let slot = loop {
        let status = s.status();
        let slot = status["slots"][0].clone();
        if slot["active"] == true && slot["lag_bytes"].as_i64().is_some_and(|b| b < 1024 * 1024) {
            break slot;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(slot["pid"].as_i64().is_some_and(|p| p > 0), "{slot}");
    assert_eq!(slot["lag_seconds_from"], "server", "{slot}");
    assert!(slot["warning"].is_null(), "{slot}");
    // Caught up, but no key signs checkpoints here: --check still says so.
    let checked = check(&s);
    assert_eq!(checked.code, 1, "{checked:?}");
    assert!(
        checked.stdout.contains("no checkpoint covers"),
        "{checked:?}"
    );
    run.stop().await;

    // Stopped again and behind: seconds are estimated from the store.
    s.insert(10_001..=10_010).await;
    let slot = s.status()["slots"][0].clone();
    assert_eq!(slot["active"], false, "{slot}");
    assert_eq!(slot["lag_seconds_from"], "store", "{slot}");
    assert!(slot["lag_seconds"].as_f64().is_some(), "{slot}");
}

/// The command names before the glossary still work, as deprecated
/// aliases: `pgtrail seal` drains, `pgtrail capture --setup --context` sets
/// up logical replication with the actor triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_command_names_still_work() {
    let s = Setup::new(
        "old_names",
        "create table a (id int primary key, v text); create table t (id int primary key, v text);",
    )
    .await;
    s.ok(&["install", "--db", &s.url]);
    s.ok(&["track", "--db", &s.url, "public.a"]);
    s.client
        .execute("insert into a (id, v) values (1, 'a')", &[])
        .await
        .expect("insert a");
    let drained = s.ok(&["seal", "--db", &s.url]);
    assert!(drained.contains("1 event(s)"), "{drained}");
    let pending: i64 = s
        .client
        .query_one("select count(*) from pgtrail.pending", &[])
        .await
        .expect("inbox")
        .get(0);
    assert_eq!(pending, 0, "the old name drained the inbox");

    s.ok(&[
        "capture",
        "--db",
        &s.url,
        "--setup",
        "--context",
        "--tables",
        "public.t",
        "--no-stream",
    ]);
    let triggers: i64 = s
        .client
        .query_one(
            "select count(*) from pg_trigger where tgname = 'pgtrail_cdc_context' \
             and tgrelid = 'public.t'::regclass",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    assert_eq!(triggers, 1, "--context installed the actor trigger");
    let slots: i64 = s
        .client
        .query_one(
            "select count(*) from pg_replication_slots where slot_name = 'pgtrail'",
            &[],
        )
        .await
        .expect("slots")
        .get(0);
    assert_eq!(slots, 1, "the old name set up the slot");
}

#[test]
fn run_without_anything_to_run_says_what_to_configure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = pgtrail_in(dir.path(), &["run"], &[], None);
    let line = run.error();
    assert!(
        line.contains("nothing to run") && line.contains("[replication] db"),
        "{line}"
    );
    assert!(!Path::new(&dir.path().join("pgtrail.db")).exists());
}
