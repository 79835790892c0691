//! Which stretch of the chain holds an hour's events (`seq_hours`, both
//! stores): for each hour an event was captured in, the least and the
//! greatest `seq` of the events captured in it.
//!
//! A search with a time window walks its key's index newest first and stops
//! at its limit; capture time is not monotone in `seq` (a spool drained
//! late, an import of old history), so without this a walk cannot know where
//! the window ends and reads on to the start of the chain when the window
//! holds fewer matches than the limit. Every event of a window `[since,
//! until)` has its `seq` in [`Ranges::bounds`] of the window's hours: the
//! walks get a `seq` range the indexes can seek to, and the window's own
//! condition still decides.
//!
//! A range narrowed by someone with the store would hide events from a
//! windowed search, so `verify` recomputes the ranges from the events
//! ([`compare`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgtrail_core::Filter;

use crate::facet_hours::{hour, HOUR_US};
use crate::Mismatch;

/// `hour` → `(first, last)`: the least and greatest `seq` captured in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(pub BTreeMap<i64, (i64, i64)>);

impl Ranges {
    /// Counts the event `seq`, captured at `captured_at` (µs), in its hour.
    pub fn add(&mut self, seq: i64, captured_at: i64) {
        self.0
            .entry(hour(captured_at))
            .and_modify(|(first, last)| {
                *first = (*first).min(seq);
                *last = (*last).max(seq);
            })
            .or_insert((seq, seq));
    }

    /// Adds another set of ranges (another page, another batch).
    pub fn extend(&mut self, other: Ranges) {
        for (hour, (first, last)) in other.0 {
            self.0
                .entry(hour)
                .and_modify(|(f, l)| {
                    *f = (*f).min(first);
                    *l = (*l).max(last);
                })
                .or_insert((first, last));
        }
    }

    /// The `seq` range holding every event of the hours `[first, last]`
    /// (inclusive), or `None` when no event was captured in them.
    pub fn bounds(&self, first_hour: i64, last_hour: i64) -> Option<(i64, i64)> {
        self.0
            .range(first_hour..=last_hour)
            .map(|(_, range)| *range)
            .reduce(|(f, l), (first, last)| (f.min(first), l.max(last)))
    }
}

/// The hours, inclusive, a window `[since, until)` touches; an open end is
/// `i64::MIN` or `i64::MAX`. `None` when the window is empty.
pub fn window_hours(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Option<(i64, i64)> {
    let first = since.map_or(i64::MIN, |s| hour(s.timestamp_micros()));
    // `until` is excluded: the last hour holds the microsecond before it.
    let last = match until {
        Some(u) => hour(u.timestamp_micros().checked_sub(1)?),
        None => i64::MAX,
    };
    if let (Some(s), Some(u)) = (since, until) {
        if s >= u {
            return None;
        }
    }
    Some((first, last))
}

/// Where a search's time window lies in the chain, as a store answers it
/// from its `seq_hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// No `since` or `until`: the whole chain.
    Unbounded,
    /// No event was captured in the window's hours (or the window is empty).
    Empty,
    /// Every event of the window has its `seq` in `first..=last`.
    Seqs(i64, i64),
}

impl Window {
    /// The hours, inclusive, whose ranges a store reads for `filter`'s
    /// window, or the answer when there is nothing to read.
    pub fn hours_to_read(filter: &Filter) -> Result<(i64, i64), Window> {
        if filter.since.is_none() && filter.until.is_none() {
            return Err(Window::Unbounded);
        }
        window_hours(filter.since, filter.until).ok_or(Window::Empty)
    }

    /// The window from the least `first_seq` and the greatest `last_seq`
    /// of its hours (`None`: no hour holds an event).
    pub fn from_bounds(first: Option<i64>, last: Option<i64>) -> Window {
        match (first, last) {
            (Some(first), Some(last)) => Window::Seqs(first, last),
            _ => Window::Empty,
        }
    }
}

/// Compares what a store's `seq_hours` holds (`stored`: `(hour, first,
/// last)`) with the ranges `expected` from the events: one mismatch,
/// reported at `at` (the last `seq` checked), per hour that differs,
/// stored or expected.
pub fn compare(
    stored: impl IntoIterator<Item = (i64, i64, i64)>,
    mut expected: Ranges,
    at: i64,
) -> Vec<(i64, Mismatch)> {
    let mut mismatches = Vec::new();
    for (hour, first, last) in stored {
        let want = expected.0.remove(&hour);
        if want != Some((first, last)) {
            mismatches.push(mismatch(at, hour, Some((first, last)), want));
        }
    }
    for (hour, want) in expected.0 {
        mismatches.push(mismatch(at, hour, None, Some(want)));
    }
    mismatches
}

fn mismatch(
    at: i64,
    hour: i64,
    found: Option<(i64, i64)>,
    expected: Option<(i64, i64)>,
) -> (i64, Mismatch) {
    let start = DateTime::from_timestamp_micros(hour.saturating_mul(HOUR_US)).map_or_else(
        || hour.to_string(),
        |t| pgtrail_core::time::format_micros(&t),
    );
    let show = |range: Option<(i64, i64)>| {
        range.map_or_else(
            || "NULL".to_string(),
            |(first, last)| format!("seq {first} to {last}"),
        )
    };
    (
        at,
        Mismatch {
            column: format!("seq_hours (the hour from {start})"),
            found: show(found),
            expected: show(expected),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, h, m, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn an_hour_holds_its_least_and_greatest_seq_whatever_the_order() {
        let mut ranges = Ranges::default();
        // Captured out of chain order: a late event of 10:00 after 11:00's.
        ranges.add(1, at(10, 5).timestamp_micros());
        ranges.add(2, at(11, 0).timestamp_micros());
        ranges.add(3, at(10, 59).timestamp_micros());
        let h10 = hour(at(10, 0).timestamp_micros());
        assert_eq!(ranges.0.get(&h10), Some(&(1, 3)));
        assert_eq!(ranges.bounds(h10, h10 + 1), Some((1, 3)));
        assert_eq!(ranges.bounds(h10 + 1, h10 + 1), Some((2, 2)));
        assert_eq!(ranges.bounds(h10 + 2, i64::MAX), None);
    }

    #[test]
    fn a_window_touches_the_hours_of_its_first_and_last_microsecond() {
        let h10 = hour(at(10, 0).timestamp_micros());
        assert_eq!(
            window_hours(Some(at(10, 30)), Some(at(12, 0))),
            Some((h10, h10 + 1))
        );
        assert_eq!(window_hours(Some(at(10, 30)), None), Some((h10, i64::MAX)));
        assert_eq!(window_hours(None, Some(at(10, 1))), Some((i64::MIN, h10)));
        assert_eq!(window_hours(Some(at(11, 0)), Some(at(11, 0))), None);
    }

    #[test]
    fn a_narrowed_or_missing_hour_is_named() {
        let mut expected = Ranges::default();
        expected.add(5, at(10, 0).timestamp_micros());
        expected.add(9, at(10, 1).timestamp_micros());
        expected.add(7, at(12, 0).timestamp_micros());
        let h10 = hour(at(10, 0).timestamp_micros());
        // Hour 10 narrowed to hide seq 5; hour 12 removed.
        let found = compare([(h10, 6, 9)], expected, 9);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].1.found, "seq 6 to 9");
        assert_eq!(found[0].1.expected, "seq 5 to 9");
        assert_eq!(found[1].1.found, "NULL");
    }
}
