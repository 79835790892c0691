//! Elastic Common Schema 8.x with the OpenTelemetry database attributes
//! (`db.system`, `db.namespace`, `db.collection.name`, `db.operation.name`,
//! `db.query.text`, `db.response.status_code`), nested as objects the way
//! Elasticsearch reads dotted names. The authenticated role is
//! `user.name`; the application's claimed user is in `related.user` (so a
//! search finds it) and `pgtrail.app_user`. Every event field is under
//! `pgtrail.*` too, as ECS asks of fields it does not define.

use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::Checkpoint;

use super::json::Obj;
use super::{summary, Activity, Level, Outcome, VERSION};

/// The ECS version the records follow.
pub const ECS_VERSION: &str = "8.11.0";

/// One event as one ECS document (no newline).
pub(crate) fn event(event: &Event, host: &str, out: &mut Vec<u8>) {
    let activity = Activity::of(event);
    let mut o = Obj::open(out);
    o.str(
        "@timestamp",
        &pgtrail_core::time::format_micros(&event.captured_at),
    );
    o.str("message", &summary(event));
    o.object("ecs", |ecs| ecs.str("version", ECS_VERSION));
    o.object("event", |ev| {
        ev.str("id", &event.id.to_string());
        ev.str(
            "kind",
            if event.kind == Kind::Alarm {
                "alert"
            } else {
                "event"
            },
        );
        let category: &[&str] = match event.kind {
            Kind::Session => &["authentication", "session", "database"],
            Kind::Ddl => &["database", "configuration"],
            _ => &["database"],
        };
        ev.strs("category", category);
        ev.strs("type", &[event_type(activity)]);
        ev.str("action", &action(event));
        ev.str("outcome", Outcome::of(event).as_str());
        ev.int("severity", severity(Level::of(event)));
        ev.str("module", "pgtrail");
        ev.str("dataset", "pgtrail.audit");
        ev.str("provider", event.source.as_str());
        ev.opt_int("sequence", event.seq);
        ev.opt_str("hash", event.hash.as_deref());
        if let Some(micros) = event.duration_us {
            ev.int("duration", micros.saturating_mul(1000));
        }
    });
    if let Some(name) = event.db_user.as_deref() {
        o.object("user", |user| user.str("name", name));
    }
    if event.client_addr.is_some() || event.client_port.is_some() {
        o.object("source", |src| {
            src.opt_str("ip", event.client_addr.as_deref());
            src.opt_str("address", event.client_addr.as_deref());
            src.opt_int("port", event.client_port.map(i64::from));
        });
    }
    let users: Vec<&str> = [event.db_user.as_deref(), event.app_user.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    if !users.is_empty() || event.client_addr.is_some() {
        o.object("related", |related| {
            related.strs("user", &users);
            if let Some(ip) = event.client_addr.as_deref() {
                related.strs("ip", &[ip]);
            }
            if let Some(hash) = event.hash.as_deref() {
                related.strs("hash", &[hash]);
            }
        });
    }
    if let Some(pid) = event.backend_pid {
        o.object("process", |p| p.int("pid", i64::from(pid)));
    }
    if event.sqlstate.is_some() || event.error.is_some() {
        o.object("error", |error| {
            error.opt_str("code", event.sqlstate.as_deref());
            error.opt_str("message", event.error.as_deref());
        });
    }
    o.object("service", |s| s.str("type", "postgresql"));
    o.object("host", |h| h.str("name", host));
    o.object("agent", |a| {
        a.str("type", "pgtrail");
        a.str("version", VERSION);
    });
    o.object("db", |db| {
        db.str("system", "postgresql");
        db.opt_str("namespace", event.database.as_deref());
        if let Some(table) = event.qualified_table() {
            db.object("collection", |c| c.str("name", &table));
        }
        if let Some(operation) = event.operation.as_deref() {
            db.object("operation", |op| op.str("name", operation));
        }
        if let Some(sql) = event.sql.as_deref() {
            db.object("query", |q| q.str("text", sql));
        }
        if let Some(code) = event.sqlstate.as_deref() {
            db.object("response", |r| r.str("status_code", code));
        }
    });
    o.object("pgtrail", |p| fields(p, event));
    o.end();
}

/// A checkpoint as an ECS `state` document, the checkpoint under
/// `pgtrail.checkpoint`.
pub(crate) fn checkpoint(
    checkpoint: &Checkpoint,
    host: &str,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let body = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
    let mut o = Obj::open(out);
    o.str(
        "@timestamp",
        &pgtrail_core::time::format_micros(&checkpoint.created_at),
    );
    o.str(
        "message",
        &format!(
            "pgtrail checkpoint: event {} has hash {}",
            checkpoint.seq, checkpoint.hash
        ),
    );
    o.object("ecs", |ecs| ecs.str("version", ECS_VERSION));
    o.object("event", |ev| {
        ev.str("id", &format!("checkpoint-{}", checkpoint.seq));
        ev.str("kind", "state");
        ev.strs("category", &["database"]);
        ev.strs("type", &["info"]);
        ev.str("action", "checkpoint");
        ev.str("outcome", "success");
        ev.str("module", "pgtrail");
        ev.str("dataset", "pgtrail.checkpoint");
        ev.int("sequence", checkpoint.seq);
        ev.str("hash", &checkpoint.hash);
    });
    o.object("host", |h| h.str("name", host));
    o.object("agent", |a| {
        a.str("type", "pgtrail");
        a.str("version", VERSION);
    });
    o.object("pgtrail", |p| p.raw("checkpoint", &body));
    o.end();
    Ok(())
}

/// `event.action`: the operation in lower case (`update`, `select`,
/// `create table`, an alarm's code), or the kind.
fn action(event: &Event) -> String {
    event
        .operation
        .as_deref()
        .unwrap_or(event.kind.as_str())
        .to_lowercase()
}

fn event_type(activity: Activity) -> &'static str {
    match activity {
        Activity::Create => "creation",
        Activity::Update | Activity::Write => "change",
        Activity::Delete => "deletion",
        Activity::Read | Activity::Query => "access",
        Activity::Logon => "start",
        Activity::Logoff => "end",
        Activity::Other => "info",
    }
}

