//! Revert as SQL: the statement that puts a row back as it was at one of
//! its versions, or that undoes one transaction's changes. Written for a
//! person to read, copy and run; pgtrail never executes it.
//!
//! Values are never spliced into SQL one by one. Each row image goes in
//! whole, as one string literal of its JSON, through
//! `pg_catalog.jsonb_populate_record(NULL::table, …)`: the table's own
//! column types parse each value (the inverse of the `row_to_json` the
//! triggers capture with), so arrays, composites, `bytea`, `numeric` and
//! timestamps come back as they were, and the only escaping is that one
//! literal's. Identifiers are always double-quoted
//! ([`TableName::index_name`]). Postgres text cannot hold NUL, so no
//! captured value holds one (and `jsonb` refuses `\u0000`).
//!
//! Unsafe cases (docs/dashboard.md): changes made after the trail's newest
//! event, foreign keys, generated columns, triggers on the table, and
//! masked columns (the trail holds their hash, which the statement would
//! write back). Every statement starts with a comment that says so.

use pgtrail_core::event::JsonObject;
use pgtrail_core::filter::TableName;
use pgtrail_core::{json, Event};
use serde_json::Value;

use crate::row::{effect, RowEffect};

/// Why no revert statement can be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevertError {
    /// The chosen version is not one of the row's changes.
    #[error("event {0} is not a change of this row")]
    NoSuchVersion(i64),
    /// The events name no table.
    #[error("the events name no table")]
    NoTable,
    /// A change has no key, so no statement can find its row.
    #[error("event {0} has no primary key: its row cannot be found")]
    NoKey(i64),
    /// An UPDATE or DELETE to undo has no old image (the table is not
    /// captured with old values).
    #[error("event {0} has no old values to put back")]
    NoOldImage(i64),
    /// Nothing to undo.
    #[error("no row change to undo")]
    Empty,
}

/// The comment every revert statement starts with.
const CAUTION: &str =
    "-- Written by pgtrail from the audit trail; pgtrail never runs it. Check before running:\n\
-- changes made after the trail's newest event are overwritten; foreign keys may refuse it\n\
-- or cascade; generated columns cannot be written; triggers on the table fire; masked\n\
-- columns hold a hash in the trail, and this statement would write that hash back.\n";

/// A Postgres string literal holding `text`, as `quote_literal` writes it:
/// quotes doubled, and backslashes doubled inside `E'…'` so the literal
/// means the same whatever `standard_conforming_strings` says.
pub fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `name` as a double-quoted identifier.
fn ident(name: &str) -> String {
    TableName {
        schema: None,
        table: name.to_string(),
    }
    .index_name()
}

/// The qualified, quoted table of `event`.
fn table_of(event: &Event) -> Result<String, RevertError> {
    let table = event.table.clone().ok_or(RevertError::NoTable)?;
    Ok(TableName {
        schema: event.schema.clone(),
        table,
    }
    .index_name())
}

/// `jsonb_populate_record(NULL::table, 'values')`: `values` typed by the table.
fn record(table: &str, values: &JsonObject) -> String {
    format!(
        "pg_catalog.jsonb_populate_record(NULL::{table}, {}::pg_catalog.jsonb)",
        literal(&json::object_to_string(values))
    )
}

/// The key columns of `values` (named by `key`), or an error naming `seq`.
fn key_of(key: &JsonObject, values: &JsonObject, seq: i64) -> Result<JsonObject, RevertError> {
    if key.is_empty() {
        return Err(RevertError::NoKey(seq));
    }
    let mut out = JsonObject::new();
    for column in key.keys() {
        // The image's value, typed as captured; the key's text otherwise.
        let value = values.get(column).or_else(|| key.get(column));
        out.insert(
            column.clone(),
            value.map(json::clone).unwrap_or(Value::Null),
        );
    }
    Ok(out)
}

