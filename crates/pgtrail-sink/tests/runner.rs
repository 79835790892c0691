//! The runner against a real SQLite store: every event delivered at least
//! once and in order through failures, the cursor kept across restarts,
//! and cursors that cannot be trusted (another store's, edited) refused.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pgtrail_sink::cursor::{Cursor, CursorError};
use pgtrail_sink::sink::{Item, Sink, SinkError};

use common::{append_events, checkpoint_at, runner_for, sqlite_store, until};

/// A destination that keeps what it took and fails the first `failures`
/// deliveries (refused for one in two, unreachable for the other).
struct Recording {
    taken: Arc<Mutex<Vec<i64>>>,
    /// Every item taken: `e<seq>` or `c<seq>`.
    shapes: Arc<Mutex<Vec<String>>>,
    failures: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Sink for Recording {
    fn destination(&self) -> String {
        "memory".into()
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let reason = "scripted failure".to_string();
            let destination = self.destination();
            return Err(match call % 2 {
                0 => SinkError::Refused {
                    destination,
                    reason,
                },
                _ => SinkError::Unavailable {
                    destination,
                    reason,
                },
            });
        }
        let mut taken = self.taken.lock().expect("lock");
        let mut shapes = self.shapes.lock().expect("lock");
        for item in items {
            match item {
                Item::Event(event) => {
                    taken.push(event.seq.expect("sealed"));
                    shapes.push(format!("e{}", event.seq.expect("sealed")));
                }
                Item::Checkpoint(checkpoint) => shapes.push(format!("c{}", checkpoint.seq)),
            }
        }
        Ok(())
    }
}

fn recording(failures: usize) -> (Recording, Arc<Mutex<Vec<i64>>>) {
    let (sink, taken, _) = recording_all(failures);
    (sink, taken)
}

/// What a [`Recording`] took, shared with the test.
type Taken<T> = Arc<Mutex<Vec<T>>>;

fn recording_all(failures: usize) -> (Recording, Taken<i64>, Taken<String>) {
    let taken = Arc::new(Mutex::new(Vec::new()));
    let shapes = Arc::new(Mutex::new(Vec::new()));
    let sink = Recording {
        taken: taken.clone(),
        shapes: shapes.clone(),
        failures: Arc::new(AtomicUsize::new(failures)),
        calls: Arc::new(AtomicUsize::new(0)),
    };
    (sink, taken, shapes)
}

