//! `pgtrail status`: both capture paths of one database at a glance.
//!
//! Trigger capture (when installed): tracked tables, how they are captured,
//! events so far, what waits to be sealed. Logical replication: pgtrail's
//! slots in this database — the configured `[capture] slot` or `--slot` —
//! with the consumer's pid, the confirmed position and the lag in bytes and
//! seconds, and a warning past `[capture] lag_warn_mb`. Either part may be
//! absent; status still reports the other.

use std::process::ExitCode;

use pgtrail_cdc::slot::{self, SlotStatus};
use pgtrail_core::{Filter, Source};
use pgtrail_triggers::Status;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::output::Table;
use crate::{describe, Context};

const MIB: u64 = 1024 * 1024;

/// What `pgtrail status` reports.
#[derive(Debug, Serialize)]
struct Report {
    /// Trigger capture, or `None` when it is not installed in this database.
    triggers: Option<Status>,
    /// pgtrail's replication slots in this database.
    slots: Vec<SlotReport>,
}

/// One replication slot, as `status` and `capture --status` show it.
#[derive(Debug, Serialize)]
pub(crate) struct SlotReport {
    slot: String,
    exists: bool,
    active: bool,
    /// The walsender serving the connected consumer.
    pid: Option<i32>,
    confirmed_flush_lsn: Option<String>,
    lag_bytes: i64,
    /// Seconds behind, where it can be known (see `lag_seconds_from`).
    lag_seconds: Option<f64>,
    /// `server`: the connected consumer's replay lag as Postgres measures
    /// it; `store`: since the newest commit captured into the store (no
    /// consumer connected, so the server cannot tell).
    lag_seconds_from: Option<&'static str>,
    wal_status: Option<String>,
    lag_warn_bytes: u64,
    /// Set when the slot needs attention.
    warning: Option<String>,
}

/// Runs `pgtrail status`.
pub async fn run(args: &StatusArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    let triggers = match pgtrail_triggers::install::installed_version(&client).await? {
        Some(_) => Some(pgtrail_triggers::status(&client).await?),
        None => None,
    };
    // A slot nobody asked about is only shown when it exists.
    let (names, show_missing) = if args.slots.is_empty() {
        (
            vec![ctx.config.capture.slot.clone()],
            ctx.config.capture.db.is_some(),
        )
    } else {
        (args.slots.clone(), true)
    };
    let lag_warn_bytes = ctx.config.capture.lag_warn_mb.saturating_mul(MIB);
    let slots = slot_reports(&client, &names, show_missing, lag_warn_bytes, ctx).await?;
    let report = Report { triggers, slots };
    ctx.output.document(&report, || text(&report))?;
    Ok(crate::exit::ok())
}

/// Reports on the slots `names` of the database `client` is connected to.
pub(crate) async fn slot_reports(
    client: &tokio_postgres::Client,
    names: &[String],
    show_missing: bool,
    lag_warn_bytes: u64,
    ctx: &Context,
) -> anyhow::Result<Vec<SlotReport>> {
    let found = slot::slot_status(client, names).await?;
    let mut reports = Vec::new();
    for name in names {
        match found.iter().find(|s| &s.name == name) {
            Some(found) => reports.push(slot_report(found, lag_warn_bytes, ctx).await),
            None if show_missing => reports.push(SlotReport {
                slot: name.clone(),
                exists: false,
                active: false,
                pid: None,
                confirmed_flush_lsn: None,
                lag_bytes: 0,
                lag_seconds: None,
                lag_seconds_from: None,
                wal_status: None,
                lag_warn_bytes,
                warning: Some(format!(
                    "slot '{name}' does not exist in this database (pgtrail capture --setup creates it)"
                )),
            }),
            None => {}
        }
    }
    Ok(reports)
}