fn key_match(key: &JsonObject) -> String {
    key.keys()
        .map(|c| format!("t.{0} = k.{0}", ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn insert(table: &str, values: &JsonObject) -> String {
    let columns = values
        .keys()
        .map(|c| ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} ({columns})\n  SELECT {columns} FROM {};\n",
        record(table, values)
    )
}

fn delete(table: &str, key: &JsonObject) -> String {
    format!(
        "DELETE FROM {table} AS t\n  USING {} AS k\n  WHERE {};\n",
        record(table, key),
        key_match(key)
    )
}

/// Sets the columns of `values` on the row found by `key`; `None` when
/// there is nothing to set.
fn update(table: &str, key: &JsonObject, values: &JsonObject) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    let set = values
        .keys()
        .map(|c| format!("{0} = v.{0}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "UPDATE {table} AS t\n  SET {set}\n  FROM {} AS v, {} AS k\n  WHERE {};\n",
        record(table, values),
        record(table, key),
        key_match(key)
    ))
}

/// Columns of `to` whose value differs in `from` (or that `from` lacks).
fn differing(from: &JsonObject, to: &JsonObject) -> JsonObject {
    to.iter()
        .filter(|(c, v)| from.get(*c) != Some(*v))
        .map(|(c, v)| (c.clone(), json::clone(v)))
        .collect()
}

/// The statement that makes the row what it was right after its event
/// `seq`, given all its events oldest first ([`crate::Store::row_events`]),
/// computed against its newest state in the trail.
pub fn to_version(events: &[Event], seq: i64) -> Result<String, RevertError> {
    let chosen = events
        .iter()
        .position(|e| e.seq == Some(seq) && effect(e) != RowEffect::None)
        .ok_or(RevertError::NoSuchVersion(seq))?;
    let event = &events[chosen];
    let table = table_of(event)?;
    // A TRUNCATE has no key: the row's other events name it.
    let key = events
        .iter()
        .find_map(|e| e.pk.clone())
        .ok_or(RevertError::NoKey(seq))?;
    let target = crate::row::newest_image(&events[..=chosen]);
    let current = crate::row::newest_image(events);
    let newest = events.iter().rev().find_map(|e| e.seq).unwrap_or(seq);
    let mut out = format!(
        "{CAUTION}-- Puts {table} back as it was after event {seq}; computed against the trail's newest event {newest} of this row.\n"
    );
    let partial: Vec<&str> = events[..=chosen]
        .iter()
        .flat_map(|e| e.partial.iter().map(String::as_str))
        .collect();
    if !partial.is_empty() {
        out.push_str(&format!(
            "-- Columns the capture did not see in full (left as they are): {}\n",
            partial.join(", ")
        ));
    }
    let statement = match (&target, &current) {
        (Some(target), Some(current)) => {
            let key = key_of(&key, current, seq)?;
            update(&table, &key, &differing(current, target))
        }
        (Some(target), None) => Some(insert(&table, target)),
        (None, Some(current)) => Some(delete(&table, &key_of(&key, current, seq)?)),
        (None, None) => None,
    };
    match statement {
        Some(sql) => out.push_str(&sql),
        None => out.push_str("-- Nothing to do: the row is already as it was then.\n"),
    }
    Ok(out)
}

/// The statements that undo `events` (one transaction's, any order), each
/// row change's inverse, newest first, in one transaction. Events that are
/// not row changes (statements, DDL) are left out and named.
pub fn undo_transaction(events: &[Event]) -> Result<String, RevertError> {
    let mut changes: Vec<&Event> = events
        .iter()
        .filter(|e| effect(e) != RowEffect::None && e.kind == pgtrail_core::Kind::RowChange)
        .collect();
    if changes.is_empty() {
        return Err(RevertError::Empty);
    }
    changes.sort_by_key(|e| std::cmp::Reverse(e.seq));
    let mut out = format!("{CAUTION}-- Undoes the row changes of one transaction, newest first.\n");
    let skipped: Vec<String> = events
        .iter()
        .filter(|e| !changes.iter().any(|c| std::ptr::eq(*c, *e)))
        .filter_map(|e| e.seq.map(|s| s.to_string()))
        .collect();
    if !skipped.is_empty() {
        out.push_str(&format!(
            "-- Not undone (not row changes): events {}\n",
            skipped.join(", ")
        ));
    }
    out.push_str("BEGIN;\n");
    for event in changes {
        let seq = event.seq.unwrap_or_default();
        let table = table_of(event)?;
        let key = event.pk.clone().unwrap_or_default();
        let op = event
            .operation
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        let sql = match (effect(event), op.as_str()) {
            (RowEffect::Created, _) => {
                let new = event.new.clone().unwrap_or_default();
                Some(delete(&table, &key_of(&key, &new, seq)?))
            }
            (RowEffect::Removed, "TRUNCATE") => {
                Some("-- a TRUNCATE cannot be undone from the trail's images of one row\n".into())
            }
            (RowEffect::Removed, _) => {
                let old = event.old.as_ref().ok_or(RevertError::NoOldImage(seq))?;
                Some(insert(&table, old))
            }
            (RowEffect::Updated, _) => {
                let old = event.old.as_ref().ok_or(RevertError::NoOldImage(seq))?;
                let new = event.new.clone().unwrap_or_default();
                let mut changed: JsonObject = differing(old, &new)
                    .keys()
                    .filter_map(|c| old.get(c).map(|v| (c.clone(), json::clone(v))))
                    .collect();
                for column in &event.changed {
                    if let Some(v) = old.get(column) {
                        changed.insert(column.clone(), json::clone(v));
                    }
                }
                update(&table, &key_of(&key, &new, seq)?, &changed)
            }
            (RowEffect::None, _) => None,
        };
        out.push_str(&format!("-- undoes event {seq} ({op})\n"));
        out.push_str(sql.as_deref().unwrap_or("-- (nothing to undo)\n"));
    }
    out.push_str("COMMIT;\n");
    Ok(out)
}

#[cfg(test)]
mod tests;
