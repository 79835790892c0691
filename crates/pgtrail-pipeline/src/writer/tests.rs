use std::time::Duration;

use pgtrail_core::{Event, Kind, Source};

use super::*;

fn batch(events: usize, end: u64) -> Batch<u64> {
    Batch {
        events: (0..events)
            .map(|_| Event::new(Source::Cdc, Kind::Alarm))
            .collect(),
        end,
        last_commit: None,
    }
}

#[tokio::test]
async fn acknowledges_each_batch_once_stored_and_closes_when_the_queue_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store opens");
    let (_stop_tx, stop) = watch::channel(false);
    let (observer, seen) = watch::channel(Acknowledged::default());
    let start = Acknowledged {
        position: 10,
        ..Acknowledged::default()
    };
    let options = WriterOptions::new(Duration::from_millis(10), "nothing is lost");
    let (queue, task) = spawn(store.clone(), start, options, stop, Some(observer));
    let Queue {
        batches,
        mut acknowledged,
    } = queue;
    for (events, end) in [(3, 12), (2, 11), (1, 15)] {
        batches.send(batch(events, end)).await.expect("queued");
    }
    drop(batches);
    // The channel closes once the writer stored everything and ended.
    while acknowledged.changed().await.is_ok() {}
    let done = *acknowledged.borrow();
    assert_eq!(done.position, 15);
    assert_eq!((done.events, done.batches), (6, 3));
    assert_eq!(*seen.borrow(), done, "the observer saw the same");
    task.await.expect("no panic").expect("no store error");
    assert_eq!(store.head().await.expect("head").map(|h| h.seq), Some(6));
}
