//! One sink's delivery loop, a part of `pgtrail run`: read the store after
//! the sink's cursor ([`Store::scan`]), hand the events, with each signed
//! checkpoint right after the events it covers, to [`Sink::deliver`], and
//! move the persisted cursor only once the destination said `Ok`.
//!
//! The runner only reads the store, so capture never waits for a sink. A
//! failed batch is handed again after a back-off (the pipeline's
//! [`Backoff`]), the same items in the same order, however long it takes:
//! a destination that refuses a batch for good stalls its sink (the lag in
//! `status` and `/metrics` grows, the log says why on every attempt) and
//! never skips an event. A cursor that cannot be trusted (another store's,
//! edited, ahead of the chain) stalls the sink the same way, with the
//! reason logged, rather than stopping capture or starting over.
//!
//! New events are found by polling: an idle runner looks again every
//! `idle` (default 200 ms), so an event sealed while it is idle goes out
//! within about that much plus one delivery.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use pgtrail_core::Event;
use pgtrail_pipeline::retry::{error_chain, log_failure, sleep_or_stop, Backoff};
use pgtrail_store::checkpoint::Checkpoint;
use pgtrail_store::open::redact_url;
use pgtrail_store::{RawEvent, Store, StoreError};
use tokio::sync::{mpsc, watch};

use crate::cursor::{Cursor, CursorError, LastError};
use crate::sink::{Item, Sealed, Sink, SinkError};

/// How long an idle runner waits before looking for new events.
pub const IDLE: Duration = Duration::from_millis(200);

/// How often pending checkpoints are looked for while no event comes.
const CHECKPOINTS_EVERY: Duration = Duration::from_secs(5);

/// One sink, ready to run.
pub struct Runner {
    /// The sink's name (its cursor file, its metric label).
    pub name: String,
    /// The store it reads.
    pub store_url: String,
    /// The destination.
    pub sink: Box<dyn Sink>,
    /// Its cursor file.
    pub cursor_path: PathBuf,
    /// Most events per delivery.
    pub batch: usize,
    /// Pause when there is nothing new.
    pub idle: Duration,
    /// Pauses after failures ([`backoff`] by default).
    pub backoff: Backoff,
}

/// The default pauses after failed deliveries: 0.5 s doubling up to 60 s.
pub fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(60))
}

/// How far a sink is behind its store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    /// Events sealed and not yet delivered.
    pub events: i64,
    /// Age of the oldest of them (0 when none).
    pub seconds: f64,
}

/// The lag of a sink at `cursor_seq` in `store`.
pub async fn lag(store: &dyn Store, cursor_seq: i64) -> Result<Lag, StoreError> {
    let head = store.head().await?.map_or(0, |head| head.seq);
    let events = (head - cursor_seq).max(0);
    let seconds = match events {
        0 => 0.0,
        _ => store
            .scan(cursor_seq, 1)
            .await?
            .first()
            .map_or(0.0, age_seconds),
    };
    Ok(Lag { events, seconds })
}

/// Where one `[[sinks]]` entry stands, as `pgtrail status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkStatus {
    /// The sink's name.
    pub name: String,
    /// The store it reads (without password).
    pub store: String,
    /// Its cursor file.
    pub cursor: String,
    /// The last event delivered (0: none yet; `None`: unknown).
    pub delivered_seq: Option<i64>,
    /// When the destination last took a batch.
    pub delivered_at: Option<chrono::DateTime<Utc>>,
    /// Events sealed and not delivered.
    pub lag_events: Option<i64>,
    /// Age of the oldest of them.
    pub lag_seconds: Option<f64>,
    /// The last failed delivery, until one goes through.
    pub last_error: Option<LastError>,
    /// Set when the sink needs attention: failing, stalled on a refused
    /// cursor, or its store unreadable.
    pub warning: Option<String>,
}

