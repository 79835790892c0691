//! The on-disk spool against real failures: a torn tail, a flipped byte, a
//! full spool under both policies, a directory others may write, a crash
//! between the store's append and the spool's removal, a Postgres store
//! that goes away and comes back, and a drainer killed with SIGKILL.
//! Every test checks what an operator would: each pushed event is in the
//! store exactly once, in push order, and `verify` passes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::{canonical_json, Event, Kind, Source};
use pgtrail_pipeline::spool::{Pushed, Spool, SpoolError, SpoolOptions, WhenFull};
use pgtrail_pipeline::Backoff;
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::sqlite::SqliteStore;
use pgtrail_store::{verify, AppendReceipt, Store, StoreError};
use pgtrail_testkit::{Cluster, ClusterOptions};
use tokio::sync::watch;

/// A proxy-like statement event; numbers kept as captured (`12.500`).
fn statement(i: usize) -> Event {
    let mut e = Event::new(Source::Proxy, Kind::Statement);
    e.db_user = Some("app".into());
    e.sql = Some(format!(
        "update accounts set balance = 12.500 where id = {i}"
    ));
    e.params = Some(vec![
        serde_json::from_str("12.500").expect("json"),
        serde_json::Value::from(i),
    ]);
    e.context =
        Some(serde_json::from_str(r#"{"amount": 1.10, "deep": {"x": [1e3]}}"#).expect("json"));
    e
}

fn batches(count: usize, size: usize) -> Vec<Vec<Event>> {
    (0..count)
        .map(|b| (0..size).map(|i| statement(b * size + i)).collect())
        .collect()
}

fn options(max_bytes: u64, when_full: WhenFull) -> SpoolOptions {
    SpoolOptions {
        max_bytes,
        segment_bytes: 4096,
        when_full,
        drain_linger: Duration::ZERO,
    }
}

fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(20), Duration::from_millis(200))
}

fn private_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

async fn sqlite(dir: &Path) -> SqliteStore {
    SqliteStore::open(&dir.join("store.db"))
        .await
        .expect("sqlite store")
}

async fn drain_all(spool: &Spool, store: &dyn Store) -> pgtrail_pipeline::spool::Drained {
    let (_tx, mut stop) = watch::channel(false);
    spool
        .drain(store, &mut backoff(), &mut stop)
        .await
        .expect("drain")
}

/// Every event of the store, in chain order.
async fn chain(store: &dyn Store) -> Vec<Event> {
    store.scan(0, 1_000_000).await.expect("scan")
}

/// The store holds `pushed`, each event once, in push order, byte for byte
/// as pushed, and verify finds nothing wrong.
async fn assert_stored_in_order(store: &dyn Store, pushed: &[Event]) {
    let stored = chain(store).await;
    let stored: Vec<_> = stored
        .into_iter()
        .filter(|e| e.kind != Kind::Alarm)
        .collect();
    assert_eq!(stored.len(), pushed.len(), "each event exactly once");
    for (s, p) in stored.iter().zip(pushed) {
        assert_eq!(s.id, p.id, "push order");
        assert_eq!(
            String::from_utf8(canonical_json(&s.clone().unsealed())),
            String::from_utf8(canonical_json(p)),
            "stored as captured"
        );
    }
    let report = verify(store, None).await.expect("verify runs");
    assert!(report.problems.is_empty(), "verify: {:?}", report.problems);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn pushed_batches_drain_in_order_exactly_once() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, options(1 << 20, WhenFull::FailClosed)).expect("open");
    let all = batches(30, 7);
    for batch in &all {
        assert_eq!(spool.push(batch).await.expect("push"), Pushed::Spooled);
    }
    assert!(segment_files(&dir).len() > 1, "several segments");
    assert_eq!(spool.waiting().batches, 30);
    // Reopened, the same batches wait.
    drop(spool);
    let spool = Spool::open(&dir, options(1 << 20, WhenFull::FailClosed)).expect("reopen");
    assert_eq!(spool.waiting().batches, 30);
    let store = sqlite(tmp.path()).await;
    let drained = drain_all(&spool, &store).await;
    assert_eq!((drained.batches, drained.events), (30, 210));
    assert!(spool.is_empty());
    assert!(
        segment_files(&dir).is_empty(),
        "drained segments are deleted"
    );
    assert_stored_in_order(&store, &all.concat()).await;
    // Pushes after an empty spool start a new segment and drain too.
    let more = batches(2, 3);
    for batch in &more {
        spool.push(batch).await.expect("push");
    }
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &[all.concat(), more.concat()].concat()).await;
}

