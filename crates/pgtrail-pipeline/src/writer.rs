//! The writer stage: a bounded queue of batches from one source, appended
//! to the store in order, each acknowledged once `append` returned.
//!
//! The durability rules every source relies on:
//! - the acknowledged position never passes a batch the store did not
//!   durably append (a batch's `end` is published only after its append
//!   returned);
//! - a store that fails in a way that may pass is retried (through
//!   [`retry::until_done`]) for as long as it takes, while the source keeps
//!   its copy (the slot keeps the WAL, the inbox its rows);
//! - a stop asked while the store is down ends the writer with the waiting
//!   batch unstored and unacknowledged, so the source replays it;
//! - a failure that will not pass ends the writer with that error, and the
//!   queue closes, so the source stops too.
//!
//! Two stages overlap, so the two cores share the work: while the store
//! appends batch N (and commits it), batch N+1 has its unchanged TOAST
//! values filled and is encoded ([`Store::encode`]: canonical JSON, index
//! columns, and the chain hashes as they will be if the chain continues
//! from where batch N ends; the store checks that under its lock and
//! hashes again what no longer fits). The encoding runs on the blocking
//! pool, so the source's decoding, the encoding and the store's write each
//! have a thread. Batches pass from stage to stage in order through
//! channels, and only the append stage acknowledges; a batch encoded ahead
//! of one that fails for good is dropped with it, never acknowledged.
//!
//! The queue holds [`QUEUE_BATCHES`] batches, so the source prepares the
//! next while the previous one commits. A source waiting for room must keep
//! its own connection alive meanwhile (cdc answers keepalives).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::handover::{Acknowledged, Batch};
use pgtrail_core::GENESIS_HASH;
use pgtrail_store::cpu::{self, Stage};
use pgtrail_store::metrics::Tally;
use pgtrail_store::{ChainHead, EncodedBatch, Store, StoreError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::retry::{self, Backoff};
use crate::toast::{ToastBounds, ToastCache};

/// Batches waiting in the queue besides the one being appended.
pub const QUEUE_BATCHES: usize = 4;

/// Batches encoded and waiting for the append stage, at most.
const ENCODED_AHEAD: usize = 1;

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
    let (encoded_tx, encoded) = mpsc::channel(ENCODED_AHEAD);
    let (acknowledge, acknowledged) = watch::channel(start);
    let progress = Arc::new(StoredSoFar::default());
    let encoder = Encoder {
        store: store.clone(),
        toast: options.toast.map(ToastCache::new),
        progress: progress.clone(),
        chain: None,
        encoded: 0,
    };
    let encoding = tokio::spawn(encoder.run(receiver, encoded_tx));
    let appender = Appender {
        store,
        backoff: options.backoff,
        meanwhile: options.meanwhile,
        stop,
        acknowledge,
        observer,
        progress,
    };
    let task = tokio::spawn(appender.run(encoded, encoding));
    (
        Queue {
            batches,
            acknowledged,
        },
        task,
    )
}

/// What the append stage tells the encoding stage.
#[derive(Debug, Default)]
struct StoredSoFar {
    /// Batches stored.
    stored: AtomicU64,
    /// The TOAST cache's mark of the newest stored batch.
    toast_mark: AtomicU64,
    /// The chain head after the newest stored batch, if the store said.
    head: std::sync::Mutex<Option<ChainHead>>,
}

/// A batch on its way from the encoding stage to the append stage.
struct Encoded<P> {
    events: EncodedBatch,
    end: P,
    last_commit: Option<chrono::DateTime<chrono::Utc>>,
    /// The TOAST cache's mark after filling this batch.
    toast_mark: u64,
}

/// The first stage: fills unchanged TOAST values and encodes each batch.
struct Encoder {
    store: Arc<dyn Store>,
    toast: Option<ToastCache>,
    progress: Arc<StoredSoFar>,
    /// Where the chain will end once every batch encoded so far is stored,
    /// as far as this writer knows (`None`: it does not).
    chain: Option<ChainHead>,
    /// Batches encoded.
    encoded: u64,
}