/// Reads the cursor of `config` and its store: how far behind it is, its
/// last error, and a warning when its cursor would be refused.
pub async fn status(config: &pgtrail_core::config::SinkConfig, default_store: &str) -> SinkStatus {
    let store_url = config.store.as_deref().unwrap_or(default_store);
    let mut report = SinkStatus {
        name: config.name.clone(),
        store: redact_url(store_url),
        cursor: String::new(),
        delivered_seq: None,
        delivered_at: None,
        lag_events: None,
        lag_seconds: None,
        last_error: None,
        warning: None,
    };
    let dir = match crate::cursor::state_dir(config.state_dir.as_deref(), store_url) {
        Ok(dir) => dir,
        Err(reason) => {
            report.warning = Some(reason);
            return report;
        }
    };
    let path = crate::cursor::path(&dir, &config.name);
    report.cursor = path.display().to_string();
    let read = async {
        let store = pgtrail_store::open(store_url).await?;
        let store_id = store
            .store_id()
            .await?
            .ok_or_else(|| CursorError::NoStoreId(store.location()))?;
        let cursor = Cursor::load(&path)?.unwrap_or_else(|| Cursor::start(&store_id));
        let checked = cursor.check(store.as_ref(), &store_id, &path).await;
        let lag = lag(store.as_ref(), cursor.seq).await?;
        Ok::<_, CursorError>((cursor, checked, lag))
    };
    match read.await {
        Ok((cursor, checked, lag)) => {
            report.delivered_seq = Some(cursor.seq);
            report.delivered_at = cursor.delivered_at;
            report.lag_events = Some(lag.events);
            report.lag_seconds = Some(lag.seconds);
            report.warning = match (&checked, &cursor.last_error) {
                (Err(refused), _) => Some(format!("stalled: {refused}")),
                (Ok(()), Some(error)) => Some(format!(
                    "failing since {} ({} attempts): {}",
                    error.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    error.failures,
                    error.message
                )),
                (Ok(()), None) => None,
            };
            report.last_error = cursor.last_error;
        }
        Err(error) => report.warning = Some(format!("cannot read: {error}")),
    }
    report
}

fn age_seconds(event: &impl Sealed) -> f64 {
    let Some(captured_at) = event.captured_at() else {
        return 0.0;
    };
    let age = Utc::now() - captured_at;
    (age.num_milliseconds().max(0) as f64) / 1000.0
}

/// The next items to deliver: `events` (ascending, after the cursor) with
/// the pending checkpoints (`pending`, the store's in order, not yet
/// delivered) each placed right after the last event it covers. A
/// checkpoint whose events are not all in hand waits, and so do the ones
/// after it. Returns the items and how many checkpoints they hold.
pub fn interleave<E: Sealed>(
    cursor_seq: i64,
    events: Vec<E>,
    pending: &[Checkpoint],
) -> (Vec<Item<E>>, usize) {
    let mut items = Vec::with_capacity(events.len() + pending.len());
    let mut next = 0;
    let mut covered = cursor_seq;
    for event in events {
        let seq = event.seq().unwrap_or_default();
        while next < pending.len() && pending[next].seq < seq && pending[next].seq <= covered {
            items.push(Item::Checkpoint(pending[next].clone()));
            next += 1;
        }
        covered = seq;
        items.push(Item::Event(event));
    }
    while next < pending.len() && pending[next].seq <= covered {
        items.push(Item::Checkpoint(pending[next].clone()));
        next += 1;
    }
    (items, next)
}

impl Runner {
    /// Delivers until `stop` turns true. Never fails: what may pass is
    /// retried, what will not stalls this sink (logged) until stopped.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        // The sink is only `Send`: kept apart from what is borrowed across
        // awaits.
        let Runner {
            name,
            store_url,
            mut sink,
            cursor_path,
            batch,
            idle,
            backoff,
        } = self;
        let this = Place {
            name,
            store_url,
            cursor_path,
            batch,
            idle,
            backoff,
        };
        this.deliver(sink.as_mut(), &mut stop).await;
    }
}

