//! `pgtrail status`: both capture paths of one database at a glance.
//!
//! Trigger capture (when installed): tracked tables, how they are captured,
//! events so far, what waits to be sealed. Logical replication: pgtrail's
//! slots in this database — the configured `[replication] slot` or `--slot` —
//! with the consumer's pid, the confirmed position and the lag in bytes and
//! seconds, and a warning past `[replication] lag_warn_mb`. Either part may be
//! absent; status still reports the other.
//!
//! Alarms (`alarms.rs`): what leaves the trail incomplete now — a capture
//! trigger dropped or disabled, an event trigger disabled, an untracked
//! table in an auto-tracked schema, the slot lost or near its WAL limit,
//! the publication incomplete, a gap in a chain — and the alarm events
//! recorded lately. `--check` fails on any.
//!
//! Checkpoints: for each store the database's capture lands in (the
//! `pgtrail` schema of this database when trigger capture is installed, and
//! `[store] url` when it exists), the newest head checkpoint, its age and
//! how many events are past it — those are the ones whose removal `verify`
//! could not prove — with a warning when it is older than twice
//! `[signing] checkpoint_every` while events arrived after it. A store that
//! cannot be read is a warning, not a failure of `status`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgtrail_cdc::slot::{self, SlotStatus};
use pgtrail_core::alarm::Alarm;
use pgtrail_core::{Filter, Kind, Source};
use pgtrail_store::freshness::{
    self, duration_text, megabytes, LagFrom, NewestCheckpoint, SlotFacts, SlotWarning, MIB,
};
use pgtrail_store::open::redact_url;
use pgtrail_store::Store;
use pgtrail_triggers::Status;
use serde::Serialize;

use super::alarms::{self, RecordedAlarm};
use crate::cli::StatusArgs;
use crate::commands::Invocation;
use crate::describe;
use crate::output::Table;

/// What `pgtrail status` reports.
#[derive(Debug, Serialize)]
struct Report {
    /// Trigger capture, or `None` when it is not installed in this database.
    triggers: Option<Status>,
    /// pgtrail's replication slots in this database.
    slots: Vec<SlotReport>,
    /// How fresh the signed checkpoints of each store are.
    checkpoints: Vec<CheckpointReport>,
    /// The quarantine events of each store (values a store could not keep
    /// as captured, kept as raw bytes: see docs/operations.md).
    quarantine: Vec<QuarantineReport>,
    /// What leaves the trail incomplete now (see `alarms.rs`).
    alarms: Vec<Alarm>,
    /// Alarm events of the last `RECENT_HOURS`, oldest first.
    recent_alarms: Vec<RecordedAlarm>,
    /// The statement proxy's spool, when `[proxy] listen` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<ProxyReport>,
    /// Each `[[sinks]]` entry: how far behind its store, its last error.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sinks: Vec<pgtrail_sink::runner::SinkStatus>,
}

/// The statement proxy's spool: what waits for the store, what was dropped.
#[derive(Debug, Serialize)]
struct ProxyReport {
    spool_dir: String,
    /// Bytes of the spool's segment files.
    spool_bytes: u64,
    /// Events a full spool dropped (`fail_open`) not yet reported by an alarm.
    dropped_events: u64,
    /// Set when the spool cannot be read or events were dropped.
    warning: Option<String>,
}

fn proxy_report(ctx: &Invocation) -> Option<ProxyReport> {
    ctx.config.proxy.listen.as_ref()?;
    let dir = super::proxy::spool_dir(&ctx.config.proxy);
    let (spool_bytes, dropped_events, warning) =
        match pgtrail_pipeline::spool::Spool::peek(&dir) {
            Ok(w) if w.dropped_events > 0 => (
                w.disk_bytes,
                w.dropped_events,
                Some(format!(
                    "{} proxy events were DROPPED by the full spool (fail_open); an alarm reports them once it drains",
                    w.dropped_events
                )),
            ),
            Ok(w) => (w.disk_bytes, 0, None),
            Err(error) => (0, 0, Some(format!("cannot read the spool: {error}"))),
        };
    Some(ProxyReport {
        spool_dir: dir.display().to_string(),
        spool_bytes,
        dropped_events,
        warning,
    })
}

