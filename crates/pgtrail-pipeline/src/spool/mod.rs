//! The on-disk spool: where a source that cannot wait for the store (the
//! statement proxy; logical replication, so its slot does not hold WAL for
//! hours) leaves batches while the store is slow or down, and from where a
//! drainer moves them into the store, in order, once it is back.
//!
//! [`Spool::push`] returns only once the batch is fsync'd in the spool, so a
//! source may acknowledge it then. [`Spool::push_async`] returns once the
//! batch is written (in the page cache: it survives a crash of the process,
//! not of the machine) and the fsync follows within a few milliseconds, on
//! a thread of its own: the statement proxy's `async` durability.
//! [`Spool::drain`] appends the oldest batches (a run of them, up to
//! [`DRAIN_EVENTS`] events, in one append) to the store (through
//! [`crate::retry::until_done`]), then records that they are done; a crash
//! in between replays them, which the store skips (their events' ids are
//! already stored).
//!
//! **The rule a caller follows: once anything is spooled, everything goes
//! through the spool until it is empty** ([`Spool::is_empty`]): a batch
//! appended directly while older ones wait in the spool would overtake
//! them. The spool becomes empty only after the store's `append` of its last
//! batch returned, so a caller that sees it empty may go back to the store.
//!
//! A source's writer, per batch (one [`Spool::run`] task drains beside it):
//!
//! ```text
//! if spool.is_empty() {
//!     if let Ok(Ok(_)) = timeout(patience, store.append(&batch)).await {
//!         return acknowledge();        // durable in the store
//!     }
//!     // Slow or down: spool it. If the abandoned append still commits,
//!     // the spooled copy is skipped by id when it drains (or vice versa).
//! }
//! match spool.push(&batch).await {
//!     Ok(Pushed::Spooled) => acknowledge(),         // durable in the spool
//!     Ok(Pushed::Dropped { .. }) => serve_anyway(), // fail_open; reported later
//!     Err(e) => refuse(e),                          // fail_closed, or a disk error
//! }
//! ```
//!
//! The spool is bounded ([`SpoolOptions::max_bytes`]). When a batch does not
//! fit, [`WhenFull`] decides: refuse it (the caller refuses new work) or drop
//! it, count it durably and, once the spool has drained, append an `alarm`
//! event ([`pgtrail_core::alarm::SPOOL_DROPPED`]) saying how many events
//! were dropped and when. Never silent loss.
//!
//! On disk (a directory private to its user, one process at a time): segment
//! files of records (see [`segment`]), the drained position (`drained`),
//! drops not yet reported (`dropped.json`, `reporting.json`) and `lock`.

mod dir;
mod drain;
mod dropped;
mod kept;
mod segment;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use pgtrail_core::{Event, Source};
use pgtrail_store::StoreError;
use tokio::sync::{oneshot, Notify};

pub use drain::{Drained, DRAIN_EVENTS};
use dropped::Drops;
use kept::Kept;
pub use kept::{KEPT_BYTES, KEPT_EVENTS};

/// What to do with a batch that does not fit in a full spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Refuse it: [`Spool::push`] returns [`SpoolError::Full`], and the
    /// caller refuses the work that produced it (the proxy: the statement).
    #[default]
    FailClosed,
    /// Drop it: [`Spool::push`] returns [`Pushed::Dropped`], the drop is
    /// counted durably and reported by an `alarm` event once the spool has
    /// drained.
    FailOpen,
}

/// How a spool behaves.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    /// Most bytes the segment files may hold together.
    pub max_bytes: u64,
    /// A new segment starts once the current one holds this much; drained
    /// segments are deleted whole, so this is also the most drained bytes
    /// that wait on disk for their segment to finish.
    pub segment_bytes: u64,
    /// What a full spool does.
    pub when_full: WhenFull,
    /// How long [`Spool::run`] lets pushes gather after one wakes it, and
    /// after each append of fewer than [`DRAIN_EVENTS`] events, before it
    /// drains them: one store append (a transaction and its fsyncs) per
    /// linger instead of one per push. A push is acknowledged by the spool,
    /// not the store, so this delays only when events appear in the store.
    pub drain_linger: std::time::Duration,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        SpoolOptions {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            when_full: WhenFull::FailClosed,
            drain_linger: std::time::Duration::ZERO,
        }
    }
}

