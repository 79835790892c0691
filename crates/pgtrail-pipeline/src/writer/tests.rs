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

/// Fails the append of the batch holding `fail_on` (its first event's
/// index among all events appended so far), `times` times or for good.
struct FailOnce {
    fail_batch: usize,
    times: Option<u32>,
    appends: std::sync::Mutex<(usize, u32)>,
    /// Each batch's size when it was offered, in order.
    offered: std::sync::Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl pgtrail_store::hooked::AppendHook for FailOnce {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[pgtrail_core::Event],
    ) -> pgtrail_store::Result<pgtrail_store::AppendReceipt> {
        self.offered.lock().expect("lock").push(events.len());
        let fail = {
            let mut appends = self.appends.lock().expect("lock");
            let batch = appends.0;
            let fail = batch == self.fail_batch && self.times.is_none_or(|t| appends.1 < t);
            if fail {
                appends.1 += 1;
            } else {
                appends.0 += 1;
            }
            fail
        };
        if fail {
            // Give the next batch time to be encoded meanwhile.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(match self.times {
                Some(_) => StoreError::backend("test", "appending", "the store went away"),
                None => StoreError::Invalid("this batch cannot be stored".into()),
            });
        }
        inner.append(events).await
    }
}

async fn hooked_store(
    fail_batch: usize,
    times: Option<u32>,
) -> (
    tempfile::TempDir,
    Arc<dyn Store>,
    Arc<pgtrail_store::hooked::Hooked<FailOnce>>,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let inner = pgtrail_store::open(&url).await.expect("store opens");
    let hooked = Arc::new(pgtrail_store::hooked::Hooked::new(
        inner.clone(),
        FailOnce {
            fail_batch,
            times,
            appends: std::sync::Mutex::new((0, 0)),
            offered: std::sync::Mutex::new(Vec::new()),
        },
    ));
    (dir, inner, hooked)
}

/// Batch 2 fails for good while batch 3 is already encoded behind it:
/// neither is acknowledged or stored, the writer ends with the error, and
/// the source's queue closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_failing_for_good_takes_the_one_encoded_behind_it_down_unacknowledged() {
    let (_dir, inner, hooked) = hooked_store(1, None).await;
    let (_stop_tx, stop) = watch::channel(false);
    let options = WriterOptions::new(Duration::from_millis(10), "nothing is lost");
    let (queue, task) = spawn(hooked.clone(), Acknowledged::default(), options, stop, None);
    let Queue {
        batches,
        mut acknowledged,
    } = queue;
    for (events, end) in [(3, 10), (4, 20), (5, 30)] {
        batches.send(batch(events, end)).await.expect("queued");
    }
    let failed = task.await.expect("no panic");
    assert!(
        matches!(failed, Err(StoreError::Invalid(_))),
        "the writer ends with the store's error: {failed:?}"
    );
    while acknowledged.changed().await.is_ok() {}
    let done = *acknowledged.borrow();
    assert_eq!(
        (done.position, done.events, done.batches),
        (10, 3, 1),
        "only the first batch is acknowledged"
    );
    assert_eq!(inner.head().await.expect("head").map(|h| h.seq), Some(3));
    assert_eq!(
        *hooked.hook().offered.lock().expect("lock"),
        [3, 4],
        "the batch encoded behind the failed one never reached the store"
    );
    // The source learns it: its queue is closed.
    let closed = tokio::time::timeout(Duration::from_secs(5), batches.closed()).await;
    assert!(closed.is_ok(), "the queue closes");
}

/// Batch 2 fails twice in a way that passes while batch 3 waits encoded:
/// every event is stored once, in the order handed over, and the
/// acknowledgements never pass a batch not yet stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_batch_keeps_its_place_before_the_one_encoded_behind_it() {
    let (_dir, inner, hooked) = hooked_store(1, Some(2)).await;
    let (_stop_tx, stop) = watch::channel(false);
    let options = WriterOptions::new(Duration::from_millis(10), "nothing is lost");
    let (queue, task) = spawn(hooked.clone(), Acknowledged::default(), options, stop, None);
    let Queue {
        batches,
        mut acknowledged,
    } = queue;
    let handed: Vec<Batch<u64>> = [(3, 10), (4, 20), (5, 30)]
        .into_iter()
        .map(|(events, end)| batch(events, end))
        .collect();
    let ids: Vec<uuid::Uuid> = handed
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.id))
        .collect();
    let ends: Vec<(u64, u64)> = vec![(10, 3), (20, 7), (30, 12)];
    for b in handed {
        batches.send(b).await.expect("queued");
    }
    drop(batches);
    let mut seen = Vec::new();
    while acknowledged.changed().await.is_ok() {
        let a = *acknowledged.borrow_and_update();
        seen.push((a.position, a.events));
    }
    task.await.expect("no panic").expect("no store error");
    for (position, events) in &seen {
        let stored = ends
            .iter()
            .find(|(end, _)| end == position)
            .map(|(_, n)| *n);
        assert_eq!(
            stored,
            Some(*events),
            "acknowledged {position} with {events} events"
        );
    }
    assert_eq!(seen.last(), Some(&(30, 12)));
    assert_eq!(
        *hooked.hook().offered.lock().expect("lock"),
        [3, 4, 4, 4, 5],
        "batch 2 was offered three times before batch 3"
    );
    let stored: Vec<uuid::Uuid> = inner
        .scan(0, 100)
        .await
        .expect("scan")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored, ids, "every event once, in the order handed over");
}

/// Seals made ahead assume the chain continues from this writer's last
/// batch. Another writer appending in between makes them wrong: the store
/// seals again, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seals_made_ahead_give_way_when_another_writer_moved_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store opens");
    let other = pgtrail_store::open(&url).await.expect("store opens again");
    let (_stop_tx, stop) = watch::channel(false);
    let options = WriterOptions::new(Duration::from_millis(10), "nothing is lost");
    let (queue, task) = spawn(store.clone(), Acknowledged::default(), options, stop, None);
    let Queue {
        batches,
        mut acknowledged,
    } = queue;
    batches.send(batch(3, 1)).await.expect("queued");
    acknowledged
        .wait_for(|a| a.position >= 1)
        .await
        .expect("stored");
    other
        .append(&batch(2, 0).events)
        .await
        .expect("the other writer appends");
    for end in 2..6 {
        batches.send(batch(2_500, end)).await.expect("queued");
    }
    drop(batches);
    while acknowledged.changed().await.is_ok() {}
    task.await.expect("no panic").expect("no store error");
    let report = pgtrail_store::verify(store.as_ref(), None)
        .await
        .expect("verify runs");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 3 + 2 + 4 * 2_500);
}