#[tokio::test]
async fn every_event_arrives_in_order_through_failures_and_restarts() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 250).await;

    // Five failed deliveries first: the same batch comes again each time.
    let (sink, taken) = recording(5);
    let mut runner = runner_for(&url, dir.path(), Box::new(sink));
    runner.batch = 40;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    // Appends go on while it delivers.
    append_events(store.as_ref(), 150).await;
    until("400 events delivered", || {
        taken.lock().expect("lock").len() >= 400
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    let seqs = taken.lock().expect("lock").clone();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "in order, none twice after Ok, none missing"
    );
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    let cursor = Cursor::load(&cursor_path).expect("read").expect("saved");
    assert_eq!(cursor.seq, 400);
    assert_eq!(cursor.last_error, None, "cleared by the next success");

    // Restarted: it resumes after the cursor, nothing repeated.
    append_events(store.as_ref(), 10).await;
    let (sink, taken) = recording(0);
    let runner = runner_for(&url, dir.path(), Box::new(sink));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until("the 10 new events", || {
        taken.lock().expect("lock").len() >= 10
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    assert_eq!(
        *taken.lock().expect("lock"),
        (401..=410).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_refusing_destination_stalls_the_sink_and_says_why() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 30).await;
    let (sink, taken) = recording(usize::MAX);
    let runner = runner_for(&url, dir.path(), Box::new(sink));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    until("the failure recorded in the cursor", || {
        Cursor::load(&cursor_path)
            .ok()
            .flatten()
            .and_then(|c| c.last_error)
            .is_some_and(|e| e.failures >= 3)
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    assert!(taken.lock().expect("lock").is_empty());
    let cursor = Cursor::load(&cursor_path).expect("read").expect("saved");
    assert_eq!(cursor.seq, 0, "nothing skipped");
    let error = cursor.last_error.expect("last error");
    assert!(
        error.message.contains("scripted failure"),
        "{}",
        error.message
    );
    let lag = pgtrail_sink::runner::lag(store.as_ref(), cursor.seq)
        .await
        .expect("lag");
    assert_eq!(lag.events, 30);
}

#[tokio::test]
async fn a_cursor_of_another_store_or_an_edited_one_is_refused() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 20).await;
    let store_id = store.store_id().await.expect("id").expect("has one");
    let path = pgtrail_sink::cursor::path(dir.path(), "test");
    let events = store.scan(0, 20).await.expect("scan");
    let at = |seq: i64| {
        let mut cursor = Cursor::start(&store_id);
        cursor.seq = seq;
        cursor.hash = events[(seq - 1) as usize].hash.clone();
        cursor
    };
    at(10)
        .check(store.as_ref(), &store_id, &path)
        .await
        .expect("a true cursor passes");

    // Another store's cursor.
    let (_other_dir, _other_url, other) = sqlite_store().await;
    append_events(other.as_ref(), 20).await;
    let other_id = other.store_id().await.expect("id").expect("has one");
    assert_ne!(other_id, store_id);
    let error = at(10)
        .check(other.as_ref(), &other_id, &path)
        .await
        .expect_err("another store's cursor");
    assert!(matches!(error, CursorError::OtherStore { .. }), "{error}");
    let mut foreign = at(10);
    foreign.store_id = other_id.clone();
    assert!(foreign
        .check(store.as_ref(), &store_id, &path)
        .await
        .is_err());

    // Someone moves the cursor ahead to skip events 11..=15, keeping the
    // hash, or making one up: the chain disagrees.
    let mut skipped = at(10);
    skipped.seq = 15;
    let error = skipped
        .check(store.as_ref(), &store_id, &path)
        .await
        .expect_err("an edited seq");
    assert!(
        matches!(error, CursorError::NotInChain { seq: 15, .. }),
        "{error}"
    );
    skipped.hash = Some("00".repeat(32));
    assert!(skipped
        .check(store.as_ref(), &store_id, &path)
        .await
        .is_err());
    // Ahead of the chain.
    let mut ahead = at(20);
    ahead.seq = 21;
    assert!(ahead.check(store.as_ref(), &store_id, &path).await.is_err());

    // The runner does not start from a refused cursor: it delivers nothing
    // and leaves the cursor as it was.
    skipped.save(&path).expect("save");
    let (sink, taken) = recording(0);
    let runner = runner_for(&url, dir.path(), Box::new(sink));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    assert!(
        taken.lock().expect("lock").is_empty(),
        "stalled, nothing delivered"
    );
    assert_eq!(Cursor::load(&path).expect("read"), Some(skipped));
}

#[tokio::test]
async fn checkpoints_go_out_right_after_the_events_they_cover_and_once() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 50).await;
    checkpoint_at(store.as_ref(), 20).await;
    checkpoint_at(store.as_ref(), 50).await;
    let (sink, _, shapes) = recording_all(1);
    let mut runner = runner_for(&url, dir.path(), Box::new(sink));
    runner.batch = 15;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until("both checkpoints", || {
        shapes.lock().expect("lock").len() >= 52
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    let mut expected: Vec<String> = (1..=20).map(|s| format!("e{s}")).collect();
    expected.push("c20".into());
    expected.extend((21..=50).map(|s| format!("e{s}")));
    expected.push("c50".into());
    assert_eq!(*shapes.lock().expect("lock"), expected);

    // A heartbeat checkpoint made later, with no new event: sent alone,
    // once, after a restart too.
    checkpoint_at(store.as_ref(), 50).await;
    let (sink, _, shapes) = recording_all(0);
    let runner = runner_for(&url, dir.path(), Box::new(sink));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until("the heartbeat", || !shapes.lock().expect("lock").is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    assert_eq!(*shapes.lock().expect("lock"), ["c50"]);
    let cursor = Cursor::load(&pgtrail_sink::cursor::path(dir.path(), "test"))
        .expect("read")
        .expect("saved");
    assert_eq!((cursor.seq, cursor.checkpoints), (50, 3));
}

/// A destination that, on each delivery, reads the cursor file the runner
/// saves meanwhile (on another thread) and keeps what it saw next to the
/// last event it had taken.
struct Watching {
    cursor_path: std::path::PathBuf,
    /// The last event taken before each delivery, and the cursor then.
    seen: Taken<(i64, i64)>,
    last_taken: i64,
}

#[async_trait]
impl Sink for Watching {
    fn destination(&self) -> String {
        "memory".into()
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let saved = Cursor::load(&self.cursor_path)
            .expect("a whole cursor file, never a torn one")
            .map_or(0, |c| c.seq);
        self.seen
            .lock()
            .expect("lock")
            .push((self.last_taken, saved));
        for item in items {
            if let Item::Event(event) = item {
                self.last_taken = event.seq.expect("sealed");
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_cursor_saved_while_the_next_batch_goes_never_passes_a_taken_event_nor_moves_back() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 600).await;
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Watching {
        cursor_path: cursor_path.clone(),
        seen: seen.clone(),
        last_taken: 0,
    };
    let mut runner = runner_for(&url, dir.path(), Box::new(sink));
    runner.batch = 10;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until("60 deliveries", || seen.lock().expect("lock").len() >= 60).await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    let seen = seen.lock().expect("lock").clone();
    let mut before = 0;
    for (taken, saved) in &seen {
        assert!(
            saved <= taken,
            "cursor {saved} passed the events taken ({taken})"
        );
        assert!(
            *saved >= before,
            "cursor moved back from {before} to {saved}"
        );
        before = *saved;
    }
    // Once stopped, the last batch taken is saved.
    let last = Cursor::load(&cursor_path).expect("read").expect("saved");
    assert_eq!(last.seq, 600);
}
