//! Draining: the oldest batches (consecutive records of one segment, up to
//! [`DRAIN_EVENTS`] events) are appended to the store in one append, then
//! the drained position (`drained`: segment, offset and a check, rewritten
//! in place and fsync'd) moves past them, and a segment drained to its end
//! is deleted. Appending a run of batches at once matters for the proxy,
//! whose sessions push a statement or two at a time: one append (and one
//! store commit) per batch would drain only a few hundred events a second.
//! Between the append and the move a crash replays the batch; the store
//! skips event ids it already has, so the replay adds nothing.

use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pgtrail_core::Event;
use pgtrail_store::metrics::Tally;
use pgtrail_store::Store;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{dir, read_at, segment, Inner, Position, Spool, SpoolError};
use crate::retry::{until_done, Backoff};

/// Most events one drain step appends together.
pub const DRAIN_EVENTS: usize = 5_000;

/// The file keeping the drained position.
pub(super) const CURSOR_FILE: &str = "drained";
const CURSOR_LEN: usize = 24;

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Batches appended to the store and removed from the spool.
    pub batches: u64,
    /// Their events.
    pub events: u64,
    /// `alarm` events appended to report dropped batches.
    pub alarms: u64,
    /// True when a stop ended it before the spool was empty.
    pub stopped: bool,
}

