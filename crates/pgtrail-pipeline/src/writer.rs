//! The writer stage: a bounded queue of batches from one source, appended
//! to the store in order, each acknowledged once `append` returned.
//!
//! The durability rules every source relies on:
//! - the acknowledged position never passes a batch the store did not
//!   durably append (a batch's `end` is published only after its `append`
//!   returned);
//! - a store that fails in a way that may pass is retried (through
//!   [`retry::until_done`]) for as long as it takes, while the source keeps
//!   its copy (the slot keeps the WAL, the inbox its rows);
//! - a stop asked while the store is down ends the writer with the waiting
//!   batch unstored and unacknowledged, so the source replays it;
//! - a failure that will not pass ends the writer with that error, and the
//!   queue closes, so the source stops too.
//!
//! The queue holds [`QUEUE_BATCHES`] batches, so the source prepares the
//! next while the previous one commits. A source waiting for room must keep
//! its own connection alive meanwhile (cdc answers keepalives).

use std::sync::Arc;
use std::time::Duration;

use pgtrail_core::handover::{Acknowledged, Batch};
use pgtrail_store::cpu::{self, Stage};
use pgtrail_store::{Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::retry::{self, Backoff};
use crate::toast::{ToastBounds, ToastCache};

/// Batches waiting in the queue besides the one being appended.
pub const QUEUE_BATCHES: usize = 4;

/// How a writer runs.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Pauses between attempts while the store fails.
    pub backoff: Backoff,
    /// What happens to the waiting work meanwhile, for the log ("the slot
    /// keeps the WAL").
    pub meanwhile: &'static str,
    /// Fill unchanged TOAST columns, keeping this many row images.
    pub toast: Option<ToastBounds>,
}

impl WriterOptions {
    /// Retrying from `first_pause` up to 30 s, without TOAST filling.
    pub fn new(first_pause: Duration, meanwhile: &'static str) -> Self {
        WriterOptions {
            backoff: Backoff::new(first_pause, Duration::from_secs(30)),
            meanwhile,
            toast: None,
        }
    }
}

/// The source's end of a writer: where batches go, and what came back.
#[derive(Debug)]
pub struct Queue<P> {
    /// Batches, in the order they must be stored.
    pub batches: mpsc::Sender<Batch<P>>,
    /// The newest durable position; the channel closes when the writer
    /// ended (everything handed over is then stored, or the writer stopped
    /// or failed).
    pub acknowledged: watch::Receiver<Acknowledged<P>>,
}

/// Starts a writer appending to `store`, acknowledging from `start` on.
/// `observer`, if given, sees every acknowledgement too and outlives the
/// writer (tests, status, a source's next session). The task returns the
/// store error that will not pass, if one ended it.
pub fn spawn<P>(
    store: Arc<dyn Store>,
    start: Acknowledged<P>,
    options: WriterOptions,
    stop: watch::Receiver<bool>,
    observer: Option<watch::Sender<Acknowledged<P>>>,
) -> (Queue<P>, JoinHandle<Result<(), StoreError>>)
where
    P: Copy + Ord + Send + Sync + 'static,
{
    let (batches, receiver) = mpsc::channel(QUEUE_BATCHES);
    let (acknowledge, acknowledged) = watch::channel(start);
    let writer = Writer {
        store,
        toast: options.toast.map(ToastCache::new),
        backoff: options.backoff,
        meanwhile: options.meanwhile,
        stop,
        acknowledge,
        observer,
    };
    let task = tokio::spawn(writer.run(receiver));
    (
        Queue {
            batches,
            acknowledged,
        },
        task,
    )
}

struct Writer<P> {
    store: Arc<dyn Store>,
    toast: Option<ToastCache>,
    backoff: Backoff,
    meanwhile: &'static str,
    stop: watch::Receiver<bool>,
    acknowledge: watch::Sender<Acknowledged<P>>,
    observer: Option<watch::Sender<Acknowledged<P>>>,
}

impl<P: Copy + Ord + Send + Sync + 'static> Writer<P> {
    async fn run(mut self, mut batches: mpsc::Receiver<Batch<P>>) -> Result<(), StoreError> {
        let what = format!("Appending to the store {}", self.store.location());
        while let Some(mut batch) = batches.recv().await {
            if let Some(toast) = self.toast.as_mut() {
                cpu::metered(
                    Stage::Toast,
                    toast.fill(self.store.as_ref(), &mut batch.events),
                )
                .await;
            }
            let store = self.store.as_ref();
            let events = &batch.events;
            let appended = retry::until_done(
                &what,
                self.meanwhile,
                &mut self.backoff,
                &mut self.stop,
                || cpu::metered(Stage::Store, store.append(events)),
            )
            .await?;
            if appended.is_none() {
                tracing::warn!(
                    events = batch.events.len(),
                    "Stopping while the store is unavailable; unstored changes stay with the source ({})",
                    self.meanwhile
                );
                return Ok(());
            }
            if let Some(toast) = self.toast.as_mut() {
                toast.stored();
            }
            let acknowledge = |a: &mut Acknowledged<P>| {
                a.position = a.position.max(batch.end);
                if batch.last_commit.is_some() {
                    a.last_commit = batch.last_commit;
                }
                a.events += batch.events.len() as u64;
                a.batches += 1;
            };
            self.acknowledge.send_modify(acknowledge);
            if let Some(observer) = &self.observer {
                observer.send_modify(acknowledge);
            }
            // Freeing a batch's events takes a while: not on the way from
            // one append to the next.
            tokio::task::spawn_blocking(move || drop(batch));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
