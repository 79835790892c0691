//! What an append tells `/metrics` (docs/metrics.md): events stored per
//! source and kind, alarms by name, how long the append took and how many
//! events it held.
//!
//! Each writer calls [`Tally::record`] where its durable append returned
//! (the pipeline's writer and spool drain, the trigger drain after its
//! commit, the server's access writer, the alarm watches), so a count never
//! includes a batch that was not stored. Labels are fixed words (the
//! event's `Source` and `Kind`, the alarm codes of
//! [`pgtrail_core::alarm::ALL`]), never a value from captured data: a
//! table, user or alarm text cannot become a label. Without an installed
//! recorder (every command but `run` and `serve`) recording does nothing.

use std::time::Duration;

use pgtrail_core::{Event, Kind, Source};

/// Counter: events appended, by `source` and `kind`.
pub const EVENTS_APPENDED: &str = "pgtrail_events_appended_total";
/// Histogram: seconds one durable append took.
pub const APPEND_SECONDS: &str = "pgtrail_append_seconds";
/// Histogram: events per durable append.
pub const APPEND_BATCH_EVENTS: &str = "pgtrail_append_batch_events";
/// Counter: `alarm` events appended, by `alarm` (the code).
pub const ALARMS: &str = "pgtrail_alarms_total";

/// The events of one append (or of several appends committed together),
/// counted per label set before they are recorded.
#[derive(Debug, Default)]
pub struct Tally {
    counts: Vec<(Source, Kind, u64)>,
    alarms: Vec<(&'static str, u64)>,
    events: u64,
}

impl Tally {
    /// A tally of `events`.
    pub fn of(events: &[Event]) -> Tally {
        let mut tally = Tally::default();
        tally.add(events);
        tally
    }

    /// Counts `events` in.
    pub fn add(&mut self, events: &[Event]) {
        for event in events {
            self.events += 1;
            match self
                .counts
                .iter_mut()
                .find(|(s, k, _)| *s == event.source && *k == event.kind)
            {
                Some((_, _, n)) => *n += 1,
                None => self.counts.push((event.source, event.kind, 1)),
            }
            if event.kind == Kind::Alarm {
                let code = alarm_label(event.operation.as_deref());
                match self.alarms.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, n)) => *n += 1,
                    None => self.alarms.push((code, 1)),
                }
            }
        }
    }

    /// Events counted.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Records the tally: call once the append that stored these events
    /// returned (for a caller's transaction: once it committed). `took`:
    /// how long that append took.
    pub fn record(self, took: Duration) {
        if self.events == 0 {
            return;
        }
        for (source, kind, n) in self.counts {
            metrics::counter!(EVENTS_APPENDED, "source" => source.as_str(), "kind" => kind.as_str())
                .increment(n);
        }
        for (alarm, n) in self.alarms {
            metrics::counter!(ALARMS, "alarm" => alarm).increment(n);
        }
        metrics::histogram!(APPEND_SECONDS).record(took.as_secs_f64());
        metrics::histogram!(APPEND_BATCH_EVENTS).record(self.events as f64);
    }
}

/// The label of an alarm event's code: one of the known codes, or `other`.
fn alarm_label(code: Option<&str>) -> &'static str {
    code.and_then(|code| {
        pgtrail_core::alarm::ALL
            .iter()
            .find(|known| **known == code)
            .copied()
    })
    .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_code_from_data_is_never_a_label() {
        assert_eq!(alarm_label(Some("seq_gap")), "seq_gap");
        assert_eq!(alarm_label(Some("x\",evil=\"1")), "other");
        assert_eq!(alarm_label(None), "other");
    }

    #[test]
    fn a_tally_counts_per_source_kind_and_alarm() {
        let mut events = vec![
            Event::new(Source::Trigger, Kind::RowChange),
            Event::new(Source::Trigger, Kind::RowChange),
            Event::new(Source::Trigger, Kind::Ddl),
        ];
        let mut alarm = Event::new(Source::Trigger, Kind::Alarm);
        alarm.operation = Some("capture_trigger_dropped".into());
        events.push(alarm);
        let tally = Tally::of(&events);
        assert_eq!(tally.events(), 4);
        assert!(tally
            .counts
            .contains(&(Source::Trigger, Kind::RowChange, 2)));
        assert!(tally.counts.contains(&(Source::Trigger, Kind::Ddl, 1)));
        assert_eq!(tally.alarms, vec![("capture_trigger_dropped", 1)]);
    }
}