/// What became of a pushed batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// It is durable in the spool: the source may acknowledge it.
    Spooled,
    /// The spool was full and the policy is [`WhenFull::FailOpen`]: it was
    /// dropped, and the drop will be reported in the store.
    Dropped {
        /// Events in the dropped batch.
        events: u64,
    },
}

/// What the spool holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waiting {
    /// Batches not yet drained.
    pub batches: u64,
    /// Their bytes on disk.
    pub bytes: u64,
    /// Bytes of all segment files (drained records of unfinished segments
    /// included): what [`SpoolOptions::max_bytes`] bounds.
    pub disk_bytes: u64,
    /// Events dropped and not yet reported in the store.
    pub dropped_events: u64,
}

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool: cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The directory could be read or changed by someone else.
    #[error("spool directory {path} is not private: {reason}")]
    NotPrivate {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Another process has the spool open.
    #[error("spool {path} is in use by another process (its lock is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A record does not check: the spool was damaged. Nothing after it is
    /// read until someone decides what to do (see docs/operations.md).
    #[error("spool file {path} is damaged at byte offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What does not check.
        reason: String,
    },
    /// The spool is full and its policy is [`WhenFull::FailClosed`].
    #[error("spool {path} is full ({used} of {max_bytes} bytes used; the batch needs {needed}): refusing new work until it drains")]
    Full {
        /// The directory.
        path: PathBuf,
        /// Bytes the segment files hold.
        used: u64,
        /// The bound.
        max_bytes: u64,
        /// Bytes the batch needs.
        needed: u64,
    },
    /// A batch too large for one record (4 GiB).
    #[error("spool: a batch of {bytes} bytes is too large for one record")]
    TooLarge {
        /// Its size in JSON.
        bytes: u64,
    },
    /// The batch could not be written as JSON.
    #[error("spool: cannot encode the batch")]
    Encode(#[source] serde_json::Error),
    /// A write failed and could not be undone: the spool refuses further
    /// pushes until it is reopened (which checks and repairs the tail).
    #[error("spool {path} stopped taking batches after a failed write; reopen it")]
    Broken {
        /// The directory.
        path: PathBuf,
    },
    /// The store refused a spooled batch in a way that will not pass.
    #[error("spool: the store refused a spooled batch (it stays in the spool)")]
    Store(#[source] StoreError),
    /// A task of the spool ended abnormally.
    #[error("spool: a background task failed: {0}")]
    Task(String),
}

/// A spool directory, open for pushing and draining. Cheap to clone: clones
/// share the same files.
#[derive(Debug, Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: SpoolOptions,
    state: Mutex<State>,
    /// Woken by each push, for a drainer waiting for work.
    pushed: Notify,
    /// One drainer at a time.
    draining: tokio::sync::Mutex<()>,
    /// Where durable pushers wait for an fsync.
    syncer: Arc<Syncer>,
    /// The file keeping the drained position; written by the drainer only
    /// (one at a time), outside `state`'s lock so a push never waits for
    /// its fsync.
    cursor: File,
    /// Held (flock) while open.
    _lock: File,
    /// `pgtrail_spool_bytes` (or the gauge given to `open_measured`): the
    /// segment files' bytes (what `max_bytes` bounds), set under `state`'s lock as they change.
    size: metrics::Gauge,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.syncer.close();
    }
}

type Answer = oneshot::Sender<Result<Pushed, SpoolError>>;

