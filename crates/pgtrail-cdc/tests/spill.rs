//! Huge transactions with a small memory budget (1 MiB): spilled to disk,
//! read back at commit, stored in several batches — and still exactly the
//! committed changes, streamed (protocol 2 past `logical_decoding_work_mem`)
//! or not, and after rollbacks. Kill -9 mid-transaction, which runs the
//! `pgtrail` binary, is in the binary's tests (crates/pgtrail/tests/kill.rs).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind};
use pgtrail_store::Store;
use serde_json::{json, Value};

use crate::common::*;

const SCHEMA: &str = "create table big (id int primary key, n int not null, amount numeric(38,10), note text, doc text);
     alter table big alter column doc set storage external;";

/// Rows `from..=to` of `big`: NULLs, exact numerics, and every 2000th row
/// with a 20 KB TOASTed `doc`.
fn insert_rows(from: i32, to: i32) -> String {
    format!(
        "insert into big select g, g, g * 1.0000000001,
             case when g % 7 = 0 then null else 'note ' || g end,
             case when g % 2000 = 0 then repeat(md5(g::text), 640) end
         from generate_series({from}, {to}) g;"
    )
}

/// `rows` inserts then as many updates (leaving the TOASTed `doc`
/// unchanged), in one transaction.
fn huge_transaction(rows: i32) -> String {
    format!(
        "begin;
         {}
         update big set n = n + 1, amount = amount * 3,
             note = case when id % 5 = 0 then null else note end;
         commit;",
        insert_rows(1, rows)
    )
}

const MEMORY_LIMIT: usize = 1024 * 1024;

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