async fn slot_report(found: &SlotStatus, lag_warn_bytes: u64, ctx: &Context) -> SlotReport {
    let (lag_seconds, lag_seconds_from) = if found.active {
        // The server forgets the lag once the consumer has caught up.
        (
            Some(found.replay_lag_seconds.unwrap_or(0.0)),
            Some("server"),
        )
    } else if found.lag_bytes > 0 {
        match seconds_since_last_capture(ctx).await {
            Some(s) => (Some(s), Some("store")),
            None => (None, None),
        }
    } else {
        (Some(0.0), None)
    };
    let lag = u64::try_from(found.lag_bytes).unwrap_or(0);
    let warning = match found.wal_status.as_deref() {
        Some("lost") => Some(format!(
            "slot '{}' lost WAL it needed: changes were skipped; recreate it (capture --drop, then --setup --baseline)",
            found.name
        )),
        Some("unreserved") => Some(format!(
            "slot '{}' is about to lose WAL it needs (max_slot_wal_keep_size): start the consumer",
            found.name
        )),
        _ if lag > lag_warn_bytes => Some(format!(
            "slot '{}' is {} behind, more than lag_warn_mb ({}){}",
            found.name,
            megabytes(lag),
            megabytes(lag_warn_bytes),
            if found.active {
                ""
            } else {
                ": no consumer is connected (start `pgtrail run`)"
            }
        )),
        _ => None,
    };
    SlotReport {
        slot: found.name.clone(),
        exists: true,
        active: found.active,
        pid: found.active_pid,
        confirmed_flush_lsn: found.confirmed_flush.clone(),
        lag_bytes: found.lag_bytes,
        lag_seconds,
        lag_seconds_from,
        wal_status: found.wal_status.clone(),
        lag_warn_bytes,
        warning,
    }
}

/// Seconds since the commit of the newest `cdc` event in the store, if any.
async fn seconds_since_last_capture(ctx: &Context) -> Option<f64> {
    let store = ctx.open_existing_store().await.ok()?;
    let filter = Filter {
        source: Some(Source::Cdc),
        limit: Some(1),
        ..Filter::default()
    };
    let newest = store.query(&filter).await.ok()?.into_iter().next()?;
    let committed = newest.committed_at?;
    Some((chrono::Utc::now() - committed).num_milliseconds().max(0) as f64 / 1000.0)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MIB as f64)
}

/// The slots as a table, then their warnings.
pub(crate) fn slots_text(slots: &[SlotReport]) -> String {
    let mut table = Table::new(&["slot", "consumer", "confirmed", "lag", "lag (s)"]);
    for s in slots.iter().filter(|s| s.exists) {
        table.push(vec![
            s.slot.clone(),
            match (s.active, s.pid) {
                (true, Some(pid)) => format!("connected (pid {pid})"),
                (true, None) => "connected".into(),
                (false, _) => "none".into(),
            },
            s.confirmed_flush_lsn.clone().unwrap_or_else(|| "-".into()),
            megabytes(u64::try_from(s.lag_bytes).unwrap_or(0)),
            match (s.lag_seconds, s.lag_seconds_from) {
                (Some(secs), Some("store")) => format!("{secs:.1} (newest captured commit)"),
                (Some(secs), _) => format!("{secs:.1}"),
                (None, _) => "-".into(),
            },
        ]);
    }
    let mut out = if table.is_empty() {
        String::new()
    } else {
        table.render()
    };
    for s in slots {
        if let Some(warning) = &s.warning {
            out.push_str(&format!("warning: {warning}\n"));
        }
    }
    out
}

fn text(report: &Report) -> String {
    let mut out = match &report.triggers {
        Some(status) => triggers_text(status),
        None => "trigger capture: not installed in this database\n".to_string(),
    };
    out.push('\n');
    if report.slots.is_empty() {
        out.push_str("logical replication: no pgtrail slot in this database\n");
    } else {
        out.push_str("logical replication:\n");
        out.push_str(&slots_text(&report.slots));
    }
    out
}

fn triggers_text(status: &Status) -> String {
    let mut table = Table::new(&[
        "table",
        "capture",
        "ignored",
        "masked",
        "events",
        "pending",
        "last event",
    ]);
    for t in &status.tables {
        table.push(vec![
            t.tracked.qualified(),
            t.mode.clone(),
            t.tracked.ignored.join(","),
            t.tracked.masked.join(","),
            t.events.to_string(),
            t.pending.to_string(),
            t.last_event_at
                .as_ref()
                .map(describe::time)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = if table.is_empty() {
        "no tables tracked (pgtrail track --db URL TABLE…)\n".to_string()
    } else {
        table.render()
    };
    out.push_str(&format!("\ntrigger capture version {}", status.version));
    if !status.auto_schemas.is_empty() {
        out.push_str(&format!(
            "; new tables tracked automatically in: {}",
            status.auto_schemas.join(", ")
        ));
    }
    out.push('\n');
    match &status.oldest_pending_at {
        Some(oldest) => out.push_str(&format!(
            "{} change(s) waiting to be sealed, the oldest from {} (run `pgtrail seal` or keep `pgtrail run` going)\n",
            status.pending,
            describe::time(oldest)
        )),
        None => out.push_str("nothing waiting to be sealed\n"),
    }
    if !status.commit_timestamps {
        out.push_str(
            "warning: track_commit_timestamp is off: events are sealed in transaction-id order, which can differ \
             from commit order; set track_commit_timestamp = on (restart needed)\n",
        );
    }
    out
}