/// How many quarantine events one store holds, and the newest.
#[derive(Debug, Serialize)]
struct QuarantineReport {
    /// Where the store is (URL without password).
    store: String,
    /// `triggers` or `store`, as for checkpoints.
    holds: &'static str,
    /// Quarantine events in the store.
    count: usize,
    /// The newest of them.
    newest: Option<QuarantinedEvent>,
    /// Set when the store could not be read.
    warning: Option<String>,
}

/// A quarantine event as `status` shows it.
#[derive(Debug, Serialize)]
struct QuarantinedEvent {
    seq: Option<i64>,
    #[serde(with = "pgtrail_core::time::micros")]
    captured_at: DateTime<Utc>,
    source: Source,
    table: Option<String>,
    reason: Option<String>,
    source_position: Option<String>,
}

/// The newest checkpoint of one store, and what came after it.
#[derive(Debug, Serialize)]
struct CheckpointReport {
    /// Where the store is (URL without password).
    store: String,
    /// `triggers` (this database's `pgtrail` schema) or `store` (`[store] url`).
    holds: &'static str,
    /// The chain's newest `seq` (`None`: empty, or unreadable).
    head_seq: Option<i64>,
    /// The newest head checkpoint.
    newest: Option<NewestCheckpoint>,
    /// Events after the newest checkpoint (all of them when there is none).
    events_since: i64,
    /// `[signing] checkpoint_every`, in seconds.
    checkpoint_every_seconds: u64,
    /// Set when the checkpoints need attention (or the store could not be read).
    warning: Option<String>,
}

/// One replication slot, as `status` and `replicate --status` show it.
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
    /// `server` or `store`: see `LagFrom`.
    lag_seconds_from: Option<LagFrom>,
    wal_status: Option<String>,
    lag_warn_bytes: u64,
    /// Set when the slot needs attention.
    warning: Option<String>,
}

/// Runs `pgtrail status`.
pub async fn run(args: &StatusArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    let triggers = match pgtrail_triggers::install::installed_version(&client).await? {
        Some(_) => Some(pgtrail_triggers::status(&client).await?),
        None => None,
    };
    // A slot nobody asked about is only shown when it exists.
    let (names, show_missing) = if args.slots.is_empty() {
        (
            vec![ctx.config.replication.slot.clone()],
            ctx.config.replication.db.is_some(),
        )
    } else {
        (args.slots.clone(), true)
    };
    let lag_warn_bytes = ctx.config.replication.lag_warn_mb.saturating_mul(MIB);
    let slots = slot_reports(&client, &names, show_missing, lag_warn_bytes, ctx).await?;
    let checkpoints = checkpoint_reports(&args.db, triggers.is_some(), ctx).await?;
    let quarantine = quarantine_reports(&args.db, triggers.is_some(), ctx).await;
    let (alarms, recent_alarms) =
        alarm_reports(&client, &args.db, triggers.is_some(), &slots, ctx).await;
    let report = Report {
        triggers,
        slots,
        checkpoints,
        quarantine,
        alarms,
        recent_alarms,
        proxy: proxy_report(ctx),
        sinks: sink_reports(ctx).await,
    };
    ctx.output.document(&report, || text(&report))?;
    let warned = report.proxy.as_ref().is_some_and(|p| p.warning.is_some())
        || report.slots.iter().any(|s| s.warning.is_some())
        || report.sinks.iter().any(|s| s.warning.is_some())
        || report.checkpoints.iter().any(|c| c.warning.is_some())
        || !report.alarms.is_empty()
        || !report.recent_alarms.is_empty();
    Ok(if args.check && warned {
        crate::exit::check_failed()
    } else {
        crate::exit::ok()
    })
}