fn cursor_check(bytes: &[u8]) -> [u8; 8] {
    let digest = Sha256::digest(bytes);
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The drained position kept in `file`; `None` when there is none yet. A
/// damaged one is ignored with a warning: draining then starts again at
/// the oldest segment, which the store's idempotency makes harmless.
pub(super) fn read_cursor(file: &File, dir: &Path) -> Result<Option<Position>, SpoolError> {
    let mut bytes = [0; CURSOR_LEN];
    let len = file
        .metadata()
        .map_err(|source| SpoolError::Io {
            action: "read",
            path: dir.join(CURSOR_FILE),
            source,
        })?
        .len();
    if len == 0 {
        return Ok(None);
    }
    let whole = len == CURSOR_LEN as u64 && file.read_exact_at(&mut bytes, 0).is_ok();
    if !whole || cursor_check(&bytes[..16]) != bytes[16..] {
        tracing::warn!(
            file = %dir.join(CURSOR_FILE).display(),
            "spool: the drained position is unreadable; draining again from the oldest segment (the store skips what it already has)"
        );
        return Ok(None);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Ok(Some(Position {
        segment: word(0),
        offset: word(8),
    }))
}

fn write_cursor(file: &File, at: Position) -> std::io::Result<()> {
    let mut bytes = [0; CURSOR_LEN];
    bytes[..8].copy_from_slice(&at.segment.to_le_bytes());
    bytes[8..16].copy_from_slice(&at.offset.to_le_bytes());
    let check = cursor_check(&bytes[..16]);
    bytes[16..].copy_from_slice(&check);
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

/// The oldest waiting batches: consecutive records of one segment.
struct Next {
    segment: u64,
    /// Where the first record starts.
    offset: u64,
    /// Where the last record ends.
    end: u64,
    /// How many records (batches as pushed).
    batches: u64,
    events: Vec<Event>,
}

impl Inner {
    /// Reads the oldest waiting batches, up to `max_events` (at least one
    /// batch): those still kept in memory as they were pushed, then from
    /// the file, each record read checked again (the file may have been
    /// damaged since it was opened).
    fn next(&self, max_events: usize) -> Result<Option<Next>, SpoolError> {
        let (id, offset, len, kept) = {
            let mut state = self.lock();
            let Some(front) = state.segments.front() else {
                return Ok(None);
            };
            let offset = match front.id == state.read.segment {
                true => state.read.offset,
                false => segment::HEADER,
            };
            let (id, len) = (front.id, front.len);
            if offset >= len {
                return Ok(None);
            }
            (
                id,
                offset,
                len,
                state.kept.take_run(id, offset, len, max_events),
            )
        };
        let mut next = Next {
            segment: id,
            offset,
            end: offset,
            batches: 0,
            events: Vec::new(),
        };
        // One allocation for the run, not a doubling per kept record.
        next.events
            .reserve(kept.iter().map(|record| record.events.len()).sum());
        for record in kept {
            next.events.extend(record.events);
            next.end = record.end;
            next.batches += 1;
        }
        if next.end >= len || (next.batches > 0 && next.events.len() >= max_events) {
            return Ok(Some(next));
        }
        // Bytes before `len` are whole records that no one changes.
        let path = self.segment_path(id);
        // One read for the run (up to READ_AHEAD), not an open and two
        // reads per record.
        let bytes = match read_at(&path, next.end, (len - next.end).min(READ_AHEAD)) {
            Ok(bytes) => bytes,
            Err(_) if next.batches > 0 => return Ok(Some(next)),
            Err(error) => return Err(error),
        };
        let ahead = ReadAhead {
            start: next.end,
            bytes,
        };
        while next.end < len && (next.batches == 0 || next.events.len() < max_events) {
            match read_record(&path, next.end, len, &ahead) {
                Ok((end, events)) => {
                    next.events.extend(events);
                    next.end = end;
                    next.batches += 1;
                }
                // The records before a damaged one drain first; the damage
                // is reported when it is the oldest.
                Err(_) if next.batches > 0 => break,
                Err(error) => return Err(error),
            }
        }
        Ok(Some(next))
    }

    /// Records that the `batches` records from `offset` to `end` are in the
    /// store; deletes their segment once drained to the end.
    fn advance(&self, segment: u64, offset: u64, end: u64, batches: u64) -> Result<(), SpoolError> {
        let at = Position {
            segment,
            offset: end,
        };
        // Outside the state's lock: pushes go on during this fsync.
        write_cursor(&self.cursor, at).map_err(|source| SpoolError::Io {
            action: "write",
            path: self.dir.join(CURSOR_FILE),
            source,
        })?;
        let mut state = self.lock();
        state.read = at;
        state.waiting.batches -= batches;
        state.waiting.bytes -= end - offset;
        let finished = state
            .segments
            .front()
            .filter(|front| front.id == segment && front.len <= end)
            .map(|front| front.len);
        if let Some(len) = finished {
            if state.segments.len() == 1 {
                state.writer = None;
            }
            state.segments.pop_front();
            state.waiting.disk_bytes -= len;
            self.size.set(state.waiting.disk_bytes as f64);
            let path = self.segment_path(segment);
            std::fs::remove_file(&path).map_err(|source| SpoolError::Io {
                action: "remove",
                path,
                source,
            })?;
            dir::sync(&self.dir)?;
        }
        Ok(())
    }
}

/// Most bytes of a segment a drain step reads at once.
const READ_AHEAD: u64 = 4 << 20;

/// Bytes of a segment from `start`, read at once.
struct ReadAhead {
    start: u64,
    bytes: Vec<u8>,
}

impl ReadAhead {
    /// `n` bytes at `at` of the segment at `path`: from what was read
    /// ahead, or read now when they are not all in it.
    fn get(&self, path: &Path, at: u64, n: u64) -> Result<Cow<'_, [u8]>, SpoolError> {
        let within = at
            .checked_sub(self.start)
            .and_then(|from| usize::try_from(from).ok())
            .and_then(|from| Some(from..from.checked_add(usize::try_from(n).ok()?)?))
            .and_then(|range| self.bytes.get(range));
        match within {
            Some(bytes) => Ok(Cow::Borrowed(bytes)),
            None => Ok(Cow::Owned(read_at(path, at, n)?)),
        }
    }
}

/// Reads and checks the record at `at` of the segment at `path` (whose
/// whole records end at `len`): where it ends and its events.
fn read_record(
    path: &Path,
    at: u64,
    len: u64,
    ahead: &ReadAhead,
) -> Result<(u64, Vec<Event>), SpoolError> {
    let corrupt = |reason: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset: at,
        reason,
    };
    let header = ahead.get(path, at, segment::RECORD_HEADER)?;
    let payload_len = segment::payload_len(&header).map_err(|r| corrupt(r.into()))?;
    let end = at + segment::RECORD_HEADER + payload_len;
    if end > len {
        return Err(corrupt("record runs past the end of the segment".into()));
    }
    let bytes = ahead.get(path, at, end - at)?;
    let payload = segment::open_record(&bytes, path, at)?;
    let events = serde_json::from_slice(payload)
        .map_err(|e| corrupt(format!("not a batch of events: {e}")))?;
    Ok((end, events))
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    work: impl FnOnce(&Inner) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || work(&inner))
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))?
}

