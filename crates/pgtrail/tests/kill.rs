//! The crash tests: `pgtrail replicate` is killed with SIGKILL again and again
//! while a write load runs, or in the middle of one huge transaction. The
//! writer keeps a ground-truth log of every change it committed (operation,
//! table, key, written only after COMMIT returned); afterwards the store
//! must hold exactly those changes, transaction by transaction — nothing
//! lost, nothing twice — and replaying the trail must give the tables as
//! they are. Counting per transaction is what catches a lost change that a
//! later change of the same row would hide in the final state.
//!
//! These tests run the binary cargo builds for this package
//! (`CARGO_BIN_EXE_pgtrail`), so neither `cargo test` nor nextest builds it
//! again inside a test.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgtrail_core::{json, Event, Kind};
use pgtrail_store::Store;
use serde_json::Value;

use crate::running::Service;

/// One committed row change, as the writer knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    table: String,
    /// The key's values as text, joined with `,` in column-name order.
    key: String,
    operation: &'static str,
}

/// Committed changes by transaction id.
type Truth = BTreeMap<i64, Vec<Change>>;

fn change(table: &str, key: String, operation: &'static str) -> Change {
    Change {
        table: table.into(),
        key,
        operation,
    }
}

/// A running `pgtrail replicate`, killed with SIGKILL (and reaped) when dropped.
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn store_url(s: &Service) -> String {
    format!("sqlite:{}", s.store_file().display())
}

/// `pgtrail replicate` of `s` (slot and publication `pgtrail`) with `extra` flags.
fn pgtrail_capture(s: &Service, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgtrail"));
    command
        .args(["--store", &store_url(s), "replicate", "--db", &s.url])
        .args(["--batch-wait-ms", "10"])
        .args(extra)
        .current_dir(s.dir.path())
        .env_clear()
        .stdin(Stdio::null());
    command
}

fn capture(s: &Service, extra: &[&str]) -> Consumer {
    let child = pgtrail_capture(s, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pgtrail starts");
    Consumer(child)
}

fn set_up(s: &Service) {
    let out = pgtrail_capture(s, &["--setup", "--actor", "--no-stream"])
        .output()
        .expect("pgtrail runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the slot confirmed WAL up to `lsn`.
async fn confirmed(s: &Service, lsn: &str) -> bool {
    s.client
        .query_one(
            "select confirmed_flush_lsn >= $1::text::pg_lsn from pg_replication_slots where slot_name = 'pgtrail'",
            &[&lsn],
        )
        .await
        .expect("slot query")
        .get(0)
}

async fn current_lsn(s: &Service) -> String {
    s.client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0)
}

async fn all_events(store: &dyn Store) -> Vec<Event> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan(after, 10_000).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = last.seq.expect("stored events have seq");
        events.extend(page);
    }
    events
}