/// Many sessions pushing at once (tasks and blocking threads, as the proxy's
/// sessions will): their batches share fsyncs, each pusher's batches keep
/// its order, and every acknowledged batch drains exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_that_arrive_together_share_a_commit_and_keep_each_pushers_order() {
    const TASKS: usize = 16;
    const THREADS: usize = 2;
    const PUSHES: usize = 40;
    let tmp = private_dir();
    let spool = Spool::open(
        tmp.path().join("spool"),
        options(1 << 30, WhenFull::FailClosed),
    )
    .expect("open");
    let mine = |pusher: usize| -> Vec<Event> {
        (0..PUSHES)
            .map(|n| {
                let mut e = statement(n);
                e.session_id = Some(format!("pusher {pusher}"));
                e
            })
            .collect()
    };
    let mut tasks = tokio::task::JoinSet::new();
    for pusher in 0..TASKS {
        let (spool, events) = (spool.clone(), mine(pusher));
        tasks.spawn(async move {
            for event in events {
                let pushed = spool.push(std::slice::from_ref(&event)).await;
                assert_eq!(pushed.expect("push"), Pushed::Spooled);
            }
        });
    }
    let threads: Vec<_> = (TASKS..TASKS + THREADS)
        .map(|pusher| {
            let (spool, events) = (spool.clone(), mine(pusher));
            std::thread::spawn(move || {
                for event in events {
                    let pushed = spool.push_blocking(std::slice::from_ref(&event));
                    assert_eq!(pushed.expect("push"), Pushed::Spooled);
                }
            })
        })
        .collect();
    while let Some(done) = tasks.join_next().await {
        done.expect("pusher task");
    }
    for thread in threads {
        thread.join().expect("pusher thread");
    }
    let pushes = ((TASKS + THREADS) * PUSHES) as u64;
    assert_eq!(spool.waiting().batches, pushes);
    assert!(
        spool.commits() < pushes,
        "{} commits for {pushes} pushes: none shared an fsync",
        spool.commits()
    );

    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    let stored = chain(&store).await;
    assert_eq!(stored.len() as u64, pushes, "each event exactly once");
    for pusher in 0..TASKS + THREADS {
        let session = format!("pusher {pusher}");
        let order: Vec<_> = stored
            .iter()
            .filter(|e| e.session_id.as_deref() == Some(session.as_str()))
            .map(|e| e.sql.clone())
            .collect();
        let pushed: Vec<_> = mine(pusher).iter().map(|e| e.sql.clone()).collect();
        assert_eq!(order.len(), PUSHES, "{session}: all of its events");
        assert_eq!(order, pushed, "{session}: in the order it pushed them");
    }
    let report = verify(&store, None).await.expect("verify runs");
    assert!(report.problems.is_empty(), "verify: {:?}", report.problems);
}

#[tokio::test]
async fn the_directory_and_files_are_private_and_one_process_writes_them() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    spool.push(&batches(1, 1)[0]).await.expect("push");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for file in std::fs::read_dir(&dir).expect("list") {
        let path = file.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // A second opener (another process, or this one) is refused.
    match Spool::open(&dir, SpoolOptions::default()) {
        Err(SpoolError::Locked { .. }) => {}
        other => panic!("second open: {other:?}"),
    }
    drop(spool);
    // A directory others may write (or read) is refused, not fixed.
    for loose in [0o770, 0o707, 0o755] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(loose)).expect("chmod");
        let error = Spool::open(&dir, SpoolOptions::default()).expect_err("refused");
        assert!(
            matches!(error, SpoolError::NotPrivate { .. }),
            "{loose:o}: {error}"
        );
        assert!(error.to_string().contains("chmod go-rwx"), "{error}");
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // A segment someone made group-writable is refused too.
    let segment = segment_files(&dir).remove(0);
    std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    assert!(matches!(
        Spool::open(&dir, SpoolOptions::default()),
        Err(SpoolError::NotPrivate { .. })
    ));
}