/// The alarms of both paths and of the stores they write to; a check that
/// cannot run is an alarm too (completeness is then unknown).
async fn alarm_reports(
    client: &tokio_postgres::Client,
    db: &str,
    triggers_installed: bool,
    slots: &[SlotReport],
    ctx: &Invocation,
) -> (Vec<Alarm>, Vec<RecordedAlarm>) {
    let unknown = |what: &str, error: anyhow::Error| {
        Alarm::new("check_failed", format!("cannot check {what}: {error:#}"))
    };
    let (mut now, mut recorded) = (Vec::new(), Vec::new());
    if triggers_installed {
        match alarms::trigger_status(client, db).await {
            Ok((n, r)) => {
                now.extend(n);
                recorded.extend(r);
            }
            Err(error) => now.push(unknown("trigger capture", error)),
        }
    }
    let publication = &ctx.config.replication.publication;
    for slot in slots {
        match alarms::capture_status(client, &slot.slot, publication).await {
            // What the slot's own warning says already is not repeated.
            Ok(found) => now.extend(
                found
                    .into_iter()
                    .filter(|a| slot.warning.is_none() || !a.code.starts_with("slot_")),
            ),
            Err(error) => now.push(unknown("logical replication", error)),
        }
    }
    let url = &ctx.config.store.url;
    if super::missing_sqlite_file(url).is_none() && !(triggers_installed && url == db) {
        let checked = async {
            let store = ctx.open_store().await?;
            alarms::store_status(store.as_ref(), url).await
        };
        match checked.await {
            Ok((n, r)) => {
                now.extend(n);
                recorded.extend(r);
            }
            Err(error) => now.push(unknown("the store", error)),
        }
    }
    (now, recorded)
}

/// Reports on the slots `names` of the database `client` is connected to.
pub(crate) async fn slot_reports(
    client: &tokio_postgres::Client,
    names: &[String],
    show_missing: bool,
    lag_warn_bytes: u64,
    ctx: &Invocation,
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
                warning: Some(SlotWarning::Missing { slot: name.clone() }.to_string()),
            }),
            None => {}
        }
    }
    Ok(reports)
}

async fn slot_report(found: &SlotStatus, lag_warn_bytes: u64, ctx: &Invocation) -> SlotReport {
    let facts = SlotFacts {
        name: &found.name,
        active: found.active,
        lag_bytes: found.lag_bytes,
        replay_lag_seconds: found.replay_lag_seconds,
        wal_status: found.wal_status.as_deref(),
    };
    let newest_capture_commit = if facts.lag_from_store() {
        newest_capture_commit(ctx).await
    } else {
        None
    };
    let (lag_seconds, lag_seconds_from) =
        freshness::slot_lag_seconds(&facts, newest_capture_commit, Utc::now());
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
        warning: freshness::slot_warning(&facts, lag_warn_bytes).map(|w| w.to_string()),
    }
}

/// The commit time of the newest `cdc` event in the store, if any.
async fn newest_capture_commit(ctx: &Invocation) -> Option<DateTime<Utc>> {
    let store = ctx.open_existing_store().await.ok()?;
    freshness::newest_commit(store.as_ref(), Source::Cdc)
        .await
        .ok()
        .flatten()
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
                (Some(secs), Some(LagFrom::Store)) => format!("{secs:.1} (newest captured commit)"),
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
    if !report.checkpoints.is_empty() {
        out.push_str("\ncheckpoints:\n");
        out.push_str(&checkpoints_text(&report.checkpoints));
    }
    for q in &report.quarantine {
        out.push_str(&quarantine_text(q));
    }
    if let Some(p) = &report.proxy {
        out.push_str(&format!(
            "\nproxy: spool {} holds {} bytes waiting for the store\n",
            p.spool_dir, p.spool_bytes
        ));
        if let Some(warning) = &p.warning {
            out.push_str(&format!("  WARNING: {warning}\n"));
        }
    }
    if !report.sinks.is_empty() {
        out.push_str("\nsinks:\n");
        out.push_str(&sinks_text(&report.sinks));
    }
    out.push_str(&alarms_text(&report.alarms, &report.recent_alarms));
    out
}

