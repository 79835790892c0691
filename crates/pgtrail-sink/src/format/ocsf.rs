//! OCSF 1.3: statements, row changes, DDL, snapshots, alarms and the
//! trail's access records as Datastore Activity (class 6005, category 6
//! Application Activity); the proxy's session events (logins, failed
//! logins, logoffs) as Authentication (class 3002, category 3 Identity &
//! Access Management); checkpoints as a Base Event (class 0). The base
//! attributes OCSF requires are always there (`activity_id`,
//! `category_uid`, `class_uid`, `type_uid`, `severity_id`, `time`,
//! `metadata.product`, `metadata.version`), and each class's own (`actor`
//! and `src_endpoint` for 6005, `user` for 3002); every event field
//! without an OCSF attribute goes under `unmapped` by its own name.

use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::Checkpoint;

use super::json::Obj;
use super::{millis, summary, Activity, Level, Outcome, VERSION};

/// The OCSF version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";

/// One event as one OCSF object (no newline).
pub(crate) fn event(event: &Event, out: &mut Vec<u8>) {
    let activity = Activity::of(event);
    let authentication = event.kind == Kind::Session;
    let (category, category_name, class, class_name) = if authentication {
        (3, "Identity & Access Management", 3002, "Authentication")
    } else {
        (6, "Application Activity", 6005, "Datastore Activity")
    };
    let (activity_id, activity_name) = activity_of(activity, authentication, event);
    let level = Level::of(event);
    let outcome = Outcome::of(event);
    let mut o = Obj::open(out);
    o.int("activity_id", activity_id);
    o.str("activity_name", &activity_name);
    o.int("category_uid", category);
    o.str("category_name", category_name);
    o.int("class_uid", class);
    o.str("class_name", class_name);
    o.int("type_uid", class * 100 + activity_id);
    o.str("type_name", &format!("{class_name}: {activity_name}"));
    let (severity_id, severity) = severity(level);
    o.int("severity_id", severity_id);
    o.str("severity", severity);
    o.int("time", millis(&event.captured_at));
    o.str("message", &summary(event));
    let (status_id, status) = match outcome {
        Outcome::Success => (1, "Success"),
        Outcome::Failure => (2, "Failure"),
        Outcome::Unknown => (0, "Unknown"),
    };
    o.int("status_id", status_id);
    o.str("status", status);
    o.opt_str("status_code", event.sqlstate.as_deref());
    o.opt_str("status_detail", event.error.as_deref());
    if let Some(micros) = event.duration_us {
        o.int("duration", micros / 1000);
    }
    metadata(
        &mut o,
        &event.id.to_string(),
        event.seq,
        event.kind.as_str(),
    );
    o.object("actor", |actor| {
        if let Some(name) = user_name(event) {
            actor.object("user", |user| user.str("name", name));
        }
        if let Some(session) = event.session_id.as_deref() {
            actor.object("session", |s| s.str("uid", session));
        }
        actor.opt_str("app_name", event.application_name.as_deref());
    });
    if authentication {
        o.object("user", |user| {
            user.str("name", user_name(event).unwrap_or("unknown"));
        });
        if let Some(database) = event.database.as_deref() {
            o.object("service", |service| service.str("name", database));
        }
    }
    o.object("src_endpoint", |src| {
        src.opt_str("ip", event.client_addr.as_deref());
        src.opt_int("port", event.client_port.map(i64::from));
    });
    if !authentication {
        if let Some(database) = event.database.as_deref() {
            o.object("database", |db| {
                db.str("name", database);
                db.int("type_id", 1);
                db.str("type", "Relational");
            });
        }
        if let Some(table) = event.qualified_table() {
            o.object("table", |t| t.str("name", &table));
        }
        if event.sql.is_some() || event.rows.is_some() {
            o.object("query_info", |q| {
                q.opt_str("query_string", event.sql.as_deref());
                q.opt_int("num_results", event.rows);
            });
        }
    }
    o.object("unmapped", |u| unmapped(u, event));
    o.end();
}