#[tokio::test]
async fn a_torn_tail_is_cut_off_and_everything_acknowledged_drains() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    let all = batches(3, 4);
    for batch in &all {
        spool.push(batch).await.expect("push");
    }
    drop(spool);
    // A crash in the middle of writing a fourth record: its first bytes only.
    let segment = segment_files(&dir).remove(0);
    let whole = std::fs::read(&segment).expect("read");
    let first_record = &whole[8..];
    for cut in [3usize, 15, 40] {
        let mut torn = whole.clone();
        torn.extend_from_slice(&first_record[..cut]);
        std::fs::write(&segment, &torn).expect("write torn");
        let spool = Spool::open(&dir, SpoolOptions::default()).expect("torn tail is repaired");
        assert_eq!(spool.waiting().batches, 3, "cut {cut}");
        assert_eq!(
            std::fs::read(&segment).expect("read"),
            whole,
            "cut off exactly"
        );
    }
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &all.concat()).await;
}

#[tokio::test]
async fn a_flipped_byte_mid_file_is_an_error_naming_file_and_offset() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    let all = batches(3, 4);
    for batch in &all {
        spool.push(batch).await.expect("push");
    }
    drop(spool);
    let segment = segment_files(&dir).remove(0);
    let whole = std::fs::read(&segment).expect("read");
    // Records are `[len][!len][check: 8][payload]` after an 8-byte magic.
    let end_of = |at: usize| {
        let len = u32::from_le_bytes(whole[at..at + 4].try_into().expect("4 bytes"));
        at + 16 + len as usize
    };
    let second = end_of(8);
    let third = end_of(second);
    // In the second record's length, then in its payload; the last record
    // too (a whole record that does not check is damage, not a torn write).
    for at in [second + 1, second + 100, whole.len() - 5] {
        let mut bad = whole.clone();
        bad[at] ^= 0x20;
        std::fs::write(&segment, &bad).expect("write");
        let error = Spool::open(&dir, SpoolOptions::default()).expect_err("damage is an error");
        let SpoolError::Corrupt { path, offset, .. } = &error else {
            panic!("flip at {at}: {error}");
        };
        assert_eq!(path, &segment);
        let expected = if at < third { second } else { third };
        assert_eq!(*offset, expected as u64, "flip at {at}");
        let text = error.to_string();
        assert!(
            text.contains(&segment.display().to_string())
                && text.contains(&format!("offset {expected}")),
            "{text}"
        );
    }
    // Damage made while the spool is open stops the drain at that record,
    // after the records before it.
    std::fs::write(&segment, &whole).expect("restore");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    let mut bad = whole.clone();
    bad[second + 100] ^= 0x20;
    std::fs::write(&segment, &bad).expect("write");
    let store = sqlite(tmp.path()).await;
    let (_tx, mut stop) = watch::channel(false);
    let error = spool
        .drain(&store, &mut backoff(), &mut stop)
        .await
        .expect_err("stops at the damage");
    assert!(
        matches!(error, SpoolError::Corrupt { offset, .. } if offset == second as u64),
        "{error}"
    );
    assert_stored_in_order(&store, &all[0]).await;
    assert_eq!(
        spool.waiting().batches,
        2,
        "the damaged batch and the one after it wait"
    );
}

/// A fail-closed spool in `tmp` that is full after a few of the 20
/// batches returned with it.
fn small_closed_spool(tmp: &tempfile::TempDir) -> (Spool, Vec<Vec<Event>>) {
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, options(8_000, WhenFull::FailClosed)).expect("open");
    (spool, batches(20, 5))
}

#[tokio::test]
async fn a_full_spool_fails_closed() {
    let tmp = private_dir();
    let (spool, all) = small_closed_spool(&tmp);
    let mut spooled = Vec::new();
    let error = loop {
        let batch = &all[spooled.len()];
        match spool.push(batch).await {
            Ok(Pushed::Spooled) => spooled.push(batch.clone()),
            Ok(other) => panic!("fail_closed never drops: {other:?}"),
            Err(error) => break error,
        }
    };
    assert!(matches!(error, SpoolError::Full { .. }), "{error}");
    assert!(error.to_string().contains("refusing new work"), "{error}");
    assert!(spool.waiting().disk_bytes <= 8_000);
    assert!(spooled.len() > 2);
    // Once drained, it takes batches again.
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    let after = &all[spooled.len()];
    spool.push(after).await.expect("room again");
    drain_all(&spool, &store).await;
    spooled.push(after.clone());
    assert_stored_in_order(&store, &spooled.concat()).await;
    assert!(chain(&store).await.iter().all(|e| e.kind != Kind::Alarm));
}

