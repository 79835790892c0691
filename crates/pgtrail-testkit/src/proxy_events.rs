//! Hand-built proxy events, shaped as the proxy writes them (the contract
//! of issue 11: `statement` and `session` events, source `proxy`), for tests
//! that read the trail back without running a proxy.

use chrono::{DateTime, Utc};
use pgtrail_core::event::Channel;
use pgtrail_core::{Event, Kind, Source};
use serde_json::json;

/// A statement `db_user` ran at `at`: `operation` (`SELECT`, `DELETE`, …)
/// of `class` (`READ`, `WRITE`, …), touching `objects` (qualified
/// `schema.table`; the first is the target, as the proxy picks it), that
/// affected or returned `rows`. Succeeded; see [`failed`].
pub fn statement(
    at: DateTime<Utc>,
    db_user: &str,
    operation: &str,
    class: &str,
    objects: &[&str],
    sql: &str,
    rows: i64,
) -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Statement, at);
    actor(&mut e, db_user);
    e.sql = Some(sql.into());
    e.class = Some(class.into());
    e.operation = Some(operation.into());
    e.command_tag = Some(match operation {
        "INSERT" => format!("INSERT 0 {rows}"),
        "SELECT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE" => {
            format!("{operation} {rows}")
        }
        other => other.to_string(),
    });
    e.rows = Some(rows);
    e.duration_us = Some(180);
    e.objects = objects.iter().map(|o| o.to_string()).collect();
    if let Some((schema, table)) = objects.first().and_then(|o| o.split_once('.')) {
        e.schema = Some(schema.trim_matches('"').into());
        e.table = Some(table.trim_matches('"').into());
    }
    e.context = json!({"transaction_status": "idle", "protocol": "extended"})
        .as_object()
        .cloned();
    e
}

/// `event` as the statement that failed with `sqlstate` and `error`: no
/// command tag, no rows.
pub fn failed(mut event: Event, sqlstate: &str, error: &str) -> Event {
    event.sqlstate = Some(sqlstate.into());
    event.error = Some(error.into());
    event.command_tag = None;
    event.rows = None;
    event
}

/// `event` with the application user `user` claimed through `channel`
/// (`SET pgtrail.user`, a sqlcommenter comment).
pub fn claimed(mut event: Event, user: &str, channel: Channel) -> Event {
    event.app_user = Some(user.into());
    event.claim("app_user", channel);
    event
}

/// A login as `db_user` to `database` from `client_addr` at `at`: it
/// succeeded, or failed with `(sqlstate, message)`.
pub fn login(
    at: DateTime<Utc>,
    db_user: &str,
    database: &str,
    client_addr: &str,
    failure: Option<(&str, &str)>,
) -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Session, at);
    e.db_user = Some(db_user.into());
    e.database = Some(database.into());
    e.client_addr = Some(client_addr.into());
    e.client_port = Some(50_432);
    e.application_name = Some("psql".into());
    e.session_id = Some(format!("test-{}", at.timestamp_micros()));
    e.operation = Some("CONNECT".into());
    match failure {
        Some((sqlstate, message)) => {
            e.sqlstate = Some(sqlstate.into());
            e.error = Some(message.into());
        }
        None => e.backend_pid = Some(4242),
    }
    e.vouch_server_fields();
    e
}

/// The end of a session that lasted `duration_us` and ran `statements`.
pub fn disconnect(
    at: DateTime<Utc>,
    db_user: &str,
    database: &str,
    client_addr: &str,
    duration_us: i64,
    statements: i64,
) -> Event {
    let mut e = login(at, db_user, database, client_addr, None);
    e.operation = Some("DISCONNECT".into());
    e.duration_us = Some(duration_us);
    e.context =
        json!({"statements": statements, "bytes_from_client": 900, "bytes_to_client": 4100})
            .as_object()
            .cloned();
    e
}

/// The actor fields of a session of `db_user` to `shop` from 10.0.0.2.
fn actor(e: &mut Event, db_user: &str) {
    e.db_user = Some(db_user.into());
    e.database = Some("shop".into());
    e.client_addr = Some("10.0.0.2".into());
    e.client_port = Some(50_432);
    e.application_name = Some("app".into());
    e.backend_pid = Some(4242);
    e.session_id = Some("test-1".into());
    e.vouch_server_fields();
}