/// Counts the most spill files seen at once under `dir` until stopped.
struct SpillWatch {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SpillWatch {
    fn start(dir: PathBuf) -> SpillWatch {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (most.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !s.load(Ordering::Relaxed) {
                m.fetch_max(spill_files(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SpillWatch { most, stop }
    }

    fn most(&self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.most.load(Ordering::Relaxed)
    }
}

/// The number of events the store holds (its chain head's seq).
async fn stored(store: &dyn Store) -> i64 {
    store.head().await.expect("head").map_or(0, |head| head.seq)
}

/// Waits until the store holds `count` events (a replay after a reconnect
/// appends some twice, so the consumer's own count may run ahead).
async fn wait_until_stored(store: &dyn Store, count: i64) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while stored(store).await < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events stored",
            stored(store).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The trail holds each committed change once, and replaying it row by row
/// gives `big` exactly as the table holds it.
async fn assert_trail_equals_table(db: &TestDb, store: &dyn Store) -> anyhow::Result<Vec<Event>> {
    let events: Vec<Event> = all_events(store)
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::RowChange)
        .collect();
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "an event was stored twice");
    let positions: HashSet<_> = events.iter().map(|e| (e.lsn.clone(), e.tx_seq)).collect();
    assert_eq!(positions.len(), events.len(), "a change was stored twice");
    let partial: Vec<_> = events.iter().filter(|e| !e.partial.is_empty()).collect();
    assert!(
        partial.is_empty(),
        "unchanged TOAST left unfilled: {:?}",
        partial.first()
    );

    let mut replayed: BTreeMap<i64, Value> = BTreeMap::new();
    for e in &events {
        let pk = e.pk.as_ref().expect("a key")["id"]
            .as_str()
            .expect("text key")
            .parse()?;
        match e.operation.as_deref() {
            Some("INSERT") | Some("UPDATE") => {
                replayed.insert(pk, Value::Object(e.new.clone().expect("new image")));
            }
            Some("DELETE") => {
                replayed.remove(&pk);
            }
            other => panic!("unexpected operation {other:?}"),
        }
    }
    let rows = db
        .client
        .query(
            "select id, n, amount::text, note, doc from big order by id",
            &[],
        )
        .await?;
    let table: BTreeMap<i64, Value> = rows
        .iter()
        .map(|row| {
            let id: i32 = row.get(0);
            let n: i32 = row.get(1);
            let amount: Option<String> = row.get(2);
            let note: Option<String> = row.get(3);
            let doc: Option<String> = row.get(4);
            (
                i64::from(id),
                // numeric as a JSON number with exactly its digits.
                json!({"id": id, "n": n, "note": note, "doc": doc,
                       "amount": amount.map(|a| serde_json::from_str::<Value>(&a).expect("a number"))}),
            )
        })
        .collect();
    assert_eq!(
        replayed.len(),
        table.len(),
        "rows in the trail vs the table"
    );
    for (id, row) in &table {
        assert_eq!(replayed.get(id), Some(row), "row {id}");
    }
    let report = pgtrail_store::verify(store, None).await?;
    assert!(report.ok(), "the chain verifies: {report:?}");
    Ok(events)
}

/// A database set up for capture whose server decodes with
/// `logical_decoding_work_mem` (`64kB`: large transactions are streamed;
/// `1GB`: sent whole after commit), its store, and capture options with the
/// small budget, spilling into `spill_dir`.
struct Spilling {
    db: TestDb,
    store: Arc<dyn Store>,
    spill_dir: PathBuf,
    options: pgtrail_cdc::consumer::ReplicationOptions,
}

impl Spilling {
    async fn set_up(test: &str, decoding_work_mem: &str) -> anyhow::Result<Spilling> {
        let db = TestDb::with_settings(
            test,
            SCHEMA,
            &[("logical_decoding_work_mem", decoding_work_mem)],
        )
        .await?;
        db.setup(&db.setup_options()).await?;
        let store = db.store().await;
        let spill_dir = db.dir.path().join("spill");
        let mut options = db.capture_options();
        options.memory_limit = MEMORY_LIMIT;
        options.spill_dir = spill_dir.clone();
        Ok(Spilling {
            db,
            store,
            spill_dir,
            options,
        })
    }
}

async fn huge_transaction_is_captured_exactly(
    test: &str,
    decoding_work_mem: &str,
) -> anyhow::Result<()> {
    let Spilling {
        db,
        store,
        spill_dir,
        options,
    } = Spilling::set_up(test, decoding_work_mem).await?;
    let watch = SpillWatch::start(spill_dir.clone());
    let running = Running::start(&db, store.clone(), options);

    db.client.batch_execute(&huge_transaction(100_000)).await?;
    wait_until_stored(store.as_ref(), 200_000).await;
    running.stop().await?;
    assert!(watch.most() >= 1, "the transaction was spilled");
    assert_eq!(spill_files(&spill_dir), 0, "spill files removed after use");

    let events = assert_trail_equals_table(&db, store.as_ref()).await?;
    assert_eq!(events.len(), 200_000);
    // One transaction, in order, its ids and positions those of one commit.
    let seqs: Vec<i64> = events.iter().map(|e| e.tx_seq.expect("tx_seq")).collect();
    assert_eq!(seqs, (0..200_000).collect::<Vec<_>>());
    assert!(events.iter().all(|e| e.lsn == events[0].lsn));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.operation.as_deref() == Some("UPDATE"))
            .count(),
        100_000
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_streamed_transaction_is_spilled_and_captured_exactly() -> anyhow::Result<()> {
    // Past 64 kB the server streams the transaction while it is in progress.
    huge_transaction_is_captured_exactly("cdc_spill_stream", "64kB").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_unstreamed_transaction_is_spilled_and_captured_exactly() -> anyhow::Result<()> {
    // The server keeps it whole and sends it after its commit.
    huge_transaction_is_captured_exactly("cdc_spill_whole", "1GB").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_streamed_work_leaves_no_events_and_no_files() -> anyhow::Result<()> {
    let Spilling {
        db,
        store,
        spill_dir,
        options,
    } = Spilling::set_up("cdc_spill_abort", "64kB").await?;
    let watch = SpillWatch::start(spill_dir.clone());
    let running = Running::start(&db, store.clone(), options);

    // A whole transaction rolled back after it was streamed and spilled.
    db.client
        .batch_execute(&format!("begin; {} rollback;", insert_rows(1, 60_000)))
        .await?;
    // A rolled-back savepoint inside a committed one.
    db.client
        .batch_execute(&format!(
            "begin; {} savepoint s; {} rollback to savepoint s; {} commit;",
            insert_rows(1, 20_000),
            insert_rows(20_001, 80_000),
            insert_rows(80_001, 80_010)
        ))
        .await?;
    db.client
        .batch_execute(&insert_rows(90_000, 90_000))
        .await?;
    // The store's count, not the consumer's: after a reconnect (this
    // machine under load) it appends some events again, which the store
    // skips but the consumer counts.
    wait_until_stored(store.as_ref(), 20_011).await;
    running.stop().await?;
    assert!(watch.most() >= 1, "the transactions were spilled");
    assert_eq!(spill_files(&spill_dir), 0, "no spill file left behind");

    let events = assert_trail_equals_table(&db, store.as_ref()).await?;
    assert_eq!(events.len(), 20_011, "only committed work");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_that_cannot_be_written_stops_capture_and_loses_nothing() -> anyhow::Result<()> {
    let Spilling {
        db,
        store,
        spill_dir,
        options,
    } = Spilling::set_up("cdc_spill_fail", "64kB").await?;

    // Something small first, stored and confirmed.
    let running = Running::start(&db, store.clone(), options.clone());
    db.client.batch_execute(&insert_rows(1, 10)).await?;
    wait_until_stored(store.as_ref(), 10).await;
    // The consumer's directory becomes a file: no spill file can be created.
    let own_dir = std::fs::read_dir(&spill_dir)?
        .next()
        .expect("the consumer's spill directory")?
        .path();
    std::fs::remove_dir(&own_dir)?;
    std::fs::write(&own_dir, "in the way")?;

    db.client
        .batch_execute(&format!("begin; {} commit;", insert_rows(11, 30_000)))
        .await?;
    let end: String = db
        .client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let outcome = tokio::time::timeout(Duration::from_secs(120), running.task).await??;
    let error = match outcome.expect_err("capture stops") {
        pgtrail_pipeline::PipelineError::Cdc(error) => error,
        other => panic!("not capture's own failure: {other:?}"),
    };
    assert!(
        matches!(error.retry_policy(), pgtrail_cdc::RetryPolicy::Stop),
        "{error:?}"
    );
    let text = pgtrail_pipeline::retry::error_chain(&error);
    assert!(
        text.contains("spill") && text.contains(&own_dir.display().to_string()),
        "{text}"
    );
    assert_eq!(
        stored(store.as_ref()).await,
        10,
        "none of the transaction stored"
    );
    let confirmed_past: bool = db
        .client
        .query_one(
            "select confirmed_flush_lsn >= $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
            &[&end, &db.slot],
        )
        .await?
        .get(0);
    assert!(!confirmed_past, "nothing confirmed past what is stored");

    // Room again: the next start, once the old walsender let go of the
    // slot, captures the transaction exactly.
    std::fs::remove_file(&own_dir)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let active: bool = db
            .client
            .query_one(
                "select active from pg_replication_slots where slot_name = $1",
                &[&db.slot],
            )
            .await?
            .get(0);
        if !active {
            break;
        }
        assert!(Instant::now() < deadline, "the slot stays in use");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = Running::start(&db, store.clone(), options);
    wait_until_stored(store.as_ref(), 30_000).await;
    running.stop().await?;
    let events = assert_trail_equals_table(&db, store.as_ref()).await?;
    assert_eq!(events.len(), 30_000);
    Ok(())
}