/// `event.severity`: 1 informational, 2 a failed statement, 3 a failed
/// login or a quarantined value, 4 an alarm (OCSF's `severity_id`).
fn severity(level: Level) -> i64 {
    match level {
        Level::Info => 1,
        Level::Low => 2,
        Level::Medium => 3,
        Level::High => 4,
    }
}

/// Every event field, by its own name (ECS's custom-field namespace).
fn fields(p: &mut Obj<'_>, e: &Event) {
    p.str("id", &e.id.to_string());
    p.opt_int("seq", e.seq);
    p.str("source", e.source.as_str());
    p.str("kind", e.kind.as_str());
    p.str(
        "captured_at",
        &pgtrail_core::time::format_micros(&e.captured_at),
    );
    p.opt_str("db_user", e.db_user.as_deref());
    p.opt_str("app_user", e.app_user.as_deref());
    p.opt_str("client_addr", e.client_addr.as_deref());
    p.opt_int("client_port", e.client_port.map(i64::from));
    p.opt_str("application_name", e.application_name.as_deref());
    p.opt_int("backend_pid", e.backend_pid.map(i64::from));
    p.opt_str("session_id", e.session_id.as_deref());
    p.object_value("context", e.context.as_ref());
    if let Some(provenance) = &e.provenance {
        if let Ok(json) = serde_json::to_vec(provenance) {
            p.raw("provenance", &json);
        }
    }
    p.opt_str("database", e.database.as_deref());
    p.opt_str("schema", e.schema.as_deref());
    p.opt_str("table", e.table.as_deref());
    p.opt_str("operation", e.operation.as_deref());
    p.strs("objects", &e.objects);
    p.object_value("pk", e.pk.as_ref());
    p.object_value("old", e.old.as_ref());
    p.object_value("new", e.new.as_ref());
    p.strs("changed", &e.changed);
    p.strs("partial", &e.partial);
    p.opt_str("sql", e.sql.as_deref());
    p.array_value("params", e.params.as_deref());
    p.opt_str("class", e.class.as_deref());
    p.opt_str("command_tag", e.command_tag.as_deref());
    p.opt_int("rows", e.rows);
    p.opt_int("duration_us", e.duration_us);
    p.opt_str("sqlstate", e.sqlstate.as_deref());
    p.opt_str("error", e.error.as_deref());
    p.opt_int("xid", e.xid);
    p.opt_str("lsn", e.lsn.as_deref());
    if let Some(at) = &e.committed_at {
        p.str("committed_at", &pgtrail_core::time::format_micros(at));
    }
    p.opt_int("tx_seq", e.tx_seq);
    p.opt_str("prev_hash", e.prev_hash.as_deref());
    p.opt_str("hash", e.hash.as_deref());
}
