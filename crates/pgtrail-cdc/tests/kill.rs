//! The crash test: `pgtrail capture` is killed with SIGKILL again and again
//! while a write load runs; afterwards the trail, replayed row by row, must
//! equal the tables — nothing lost, nothing twice.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::Kind;
use serde_json::Value;

use crate::common::*;

/// The `pgtrail` binary, built on demand (it lives in another package).
pub(crate) fn pgtrail_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PGTRAIL_BIN") {
        return PathBuf::from(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "pgtrail", "--bin", "pgtrail"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building pgtrail failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/pgtrail")
}

/// A running `pgtrail capture`, killed with SIGKILL (and reaped) when dropped.
pub(crate) struct Consumer(pub(crate) Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn capture(bin: &PathBuf, db: &TestDb, extra: &[&str]) -> Consumer {
    let child = Command::new(bin)
        .args([
            "--store",
            &db.store_url(),
            "capture",
            "--db",
            &db.url,
            "--slot",
            &db.slot,
        ])
        .args(["--publication", &db.publication, "--batch-wait-ms", "10"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgtrail starts");
    Consumer(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_nothing_and_duplicates_nothing() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(pgtrail_binary).await?;
    let db = TestDb::new(
        "cdc_kill9",
        "create table ledger (id bigserial primary key, n int not null, note text);
         create table tags (a int, b text, v int, primary key (a, b));",
    )
    .await?;
    let setup = Command::new(&bin)
        .args([
            "--store",
            &db.store_url(),
            "capture",
            "--db",
            &db.url,
            "--slot",
            &db.slot,
        ])
        .args([
            "--publication",
            &db.publication,
            "--setup",
            "--context",
            "--no-stream",
        ])
        .output()?;
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );

    // The write load: small transactions of inserts, updates and deletes.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let (writer_client, connection) =
        tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let writer = {
        let (stop, committed) = (stop.clone(), committed.clone());
        tokio::spawn(async move {
            let mut i: i32 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let sql = format!(
                    "begin;
                     select set_config('pgtrail.user', 'writer-{i}', true);
                     insert into ledger (n, note) values ({i}, repeat('x', {i} % 50)), ({i}, null);
                     update ledger set n = n + 1 where id = (select max(id) from ledger) - 3;
                     delete from ledger where id = (select max(id) from ledger) - 10 and n % 3 = 0;
                     insert into tags values ({i} % 7, 'k{m}', {i}) on conflict (a, b) do update set v = excluded.v;
                     commit;",
                    m = i % 5
                );
                writer_client
                    .batch_execute(&sql)
                    .await
                    .expect("write transaction");
                committed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Kill the consumer at random moments while the load runs.
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let consumer = capture(&bin, &db, &[]);
        let wait = 200 + (started.elapsed().as_micros() % 700) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        drop(consumer); // SIGKILL
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await?;
    assert!(kills >= 5, "killed {kills} times");
    assert!(
        committed.load(Ordering::Relaxed) > 50,
        "the load wrote something"
    );

    // One last run to catch up, until the slot has confirmed everything.
    let consumer = capture(&bin, &db, &[]);
    let target: String = db
        .client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let caught_up: bool = db
            .client
            .query_one(
                "select confirmed_flush_lsn >= $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
                &[&target, &db.slot],
            )
            .await?
            .get(0);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "capture did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(consumer);

    let store = db.store().await;
    let events = all_events(store.as_ref()).await;
    let report = pgtrail_store::verify(store.as_ref(), None).await?;
    assert!(report.ok(), "the chain verifies: {report:?}");

    // Nothing twice: ids, and (lsn, tx_seq) positions, are unique.
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event was stored twice");
    let positions: HashSet<_> = events.iter().map(|e| (e.lsn.clone(), e.tx_seq)).collect();
    assert_eq!(
        positions.len(),
        events.len(),
        "a change was stored twice under another id"
    );

    // Nothing lost: replaying the trail gives the tables as they are.
    for (table, key_sql) in [("ledger", "id::text"), ("tags", "a::text || ',' || b")] {
        let mut replayed: BTreeMap<String, Value> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| e.kind == Kind::RowChange && e.table.as_deref() == Some(table))
        {
            let pk = e.pk.as_ref().expect("every change has a key");
            let key = pk
                .values()
                .map(|v| v.as_str().expect("text key"))
                .collect::<Vec<_>>()
                .join(",");
            match e.operation.as_deref() {
                Some("INSERT") | Some("UPDATE") => {
                    assert!(
                        e.app_user
                            .as_deref()
                            .is_some_and(|u| u.starts_with("writer-")),
                        "actor attached: {e:?}"
                    );
                    replayed.insert(key, Value::Object(e.new.clone().expect("new image")));
                }
                Some("DELETE") => {
                    replayed.remove(&key);
                }
                other => panic!("unexpected operation {other:?}"),
            }
        }
        let rows = db
            .client
            .query(
                &format!("select {key_sql}, to_jsonb(t)::text from {table} t"),
                &[],
            )
            .await?;
        let truth: BTreeMap<String, Value> = rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    serde_json::from_str(r.get::<_, &str>(1)).expect("json"),
                )
            })
            .collect();
        assert_eq!(replayed.len(), truth.len(), "{table}: row count");
        for (key, row) in &truth {
            let got = replayed
                .get(key)
                .unwrap_or_else(|| panic!("{table} row {key} missing from the trail"));
            assert_eq!(got.to_string(), row.to_string(), "{table} row {key}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_setup_status_and_drop() -> anyhow::Result<()> {
    let bin = tokio::task::spawn_blocking(pgtrail_binary).await?;
    let db = TestDb::new("cdc_cli", "create table t (id int primary key, v text);").await?;
    let run = |args: &[&str]| {
        Command::new(&bin)
            .args([
                "--store",
                &db.store_url(),
                "capture",
                "--db",
                &db.url,
                "--slot",
                &db.slot,
            ])
            .args(["--publication", &db.publication])
            .args(args)
            .output()
    };
    let out = run(&["--status", "--format", "table"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not exist"),
        "{out:?}"
    );

    let out = run(&[
        "--setup",
        "--context",
        "--tables",
        "public.t",
        "--baseline",
        "--no-stream",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("covers 1 table(s): public.t") && stderr.contains("baseline: 0 row(s)"),
        "{stderr}"
    );

    db.client
        .batch_execute("insert into t values (1, 'a')")
        .await?;
    let out = run(&["--status", "--format", "json"])?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(status["exists"], true, "{status}");
    assert!(
        status["lag_bytes"].as_i64().is_some_and(|b| b > 0),
        "{status}"
    );

    let out = run(&["--drop"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("removed replication slot"),
        "{stderr}"
    );
    let out = run(&[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--setup"),
        "a dropped slot is reported with the fix: {stderr}"
    );
    Ok(())
}