/// Each sink's place, read from its cursor file and its store.
async fn sink_reports(ctx: &Invocation) -> Vec<pgtrail_sink::runner::SinkStatus> {
    let mut reports = Vec::new();
    for sink in &ctx.config.sinks {
        reports.push(pgtrail_sink::runner::status(sink, &ctx.config.store.url).await);
    }
    reports
}

fn sinks_text(sinks: &[pgtrail_sink::runner::SinkStatus]) -> String {
    let mut table = Table::new(&[
        "sink",
        "delivered",
        "behind",
        "oldest waiting",
        "last delivery",
    ]);
    for sink in sinks {
        let known = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
        table.push(vec![
            sink.name.clone(),
            known(sink.delivered_seq),
            known(sink.lag_events),
            sink.lag_seconds.map_or("?".into(), |s| {
                duration_text(Duration::from_secs_f64(s.max(0.0)))
            }),
            sink.delivered_at.map_or("never".into(), |at| {
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            }),
        ]);
    }
    let mut out = table.render();
    for sink in sinks {
        if let Some(warning) = &sink.warning {
            out.push_str(&format!("  WARNING: sink {}: {warning}\n", sink.name));
        }
    }
    out
}

fn alarms_text(now: &[Alarm], recorded: &[RecordedAlarm]) -> String {
    if now.is_empty() && recorded.is_empty() {
        return "\nno alarms\n".into();
    }
    let mut out = String::from("\nalarms (the trail may be incomplete):\n");
    for alarm in now {
        out.push_str(&format!("alarm: {}\n", alarm.message));
    }
    if !recorded.is_empty() {
        out.push_str(&format!(
            "recorded in the last {} hours:\n",
            alarms::RECENT_HOURS
        ));
        for alarm in recorded {
            out.push_str(&format!("  {}\n", alarm.text()));
        }
    }
    out
}

/// The quarantine events of each store this database's capture lands in
/// (the same stores as the checkpoints).
async fn quarantine_reports(
    db: &str,
    triggers_installed: bool,
    ctx: &Invocation,
) -> Vec<QuarantineReport> {
    let mut reports = Vec::new();
    if triggers_installed {
        let store = pgtrail_store::open_in_database(db).await;
        reports.push(quarantine_report(db, "triggers", store).await);
    }
    let url = &ctx.config.store.url;
    let reported = triggers_installed && url == db;
    if super::missing_sqlite_file(url).is_none() && !reported {
        let store = ctx
            .open_store()
            .await
            .map_err(|e| pgtrail_store::StoreError::Invalid(format!("{e:#}")));
        reports.push(quarantine_report(url, "store", store).await);
    }
    reports
}