/// A runner's settings, without its sink.
struct Place {
    name: String,
    store_url: String,
    cursor_path: PathBuf,
    batch: usize,
    idle: Duration,
    backoff: Backoff,
}

impl Place {
    async fn deliver(&self, sink: &mut dyn Sink, stop: &mut watch::Receiver<bool>) {
        let mut stop = stop.clone();
        let destination = sink.destination();
        tracing::info!(
            sink = %self.name,
            destination = %destination,
            store = %redact_url(&self.store_url),
            cursor = %self.cursor_path.display(),
            "sink starting"
        );
        let Some((store, cursor)) = self.start(&mut stop).await else {
            return;
        };
        let mut saver = Saver {
            name: self.name.clone(),
            path: self.cursor_path.clone(),
            pending: None,
        };
        self.deliver_batches(sink, &mut stop, store, cursor, &mut saver)
            .await;
        // Stopped: the last save lands before the runner ends.
        saver.wait().await;
    }

    /// Delivers batch after batch until stopped, the cursor saved (by
    /// `saver`) after each batch the destination took.
    async fn deliver_batches(
        &self,
        sink: &mut dyn Sink,
        stop: &mut watch::Receiver<bool>,
        store: Arc<dyn Store>,
        mut cursor: Cursor,
        saver: &mut Saver,
    ) {
        let destination = sink.destination();
        let label = self.name.clone();
        let delivered = metrics::counter!("pgtrail_sink_delivered_total", "sink" => label.clone());
        let failed = metrics::counter!("pgtrail_sink_failures_total", "sink" => label.clone());
        let lag_events = metrics::gauge!("pgtrail_sink_lag_events", "sink" => label.clone());
        let lag_seconds = metrics::gauge!("pgtrail_sink_lag_seconds", "sink" => label.clone());
        let batch_seconds = metrics::histogram!("pgtrail_sink_batch_seconds", "sink" => label);

        // The next batch is read from the store while this one is
        // delivered; the reader only reads, and the cursor below moves
        // only past batches the destination took, in order.
        let (ahead, mut batches) = mpsc::channel(1);
        let reader = ReadAhead {
            name: self.name.clone(),
            raw: sink.reads_raw(),
            store: Arc::clone(&store),
            seq: cursor.seq,
            checkpoints: cursor.checkpoints,
            batch: self.batch.max(1),
            idle: self.idle,
            backoff: self.backoff.clone(),
            lag_events: lag_events.clone(),
            lag_seconds: lag_seconds.clone(),
        };
        let _reader = AbortOnDrop(tokio::spawn(reader.run(ahead)));

        let mut backoff = self.backoff.clone();
        loop {
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            let Some(batch) = batch else {
                // The reader ended: it never does unless it panicked.
                tracing::error!(sink = %self.name, "sink stopped: its store reader ended");
                return;
            };
            // The same items until the destination takes them.
            loop {
                let started = Instant::now();
                let delivery = async {
                    match &batch.items {
                        Items::Decoded(items) => sink.deliver(items).await,
                        Items::Raw(items) => sink.deliver_raw(items).await,
                    }
                };
                let outcome = tokio::select! {
                    outcome = delivery => outcome,
                    _ = stop.wait_for(|stop| *stop) => return,
                };
                match outcome {
                    Ok(()) => {
                        batch_seconds.record(started.elapsed().as_secs_f64());
                        delivered.increment(batch.events as u64);
                        let failures = backoff.succeeded();
                        if failures > 0 {
                            tracing::info!(sink = %self.name, failures, "sink delivers again");
                        }
                        if let Some((seq, hash)) = &batch.last_event {
                            cursor.seq = *seq;
                            cursor.hash = hash.clone();
                        }
                        cursor.checkpoints += batch.checkpoints;
                        cursor.delivered_at = Some(Utc::now());
                        cursor.last_error = None;
                        // Saved (fsync'd) on a blocking thread while the
                        // next batch goes out.
                        saver.save(&cursor).await;
                        break;
                    }
                    Err(error) => {
                        failed.increment(1);
                        let pause = backoff.failed();
                        let last = batch
                            .last_event
                            .as_ref()
                            .map_or(cursor.seq, |(seq, _)| *seq);
                        let meanwhile = format!(
                            "events {}..={} are handed again, never skipped (sink {} stalls until {} takes them)",
                            cursor.seq + 1,
                            last,
                            self.name,
                            destination
                        );
                        if let SinkError::Refused { .. } = error {
                            // Will not pass by itself: said loudly at once.
                            tracing::error!(
                                sink = %self.name,
                                failures = backoff.failures(),
                                pause_ms = pause.as_millis() as u64,
                                error = %error_chain(&error),
                                "sink {}: the destination refused the batch; fix it (or the token); {meanwhile}. Retrying.",
                                self.name
                            );
                        } else {
                            log_failure(
                                &format!("sink {}: delivering", self.name),
                                &meanwhile,
                                &error,
                                backoff.failures(),
                                pause,
                            );
                        }
                        // The lag keeps growing while stalled.
                        if let Ok(now) = lag(store.as_ref(), cursor.seq).await {
                            lag_events.set(now.events as f64);
                            lag_seconds.set(now.seconds);
                        }
                        cursor.last_error = Some(LastError {
                            at: Utc::now(),
                            message: error_chain(&error),
                            failures: backoff.failures(),
                        });
                        saver.save(&cursor).await;
                        if sleep_or_stop(pause, stop).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Opens the store and loads and checks the cursor, retrying what may
    /// pass; `None` when stopped first. A cursor that cannot be trusted
    /// stalls here until stopped.
    async fn start(&self, stop: &mut watch::Receiver<bool>) -> Option<(Arc<dyn Store>, Cursor)> {
        let mut backoff = self.backoff.clone();
        let what = format!("sink {}: opening its store and cursor", self.name);
        loop {
            let error = match self.try_start().await {
                Ok(started) => return Some(started),
                Err(error) => error,
            };
            let pause = backoff.failed();
            if error.is_retryable() {
                log_failure(
                    &what,
                    "nothing is skipped",
                    &error,
                    backoff.failures(),
                    pause,
                );
            } else {
                // Stalled for good: said loudly, again and again, so it is
                // not missed; capture goes on.
                tracing::error!(
                    sink = %self.name,
                    error = %error_chain(&error),
                    "sink stalled: it delivers nothing until this is fixed"
                );
            }
            if sleep_or_stop(pause, stop).await {
                return None;
            }
        }
    }

    async fn try_start(&self) -> Result<(Arc<dyn Store>, Cursor), CursorError> {
        let store = pgtrail_store::open(&self.store_url).await?;
        let store_id = store
            .store_id()
            .await?
            .ok_or_else(|| CursorError::NoStoreId(store.location()))?;
        let cursor = match Cursor::load(&self.cursor_path)? {
            Some(cursor) => cursor,
            None => {
                tracing::info!(sink = %self.name, "no cursor yet: delivering from the first event");
                Cursor::start(&store_id)
            }
        };
        cursor
            .check(store.as_ref(), &store_id, &self.cursor_path)
            .await?;
        if cursor.seq > 0 {
            tracing::info!(sink = %self.name, seq = cursor.seq, "resuming after the cursor");
        }
        Ok((store, cursor))
    }
}

/// Persists a sink's cursor on a blocking thread, so a batch's fsyncs
/// overlap the next batch's delivery. One save at a time, in the order
/// asked: a save starts only once the one before it ended, so the file
/// never moves back, and it only ever holds a cursor the destination
/// took (a kill -9 meanwhile leaves the one before: those events go out
/// again after a restart, never fewer).
struct Saver {
    name: String,
    path: PathBuf,
    pending: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    /// Starts saving `cursor` once the save before it ended. A failure is
    /// logged and the next batch tries again (the file then lags: events
    /// after it go out again, never fewer).
    async fn save(&mut self, cursor: &Cursor) {
        self.wait().await;
        let (cursor, path, name) = (cursor.clone(), self.path.clone(), self.name.clone());
        self.pending = Some(tokio::task::spawn_blocking(move || {
            if let Err(error) = cursor.save(&path) {
                tracing::warn!(sink = %name, error = %error, "cannot save the sink's cursor; events after the saved one will be delivered again after a restart");
            }
        }));
    }

    /// Waits for the save under way, if any.
    async fn wait(&mut self) {
        if let Some(pending) = self.pending.take() {
            if let Err(error) = pending.await {
                tracing::warn!(sink = %self.name, error = %error, "saving the sink's cursor ended abnormally; events after the saved one will be delivered again after a restart");
            }
        }
    }
}

/// A batch read from the store, and where the cursor stands once the
/// destination took it.
struct Batch {
    items: Items,
    /// How many of the items are events.
    events: usize,
    /// The `seq` and hash of its last event (`None`: checkpoints only).
    last_event: Option<(i64, Option<String>)>,
    /// How many checkpoints it holds.
    checkpoints: usize,
}

/// A batch's items: events decoded, or as stored for a sink that
/// [`Sink::reads_raw`].
enum Items {
    Decoded(Vec<Item>),
    Raw(Vec<Item<RawEvent>>),
}

/// Events read from the store, decoded or as stored.
enum Events {
    Decoded(Vec<Event>),
    Raw(Vec<RawEvent>),
}

impl Events {
    fn is_empty(&self) -> bool {
        match self {
            Events::Decoded(events) => events.is_empty(),
            Events::Raw(events) => events.is_empty(),
        }
    }

    /// How long ago the oldest was captured (`None`: no events).
    fn oldest_age(&self) -> Option<f64> {
        match self {
            Events::Decoded(events) => events.first().map(age_seconds),
            Events::Raw(events) => events.first().map(age_seconds),
        }
    }
}

/// Reads the store ahead of delivery, one batch at a time, in chain order.
/// It starts at the cursor and never skips: what it hands over is every
/// event after the previous batch, with the checkpoints they complete.
struct ReadAhead {
    name: String,
    store: Arc<dyn Store>,
    /// Read events as stored (`Store::scan_raw`), not decoded.
    raw: bool,
    /// The last event read (handed to the channel).
    seq: i64,
    /// Checkpoints read (handed to the channel).
    checkpoints: usize,
    batch: usize,
    idle: Duration,
    backoff: Backoff,
    lag_events: metrics::Gauge,
    lag_seconds: metrics::Gauge,
}

impl ReadAhead {
    /// Reads until the delivering side is gone.
    async fn run(mut self, batches: mpsc::Sender<Batch>) {
        let mut checkpoints: Vec<Checkpoint> = Vec::new();
        let mut checkpoints_read: Option<Instant> = None;
        let what = format!("sink {}: reading the store", self.name);
        loop {
            let read = match self.raw {
                true => self
                    .store
                    .scan_raw(self.seq, self.batch)
                    .await
                    .map(Events::Raw),
                false => self
                    .store
                    .scan(self.seq, self.batch)
                    .await
                    .map(Events::Decoded),
            };
            let events = match read {
                Ok(events) => events,
                Err(error) => {
                    self.failed(&what, &error).await;
                    continue;
                }
            };
            // Checkpoints are read again when events came (a checkpoint
            // may cover them) and every few seconds when idle.
            let stale = checkpoints_read.is_none_or(|at| at.elapsed() >= CHECKPOINTS_EVERY);
            if !events.is_empty() || stale {
                match self.store.checkpoints().await {
                    Ok(all) => {
                        checkpoints = all;
                        checkpoints_read = Some(Instant::now());
                    }
                    Err(error) => {
                        self.failed(&what, &error).await;
                        continue;
                    }
                }
            }
            self.backoff.succeeded();
            match events.oldest_age() {
                Some(age) => {
                    self.lag_seconds.set(age);
                    if let Ok(Some(head)) = self.store.head().await {
                        self.lag_events.set((head.seq - self.seq).max(0) as f64);
                    }
                }
                None => {
                    self.lag_events.set(0.0);
                    self.lag_seconds.set(0.0);
                }
            }
            let pending = checkpoints.get(self.checkpoints..).unwrap_or_default();
            let batch = match events {
                Events::Decoded(events) => self.batch(events, pending, Items::Decoded),
                Events::Raw(events) => self.batch(events, pending, Items::Raw),
            };
            let Some(batch) = batch else {
                tokio::time::sleep(self.idle).await;
                continue;
            };
            if batches.send(batch).await.is_err() {
                return;
            }
        }
    }

    /// The next batch: `events` with the `pending` checkpoints they
    /// complete (`None` when there is nothing to hand over); moves the
    /// reader past them.
    fn batch<E: Sealed>(
        &mut self,
        events: Vec<E>,
        pending: &[Checkpoint],
        items: fn(Vec<Item<E>>) -> Items,
    ) -> Option<Batch> {
        let (list, sent_checkpoints) = interleave(self.seq, events, pending);
        if list.is_empty() {
            return None;
        }
        let last_event = list.iter().rev().find_map(|item| match item {
            Item::Event(event) => Some((event.seq().unwrap_or(self.seq), event.hash())),
            Item::Checkpoint(_) => None,
        });
        let events = list
            .iter()
            .filter(|item| matches!(item, Item::Event(_)))
            .count();
        if let Some((seq, _)) = &last_event {
            self.seq = *seq;
        }
        self.checkpoints += sent_checkpoints;
        Some(Batch {
            items: items(list),
            events,
            last_event,
            checkpoints: sent_checkpoints,
        })
    }

    async fn failed(&mut self, what: &str, error: &StoreError) {
        let pause = self.backoff.failed();
        log_failure(
            what,
            "nothing is skipped",
            error,
            self.backoff.failures(),
            pause,
        );
        tokio::time::sleep(pause).await;
    }
}

/// Ends a task when its owner is done with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_core::{Kind, Source};
    use pgtrail_store::CheckpointKind;

    fn event(seq: i64) -> Event {
        let mut event = Event::new(Source::Proxy, Kind::Statement);
        event.seq = Some(seq);
        event
    }

    fn checkpoint(seq: i64) -> Checkpoint {
        Checkpoint {
            kind: CheckpointKind::Head,
            seq,
            hash: String::new(),
            count: seq,
            created_at: Utc::now(),
            public_key: None,
            signature: None,
            note: None,
            frontier: None,
        }
    }

    fn shape(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Item::Event(e) => format!("e{}", e.seq.unwrap_or_default()),
                Item::Checkpoint(c) => format!("c{}", c.seq),
            })
            .collect()
    }

    #[test]
    fn checkpoints_follow_the_events_they_cover_and_wait_for_the_rest() {
        let pending = [checkpoint(3), checkpoint(5), checkpoint(9), checkpoint(4)];
        let (items, sent) = interleave(2, (3..=6).map(event).collect(), &pending);
        assert_eq!(shape(&items), ["e3", "c3", "e4", "e5", "c5", "e6"]);
        assert_eq!(sent, 2, "c9 is not covered yet, and c4 waits behind it");

        // A checkpoint made after its events went out comes on its own.
        let (items, sent) = interleave(6, Vec::new(), &[checkpoint(6)]);
        assert_eq!(shape(&items), ["c6"]);
        assert_eq!(sent, 1);
        let (items, sent) = interleave(6, vec![event(7)], &[checkpoint(5), checkpoint(7)]);
        assert_eq!(shape(&items), ["c5", "e7", "c7"]);
        assert_eq!(sent, 2);
    }
}