/// The proxy's pushes take their events (no copy for the kept batch): a
/// spooled batch leaves the caller's vector empty and reaches the store as
/// pushed; a batch a full spool refuses comes back whole, to be tried again.
#[tokio::test]
async fn taking_pushes_store_the_events_and_hand_back_a_refused_batch() {
    let tmp = private_dir();
    let (spool, all) = small_closed_spool(&tmp);
    let mut spooled = Vec::new();
    let (refused, error) = loop {
        let mut batch = all[spooled.len()].clone();
        let pushed = if spooled.len() % 2 == 0 {
            spool.push_taking(&mut batch).await
        } else {
            spool.push_async_taking(&mut batch).await
        };
        match pushed {
            Ok(Pushed::Spooled) => {
                assert!(batch.is_empty(), "a spooled batch is taken");
                spooled.push(all[spooled.len()].clone());
            }
            Ok(other) => panic!("fail_closed never drops: {other:?}"),
            Err(error) => break (batch, error),
        }
    };
    assert!(matches!(error, SpoolError::Full { .. }), "{error}");
    assert!(spooled.len() > 2);
    assert_eq!(
        refused,
        all[spooled.len()],
        "the refused batch comes back whole"
    );
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    let mut again = refused;
    spool
        .push_async_taking(&mut again)
        .await
        .expect("room again");
    assert!(again.is_empty());
    spooled.push(all[spooled.len()].clone());
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &spooled.concat()).await;
}

#[tokio::test]
async fn a_full_spool_fails_open_and_the_store_learns_what_was_dropped() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let all = batches(20, 5);
    let spool = Spool::open(&dir, options(8_000, WhenFull::FailOpen)).expect("open");
    let (mut spooled, mut dropped) = (Vec::new(), 0);
    let before = Utc::now();
    for batch in &all {
        match spool.push(batch).await.expect("fail_open never refuses") {
            Pushed::Spooled => spooled.push(batch.clone()),
            Pushed::Dropped { events } => dropped += events,
        }
    }
    assert!(dropped > 0 && !spooled.is_empty());
    assert_eq!(spool.waiting().dropped_events, dropped);
    // The count survives a restart.
    drop(spool);
    let spool = Spool::open(&dir, options(8_000, WhenFull::FailOpen)).expect("reopen");
    assert_eq!(spool.waiting().dropped_events, dropped);
    let store = sqlite(tmp.path()).await;
    let drained = drain_all(&spool, &store).await;
    assert_eq!(drained.alarms, 1);
    assert_eq!(spool.waiting().dropped_events, 0);
    assert_stored_in_order(&store, &spooled.concat()).await;
    let stored = chain(&store).await;
    let alarm = stored.last().expect("an alarm last");
    assert_eq!(alarm.kind, Kind::Alarm);
    assert_eq!(
        alarm.operation.as_deref(),
        Some(pgtrail_core::alarm::SPOOL_DROPPED)
    );
    let context = alarm.context.as_ref().expect("context");
    assert_eq!(context["dropped_events"], serde_json::Value::from(dropped));
    let first: DateTime<Utc> = context["first_dropped_at"]
        .as_str()
        .expect("text")
        .parse()
        .expect("time");
    assert!(first >= before && first <= Utc::now());
    assert!(
        context["alarm"]
            .as_str()
            .expect("text")
            .contains(&format!("{dropped} events")),
        "{context:?}"
    );
    // Reported once: a second drain adds nothing.
    drop(spool);
    let spool = Spool::open(&dir, options(8_000, WhenFull::FailOpen)).expect("reopen");
    assert_eq!(drain_all(&spool, &store).await.alarms, 0);
    assert_eq!(chain(&store).await.len(), stored.len());
}

/// An append that succeeds and then reports a failure that will not
/// pass: what a crash right after the store's commit looks like to the
/// spool (the batch is in the store but not yet removed from the spool).
struct CommitsThenFails;

