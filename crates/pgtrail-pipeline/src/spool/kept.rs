//! Batches kept in memory for the drainer: a drainer that keeps up takes
//! the events just pushed from here instead of reading their records back
//! and parsing their JSON, which was a tenth of the proxy's CPU per
//! statement (bench/proxy/cpu). The file stays the truth: a batch is kept
//! only once its record is written whole, and what is not kept (past the
//! bound while the store is away, or pushed before a restart) is read from
//! the file as before.

use std::collections::VecDeque;

use pgtrail_core::Event;

/// Most events kept at once: two drain steps' worth, so a store that is
/// away leaves at most this many in memory (the rest wait on disk only).
pub const KEPT_EVENTS: usize = 2 * super::DRAIN_EVENTS;

/// Most record bytes kept at once: large events (row images of a
/// replication source) fill this bound before [`KEPT_EVENTS`].
pub const KEPT_BYTES: u64 = 16 << 20;

/// The kept batches, in the order their records were written.
#[derive(Debug, Default)]
pub(super) struct Kept {
    records: VecDeque<Record>,
    events: usize,
    bytes: u64,
}

/// One kept batch and where its record lies.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) segment: u64,
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) events: Vec<Event>,
}

impl Kept {
    /// Keeps the events of the record just written at `offset..end` of
    /// `segment`, if they fit under [`KEPT_EVENTS`] and [`KEPT_BYTES`].
    pub(super) fn keep(&mut self, segment: u64, offset: u64, end: u64, events: Vec<Event>) {
        let bytes = end.saturating_sub(offset);
        if self.events + events.len() > KEPT_EVENTS || self.bytes + bytes > KEPT_BYTES {
            return;
        }
        self.events += events.len();
        self.bytes += bytes;
        self.records.push_back(Record {
            segment,
            offset,
            end,
            events,
        });
    }

    /// Takes the kept records that follow one another from `offset` of
    /// `segment`, ending at or before `len`, up to `max_events` events (at
    /// least one record). Forgets first the records before `offset`: they
    /// were drained, read from the file.
    pub(super) fn take_run(
        &mut self,
        segment: u64,
        offset: u64,
        len: u64,
        max_events: usize,
    ) -> Vec<Record> {
        while let Some(front) = self.records.front() {
            if (front.segment, front.offset) >= (segment, offset) {
                break;
            }
            self.pop();
        }
        let mut run = Vec::new();
        let (mut at, mut events) = (offset, 0);
        while let Some(front) = self.records.front() {
            let follows = front.segment == segment && front.offset == at && front.end <= len;
            if !follows || (!run.is_empty() && events >= max_events) {
                break;
            }
            let Some(record) = self.pop() else { break };
            at = record.end;
            events += record.events.len();
            run.push(record);
        }
        run
    }

    fn pop(&mut self) -> Option<Record> {
        let record = self.records.pop_front()?;
        self.events -= record.events.len();
        self.bytes -= record.end - record.offset;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_core::{Kind, Source};

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|_| Event::new(Source::Proxy, Kind::Statement))
            .collect()
    }

    #[test]
    fn a_run_is_taken_only_from_the_drained_position_on() {
        let mut kept = Kept::default();
        kept.keep(1, 8, 100, events(1));
        kept.keep(1, 100, 200, events(2));
        kept.keep(1, 200, 300, events(1));
        kept.keep(2, 8, 50, events(1));
        // Not at the position: nothing (the drain reads the file).
        assert!(kept.take_run(1, 50, 300, 10).is_empty());
        // From 100 on, within the segment's whole records, up to 2 events
        // (at least one record): the record before is forgotten.
        let run = kept.take_run(1, 100, 300, 2);
        assert_eq!(
            run.iter().map(|r| (r.offset, r.end)).collect::<Vec<_>>(),
            [(100, 200)]
        );
        // A record past the segment's known end is not taken.
        assert!(kept.take_run(1, 200, 250, 10).is_empty());
        let run = kept.take_run(1, 200, 300, 10);
        assert_eq!(run.len(), 1);
        // The next segment, and nothing left after it.
        assert_eq!(kept.take_run(2, 8, 50, 10).len(), 1);
        assert_eq!(kept.events, 0);
    }

    #[test]
    fn nothing_is_kept_past_the_bounds() {
        let mut kept = Kept::default();
        kept.keep(1, 8, 100, events(KEPT_EVENTS));
        kept.keep(1, 100, 200, events(1));
        let run = kept.take_run(1, 8, 200, usize::MAX);
        assert_eq!(run.len(), 1, "only the batch that fitted");
        assert_eq!(kept.events, 0);
        // One large event fills the byte bound.
        kept.keep(1, 200, 200 + KEPT_BYTES, events(1));
        kept.keep(1, 200 + KEPT_BYTES, 300 + KEPT_BYTES, events(1));
        let run = kept.take_run(1, 200, 300 + KEPT_BYTES, usize::MAX);
        assert_eq!(run.len(), 1, "only the batch that fitted");
        assert_eq!((kept.events, kept.bytes), (0, 0));
    }
}