/// A checkpoint as an OCSF Base Event (class 0, activity Other) with the
/// checkpoint under `unmapped.checkpoint`.
pub(crate) fn checkpoint(checkpoint: &Checkpoint, out: &mut Vec<u8>) -> Result<(), String> {
    let body = serde_json::to_vec(checkpoint).map_err(|e| e.to_string())?;
    let mut o = Obj::open(out);
    o.int("activity_id", 99);
    o.str("activity_name", "checkpoint");
    o.int("category_uid", 0);
    o.str("category_name", "Uncategorized");
    o.int("class_uid", 0);
    o.str("class_name", "Base Event");
    o.int("type_uid", 99);
    o.str("type_name", "Base Event: Other");
    o.int("severity_id", 1);
    o.str("severity", "Informational");
    o.int("time", millis(&checkpoint.created_at));
    o.str(
        "message",
        &format!(
            "pgtrail checkpoint: event {} has hash {}",
            checkpoint.seq, checkpoint.hash
        ),
    );
    o.int("status_id", 1);
    o.str("status", "Success");
    metadata(
        &mut o,
        &format!("checkpoint-{}", checkpoint.seq),
        Some(checkpoint.seq),
        "checkpoint",
    );
    o.object("unmapped", |u| u.raw("checkpoint", &body));
    o.end();
    Ok(())
}

fn metadata(o: &mut Obj<'_>, uid: &str, seq: Option<i64>, code: &str) {
    o.object("metadata", |m| {
        m.str("version", OCSF_VERSION);
        m.object("product", |p| {
            p.str("name", "pgtrail");
            p.str("vendor_name", "pgtrail");
            p.str("version", VERSION);
        });
        m.str("uid", uid);
        m.opt_int("sequence", seq);
        m.str("event_code", code);
        m.str("log_name", "pgtrail");
    });
}

/// The authenticated role, or what the client asked to log in as; the
/// application's claimed user is `unmapped.app_user` (a claim, not an
/// identity the server checked).
fn user_name(event: &Event) -> Option<&str> {
    event.db_user.as_deref().or(event.app_user.as_deref())
}

fn activity_of(activity: Activity, authentication: bool, event: &Event) -> (i64, String) {
    let named = |id: i64, name: &str| (id, name.to_string());
    if authentication {
        return match activity {
            Activity::Logon => named(1, "Logon"),
            Activity::Logoff => named(2, "Logoff"),
            _ => named(99, event.operation.as_deref().unwrap_or("Other")),
        };
    }
    match activity {
        Activity::Read => named(1, "Read"),
        Activity::Update => named(2, "Update"),
        Activity::Query => named(4, "Query"),
        Activity::Write => named(5, "Write"),
        Activity::Create => named(6, "Create"),
        Activity::Delete => named(7, "Delete"),
        Activity::Logon | Activity::Logoff | Activity::Other => (
            99,
            event
                .operation
                .clone()
                .unwrap_or_else(|| event.kind.as_str().to_string()),
        ),
    }
}

fn severity(level: Level) -> (i64, &'static str) {
    match level {
        Level::Info => (1, "Informational"),
        Level::Low => (2, "Low"),
        Level::Medium => (3, "Medium"),
        Level::High => (4, "High"),
    }
}

/// Every event field OCSF has no attribute for, by its own name.
fn unmapped(u: &mut Obj<'_>, e: &Event) {
    u.opt_int("seq", e.seq);
    // `time` is in milliseconds; the capture time to the microsecond.
    u.str(
        "captured_at",
        &pgtrail_core::time::format_micros(&e.captured_at),
    );
    u.str("source", e.source.as_str());
    u.str("kind", e.kind.as_str());
    u.opt_str("db_user", e.db_user.as_deref());
    u.opt_str("app_user", e.app_user.as_deref());
    u.opt_int("backend_pid", e.backend_pid.map(i64::from));
    u.object_value("context", e.context.as_ref());
    if let Some(provenance) = &e.provenance {
        if let Ok(json) = serde_json::to_vec(provenance) {
            u.raw("provenance", &json);
        }
    }
    u.opt_str("schema", e.schema.as_deref());
    u.opt_str("table", e.table.as_deref());
    u.opt_str("operation", e.operation.as_deref());
    u.strs("objects", &e.objects);
    u.object_value("pk", e.pk.as_ref());
    u.object_value("old", e.old.as_ref());
    u.object_value("new", e.new.as_ref());
    u.strs("changed", &e.changed);
    u.strs("partial", &e.partial);
    u.array_value("params", e.params.as_deref());
    u.opt_str("class", e.class.as_deref());
    u.opt_str("command_tag", e.command_tag.as_deref());
    u.opt_int("duration_us", e.duration_us);
    u.opt_int("xid", e.xid);
    u.opt_str("lsn", e.lsn.as_deref());
    if let Some(at) = &e.committed_at {
        u.str("committed_at", &pgtrail_core::time::format_micros(at));
    }
    u.opt_int("tx_seq", e.tx_seq);
    u.opt_str("prev_hash", e.prev_hash.as_deref());
    u.opt_str("hash", e.hash.as_deref());
    u.bool("failed", e.failed());
}