/// Group commit: each push writes its batch to the segment itself (one
/// write(2) under the spool's lock, on the pusher's thread: no hop to
/// another thread and back), and this one thread per spool fsyncs what was
/// written, apart from the writes. Writes are numbered; a durable pusher
/// waits for the fsync that follows its write's number. Pushes written
/// during an fsync are covered together by the next one, so many sessions
/// pushing at once share fsyncs instead of taking turns. With no durable
/// pusher waiting, the fsync waits up to [`ASYNC_SYNC_DELAY`] for more
/// writes: async pushes are fsync'd within a few milliseconds, a few
/// hundred fsyncs a second at most instead of one per push.
#[derive(Debug, Default)]
struct Syncer {
    state: Mutex<Syncing>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct Syncing {
    /// Writes made (group commits).
    written: u64,
    /// Writes covered by an fsync.
    synced: u64,
    /// Fsyncs made.
    fsyncs: u64,
    /// The segment the last write went to, and its path.
    file: Option<(Arc<File>, PathBuf)>,
    /// Durable pushers, by the write they wait for.
    waiters: Vec<(u64, Answer)>,
    /// An fsync failed: what it said. The spool takes no more batches.
    failed: Option<(std::io::ErrorKind, String, PathBuf)>,
    closed: bool,
}

impl Syncer {
    fn state(&self) -> MutexGuard<'_, Syncing> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A write to `file` (at `path()`) was made: returns its number. A
    /// durable pusher (`waits`) wakes the syncer when it waits
    /// ([`Syncer::wait`]), right after: one wake-up per strict push, not
    /// two. The path is made only when the segment changed, not per push.
    fn written(&self, file: &Arc<File>, path: impl FnOnce() -> PathBuf, waits: bool) -> u64 {
        let mut state = self.state();
        // Only an idle syncer needs waking: a busy one looks again after
        // its fsync, a delaying one is woken by a durable pusher.
        if state.written == state.synced && !waits {
            self.wake.notify_one();
        }
        state.written += 1;
        if !matches!(&state.file, Some((last, _)) if Arc::ptr_eq(last, file)) {
            state.file = Some((Arc::clone(file), path()));
        }
        state.written
    }

    /// Answers `answer` once write `seq` is fsync'd.
    fn wait(&self, seq: u64, answer: Answer) {
        let mut state = self.state();
        if let Some(error) = &state.failed {
            let _ = answer.send(Err(fsync_error(error)));
        } else if state.synced >= seq {
            let _ = answer.send(Ok(Pushed::Spooled));
        } else {
            state.waiters.push((seq, answer));
            // Ends an async delay: someone waits now.
            self.wake.notify_one();
        }
    }

    fn failed(&self) -> bool {
        self.state().failed.is_some()
    }

    fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }

