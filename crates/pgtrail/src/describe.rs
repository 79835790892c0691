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

/// Who did it: the application user as a claim, with the channel it came
/// through, and the database role the server vouches for —
/// `alice@example.com (claimed, setting; app)` — or whichever is known.
pub fn actor(event: &Event) -> String {
    let claim = |app: &str| {
        let channels = event
            .provenance
            .as_ref()
            .map(|p| p.channels("app_user"))
            .unwrap_or_default();
        if channels.is_empty() {
            format!("{app} (claimed")
        } else {
            let names: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
            format!("{app} (claimed, {}", names.join("+"))
        }
    };
    match (&event.app_user, &event.db_user) {
        (Some(app), Some(db)) => format!("{}; {db})", claim(app)),
        (Some(app), None) => format!("{})", claim(app)),
        (None, Some(db)) => db.clone(),
        (None, None) => "-".into(),
    }
}

/// One line on what happened: what an alarm says, the error of a failure,
/// the changed columns of an update, the SQL of a statement or DDL.
pub fn summary(event: &Event) -> String {
    if event.kind == pgtrail_core::Kind::Alarm {
        let detail = event
            .context
            .as_ref()
            .and_then(|c| c.get("alarm"))
            .and_then(Value::as_str);
        let what = event.operation.as_deref().unwrap_or("alarm");
        return match detail {
            Some(detail) => format!("ALARM {what}: {detail}"),
            None => format!("ALARM {what}"),
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_core::event::Channel;
    use pgtrail_core::{Kind, Source};

    #[test]
    fn an_application_user_shows_as_a_claim_with_its_channel() {
        let mut event = Event::new(Source::Trigger, Kind::RowChange);
        assert_eq!(actor(&event), "-");
        event.db_user = Some("app".into());
        event.vouch_server_fields();
        assert_eq!(actor(&event), "app", "the server's role is shown as it is");
        event.app_user = Some("alice@example.com".into());
        event.claim("app_user", Channel::Setting);
        assert_eq!(actor(&event), "alice@example.com (claimed, setting; app)");
        event.db_user = None;
        event.provenance = None;
        assert_eq!(
            actor(&event),
            "alice@example.com (claimed)",
            "an event from before provenance was recorded"
        );
        event.claim("app_user", Channel::Comment);
        assert_eq!(actor(&event), "alice@example.com (claimed, comment)");
    }

    #[test]
    fn an_alarm_says_what_it_is() {
        let mut event = Event::new(Source::Cdc, Kind::Alarm);
        event.operation = Some("actor_missing".into());
        assert_eq!(summary(&event), "ALARM actor_missing");
        event.context = Some(pgtrail_core::alarm::context("who made them is unknown"));
        assert_eq!(
            summary(&event),
            "ALARM actor_missing: who made them is unknown"
        );
    }
}