impl Spool {
    /// Appends every waiting batch to `store`, oldest first, each removed
    /// from the spool once the store's `append` returned; then reports
    /// dropped batches, if any, with an `alarm` event. Store failures that
    /// may pass are retried (`backoff`) until they pass or `stop` is asked;
    /// a failure that will not pass ends the drain with the batch still
    /// spooled. One drain runs at a time (others wait for it).
    pub async fn drain(
        &self,
        store: &dyn Store,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Drained, SpoolError> {
        self.drain_lingering(store, backoff, stop, std::time::Duration::ZERO)
            .await
    }

    /// [`Spool::drain`], letting pushes gather for `linger` after each
    /// append that took fewer than [`DRAIN_EVENTS`] events. Without it a
    /// drainer that keeps up appends whatever came during the previous
    /// append: a few dozen events per store transaction, whose fixed costs
    /// (commit, fsyncs, pages rewritten) were most of the proxy's CPU per
    /// statement (bench/proxy/cpu).
    async fn drain_lingering(
        &self,
        store: &dyn Store,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
        linger: std::time::Duration,
    ) -> Result<Drained, SpoolError> {
        let _one_at_a_time = self.inner.draining.lock().await;
        let mut drained = Drained::default();
        loop {
            if *stop.borrow() {
                drained.stopped = true;
                return Ok(drained);
            }
            let Some(next) = blocking(&self.inner, |inner| inner.next(DRAIN_EVENTS)).await? else {
                if self.report_drops(store, backoff, stop).await? {
                    drained.alarms += 1;
                    continue;
                }
                drained.stopped = *stop.borrow();
                return Ok(drained);
            };
            let appended = until_done(
                "Appending spooled batches to the store",
                "they stay in the spool, and newer batches wait behind them",
                backoff,
                stop,
                || async {
                    let started = Instant::now();
                    store.append(&next.events).await?;
                    Ok(started.elapsed())
                },
            )
            .await
            .map_err(SpoolError::Store)?;
            let Some(took) = appended else {
                drained.stopped = true;
                return Ok(drained);
            };
            Tally::of(&next.events).record(took);
            let (segment, offset, end, batches) =
                (next.segment, next.offset, next.end, next.batches);
            blocking(&self.inner, move |inner| {
                inner.advance(segment, offset, end, batches)
            })
            .await?;
            drained.batches += batches;
            drained.events += next.events.len() as u64;
            if !linger.is_zero() && next.events.len() < DRAIN_EVENTS {
                let asked = stop.wait_for(|s| *s);
                let _ = tokio::time::timeout(linger, asked).await;
            }
        }
    }

    /// Appends the alarm for dropped batches, if there are any; true when
    /// one was appended.
    async fn report_drops(
        &self,
        store: &dyn Store,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, SpoolError> {
        let report = blocking(&self.inner, |inner| {
            let mut state = inner.lock();
            state.drops.start_report(&inner.dir)
        })
        .await?;
        let Some(report) = report else {
            return Ok(false);
        };
        let alarm = report.alarm(&self.inner.dir);
        let appended = until_done(
            "Appending the alarm for batches the full spool dropped",
            "their count stays in the spool",
            backoff,
            stop,
            || async {
                let started = Instant::now();
                store.append(std::slice::from_ref(&alarm)).await?;
                Ok(started.elapsed())
            },
        )
        .await
        .map_err(SpoolError::Store)?;
        let Some(took) = appended else {
            return Ok(false);
        };
        Tally::of(std::slice::from_ref(&alarm)).record(took);
        blocking(&self.inner, |inner| {
            let mut state = inner.lock();
            state.drops.finish_report(&inner.dir)?;
            state.waiting.dropped_events = state.drops.events();
            Ok(())
        })
        .await?;
        tracing::warn!(
            dropped_events = report.events(),
            "spool: the dropped batches are reported in the store (alarm spool_dropped)"
        );
        Ok(true)
    }

    /// Drains whenever something is pushed, until `stop` is asked: the
    /// drainer a long-running source starts beside its spool.
    pub async fn run(
        &self,
        store: &dyn Store,
        backoff: &mut Backoff,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Drained, SpoolError> {
        let mut total = Drained::default();
        let linger = self.inner.options.drain_linger;
        loop {
            let drained = self.drain_lingering(store, backoff, stop, linger).await?;
            total.batches += drained.batches;
            total.events += drained.events;
            total.alarms += drained.alarms;
            if drained.stopped {
                total.stopped = true;
                return Ok(total);
            }
            // A push since the drain found the spool empty left a permit:
            // this returns at once.
            let pushed = self.inner.pushed.notified();
            let asked = async {
                if stop.wait_for(|s| *s).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = pushed => {}
                () = asked => {
                    total.stopped = true;
                    return Ok(total);
                }
            }
            // Let more pushes gather (a stop asked meanwhile still drains
            // what is there first).
            if !linger.is_zero() {
                let asked = stop.wait_for(|s| *s);
                let _ = tokio::time::timeout(linger, asked).await;
            }
        }
    }
}