#[async_trait]
impl AppendHook for CommitsThenFails {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> Result<AppendReceipt, StoreError> {
        inner.append(events).await?;
        Err(StoreError::Invalid(
            "the process died after the commit".into(),
        ))
    }
}

#[tokio::test]
async fn a_crash_between_append_and_removal_replays_harmlessly() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let all = batches(4, 3);
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    for batch in &all {
        spool.push(batch).await.expect("push");
    }
    let store: Arc<dyn Store> = Arc::new(sqlite(tmp.path()).await);
    let (_tx, mut stop) = watch::channel(false);
    let crashing = Hooked::new(Arc::clone(&store), CommitsThenFails);
    let error = spool
        .drain(&crashing, &mut backoff(), &mut stop)
        .await
        .expect_err("the failure ends the drain");
    assert!(matches!(error, SpoolError::Store(_)), "{error}");
    assert_eq!(
        spool.waiting().batches,
        4,
        "the batches appended together are still spooled"
    );
    assert_eq!(chain(store.as_ref()).await.len(), 12, "and already stored");
    // After a restart they are appended again: the store skips them.
    drop(spool);
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("reopen");
    drain_all(&spool, store.as_ref()).await;
    assert_stored_in_order(store.as_ref(), &all.concat()).await;
}

/// Records how many events each of the store's appends took.
struct AppendSizes(std::sync::Mutex<Vec<usize>>);

#[async_trait]
impl AppendHook for AppendSizes {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> Result<AppendReceipt, StoreError> {
        self.0.lock().expect("sizes").push(events.len());
        inner.append(events).await
    }
}

/// The proxy pushes a statement or two per batch: draining them one append
/// (one store commit) each would take a few hundred a second. Consecutive
/// batches go to the store together, in order, each still exactly once.
#[tokio::test]
async fn small_batches_drain_together_in_order() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    let all = batches(1_000, 1);
    for batch in &all {
        spool.push_async(batch).await.expect("push");
    }
    let store: Arc<dyn Store> = Arc::new(sqlite(tmp.path()).await);
    let counting = Hooked::new(Arc::clone(&store), AppendSizes(Default::default()));
    let drained = drain_all(&spool, &counting).await;
    assert_eq!((drained.batches, drained.events), (1_000, 1_000));
    let appends = counting.hook().0.lock().expect("sizes").len();
    assert!(appends <= 10, "{appends} appends for 1,000 batches");
    assert!(spool.is_empty());
    assert_stored_in_order(store.as_ref(), &all.concat()).await;
}

/// A cluster that can be stopped and started again on the same port.
struct StoreCluster {
    dir: PathBuf,
    port: u16,
    cluster: Option<Cluster>,
}

impl StoreCluster {
    fn start() -> StoreCluster {
        let dir = std::env::temp_dir().join(format!("pgtrail-test-spool-{}", uuid::Uuid::now_v7()));
        let cluster = Cluster::start_with(ClusterOptions {
            data_dir: Some(dir.clone()),
            ..ClusterOptions::default()
        })
        .expect("cluster");
        StoreCluster {
            dir,
            port: cluster.port(),
            cluster: Some(cluster),
        }
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

    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("running")
    }
}

impl Drop for StoreCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_that_goes_away_gets_everything_in_order_when_it_is_back() {
    let tmp = private_dir();
    let mut pg = StoreCluster::start();
    let url = pg
        .cluster()
        .create_database("spool")
        .await
        .expect("database");
    let store = Arc::new(PostgresStore::connect(&url).await.expect("store"));
    let spool = Spool::open(tmp.path().join("spool"), SpoolOptions::default()).expect("open");
    let (stop_tx, mut stop) = watch::channel(false);
    let drainer = {
        let (spool, store) = (spool.clone(), Arc::clone(&store));
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
            spool.run(store.as_ref(), &mut backoff, &mut stop).await
        })
    };
    let all = batches(40, 10);
    for batch in &all[..10] {
        spool.push(batch).await.expect("push");
    }
    wait_until("the first batches drain", || spool.is_empty()).await;

    pg.stop();
    for batch in &all[10..] {
        // Pushes are acknowledged while the store is down.
        assert_eq!(spool.push(batch).await.expect("push"), Pushed::Spooled);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        spool.waiting().batches >= 29,
        "they wait: {:?}",
        spool.waiting()
    );

    pg.start_again();
    wait_until("the spool drains", || spool.is_empty()).await;
    stop_tx.send(true).expect("stop");
    let drained = drainer.await.expect("join").expect("drainer");
    assert_eq!(drained.events, 400);
    assert_stored_in_order(store.as_ref(), &all.concat()).await;
}

