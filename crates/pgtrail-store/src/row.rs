//! One row's story, computed from its events ([`crate::Store::row_events`]):
//! its history with field diffs, its state at a moment, and who set each of
//! its current values. Pure functions, so both backends answer alike.

use chrono::{DateTime, Utc};
use pgtrail_core::diff::{diff_rows, FieldChange};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{json, Event, Kind};
use serde::Serialize;
use serde_json::Value;

/// What one event did to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowEffect {
    /// The row now exists with these values (INSERT, snapshot).
    Created,
    /// Some columns changed (UPDATE).
    Updated,
    /// The row is gone (DELETE, TRUNCATE of its table).
    Removed,
    /// Does not change the row's values (anything else).
    None,
}

/// How `event` affects the row it concerns.
pub fn effect(event: &Event) -> RowEffect {
    match (
        event.kind,
        event
            .operation
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref(),
    ) {
        (Kind::Snapshot, _) => RowEffect::Created,
        (Kind::RowChange, Some("INSERT")) => RowEffect::Created,
        (Kind::RowChange, Some("UPDATE")) => RowEffect::Updated,
        (Kind::RowChange, Some("DELETE" | "TRUNCATE")) => RowEffect::Removed,
        _ => RowEffect::None,
    }
}

/// One entry of a row's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The event.
    pub event: Event,
    /// Columns it changed, with values before and after.
    pub changes: Vec<FieldChange>,
}

/// The row's changes, newest first, each with its field diff. The diff of an
/// UPDATE whose old image is partial is taken against the state replayed
/// from earlier events, so unchanged columns never show as changes.
pub fn history(events: &[Event]) -> Vec<HistoryEntry> {
    let mut state: Option<JsonObject> = None;
    let mut entries = Vec::new();
    for event in events {
        let before = state.clone();
        state = apply(state, event);
        let changes = match effect(event) {
            RowEffect::None => continue,
            RowEffect::Removed => diff_rows(before.as_ref().or(event.old.as_ref()), None),
            RowEffect::Created => diff_rows(None, state.as_ref()),
            RowEffect::Updated => {
                let old = merged(before.as_ref(), event.old.as_ref());
                diff_rows(Some(&old), state.as_ref())
            }
        };
        entries.push(HistoryEntry {
            event: event.clone(),
            changes,
        });
    }
    entries.reverse();
    entries
}

/// The row's newest values: its events replayed in order. `None` when it
/// has none, or was deleted (or its table truncated) after the last one
/// that gave it values. Columns no event showed (`partial`) are missing.
pub fn newest_image(events: &[Event]) -> Option<JsonObject> {
    events.iter().fold(None, apply)
}

/// The row's values after `event`, given its values before. Values may be
/// nested thousands deep: copied and freed with core's heap-stack walks.
fn apply(state: Option<JsonObject>, event: &Event) -> Option<JsonObject> {
    match effect(event) {
        RowEffect::Created => {
            if let Some(row) = state {
                json::drop_object(row);
            }
            Some(merged(None, event.new.as_ref()))
        }
        RowEffect::Updated => match state {
            Some(mut row) => {
                overwrite(&mut row, event.new.as_ref());
                Some(row)
            }
            None => Some(merged(event.old.as_ref(), event.new.as_ref())),
        },
        RowEffect::Removed => {
            if let Some(row) = state {
                json::drop_object(row);
            }
            None
        }
        RowEffect::None => state,
    }
}

/// `base` with every column of `over` written on top. Columns the source
/// could not see (`partial`) are not in `over`, so they keep `base`'s value.
fn merged(base: Option<&JsonObject>, over: Option<&JsonObject>) -> JsonObject {
    let mut out = base.map(json::clone_object).unwrap_or_default();
    overwrite(&mut out, over);
    out
}

/// Writes every column of `over` into `row`.
fn overwrite(row: &mut JsonObject, over: Option<&JsonObject>) {
    for (k, v) in over.into_iter().flatten() {
        if let Some(replaced) = row.insert(k.clone(), json::clone(v)) {
            json::drop_deep(replaced);
        }
    }
}

/// The row at one moment.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AsOf {
    /// No event of the row happened by then.
    NotYetExisting {
        /// The first event of the row, if any (after the moment).
        first: Option<Box<Event>>,
    },
    /// The row existed with `values`, last changed by `last`.
    Existing {
        /// Column values.
        values: JsonObject,
        /// The event that gave it those values.
        last: Box<Event>,
    },
    /// The row had been deleted (or its table truncated) by `by`.
    Deleted {
        /// The DELETE or TRUNCATE event.
        by: Box<Event>,
    },
}

/// The row as it was at `at`: replays the row's events captured up to then.
pub fn as_of(events: &[Event], at: DateTime<Utc>) -> AsOf {
    let mut state = None;
    let mut last: Option<&Event> = None;
    for event in events.iter().filter(|e| event_time(e) <= at) {
        if effect(event) == RowEffect::None {
            continue;
        }
        state = apply(state, event);
        last = Some(event);
    }
    match (state, last) {
        (Some(values), Some(last)) => AsOf::Existing {
            values,
            last: Box::new(last.clone()),
        },
        (None, Some(by)) => AsOf::Deleted {
            by: Box::new(by.clone()),
        },
        _ => AsOf::NotYetExisting {
            first: events
                .iter()
                .find(|e| effect(e) != RowEffect::None)
                .map(|e| Box::new(e.clone())),
        },
    }
}

/// When an event took effect: its commit time if known, else its capture time.
pub fn event_time(event: &Event) -> DateTime<Utc> {
    event.committed_at.unwrap_or(event.captured_at)
}

/// Who set one column's current value.
#[derive(Debug, Clone, Serialize)]
pub struct BlameLine {
    /// Column name.
    pub column: String,
    /// Its current value.
    pub value: Value,
    /// The event that set it.
    pub event: Event,
}

/// For each column of the row's latest state, the event that set its value.
/// `None` when the row does not exist now (never did, or was deleted).
pub fn blame(events: &[Event]) -> Option<Vec<BlameLine>> {
    let mut state: Option<JsonObject> = None;
    let mut setters: std::collections::BTreeMap<String, &Event> = Default::default();
    for event in events {
        let before = state.clone();
        state = apply(state, event);
        match effect(event) {
            RowEffect::Created => {
                setters.clear();
                for column in state.iter().flat_map(|s| s.keys()) {
                    setters.insert(column.clone(), event);
                }
            }
            RowEffect::Updated => {
                let old = merged(before.as_ref(), event.old.as_ref());
                for change in diff_rows(Some(&old), state.as_ref()) {
                    setters.insert(change.column, event);
                }
                for column in &event.changed {
                    setters.insert(column.clone(), event);
                }
                // A column added later (ALTER TABLE) first appears in an
                // update's images without changing; this event brought it.
                for column in state.iter().flat_map(|s| s.keys()) {
                    setters.entry(column.clone()).or_insert(event);
                }
            }
            RowEffect::Removed => setters.clear(),
            RowEffect::None => {}
        }
    }
    let state = state?;
    Some(
        state
            .into_iter()
            .filter_map(|(column, value)| {
                let event = (*setters.get(&column)?).clone();
                Some(BlameLine {
                    column,
                    value,
                    event,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
