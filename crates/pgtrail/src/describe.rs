//! Short human text for events and values, as tables show them.
//!
//! Tables are for reading, so they abbreviate; `--format json` always has
//! every field exactly.

use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::Event;
use serde_json::Value;

/// A time to the second, UTC, in a form `--since`/`as-of` accept back.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A column value: strings as they are, `NULL` for null, JSON for the rest.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => s.clone(),
        other => pgtrail_core::json::to_string(other),
    }
}

/// A value that may be absent from a row image (`-` when absent).
pub fn maybe_value(v: Option<&Value>) -> String {
    v.map_or_else(|| "-".into(), value)
}

/// A key as typed on the command line: `id=1`, `a=1,b=x`.
pub fn pk(pk: &JsonObject) -> String {
    pk.iter()
        .map(|(k, v)| format!("{k}={}", value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Who did it: `app user (db role)`, or whichever is known.
pub fn actor(event: &Event) -> String {
    match (&event.app_user, &event.db_user) {
        (Some(app), Some(db)) if app != db => format!("{app} ({db})"),
        (Some(app), _) => app.clone(),
        (None, Some(db)) => db.clone(),
        (None, None) => "-".into(),
    }
}

/// One line on what happened: the error of a failure, the changed columns of
/// an update, the SQL of a statement or DDL.
pub fn summary(event: &Event) -> String {
    if event.failed() {
        let code = event
            .sqlstate
            .as_deref()
            .map(|s| format!("{s} "))
            .unwrap_or_default();
        let error = event.error.as_deref().unwrap_or("failed");
        return match &event.sql {
            Some(sql) => format!("ERROR {code}{error}: {sql}"),
            None => format!("ERROR {code}{error}"),
        };
    }
    if !event.changed.is_empty() {
        return format!("changed {}", event.changed.join(", "));
    }
    if let Some(sql) = &event.sql {
        return sql.clone();
    }
    match event
        .operation
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("INSERT") => format!(
            "new row, {} columns",
            event.new.as_ref().map_or(0, |n| n.len())
        ),
        Some("DELETE") => "row deleted".into(),
        Some("TRUNCATE") => "table truncated".into(),
        _ if !event.objects.is_empty() => event.objects.join(", "),
        _ => String::new(),
    }
}

/// `schema.table`, else the relations a statement touched, else `-`.
pub fn table(event: &Event) -> String {
    match event.qualified_table() {
        Some(table) => table,
        None if !event.objects.is_empty() => event.objects.join(","),
        None => "-".into(),
    }
}

/// An optional number, or `-`.
pub fn number(n: Option<i64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}