async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CHILD_DIR: &str = "PGTRAIL_TEST_SPOOL_CHILD_DIR";
const CHILD_STORE: &str = "PGTRAIL_TEST_SPOOL_CHILD_STORE";

/// Not a test by itself: the drainer that `a_drainer_killed_mid_drain_*`
/// runs in a child process (this binary again) and kills. Without its
/// environment it does nothing.
#[tokio::test]
async fn spool_drainer_child() {
    let (Ok(dir), Ok(url)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_STORE)) else {
        return;
    };
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("child: open");
    let store = PostgresStore::connect(&url).await.expect("child: store");
    drain_all(&spool, &store).await;
}

fn start_child(dir: &Path, url: &str) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["spool_drainer_child", "--exact", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_STORE, url)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the drainer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drainer_killed_mid_drain_loses_and_duplicates_nothing() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let pg = StoreCluster::start();
    let url = pg
        .cluster()
        .create_database("spool")
        .await
        .expect("database");
    let store = PostgresStore::connect(&url).await.expect("store");
    let all = batches(300, 20);
    {
        let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
        for batch in &all {
            spool.push(batch).await.expect("push");
        }
    }
    let total = all.len() * all[0].len();
    let stored = || async {
        store
            .head()
            .await
            .expect("head")
            .map_or(0, |h| h.seq as usize)
    };
    // Killed three times at growing counts, then left to finish.
    let mut kills = 0;
    for target in [total / 5, total / 2, 4 * total / 5] {
        let mut child = start_child(&dir, &url);
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored().await < target {
            assert!(Instant::now() < deadline, "the drainer makes progress");
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("SIGKILL");
            kills += 1;
        }
        child.wait().expect("reap");
    }
    assert!(kills >= 2, "killed while draining ({kills} kills)");
    let n = stored().await;
    assert!(n < total, "not finished before the last restart ({n})");
    let mut child = start_child(&dir, &url);
    let status = child.wait().expect("wait");
    assert!(status.success(), "the last drain finishes");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    assert!(spool.is_empty());
    assert_stored_in_order(&store, &all.concat()).await;
}

/// Rewrites the first record of `segment` with `edit` applied to its
/// payload and a recomputed header: what someone with write access to the
/// spool directory (the pgtrail user, root) can do.
fn forge_first_record(segment: &Path, edit: impl Fn(&str) -> String) {
    use sha2::{Digest, Sha256};
    let whole = std::fs::read(segment).expect("read");
    let len = u32::from_le_bytes(whole[8..12].try_into().expect("4 bytes")) as usize;
    let payload = std::str::from_utf8(&whole[24..24 + len]).expect("JSON");
    let forged = edit(payload).into_bytes();
    let forged_len = (forged.len() as u32).to_le_bytes();
    let mut check = Sha256::new();
    check.update(forged_len);
    check.update(&forged);
    let mut out = whole[..8].to_vec();
    out.extend_from_slice(&forged_len);
    out.extend_from_slice(&(!(forged.len() as u32)).to_le_bytes());
    out.extend_from_slice(&check.finalize()[..8]);
    out.extend_from_slice(&forged);
    out.extend_from_slice(&whole[24 + len..]);
    std::fs::write(segment, out).expect("write");
}