fn key_of(event: &Event) -> String {
    let pk = event.pk.as_ref().expect("every change has a key");
    pk.values()
        .map(|v| v.as_str().expect("text key"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The store holds exactly the committed changes of `truth`, transaction by
/// transaction, and nothing twice; the chain verifies.
async fn assert_trail_is_the_truth(store: &dyn Store, truth: &Truth) -> Vec<Event> {
    let events: Vec<Event> = all_events(store)
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::RowChange)
        .collect();
    let report = pgtrail_store::verify(store, None)
        .await
        .expect("verify runs");
    assert!(report.ok(), "the chain verifies: {report:?}");
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event was stored twice");
    let positions: HashSet<_> = events.iter().map(|e| (e.lsn.clone(), e.tx_seq)).collect();
    assert_eq!(
        positions.len(),
        events.len(),
        "a change was stored twice under another id"
    );

    // Per operation and table first: the clearest message for a loss.
    let count = |changes: &mut dyn Iterator<Item = (String, &'static str)>| {
        let mut counts: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
        for key in changes {
            *counts.entry(key).or_default() += 1;
        }
        counts
    };
    let operation = |e: &Event| -> &'static str {
        match e.operation.as_deref() {
            Some("INSERT") => "INSERT",
            Some("UPDATE") => "UPDATE",
            Some("DELETE") => "DELETE",
            other => panic!("unexpected operation {other:?}"),
        }
    };
    let stored_counts = count(
        &mut events
            .iter()
            .map(|e| (e.table.clone().unwrap_or_default(), operation(e))),
    );
    let truth_counts = count(
        &mut truth
            .values()
            .flatten()
            .map(|c| (c.table.clone(), c.operation)),
    );
    assert_eq!(
        stored_counts, truth_counts,
        "events per (table, operation): stored vs committed"
    );

    // Then each transaction's set of (table, key, operation).
    let mut stored: Truth = BTreeMap::new();
    for e in &events {
        let xid = e.xid.expect("a change has its transaction id");
        stored.entry(xid).or_default().push(change(
            e.table.as_deref().unwrap_or_default(),
            key_of(e),
            operation(e),
        ));
    }
    for changes in stored.values_mut() {
        changes.sort();
    }
    let mut truth = truth.clone();
    for changes in truth.values_mut() {
        changes.sort();
    }
    assert_eq!(
        stored.len(),
        truth.len(),
        "transactions in the store vs committed"
    );
    for (xid, committed) in &truth {
        assert_eq!(
            stored.get(xid),
            Some(committed),
            "transaction {xid}: stored vs committed"
        );
    }
    events
}

/// Replaying the trail's changes of `table` gives the table as it is
/// (`to_jsonb` of each row; `key_sql` its key as [`key_of`] spells it).
async fn assert_replay_equals_table(s: &Service, events: &[Event], table: &str, key_sql: &str) {
    let mut replayed: BTreeMap<String, Value> = BTreeMap::new();
    for e in events.iter().filter(|e| e.table.as_deref() == Some(table)) {
        match e.operation.as_deref() {
            Some("INSERT") | Some("UPDATE") => {
                replayed.insert(key_of(e), Value::Object(e.new.clone().expect("new image")));
            }
            _ => {
                replayed.remove(&key_of(e));
            }
        }
    }
    let rows = s
        .client
        .query(
            &format!("select {key_sql}, to_jsonb(t)::text from {table} t"),
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(replayed.len(), rows.len(), "{table}: row count");
    for row in rows {
        let key: String = row.get(0);
        let truth = json::parse(row.get::<_, &str>(1)).expect("json");
        let got = replayed
            .get(&key)
            .unwrap_or_else(|| panic!("{table} row {key} missing from the trail"));
        assert_eq!(
            json::to_string(got),
            json::to_string(&truth),
            "{table} row {key}"
        );
    }
}

/// One write transaction of the load: two inserts, an update and a delete
/// of ledger rows (each may touch no row), an upsert of tags. Returns its
/// transaction id and changes once COMMIT returned.
async fn write(client: &mut tokio_postgres::Client, i: i32) -> (i64, Vec<Change>) {
    let tx = client.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("select pg_current_xact_id()::text::int8", &[])
        .await
        .expect("xid")
        .get(0);
    tx.execute(
        "select set_config('pgtrail.user', $1, true)",
        &[&format!("writer-{i}")],
    )
    .await
    .expect("actor");
    let mut changes = Vec::new();
    let keys = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
        rows.iter().map(|r| r.get::<_, String>(0)).collect()
    };
    let statements: [(&str, &'static str); 3] = [
        (
            "insert into ledger (n, note) values ($1::int, repeat('x', $1::int % 50)), ($1::int, null) returning id::text",
            "INSERT",
        ),
        (
            "update ledger set n = n + 1 where id = (select max(id) from ledger) - 3 and $1::int is not null returning id::text",
            "UPDATE",
        ),
        (
            "delete from ledger where id = (select max(id) from ledger) - 10 and n % 3 = 0 and $1::int is not null returning id::text",
            "DELETE",
        ),
    ];
    for (sql, operation) in statements {
        let rows = tx.query(sql, &[&i]).await.expect("ledger");
        changes.extend(
            keys(rows)
                .into_iter()
                .map(|key| change("ledger", key, operation)),
        );
    }
    // A fresh row has no xmax: inserted, else the conflict updated it.
    let rows = tx
        .query(
            "insert into tags values ($1::int % 7, 'k' || ($1::int % 5), $1::int)
             on conflict (a, b) do update set v = excluded.v
             returning a::text || ',' || b, xmax = 0",
            &[&i],
        )
        .await
        .expect("tags");
    for row in rows {
        let inserted: bool = row.get(1);
        let operation = if inserted { "INSERT" } else { "UPDATE" };
        changes.push(change("tags", row.get(0), operation));
    }
    tx.commit().await.expect("commit");
    (xid, changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_nothing_and_duplicates_nothing() {
    let s = Service::new(
        "cdc_kill9",
        "create table ledger (id bigserial primary key, n int not null, note text);
         create table tags (a int, b text, v int, primary key (a, b));",
    )
    .await;
    set_up(&s);

    // The write load, logging each transaction after its COMMIT returned.
    let stop = Arc::new(AtomicBool::new(false));
    let truth = Arc::new(Mutex::new(Truth::new()));
    let (mut writer_client, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .expect("writer connects");
    tokio::spawn(connection);
    let writer = {
        let (stop, truth) = (stop.clone(), truth.clone());
        tokio::spawn(async move {
            let mut i: i32 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (xid, changes) = write(&mut writer_client, i).await;
                truth.lock().expect("truth").insert(xid, changes);
            }
        })
    };

    // Kill the consumer at random moments while the load runs.
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(6) {
        let consumer = capture(&s, &[]);
        let wait = 200 + (started.elapsed().as_micros() % 700) as u64;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        drop(consumer); // SIGKILL
        kills += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer does not panic");
    let truth = truth.lock().expect("truth").clone();
    assert!(kills >= 5, "killed {kills} times");
    assert!(
        truth.len() > 50,
        "the load wrote {} transactions",
        truth.len()
    );
    let deletes = truth
        .values()
        .flatten()
        .filter(|c| c.operation == "DELETE")
        .count();
    assert!(deletes > 0, "the load deleted rows");

    // One last run to catch up, until the slot has confirmed everything.
    let consumer = capture(&s, &[]);
    let target = current_lsn(&s).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !confirmed(&s, &target).await {
        assert!(Instant::now() < deadline, "capture did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(consumer);

    let store = pgtrail_store::open(&store_url(&s))
        .await
        .expect("store opens");
    let events = assert_trail_is_the_truth(store.as_ref(), &truth).await;
    for e in events
        .iter()
        .filter(|e| e.operation.as_deref() != Some("DELETE"))
    {
        assert!(
            e.app_user
                .as_deref()
                .is_some_and(|u| u.starts_with("writer-")),
            "actor attached: {e:?}"
        );
    }
    assert_replay_equals_table(&s, &events, "ledger", "id::text").await;
    assert_replay_equals_table(&s, &events, "tags", "a::text || ',' || b").await;
}

/// Spill files anywhere under `dir`.
fn spill_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                spill_files(&path)
            } else {
                usize::from(path.extension().is_some_and(|e| e == "spill"))
            }
        })
        .sum()
}

/// The number of events the store holds (its chain head's seq).
async fn stored(store: &dyn Store) -> i64 {
    store.head().await.expect("head").map_or(0, |head| head.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_huge_transaction_stores_it_exactly_once() {
    let s = Service::new(
        "cdc_spill_kill",
        "create table big (id int primary key, n int not null, amount numeric(38,10), note text, doc text);
         alter table big alter column doc set storage external;",
    )
    .await;
    // Large transactions are streamed to the consumer before they commit.
    // (ALTER SYSTEM runs alone: not in a multi-statement query.)
    s.client
        .batch_execute("alter system set logical_decoding_work_mem = '64kB'")
        .await
        .expect("setting");
    s.client
        .batch_execute("select pg_reload_conf()")
        .await
        .expect("reload");
    set_up(&s);
    // Smaller than the spill tests of pgtrail-cdc: each restart decodes it
    // from the start again. Inserts (NULLs, exact numerics, every 2000th row
    // with a 20 KB TOASTed `doc`), then an update of each row leaving the
    // TOASTed `doc` unchanged, in one transaction.
    const ROWS: i32 = 30_000;
    let (mut writer, connection) = tokio_postgres::connect(&s.url, tokio_postgres::NoTls)
        .await
        .expect("writer connects");
    tokio::spawn(connection);
    let tx = writer.transaction().await.expect("begin");
    let xid: i64 = tx
        .query_one("select pg_current_xact_id()::text::int8", &[])
        .await
        .expect("xid")
        .get(0);
    let inserted = tx
        .execute(
            "insert into big select g, g, g * 1.0000000001,
                 case when g % 7 = 0 then null else 'note ' || g end,
                 case when g % 2000 = 0 then repeat(md5(g::text), 640) end
             from generate_series(1, $1::int) g",
            &[&ROWS],
        )
        .await
        .expect("insert");
    let updated = tx
        .execute(
            "update big set n = n + 1, amount = amount * 3,
                 note = case when id % 5 = 0 then null else note end",
            &[],
        )
        .await
        .expect("update");
    tx.commit().await.expect("commit");
    assert_eq!((inserted, updated), (ROWS as u64, ROWS as u64));
    let truth: Truth = BTreeMap::from([(
        xid,
        (1..=ROWS)
            .flat_map(|id| {
                [
                    change("big", id.to_string(), "INSERT"),
                    change("big", id.to_string(), "UPDATE"),
                ]
            })
            .collect(),
    )]);
    let changes = 2 * i64::from(ROWS);

    let target = current_lsn(&s).await;
    let spill_dir = s.dir.path().join("spill");
    let spill_arg = spill_dir.display().to_string();
    let flags = [
        "--memory-limit-mb",
        "1",
        "--spill-dir",
        &spill_arg,
        "--batch-events",
        "1000",
    ];
    let store = pgtrail_store::open(&store_url(&s))
        .await
        .expect("store opens");

    // Kill the consumer each time it has stored another part of the
    // transaction; small batches make more boundaries inside it.
    let mut kills = 0;
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while kills < 3 && Instant::now() < deadline {
        let mut consumer = capture(&s, &flags);
        loop {
            let now = stored(store.as_ref()).await;
            if now >= changes || now >= last + changes / 5 {
                break;
            }
            if consumer.0.try_wait().expect("try_wait").is_some() {
                // Exited (e.g. the slot was still held by the killed one's walsender): start again.
                tokio::time::sleep(Duration::from_millis(200)).await;
                consumer = capture(&s, &flags);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(consumer); // SIGKILL
        last = stored(store.as_ref()).await;
        if last >= changes {
            break;
        }
        kills += 1;
        assert!(
            !confirmed(&s, &target).await,
            "a partly stored transaction ({last} events) was confirmed"
        );
    }
    assert!(kills >= 1, "killed mid-transaction at least once");

    // One last run, until the slot confirmed the transaction.
    let mut consumer = capture(&s, &flags);
    while !confirmed(&s, &target).await {
        assert!(Instant::now() < deadline, "capture did not catch up");
        if consumer.0.try_wait().expect("try_wait").is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            consumer = capture(&s, &flags);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(consumer);
    assert_eq!(spill_files(&spill_dir), 0, "leftover spill files removed");

    let events = assert_trail_is_the_truth(store.as_ref(), &truth).await;
    let partial: Vec<_> = events.iter().filter(|e| !e.partial.is_empty()).collect();
    assert!(
        partial.is_empty(),
        "unchanged TOAST left unfilled: {:?}",
        partial.first()
    );
    assert_replay_equals_table(&s, &events, "big", "id::text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_setup_status_and_drop() {
    let s = Service::new("cdc_cli", "create table t (id int primary key, v text);").await;
    let run = |args: &[&str]| pgtrail_capture(&s, args).output().expect("pgtrail runs");
    let out = run(&["--status", "--format", "table"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not exist"),
        "{out:?}"
    );

    let out = run(&[
        "--setup",
        "--actor",
        "--tables",
        "public.t",
        "--baseline",
        "--no-stream",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("covers 1 table(s): public.t") && stderr.contains("baseline: 0 row(s)"),
        "{stderr}"
    );

    s.client
        .batch_execute("insert into t values (1, 'a')")
        .await
        .expect("insert");
    let out = run(&["--status", "--format", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["exists"], true, "{status}");
    assert!(
        status["lag_bytes"].as_i64().is_some_and(|b| b > 0),
        "{status}"
    );

    let out = run(&["--drop"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("removed replication slot"),
        "{stderr}"
    );
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--setup"),
        "a dropped slot is reported with the fix: {stderr}"
    );
}