    /// The syncer thread: fsyncs the last written segment whenever writes
    /// wait, then answers the pushers waiting for them. On close it still
    /// fsyncs what was written.
    fn run(&self) {
        loop {
            let (seq, file) = {
                let mut state = self.state();
                while state.written == state.synced && !state.closed {
                    state = self.wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                // Only async writes so far: let more gather.
                let since = std::time::Instant::now();
                while state.waiters.is_empty() && !state.closed {
                    let left = ASYNC_SYNC_DELAY.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    state = match self.wake.wait_timeout(state, left) {
                        Ok((state, _)) => state,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
                if state.written == state.synced || state.failed.is_some() {
                    return;
                }
                (state.written, state.file.clone())
            };
            let result = match &file {
                Some((file, _)) => file.sync_data(),
                None => Ok(()),
            };
            let ready = {
                let mut state = self.state();
                state.fsyncs += 1;
                match result {
                    Ok(()) => state.synced = seq,
                    Err(error) => {
                        let path = file.map(|(_, path)| path).unwrap_or_default();
                        tracing::error!(file = %path.display(), %error, "spool: fsync failed; the spool takes no more batches until it is reopened");
                        state.failed = Some((error.kind(), error.to_string(), path));
                    }
                }
                let failed = state.failed.clone();
                let synced = state.synced;
                let waiters = std::mem::take(&mut state.waiters);
                let (ready, waiting): (Vec<_>, Vec<_>) = waiters
                    .into_iter()
                    .partition(|(s, _)| *s <= synced || failed.is_some());
                state.waiters = waiting;
                ready.into_iter().map(move |(_, answer)| {
                    let outcome = match &failed {
                        Some(error) => Err(fsync_error(error)),
                        None => Ok(Pushed::Spooled),
                    };
                    (answer, outcome)
                })
            };
            for (answer, outcome) in ready {
                let _ = answer.send(outcome);
            }
        }
    }
}

fn fsync_error((kind, message, path): &(std::io::ErrorKind, String, PathBuf)) -> SpoolError {
    SpoolError::Io {
        action: "fsync",
        path: path.clone(),
        source: std::io::Error::new(*kind, message.clone()),
    }
}

/// Records to write to the last segment with one write.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Their batches' indexes in the group.
    batches: Vec<usize>,
    /// Each record's length and its events, for [`Kept`] once written.
    copies: Vec<(u64, Option<Vec<Event>>)>,
    /// The pusher waits for the fsync (and wakes the syncer itself).
    durable: bool,
}

/// A place in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    segment: u64,
    offset: u64,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes written (whole records only).
    len: u64,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last one takes new records.
    segments: VecDeque<Segment>,
    /// The last segment, open for appending (`None` until the first push
    /// after the spool emptied); shared with the syncer thread.
    writer: Option<Arc<File>>,
    next_id: u64,
    /// Everything before this was drained. A segment newer than
    /// `read.segment` is read from its start.
    read: Position,
    waiting: Waiting,
    drops: Drops,
    /// Batches written and not drained, kept for the drainer.
    kept: Kept,
    /// Set when a failed write could not be undone.
    broken: bool,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`: checks the directory
    /// is private, takes its lock, reads every waiting record, cuts off a
    /// record a crash left unfinished (with a warning) and fails on a
    /// damaged one, naming the file and offset.
    pub fn open(dir: impl AsRef<Path>, options: SpoolOptions) -> Result<Spool, SpoolError> {
        Self::open_measured(dir, options, metrics::gauge!("pgtrail_spool_bytes"))
    }

    /// [`Spool::open`], its segment files' bytes kept on `size` instead of
    /// `pgtrail_spool_bytes`: for a second spool in the process (the
    /// server's access records), which must not overwrite the proxy's.
    pub fn open_measured(
        dir: impl AsRef<Path>,
        options: SpoolOptions,
        size: metrics::Gauge,
    ) -> Result<Spool, SpoolError> {
        let dir = dir.as_ref().to_path_buf();
        let lock = dir::prepare(&dir)?;
        let cursor = dir::open_private(&dir.join(drain::CURSOR_FILE))?;
        let read = drain::read_cursor(&cursor, &dir)?;
        let mut state = State {
            segments: VecDeque::new(),
            writer: None,
            next_id: read.map_or(1, |r| r.segment + 1),
            read: read.unwrap_or(Position {
                segment: 0,
                offset: segment::HEADER,
            }),
            waiting: Waiting::default(),
            drops: Drops::load(&dir)?,
            kept: Kept::default(),
            broken: false,
        };
        state.waiting.dropped_events = state.drops.events();
        recover(&dir, &mut state)?;
        tracing::info!(
            dir = %dir.display(),
            batches = state.waiting.batches,
            bytes = state.waiting.bytes,
            dropped_events = state.waiting.dropped_events,
            "spool opened"
        );
        let syncer = Arc::new(Syncer::default());
        size.set(state.waiting.disk_bytes as f64);
        let spool = Spool {
            inner: Arc::new(Inner {
                dir,
                options,
                state: Mutex::new(state),
                pushed: Notify::new(),
                draining: tokio::sync::Mutex::new(()),
                syncer: Arc::clone(&syncer),
                cursor,
                _lock: lock,
                size,
            }),
        };
        std::thread::Builder::new()
            .name("pgtrail-spool-sync".into())
            .spawn(move || syncer.run())
            .map_err(|e| SpoolError::Task(format!("cannot start the spool's syncer: {e}")))?;
        Ok(spool)
    }

    /// What the spool in `dir` holds, read without opening it (the process
    /// running it holds its lock): segment bytes (drained records of
    /// unfinished segments included) and dropped events not yet reported.
    /// An absent directory holds nothing.
    pub fn peek(dir: &Path) -> Result<Waiting, SpoolError> {
        let mut waiting = Waiting::default();
        if !dir.exists() {
            return Ok(waiting);
        }
        for id in dir::segment_ids(dir)? {
            let path = dir.join(segment::file_name(id));
            if let Ok(meta) = std::fs::metadata(&path) {
                waiting.disk_bytes += meta.len();
            }
        }
        waiting.dropped_events = Drops::load(dir)?.events();
        Ok(waiting)
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// True when every batch pushed has been appended to the store (and
    /// nothing waits): a caller may append directly again.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().waiting.batches == 0
    }

    /// What waits in the spool.
    pub fn waiting(&self) -> Waiting {
        self.inner.lock().waiting
    }

    /// Writes `events` as one batch and returns once it is on disk
    /// (fsync'd).
    ///
    /// The write happens on the caller's thread (one write(2) under the
    /// spool's lock; when the segment is full, also the fsyncs that close
    /// it and start the next, once per [`SpoolOptions::segment_bytes`]);
    /// the fsync on the syncer thread. Pushes written while an fsync runs
    /// share the next one (group commit): many sessions pushing at once
    /// cost one fsync per round, not one each.
    /// The events are copied for the drainer's kept batch:
    /// [`Spool::push_taking`] moves them instead.
    pub async fn push(&self, events: &[Event]) -> Result<Pushed, SpoolError> {
        self.push_taking(&mut events.to_vec()).await
    }

    /// [`Spool::push`] for a thread that may block (not a tokio worker).
    pub fn push_blocking(&self, events: &[Event]) -> Result<Pushed, SpoolError> {
        match self.write(&mut events.to_vec(), true)? {
            Written::Done(pushed) => Ok(pushed),
            Written::Fsync(fsynced) => fsynced.blocking_recv().map_err(|_| no_fsync_answer())?,
        }
    }

    /// Writes `events` as one batch and returns once it is written to the
    /// spool's file (write(2): a crash of this process keeps it, a crash of
    /// the machine may not). The fsync follows on the syncer thread within
    /// [`ASYNC_SYNC_DELAY`] and an fsync's time, shared with the writes
    /// around it, without this call waiting for it. The same order, bound
    /// and policy as [`Spool::push`].
    pub async fn push_async(&self, events: &[Event]) -> Result<Pushed, SpoolError> {
        self.push_async_taking(&mut events.to_vec()).await
    }

    /// [`Spool::push`] that takes the events out of `events` (left empty)
    /// instead of copying them for the drainer's kept batch: no copy, and
    /// they are freed once, where they are appended. On an error `events`
    /// is left as it was, for a caller that tries a full spool again.
    pub async fn push_taking(&self, events: &mut Vec<Event>) -> Result<Pushed, SpoolError> {
        match self.write(events, true)? {
            Written::Done(pushed) => Ok(pushed),
            Written::Fsync(fsynced) => fsynced.await.map_err(|_| no_fsync_answer())?,
        }
    }

    /// [`Spool::push_async`] that takes the events out of `events`, as
    /// [`Spool::push_taking`] does.
    pub async fn push_async_taking(&self, events: &mut Vec<Event>) -> Result<Pushed, SpoolError> {
        match self.write(events, false)? {
            Written::Done(pushed) => Ok(pushed),
            Written::Fsync(_) => unreachable!("an async push waits for no fsync"),
        }
    }

    /// Writes `events` as one record, on this thread, moving them into the
    /// batch (they come back to `events` when the batch was not taken);
    /// for a durable push that was spooled, also where its fsync will be
    /// answered.
    fn write(&self, events: &mut Vec<Event>, durable: bool) -> Result<Written, SpoolError> {
        let mut batch = Batch::encode(events)?;
        batch.copy = Some(std::mem::take(events));
        let pushed = self
            .inner
            .push_many(std::slice::from_mut(&mut batch), durable)
            .pop()
            .unwrap_or_else(|| Err(SpoolError::Task("a batch was left undecided".into())));
        let pushed = match pushed {
            Ok(pushed) => pushed,
            Err(error) => {
                if let Some(back) = batch.copy.take() {
                    *events = back;
                }
                return Err(error);
            }
        };
        if !durable || pushed != Pushed::Spooled || batch.events == 0 {
            return Ok(Written::Done(pushed));
        }
        // This write's number, or a later one's: waiting for that is safe.
        let syncer = &self.inner.syncer;
        let seq = syncer.state().written;
        let (answer, fsynced) = oneshot::channel();
        syncer.wait(seq, answer);
        Ok(Written::Fsync(fsynced))
    }

    /// Returns once everything written so far is fsync'd.
    pub async fn sync(&self) -> Result<(), SpoolError> {
        let syncer = &self.inner.syncer;
        let (answer, outcome) = oneshot::channel();
        let seq = syncer.state().written;
        syncer.wait(seq, answer);
        outcome
            .await
            .map_err(|_| SpoolError::Task("the spool's fsync ended without an answer".into()))?
            .map(|_| ())
    }

    /// Writes made and not yet covered by an fsync (0 once the syncer
    /// caught up).
    pub fn unsynced(&self) -> u64 {
        let state = self.inner.syncer.state();
        state.written - state.synced
    }

    /// How many group commits (fsyncs, each covering the writes made
    /// before it) the spool made since it was opened: fewer than pushes
    /// when pushes arrive together.
    pub fn commits(&self) -> u64 {
        self.inner.syncer.state().fsyncs
    }
}

/// How long the syncer lets async writes gather before it fsyncs them,
/// when no durable push waits.
pub const ASYNC_SYNC_DELAY: std::time::Duration = std::time::Duration::from_millis(5);

/// What a push's write left to wait for.
enum Written {
    /// Nothing: this is its outcome.
    Done(Pushed),
    /// The fsync covering it.
    Fsync(oneshot::Receiver<Result<Pushed, SpoolError>>),
}

fn no_fsync_answer() -> SpoolError {
    SpoolError::Task("the spool's fsync ended without an answer".into())
}

/// A batch made ready for the file.
#[derive(Debug)]
struct Batch {
    record: Vec<u8>,
    events: u64,
    source: Option<Source>,
    /// Its events, for [`Kept`] (taken when the record is pending): a
    /// copy, or the pushed events themselves.
    copy: Option<Vec<Event>>,
}

impl Batch {
    /// The record of `events`, without its events yet.
    fn encode(events: &[Event]) -> Result<Batch, SpoolError> {
        let payload = serde_json::to_vec(events).map_err(SpoolError::Encode)?;
        let record = segment::record(&payload).ok_or(SpoolError::TooLarge {
            bytes: payload.len() as u64,
        })?;
        Ok(Batch {
            record,
            events: events.len() as u64,
            source: events.first().map(|e| e.source),
            copy: None,
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves state that only advances
        // after durable writes: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn io(&self, action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
        let path = path.to_path_buf();
        move |source| SpoolError::Io {
            action,
            path,
            source,
        }
    }

    fn segment_path(&self, id: u64) -> PathBuf {
        self.dir.join(segment::file_name(id))
    }

    /// Writes `batches` in order and returns each one's outcome: spooled
    /// once its bytes are written (the syncer fsyncs them), refused or
    /// dropped when it does not fit.
    fn push_many(&self, batches: &mut [Batch], durable: bool) -> Vec<Result<Pushed, SpoolError>> {
        let mut outcomes: Vec<Option<Result<Pushed, SpoolError>>> =
            batches.iter().map(|_| None).collect();
        let mut pending = Pending {
            durable,
            ..Pending::default()
        };
        let mut state = self.lock();
        if self.syncer.failed() {
            state.broken = true;
        }
        for (index, batch) in batches.iter_mut().enumerate() {
            if batch.events == 0 {
                outcomes[index] = Some(Ok(Pushed::Spooled));
                continue;
            }
            if state.broken {
                outcomes[index] = Some(Err(SpoolError::Broken {
                    path: self.dir.clone(),
                }));
                continue;
            }
            let size = batch.record.len() as u64;
            let written = pending.bytes.len() as u64;
            let rolls = match (&state.writer, state.segments.back()) {
                (Some(_), Some(last)) => {
                    last.len + written > segment::HEADER
                        && last.len + written + size > self.options.segment_bytes
                }
                _ => true,
            };
            let needed = size + if rolls { segment::HEADER } else { 0 };
            if state.waiting.disk_bytes + written + needed > self.options.max_bytes {
                outcomes[index] = Some(self.full(&mut state, batch, needed));
                continue;
            }
            if rolls {
                // What the old segment takes is made durable before the
                // next segment starts (the syncer only knows the last one).
                self.commit(&mut state, &mut pending, &mut outcomes);
                if let Some(old) = &state.writer {
                    if let Err(error) = old.sync_data() {
                        tracing::error!(%error, "spool: fsync of a full segment failed; the spool takes no more batches until it is reopened");
                        state.broken = true;
                    }
                }
                if state.broken {
                    outcomes[index] = Some(Err(SpoolError::Broken {
                        path: self.dir.clone(),
                    }));
                    continue;
                }
                if let Err(error) = self.start_segment(&mut state) {
                    outcomes[index] = Some(Err(error));
                    continue;
                }
            }
            pending.bytes.extend_from_slice(&batch.record);
            pending.batches.push(index);
            pending.copies.push((size, batch.copy.take()));
        }
        self.commit(&mut state, &mut pending, &mut outcomes);
        self.size.set(state.waiting.disk_bytes as f64);
        drop(state);
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome
                    .unwrap_or_else(|| Err(SpoolError::Task("a batch was left undecided".into())))
            })
            .collect()
    }

    /// Writes the pending records to the last segment with one write, hands
    /// the fsync to the syncer and settles their outcomes.
    fn commit(
        &self,
        state: &mut State,
        pending: &mut Pending,
        outcomes: &mut [Option<Result<Pushed, SpoolError>>],
    ) {
        if pending.batches.is_empty() {
            return;
        }
        let State {
            writer,
            segments,
            waiting,
            kept,
            broken,
            ..
        } = state;
        let (Some(file), Some(last)) = (writer.as_mut(), segments.back_mut()) else {
            unreachable!("records are pending only in a started segment");
        };
        let written = (&**file).write_all(&pending.bytes);
        match written {
            Ok(()) => {
                let segment = last.id;
                self.syncer
                    .written(file, || self.segment_path(segment), pending.durable);
                let mut at = last.len;
                for (len, copy) in pending.copies.drain(..) {
                    if let Some(events) = copy {
                        kept.keep(last.id, at, at + len, events);
                    }
                    at += len;
                }
                let size = pending.bytes.len() as u64;
                last.len += size;
                waiting.batches += pending.batches.len() as u64;
                waiting.bytes += size;
                waiting.disk_bytes += size;
                for &index in &pending.batches {
                    outcomes[index] = Some(Ok(Pushed::Spooled));
                }
                self.pushed.notify_one();
            }
            Err(error) => {
                // Cut the partial records off, so the file stays whole
                // records; if even that fails, stop taking batches
                // (reopening repairs).
                if file
                    .set_len(last.len)
                    .and_then(|()| file.sync_data())
                    .is_err()
                {
                    *broken = true;
                }
                let path = self.segment_path(last.id);
                for &index in &pending.batches {
                    let source = std::io::Error::new(error.kind(), error.to_string());
                    outcomes[index] = Some(Err(self.io("write to", &path)(source)));
                }
            }
        }
        pending.bytes.clear();
        pending.batches.clear();
        pending.copies.clear();
    }

    /// A batch that does not fit: refused or dropped, as the policy says.
    fn full(&self, state: &mut State, batch: &Batch, needed: u64) -> Result<Pushed, SpoolError> {
        match self.options.when_full {
            WhenFull::FailClosed => Err(SpoolError::Full {
                path: self.dir.clone(),
                used: state.waiting.disk_bytes,
                max_bytes: self.options.max_bytes,
                needed,
            }),
            WhenFull::FailOpen => {
                let first = state.drops.events() == 0;
                state.drops.record(
                    &self.dir,
                    batch.events,
                    batch.source.unwrap_or(Source::Proxy),
                )?;
                state.waiting.dropped_events = state.drops.events();
                if first {
                    tracing::error!(
                        dir = %self.dir.display(),
                        max_bytes = self.options.max_bytes,
                        "spool full: dropping batches (fail_open) until it drains; the drops are reported in the store afterwards"
                    );
                }
                Ok(Pushed::Dropped {
                    events: batch.events,
                })
            }
        }
    }

    /// Creates the next segment, its header on disk and its name in the
    /// directory (both fsync'd) before any record goes in.
    fn start_segment(&self, state: &mut State) -> Result<(), SpoolError> {
        let id = state.next_id;
        let path = self.segment_path(id);
        let mut file = dir::create_private(&path)?;
        let made = file
            .write_all(segment::MAGIC)
            .and_then(|()| file.sync_data())
            .map_err(self.io("write to", &path))
            .and_then(|()| dir::sync(&self.dir));
        if let Err(error) = made {
            // No record is in it: gone, the next push tries afresh.
            let _ = std::fs::remove_file(&path);
            return Err(error);
        }
        state.next_id += 1;
        state.segments.push_back(Segment {
            id,
            len: segment::HEADER,
        });
        state.writer = Some(Arc::new(file));
        state.waiting.disk_bytes += segment::HEADER;
        Ok(())
    }
}

/// Reads the segments on disk into `state`: drops segments drained before a
/// crash, counts the waiting records, cuts a torn tail off the newest.
fn recover(dir: &Path, state: &mut State) -> Result<(), SpoolError> {
    let ids = dir::segment_ids(dir)?;
    let newest = ids.last().copied();
    for id in ids {
        let path = dir.join(segment::file_name(id));
        let is_newest = Some(id) == newest;
        if id < state.read.segment || (id == state.read.segment && !is_newest) {
            // Drained (the position moved past it, or to its end before it
            // was deleted).
            let bytes = std::fs::metadata(&path)
                .map_err(|source| SpoolError::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                })?
                .len();
            if id < state.read.segment || bytes <= state.read.offset {
                std::fs::remove_file(&path).map_err(|source| SpoolError::Io {
                    action: "remove",
                    path: path.clone(),
                    source,
                })?;
                continue;
            }
        }
        let bytes = std::fs::read(&path).map_err(|source| SpoolError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        if is_newest && bytes.len() < segment::MAGIC.len() {
            // Created, but its header never made it to disk: no record was
            // acknowledged in it.
            tracing::warn!(file = %path.display(), "spool: removing a segment a crash left without its header");
            std::fs::remove_file(&path).map_err(|source| SpoolError::Io {
                action: "remove",
                path: path.clone(),
                source,
            })?;
            continue;
        }
        let start = if id == state.read.segment {
            state.read.offset
        } else {
            segment::HEADER
        };
        let scanned = segment::scan(&bytes, start, is_newest, &path)?;
        let mut len = bytes.len() as u64;
        if scanned.torn > 0 {
            tracing::warn!(
                file = %path.display(),
                offset = scanned.end,
                bytes = scanned.torn,
                "spool: cutting off an unfinished record at the end (a crash interrupted its write; it was never acknowledged)"
            );
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(scanned.end).and_then(|()| f.sync_all()))
                .map_err(|source| SpoolError::Io {
                    action: "truncate",
                    path: path.clone(),
                    source,
                });
            file?;
            len = scanned.end;
        }
        state.waiting.batches += scanned.records;
        state.waiting.bytes += scanned.bytes;
        state.waiting.disk_bytes += len;
        state.segments.push_back(Segment { id, len });
        state.next_id = state.next_id.max(id + 1);
    }
    dir::sync(dir)?;
    if let Some(last) = state.segments.back() {
        let path = dir.join(segment::file_name(last.id));
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| SpoolError::Io {
                action: "open",
                path,
                source,
            })?;
        state.writer = Some(Arc::new(file));
    }
    Ok(())
}

/// Reads `len` bytes at `offset` of `path`.
fn read_at(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, SpoolError> {
    let io = |action, source| SpoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(|e| io("open", e))?;
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|e| io("read", e))?;
    Ok(bytes)
}