/// Pushes two batches of two events to a spool in `dir`, then forges the
/// first record (`db_user` "nobody", its check recomputed) while the spool
/// is open, or (`restart`) after it was closed, and opens it again.
async fn spool_with_a_forged_record(dir: &Path, restart: bool) -> (Spool, Vec<Event>) {
    let all = batches(2, 2);
    let spool = Spool::open(dir, SpoolOptions::default()).expect("open");
    for batch in &all {
        spool.push(batch).await.expect("push");
    }
    let spool = if restart {
        drop(spool);
        None
    } else {
        Some(spool)
    };
    let segment = segment_files(dir).remove(0);
    forge_first_record(&segment, |json| {
        json.replace(r#""db_user":"app""#, r#""db_user":"nobody""#)
    });
    let spool = spool.unwrap_or_else(|| {
        Spool::open(dir, SpoolOptions::default()).expect("a forged record opens")
    });
    (spool, all.concat())
}

#[tokio::test]
async fn whoever_can_write_the_spool_can_change_what_reaches_the_store() {
    let tmp = private_dir();
    // The check is not a signature: an edit with a recomputed check reads
    // as a good record, and the store seals what it is given. The spool is
    // as trusted as the host and the user pgtrail runs as.
    let (spool, _) = spool_with_a_forged_record(&tmp.path().join("spool"), true).await;
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    let stored = chain(&store).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0].db_user.as_deref(), Some("nobody"));
    assert!(verify(&store, None)
        .await
        .expect("verify")
        .problems
        .is_empty());
}

#[tokio::test]
async fn a_spool_directory_of_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        return; // Giving a directory away needs root.
    }
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    drop(Spool::open(&dir, SpoolOptions::default()).expect("open"));
    // Someone else's directory, however private, is not ours to write.
    std::os::unix::fs::chown(&dir, Some(65534), None).expect("chown");
    let error = Spool::open(&dir, SpoolOptions::default()).expect_err("refused");
    assert!(
        matches!(&error, SpoolError::NotPrivate { reason, .. } if reason.contains("uid 65534")),
        "{error}"
    );
}

#[tokio::test]
async fn an_async_push_returns_once_written_and_is_fsynced_soon_after() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, options(1 << 20, WhenFull::FailClosed)).expect("open");
    let all = batches(20, 3);
    for batch in &all {
        assert_eq!(
            spool.push_async(batch).await.expect("push"),
            Pushed::Spooled
        );
    }
    // Written: counted, and readable from the file by the drainer.
    assert_eq!(spool.waiting().batches, 20);
    // The syncer catches up on its own, within a bound, with no push
    // waiting for it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while spool.unsynced() > 0 {
        assert!(
            Instant::now() < deadline,
            "not fsync'd within 2 s: {} writes",
            spool.unsynced()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A durable push returns only once its write is covered by an fsync.
    let extra = batches(2, 1);
    spool.push(&extra[0]).await.expect("push");
    assert_eq!(spool.unsynced(), 0, "push waits for the fsync");
    spool.push_async(&extra[1]).await.expect("push");
    spool.sync().await.expect("sync");
    assert_eq!(spool.unsynced(), 0, "sync waits for the fsync");
    let mut pushed = all.concat();
    pushed.extend(extra.concat());
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &pushed).await;
}

#[tokio::test]
async fn async_and_durable_pushes_share_one_order_and_the_bound() {
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, options(16 * 1024, WhenFull::FailClosed)).expect("open");
    let mut pushed = Vec::new();
    let mut refused = false;
    for (n, batch) in batches(200, 2).iter().enumerate() {
        let outcome = if n % 2 == 0 {
            spool.push_async(batch).await
        } else {
            spool.push(batch).await
        };
        match outcome {
            Ok(Pushed::Spooled) => pushed.extend(batch.iter().cloned()),
            Err(SpoolError::Full { .. }) => {
                refused = true;
                break;
            }
            other => panic!("push {n}: {other:?}"),
        }
    }
    assert!(refused, "a 16 KB spool fills");
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &pushed).await;
}

const PUSHER_DIR: &str = "PGTRAIL_TEST_SPOOL_PUSHER_DIR";
const PUSHER_ASYNC: &str = "PGTRAIL_TEST_SPOOL_PUSHER_ASYNC";

/// Not a test by itself: the pusher `a_pusher_killed_mid_push_*` runs in a
/// child process and kills. It prints each batch's number once its push
/// returned (was acknowledged). Without its environment it does nothing.
#[tokio::test]
async fn spool_pusher_child() {
    let Ok(dir) = std::env::var(PUSHER_DIR) else {
        return;
    };
    let spool = Spool::open(&dir, options(1 << 30, WhenFull::FailClosed)).expect("child: open");
    let written_only = std::env::var(PUSHER_ASYNC).is_ok();
    for b in 0.. {
        let batch: Vec<_> = (0..5).map(|i| statement(b * 5 + i)).collect();
        if written_only {
            spool.push_async(&batch).await.expect("child: push");
        } else {
            spool.push(&batch).await.expect("child: push");
        }
        println!("{b}");
    }
}