async fn quarantine_report(
    url: &str,
    holds: &'static str,
    store: Result<Arc<dyn Store>, pgtrail_store::StoreError>,
) -> QuarantineReport {
    let filter = Filter {
        kind: Some(Kind::Quarantine),
        ..Filter::default()
    };
    let read = async { store?.query(&filter).await };
    let (events, warning) = match read.await {
        Ok(events) => (events, None),
        Err(error) => (
            Vec::new(),
            Some(format!(
                "cannot read the store's quarantine events: {error}"
            )),
        ),
    };
    let text = |event: &pgtrail_core::Event, key: &str| {
        event
            .context
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    // Newest first.
    let newest = events.first().map(|e| QuarantinedEvent {
        seq: e.seq,
        captured_at: e.captured_at,
        source: e.source,
        table: e.qualified_table(),
        reason: text(e, "reason"),
        source_position: text(e, "source_position"),
    });
    QuarantineReport {
        store: redact_url(url),
        holds,
        count: events.len(),
        newest,
        warning,
    }
}

fn quarantine_text(q: &QuarantineReport) -> String {
    if let Some(warning) = &q.warning {
        return format!("\nquarantine ({}): {warning}\n", q.store);
    }
    let Some(newest) = &q.newest else {
        return String::new();
    };
    format!(
        "\nquarantine ({}): {} event(s) kept as raw bytes; newest: event {} ({} {}{}), {}{}\n",
        q.store,
        q.count,
        describe::number(newest.seq),
        newest.source,
        pgtrail_core::time::format_micros(&newest.captured_at),
        newest
            .table
            .as_deref()
            .map(|t| format!(", {t}"))
            .unwrap_or_default(),
        newest.reason.as_deref().unwrap_or("no reason recorded"),
        newest
            .source_position
            .as_deref()
            .map(|p| format!(" at {p}"))
            .unwrap_or_default(),
    )
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
            t.capture.clone(),
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

/// The checkpoint report of each store this database's capture lands in.
async fn checkpoint_reports(
    db: &str,
    triggers_installed: bool,
    ctx: &Invocation,
) -> anyhow::Result<Vec<CheckpointReport>> {
    let every = ctx.config.signing.checkpoint_interval()?;
    let mut reports = Vec::new();
    if triggers_installed {
        let store = pgtrail_store::open_in_database(db).await;
        reports.push(checkpoint_report(db, "triggers", store, every).await);
    }
    let url = &ctx.config.store.url;
    // The same database's store is reported once.
    let reported = triggers_installed && url == db;
    if super::missing_sqlite_file(url).is_none() && !reported {
        let store = ctx
            .open_store()
            .await
            .map_err(|e| pgtrail_store::StoreError::Invalid(format!("{e:#}")));
        reports.push(checkpoint_report(url, "store", store, every).await);
    }
    Ok(reports)
}

/// Reads one store's head and checkpoints; a failure becomes the warning.
async fn checkpoint_report(
    url: &str,
    holds: &'static str,
    store: Result<Arc<dyn Store>, pgtrail_store::StoreError>,
    every: Duration,
) -> CheckpointReport {
    let read = async {
        let store = store?;
        Ok::<_, pgtrail_store::StoreError>((store.head().await?, store.checkpoints().await?))
    };
    let (store, every_seconds) = (redact_url(url), every.as_secs());
    match read.await {
        Ok((head, checkpoints)) => {
            let found =
                freshness::checkpoint_freshness(head.as_ref(), &checkpoints, every, Utc::now());
            CheckpointReport {
                warning: found.stale.map(|stale| format!("{store}: {stale}")),
                store,
                holds,
                head_seq: found.head_seq,
                newest: found.newest,
                events_since: found.events_since,
                checkpoint_every_seconds: every_seconds,
            }
        }
        Err(error) => CheckpointReport {
            store,
            holds,
            head_seq: None,
            newest: None,
            events_since: 0,
            checkpoint_every_seconds: every_seconds,
            warning: Some(format!("cannot read the store's checkpoints: {error}")),
        },
    }
}

fn checkpoints_text(reports: &[CheckpointReport]) -> String {
    let mut table = Table::new(&[
        "store",
        "holds",
        "head",
        "newest checkpoint",
        "age",
        "events past it",
    ]);
    for r in reports
        .iter()
        .filter(|r| r.head_seq.is_some() || r.newest.is_some())
    {
        let (newest, age) = match &r.newest {
            Some(c) => (
                format!(
                    "event {}{}",
                    c.seq,
                    if c.signed { "" } else { " (unsigned)" }
                ),
                duration_text(Duration::from_secs_f64(c.age_seconds)),
            ),
            None => ("none".into(), "-".into()),
        };
        table.push(vec![
            r.store.clone(),
            match r.holds {
                "triggers" => "trigger capture".into(),
                _ => "[store] url".into(),
            },
            describe::number(r.head_seq),
            newest,
            age,
            r.events_since.to_string(),
        ]);
    }
    let mut out = if table.is_empty() {
        "no events stored yet\n".to_string()
    } else {
        table.render()
    };
    for r in reports {
        if let Some(warning) = &r.warning {
            out.push_str(&format!("warning: {warning}\n"));
        }
    }
    out
}
