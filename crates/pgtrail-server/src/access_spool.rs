//! Access records made durable in a spool (`pgtrail_pipeline::spool`, the
//! proxy's) instead of by a store commit each: `pgtrail serve` and the
//! dashboard of `pgtrail run` record every read through one.
//!
//! Why: a SQLite WAL reader empties its page cache at the start of its next
//! read transaction after any commit, so one commit per search left every
//! search reading cold pages (bench/README.md, "bench/serve"). Through the
//! spool the store sees one commit per drained batch, at most one per
//! [`DRAIN_LINGER`], and the readers' caches stay warm between them.
//!
//! The contract holds as before ("not recorded, not shown"): a read is
//! answered only once its record is fsync'd in the spool (a strict push),
//! and refused (503) when the spool cannot take it (full, unwritable,
//! broken). The drainer appends the records to the store later, in order;
//! a crash between an append and the spool's drained position replays
//! them, which the store skips by event id: each record lands once.
//!
//! A record the store refuses for good must not wedge the others behind
//! it: the drainer's appends go through [`OneByOne`], which appends a
//! refused batch one record at a time and keeps a record refused alone as
//! its quarantine event (same id: `pgtrail_core::quarantine`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pgtrail_core::quarantine::quarantine;
use pgtrail_core::Event;
use pgtrail_pipeline::retry::{sleep_or_stop, Backoff};
use pgtrail_pipeline::spool::{Pushed, Spool, SpoolError, SpoolOptions, WhenFull};
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::{AppendReceipt, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access::AccessError;

/// How long the drainer lets access records gather before it appends them
/// (and after each append): at most one store commit per linger, so a
/// record shows in the store within about this (plus an append) of its
/// read. Chosen from bench/serve (bench/README.md, "Session 14"; 1 s
/// instead of 200 ms since session 17: each commit empties every reader's
/// page cache, and at 1,000 searches/s five a second cost ~10% of the
/// server's CPU).
pub const DRAIN_LINGER: Duration = Duration::from_secs(1);

/// How long a stopping server waits for its records to reach the store
/// before it leaves the rest for the next start.
pub const DRAIN_ON_STOP: Duration = Duration::from_secs(10);

/// The options of an access spool: refuse when full (a read is never
/// answered unrecorded), 256 MiB (about 400,000 records while the store is
/// away), drained every [`DRAIN_LINGER`].
pub fn spool_options() -> SpoolOptions {
    SpoolOptions {
        max_bytes: 256 << 20,
        segment_bytes: 16 << 20,
        when_full: WhenFull::FailClosed,
        drain_linger: DRAIN_LINGER,
    }
}

/// An open access spool and its drainer. Cheap to clone: clones share both.
#[derive(Clone)]
pub struct AccessSpool {
    inner: Arc<Shared>,
}

struct Shared {
    spool: Spool,
    stop: watch::Sender<bool>,
    drainer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessSpool {
    /// Opens the spool in `dir` (created 0700, locked: one process at a
    /// time) and starts its drainer into `store`, which first drains what
    /// a previous run left. Needs a tokio runtime.
    pub fn open(
        dir: &Path,
        options: SpoolOptions,
        store: Arc<dyn Store>,
    ) -> Result<AccessSpool, SpoolError> {
        let size = metrics::gauge!("pgtrail_access_spool_bytes");
        let spool = Spool::open_measured(dir, options, size)?;
        let (stop, stopped) = watch::channel(false);
        let drainer = tokio::spawn(drain(spool.clone(), store, stopped));
        Ok(AccessSpool {
            inner: Arc::new(Shared {
                spool,
                stop,
                drainer: Mutex::new(Some(drainer)),
            }),
        })
    }

    /// The spool (what waits in it, its directory).
    pub fn spool(&self) -> &Spool {
        &self.inner.spool
    }

    /// Makes `event` durable in the spool; `Err` when it cannot, and then
    /// the read must not be answered.
    pub(crate) async fn push(&self, event: Event) -> Result<(), AccessError> {
        match self.inner.spool.push(std::slice::from_ref(&event)).await {
            Ok(Pushed::Spooled) => Ok(()),
            // Not with `WhenFull::FailClosed`; refused all the same.
            Ok(Pushed::Dropped { .. }) => Err(AccessError::new("the access spool dropped it")),
            Err(error) => Err(AccessError::new(error)),
        }
    }

    /// Waits (up to `within`) until every record pushed is in the store,
    /// then stops the drainer; what is left drains at the next start. True
    /// when nothing was left. Call it once the server stopped answering.
    pub async fn finish(&self, within: Duration) -> bool {
        let spool = &self.inner.spool;
        if let Err(error) = spool.sync().await {
            tracing::error!(%error, "server: the access spool's last fsync failed");
        }
        let deadline = Instant::now() + within;
        while !spool.is_empty() && Instant::now() < deadline && self.drainer_running() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waiting = spool.waiting();
        if waiting.batches > 0 {
            tracing::warn!(
                records = waiting.batches,
                dir = %spool.dir().display(),
                "server: stopping with access records still in the spool; they reach the store at the next start"
            );
        }
        let _ = self.inner.stop.send(true);
        let drainer = self
            .inner
            .drainer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(drainer) = drainer {
            if let Err(error) = drainer.await {
                tracing::error!(%error, "server: the access spool's drainer failed");
            }
        }
        waiting.batches == 0
    }

    /// Waits (up to `within`) until the records pushed so far are in the
    /// store; true when they are. For tests and tools that read their own
    /// access records back.
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.inner.spool.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    fn drainer_running(&self) -> bool {
        self.inner
            .drainer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|d| !d.is_finished())
    }
}

/// The drainer: appends what is pushed until `stop`. A failure that will not
/// pass (the store refusing even a quarantine event) is logged and tried
/// again after a pause: the records stay in the spool, and once it is full
/// reads are refused.
async fn drain(spool: Spool, store: Arc<dyn Store>, mut stop: watch::Receiver<bool>) {
    let store = Hooked::new(store, OneByOne);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        match spool.run(&store, &mut backoff, &mut stop).await {
            Ok(_) => return,
            Err(error) => {
                tracing::error!(
                    error = %error,
                    dir = %spool.dir().display(),
                    "server: access records cannot reach the store; they stay in the spool (reads are refused once it is full)"
                );
                if sleep_or_stop(backoff.failed(), &mut stop).await {
                    return;
                }
            }
        }
    }
}

/// The drainer's appends: a batch the store refuses for good (not a failure
/// that may pass, which the drainer retries) is appended one record at a
/// time, in order, and a record refused alone becomes its quarantine event:
/// one bad record never holds back the others.
struct OneByOne;

#[async_trait]
impl AppendHook for OneByOne {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        match inner.append(events).await {
            Err(error) if !error.is_retryable() => {}
            done => return done,
        }
        let mut receipt = AppendReceipt {
            first_seq: None,
            head: None,
        };
        for event in events {
            let one = match inner.append(std::slice::from_ref(event)).await {
                Err(error) if !error.is_retryable() => {
                    tracing::error!(id = %event.id, %error, "server: the store refused an access record; kept as a quarantine event");
                    let kept = quarantine(event, &error.to_string());
                    inner.append(std::slice::from_ref(&kept)).await?
                }
                done => done?,
            };
            receipt.first_seq = receipt.first_seq.or(one.first_seq);
            receipt.head = one.head.or(receipt.head);
        }
        Ok(receipt)
    }
}
