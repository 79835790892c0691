//! What the sink tests share: a real SQLite store with events in it, a
//! runner on it, waiting for a condition.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind, Source};
use pgtrail_pipeline::retry::Backoff;
use pgtrail_sink::runner::Runner;
use pgtrail_sink::sink::Sink;
use pgtrail_store::Store;

/// A fresh SQLite store in its own directory.
pub async fn sqlite_store() -> (tempfile::TempDir, String, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("open store");
    (dir, url, store)
}

/// A store of three events whose second body someone with the file has
/// edited: its `"db_user":"app"` replaced by `with` (an SQL expression).
/// Returns the store reopened and its events as stored.
pub async fn store_with_edited_body(
    with: &str,
) -> (
    tempfile::TempDir,
    Arc<dyn Store>,
    Vec<pgtrail_store::RawEvent>,
) {
    let (dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 3).await;
    drop(store);
    let file = dir.path().join("trail.db");
    let db = rusqlite::Connection::open(&file).expect("open the file");
    let edited = db
        .execute(
            &format!(
                "update events set body = replace(body, '\"db_user\":\"app\"', {with}) where seq = 2"
            ),
            [],
        )
        .expect("edit the body");
    assert_eq!(edited, 1, "one body edited");
    drop(db);
    let store = pgtrail_store::open(&format!("sqlite:{}", file.display()))
        .await
        .expect("reopen");
    let raw = store.scan_raw(0, 10).await.expect("scan_raw");
    (dir, store, raw)
}

/// Appends `n` statement events (with text that needs escaping).
pub async fn append_events(store: &dyn Store, n: usize) -> Vec<Event> {
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut event = Event::new(Source::Proxy, Kind::Statement);
            event.sql = Some(format!("SELECT {i} /* \"quoted\"\n line */"));
            event.db_user = Some("app".into());
            event
        })
        .collect();
    for chunk in events.chunks(100) {
        store.append(chunk).await.expect("append");
    }
    events
}

/// A runner of `sink` on `url`, its cursor in `dir`, quick back-off.
pub fn runner_for(url: &str, dir: &Path, sink: Box<dyn Sink>) -> Runner {
    Runner {
        name: "test".into(),
        store_url: url.to_string(),
        sink,
        cursor_path: pgtrail_sink::cursor::path(dir, "test"),
        batch: 100,
        idle: Duration::from_millis(20),
        backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(100)),
    }
}

/// Waits (up to 30 s) for `done`.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A checkpoint of `store` at `seq` (unsigned: the runner hands on what
/// the store holds).
pub async fn checkpoint_at(store: &dyn Store, seq: i64) {
    let event = store.scan(seq - 1, 1).await.expect("scan").remove(0);
    let checkpoint = pgtrail_store::Checkpoint {
        kind: pgtrail_store::CheckpointKind::Head,
        seq,
        hash: event.hash.clone().expect("sealed"),
        count: seq,
        created_at: chrono::Utc::now(),
        public_key: None,
        signature: None,
        note: None,
        frontier: None,
    };
    store.add_checkpoint(&checkpoint).await.expect("checkpoint");
}