impl Encoder {
    async fn run<P: Send + 'static>(
        mut self,
        mut batches: mpsc::Receiver<Batch<P>>,
        out: mpsc::Sender<Encoded<P>>,
    ) {
        // Where the chain ends now; if the store cannot say, every batch is
        // hashed under its lock until it does.
        self.chain = match self.store.head().await {
            Ok(head) => Some(head.unwrap_or_else(genesis)),
            Err(_) => None,
        };
        loop {
            // The append stage may end (stopped, or failed for good) while
            // this one waits for the source: then the source must learn it.
            let next = tokio::select! {
                batch = batches.recv() => batch,
                () = out.closed() => None,
            };
            let Some(mut batch) = next else {
                return;
            };
            let mut toast_mark = 0;
            if let Some(toast) = self.toast.as_mut() {
                toast.stored(self.progress.toast_mark.load(Ordering::Acquire));
                cpu::metered(
                    Stage::Toast,
                    toast.fill(self.store.as_ref(), &mut batch.events),
                )
                .await;
                toast_mark = toast.mark();
            }
            if self.progress.stored.load(Ordering::Acquire) == self.encoded {
                // Every batch encoded so far is stored: start from what the
                // store says, should another writer have moved the chain.
                let head = self.progress.head.lock().map(|h| h.clone());
                if let Ok(Some(head)) = head {
                    self.chain = Some(head);
                }
            }
            let store = self.store.clone();
            let mut chain = self.chain.take();
            let events = std::mem::take(&mut batch.events);
            let encoding = tokio::task::spawn_blocking(move || {
                let encoded = cpu::measure(Stage::Encode, || store.encode(events, &mut chain));
                (encoded, chain)
            });
            let (events, chain) = match encoding.await {
                Ok(done) => done,
                // Encoding has no failure of its own: a panic is a bug, and
                // goes on up as the panic it was.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.chain = chain;
            self.encoded += 1;
            let encoded = Encoded {
                events,
                end: batch.end,
                last_commit: batch.last_commit,
                toast_mark,
            };
            if out.send(encoded).await.is_err() {
                return; // the append stage ended: stopped or failed for good
            }
        }
    }
}

/// The chain of an empty store.
fn genesis() -> ChainHead {
    ChainHead {
        seq: 0,
        hash: GENESIS_HASH.to_string(),
    }
}

/// The second stage: appends each encoded batch and acknowledges it.
struct Appender<P> {
    store: Arc<dyn Store>,
    backoff: Backoff,
    meanwhile: &'static str,
    stop: watch::Receiver<bool>,
    acknowledge: watch::Sender<Acknowledged<P>>,
    observer: Option<watch::Sender<Acknowledged<P>>>,
    progress: Arc<StoredSoFar>,
}

impl<P: Copy + Ord + Send + Sync + 'static> Appender<P> {
    async fn run(
        mut self,
        mut batches: mpsc::Receiver<Encoded<P>>,
        encoding: JoinHandle<()>,
    ) -> Result<(), StoreError> {
        let what = format!("Appending to the store {}", self.store.location());
        while let Some(batch) = batches.recv().await {
            let store = self.store.as_ref();
            let events = &batch.events;
            let appended = retry::until_done(
                &what,
                self.meanwhile,
                &mut self.backoff,
                &mut self.stop,
                || async {
                    let started = Instant::now();
                    let receipt = cpu::metered(Stage::Store, store.append_encoded(events)).await?;
                    Ok((receipt, started.elapsed()))
                },
            )
            .await?;
            let Some((receipt, took)) = appended else {
                tracing::warn!(
                    events = batch.events.len(),
                    "Stopping while the store is unavailable; unstored changes stay with the source ({})",
                    self.meanwhile
                );
                return Ok(());
            };
            Tally::of(batch.events.events()).record(took);
            if let Ok(mut head) = self.progress.head.lock() {
                *head = receipt.head;
            }
            self.progress
                .toast_mark
                .store(batch.toast_mark, Ordering::Release);
            self.progress.stored.fetch_add(1, Ordering::AcqRel);
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
        // The queue closed: the source is done, or the encoding stage
        // ended; a panic there is the writer's.
        if let Err(e) = encoding.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