#[tokio::test]
async fn a_pusher_killed_mid_push_keeps_every_acknowledged_batch() {
    killed_pusher(false).await;
}

/// An async push is acknowledged once written, before its fsync: a kill -9
/// of the process right after keeps it (the page cache is the kernel's).
#[tokio::test]
async fn an_async_pusher_killed_mid_push_keeps_every_acknowledged_batch() {
    killed_pusher(true).await;
}

async fn killed_pusher(written_only: bool) {
    use std::io::BufRead;
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let mut command = std::process::Command::new(std::env::current_exe().expect("test binary"));
    if written_only {
        command.env(PUSHER_ASYNC, "1");
    }
    let mut child = command
        .args(["spool_pusher_child", "--exact", "--nocapture"])
        .env(PUSHER_DIR, &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the pusher");
    let stdout = child.stdout.take().expect("stdout");
    let mut acknowledged = 0usize;
    let mut killed = false;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(n) = line.expect("read").trim().parse::<usize>() else {
            continue; // libtest's own lines
        };
        acknowledged = n + 1;
        if acknowledged == 150 && !killed {
            child.kill().expect("SIGKILL");
            killed = true;
        }
    }
    child.wait().expect("reap");
    assert!(killed && acknowledged >= 150);
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("reopen");
    let waiting = spool.waiting().batches as usize;
    // Every acknowledged batch is there; at most one more was written
    // before its acknowledgement got out.
    assert!(
        (acknowledged..=acknowledged + 1).contains(&waiting),
        "{acknowledged} acknowledged, {waiting} spooled"
    );
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    let stored = chain(&store).await;
    let expected: Vec<_> = (0..waiting * 5).map(|i| statement(i).sql.clone()).collect();
    let found: Vec<_> = stored.iter().map(|e| e.sql.clone()).collect();
    assert_eq!(found, expected, "every batch, in push order");
}

#[tokio::test]
async fn batches_past_the_kept_bound_drain_from_the_file_in_order() {
    use pgtrail_pipeline::spool::{DRAIN_EVENTS, KEPT_EVENTS};
    let tmp = private_dir();
    let dir = tmp.path().join("spool");
    let spool = Spool::open(&dir, SpoolOptions::default()).expect("open");
    // Kept, kept up to the bound, over it (the file only), kept again.
    let sizes = [DRAIN_EVENTS, KEPT_EVENTS - DRAIN_EVENTS - 5, 10, 5];
    let mut at = 0;
    let all: Vec<Vec<Event>> = sizes
        .iter()
        .map(|&n| {
            at += n;
            (at - n..at).map(statement).collect()
        })
        .collect();
    for batch in &all {
        spool.push_async(batch).await.expect("push");
    }
    let store: Arc<dyn Store> = Arc::new(sqlite(tmp.path()).await);
    let counting = Hooked::new(Arc::clone(&store), AppendSizes(Default::default()));
    let drained = drain_all(&spool, &counting).await;
    assert_eq!(drained.events as usize, at);
    assert_eq!(
        *counting.hook().0.lock().expect("sizes"),
        [DRAIN_EVENTS, KEPT_EVENTS - DRAIN_EVENTS - 5 + 10, 5],
        "memory, then memory and the file in one run, then memory"
    );
    assert!(spool.is_empty());
    // And what is pushed afterwards drains too.
    let more = vec![statement(at)];
    spool.push_async(&more).await.expect("push");
    drain_all(&spool, store.as_ref()).await;
    assert_stored_in_order(store.as_ref(), &[all.concat(), more].concat()).await;
}

#[tokio::test]
async fn an_edit_of_the_spool_file_while_it_is_open_does_not_reach_the_store() {
    // Someone who can write the spool file while pgtrail runs: the drain
    // takes the batches it kept as pushed, not the file's (a restart reads
    // the file: see whoever_can_write_the_spool_can_change_what_reaches_the_store).
    let tmp = private_dir();
    let (spool, pushed) = spool_with_a_forged_record(&tmp.path().join("spool"), false).await;
    let store = sqlite(tmp.path()).await;
    drain_all(&spool, &store).await;
    assert_stored_in_order(&store, &pushed).await;
}
