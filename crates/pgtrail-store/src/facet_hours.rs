//! What both stores' facet summaries share (`facet_hours`: events per
//! hour, facet and value): the hour an event counts in, which filters the
//! summary answers, how a time window splits into whole hours (read from
//! the summary) and partial hours at its edges (counted from the events),
//! and how `verify` names a count that disagrees with the events.

use std::collections::HashMap;

use pgtrail_core::search::{Facets, FACET_NAMES};
use pgtrail_core::{Event, Filter};

use crate::Mismatch;

/// Microseconds in an hour: the summary's grain.
pub const HOUR_US: i64 = 3_600_000_000;

/// `(hour, facet, value)` → events, as a summary holds them.
pub type Counts = HashMap<(i64, &'static str, String), i64>;

/// The hour an event captured at `captured_at` (µs) is counted in.
pub fn hour(captured_at: i64) -> i64 {
    captured_at.div_euclid(HOUR_US)
}

/// Adds `event`'s facet values (`Facets::of_event`) to `counts`.
pub fn add_event(counts: &mut Counts, event: &Event) {
    let hour = hour(event.captured_at.timestamp_micros());
    for (facet, value) in Facets::of_event(event) {
        *counts.entry((hour, facet, value)).or_default() += 1;
    }
}

/// Whether a summary can answer `filter`: nothing but a time window.
pub fn answers(filter: &Filter) -> bool {
    let window_only = Filter {
        since: filter.since,
        until: filter.until,
        limit: filter.limit,
        ..Filter::default()
    };
    *filter == window_only
}

/// A time window split for counting.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// `[first, end)` whole hours, read from the summary; `None` when the
    /// window holds no whole hour.
    pub hours: Option<(i64, i64)>,
    /// The rest of the window, counted from the events: the partial hours
    /// at its edges, or the whole window when it holds no whole hour.
    pub edges: Vec<Filter>,
}

/// Splits `filter`'s window (see [`answers`]) into whole hours and edges.
pub fn split(filter: &Filter) -> Split {
    let since = filter.since.map(|t| t.timestamp_micros());
    let until = filter.until.map(|t| t.timestamp_micros());
    // From the first hour starting at or after `since` to the last one
    // ending at or before `until`.
    let first = since.map_or(i64::MIN, |s| {
        s.div_euclid(HOUR_US) + i64::from(s.rem_euclid(HOUR_US) != 0)
    });
    let end = until.map_or(i64::MAX, |u| u.div_euclid(HOUR_US));
    if first >= end {
        return Split {
            hours: None,
            edges: vec![Filter {
                since: filter.since,
                until: filter.until,
                ..Filter::default()
            }],
        };
    }
    let to_time = |hour: i64| chrono::DateTime::from_timestamp_micros(hour.saturating_mul(HOUR_US));
    let mut edges = Vec::new();
    if let Some(since) = filter.since {
        edges.push(Filter {
            since: Some(since),
            until: to_time(first),
            ..Filter::default()
        });
    }
    if let Some(until) = filter.until {
        edges.push(Filter {
            since: to_time(end),
            until: Some(until),
            ..Filter::default()
        });
    }
    edges.retain(|edge| edge.since != edge.until);
    Split {
        hours: Some((first, end)),
        edges,
    }
}

/// Events counted in `counts` (`(facet, value, count)`): every event has
/// one source.
pub fn counted<'a>(counts: impl IntoIterator<Item = &'a (String, String, u64)>) -> u64 {
    counts
        .into_iter()
        .filter(|(facet, _, _)| facet == "source")
        .map(|(_, _, n)| n)
        .sum()
}

/// The facets of `counts`, a value counted in several parts (whole hours,
/// edges) added up, each list cut to the `top`.
pub fn total(
    counts: impl IntoIterator<Item = (String, String, u64)>,
    complete: bool,
    top: usize,
) -> Facets {
    let mut totals = HashMap::<(String, String), u64>::new();
    for (facet, value, n) in counts {
        *totals.entry((facet, value)).or_default() += n;
    }
    let counts: Vec<_> = totals.into_iter().map(|((f, v), n)| (f, v, n)).collect();
    let events = counted(&counts);
    Facets::from_counts(counts, events, complete, top)
}

/// `facet` as one of [`FACET_NAMES`], or `None` for a name no event has.
pub fn static_facet(facet: &str) -> Option<&'static str> {
    FACET_NAMES.into_iter().find(|f| *f == facet)
}

/// Compares what a summary holds (`stored`: `(hour, facet, value, count)`)
/// with `expected`: one mismatch, reported at `last`, per count that
/// differs, stored or expected.
pub fn compare(
    stored: impl IntoIterator<Item = (i64, String, String, i64)>,
    mut expected: Counts,
    last: i64,
) -> Vec<(i64, Mismatch)> {
    let mut mismatches = Vec::new();
    for (hour, facet, value, count) in stored {
        let want = static_facet(&facet)
            .and_then(|f| expected.remove(&(hour, f, value.clone())))
            .unwrap_or(0);
        if want != count {
            mismatches.push(mismatch(last, hour, &facet, &value, count, want));
        }
    }
    for ((hour, facet, value), want) in expected {
        if want != 0 {
            mismatches.push(mismatch(last, hour, facet, &value, 0, want));
        }
    }
    mismatches
}

fn mismatch(
    last: i64,
    hour: i64,
    facet: &str,
    value: &str,
    found: i64,
    expected: i64,
) -> (i64, Mismatch) {
    let at = chrono::DateTime::from_timestamp_micros(hour.saturating_mul(HOUR_US)).map_or_else(
        || hour.to_string(),
        |t| pgtrail_core::time::format_micros(&t),
    );
    (
        last,
        Mismatch {
            column: format!("facet_hours ({facet} '{value}' in the hour from {at})"),
            found: found.to_string(),
            expected: expected.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_window_splits_into_whole_hours_and_its_edges() {
        let since = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).single();
        let until = Utc.with_ymd_and_hms(2026, 1, 1, 13, 15, 0).single();
        let filter = Filter {
            since,
            until,
            ..Filter::default()
        };
        let split = split(&filter);
        let hour_of = |h: u32| {
            Utc.with_ymd_and_hms(2026, 1, 1, h, 0, 0)
                .single()
                .map(|t| hour(t.timestamp_micros()))
        };
        assert_eq!(split.hours.map(|h| Some(h.0)), Some(hour_of(11)));
        assert_eq!(split.hours.map(|h| Some(h.1)), Some(hour_of(13)));
        assert_eq!(split.edges.len(), 2);
        assert_eq!(split.edges[0].since, since);
        assert_eq!(split.edges[1].until, until);
    }

    #[test]
    fn a_window_inside_one_hour_is_all_edge() {
        let since = Utc.with_ymd_and_hms(2026, 1, 1, 10, 5, 0).single();
        let until = Utc.with_ymd_and_hms(2026, 1, 1, 10, 55, 0).single();
        let filter = Filter {
            since,
            until,
            ..Filter::default()
        };
        let split = split(&filter);
        assert_eq!(split.hours, None);
        assert_eq!(split.edges.len(), 1);
        assert_eq!((split.edges[0].since, split.edges[0].until), (since, until));
    }
}
