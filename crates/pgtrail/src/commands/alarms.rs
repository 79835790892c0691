//! Alarms: the watch that `pgtrail run` keeps, and what `pgtrail status`
//! reports. Both ask the same checks — `pgtrail_triggers::health`,
//! `pgtrail_cdc::health`, `pgtrail_store::health` —; this module only
//! decides when to ask and where an alarm is recorded.
//!
//! `run` looks every [`WATCH_EVERY`] and records an alarm once per onset:
//! when a condition appears that was not there at the previous look (a
//! restart of `run` records the conditions still present once more).
//! Trigger capture's alarms go through `pgtrail.raise_alarm` into the inbox
//! and are sealed like any event; logical replication's are appended to
//! `[store] url`. `status --check` fails while a condition lasts, and for
//! [`RECENT_HOURS`] after an alarm event was recorded, so that a monitor
//! polling now and then cannot miss one that came and went.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_core::alarm::Alarm;
use pgtrail_core::{Event, Source};
use pgtrail_store::open::redact_url;
use pgtrail_store::Store;
use serde::Serialize;
use tokio::sync::watch;

use crate::Invocation;

/// How often `pgtrail run` looks.
pub(crate) const WATCH_EVERY: Duration = Duration::from_secs(30);

/// How long a recorded alarm keeps `status --check` failing.
pub(crate) const RECENT_HOURS: i64 = 24;

/// How many of a chain's newest events are checked for a gap.
const GAP_WINDOW: usize = 1_000;

/// Recorded alarms `status` lists per store, at most.
const RECORDED_LIMIT: usize = 50;

/// What the watch of `pgtrail run` looks at.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    /// The database with trigger capture (`[triggers] db`).
    pub drain_db: Option<String>,
    /// The database captured by logical replication, with its slot and publication.
    pub replication: Option<ReplicationTarget>,
}

/// Logical replication's side of the watch.
#[derive(Debug, Clone)]
pub(crate) struct ReplicationTarget {
    pub connect: ConnectOptions,
    pub slot: String,
    pub publication: String,
}

/// Which conditions were present at the previous look.
#[derive(Debug, Default)]
struct Onsets(HashSet<(String, Option<String>, Option<String>)>);

impl Onsets {
    /// The alarms among `now` that were not present at the previous look.
    fn fresh(&self, now: &[Alarm]) -> Vec<Alarm> {
        now.iter()
            .filter(|a| !self.0.contains(&a.key()))
            .cloned()
            .collect()
    }

    /// Remembers `now` as what is present (once the fresh ones are recorded).
    fn remember(&mut self, now: &[Alarm]) {
        self.0 = now.iter().map(Alarm::key).collect();
    }
}

/// Looks now and every [`WATCH_EVERY`] until `stop`; never fails the run
/// (a look that fails is logged and tried again).
pub(crate) async fn watch_part(
    watch: Watch,
    ctx: Invocation,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut triggers = Onsets::default();
    let mut capture = Onsets::default();
    let mut published: Vec<(String, String)> = Vec::new();
    let mut store: Option<Arc<dyn Store>> = None;
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if let Some(db) = &watch.drain_db {
            if let Err(error) = watch_triggers(db, &mut triggers).await {
                tracing::warn!(error = %format!("{error:#}"), "Cannot check trigger capture for alarms; trying again.");
            }
        }
        if let Some(target) = &watch.replication {
            if let Err(error) =
                watch_replication(target, &ctx, &mut capture, &mut published, &mut store).await
            {
                tracing::warn!(error = %format!("{error:#}"), "Cannot check logical replication for alarms; trying again.");
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

async fn watch_triggers(db: &str, onsets: &mut Onsets) -> anyhow::Result<()> {
    let client = pgtrail_triggers::connect(db).await?;
    if pgtrail_triggers::install::installed_version(&client)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let mut alarms = pgtrail_triggers::health::check(&client).await?;
    let store = pgtrail_store::open_in_database(db).await?;
    alarms.extend(pgtrail_store::health::recent_gap(store.as_ref(), GAP_WINDOW).await?);
    for alarm in onsets.fresh(&alarms) {
        tracing::error!(alarm = %alarm.code, "{}", alarm.message);
        pgtrail_triggers::health::raise(&client, &alarm).await?;
    }
    onsets.remember(&alarms);
    Ok(())
}

async fn watch_replication(
    target: &ReplicationTarget,
    ctx: &Invocation,
    onsets: &mut Onsets,
    published: &mut Vec<(String, String)>,
    store: &mut Option<Arc<dyn Store>>,
) -> anyhow::Result<()> {
    let client = target.connect.connect_sql().await?;
    let health =
        pgtrail_cdc::health::check(&client, &target.slot, &target.publication, published).await?;
    // A table stays expected once published: while it is not, the alarm lasts.
    for table in health.published {
        if !published.contains(&table) {
            published.push(table);
        }
    }
    let store = match store {
        Some(store) => store,
        // The consumer creates the store; until it has, the alarms wait
        // (not remembered, so recorded at the first look after).
        None if super::missing_sqlite_file(&ctx.config.store.url).is_some() => {
            for alarm in onsets.fresh(&health.alarms) {
                tracing::error!(alarm = %alarm.code, "{}", alarm.message);
            }
            return Ok(());
        }
        None => store.insert(ctx.open_store().await?),
    };
    let mut alarms = health.alarms;
    alarms.extend(pgtrail_store::health::recent_gap(store.as_ref(), GAP_WINDOW).await?);
    let fresh = onsets.fresh(&alarms);
    if !fresh.is_empty() {
        for alarm in &fresh {
            tracing::error!(alarm = %alarm.code, "{}", alarm.message);
        }
        let events: Vec<Event> = fresh.iter().map(|a| a.event(Source::Cdc)).collect();
        let started = std::time::Instant::now();
        store.append(&events).await?;
        pgtrail_store::metrics::Tally::of(&events).record(started.elapsed());
    }
    onsets.remember(&alarms);
    Ok(())
}

/// An alarm event a store holds (or, for trigger capture, one raised and
/// not sealed yet), as `status` lists it.
#[derive(Debug, Serialize)]
pub(crate) struct RecordedAlarm {
    /// Where it is recorded (URL without password).
    store: String,
    /// Its place in the chain; `None` while it waits in the inbox.
    seq: Option<i64>,
    #[serde(with = "pgtrail_core::time::micros")]
    captured_at: DateTime<Utc>,
    #[serde(flatten)]
    alarm: Alarm,
}

impl RecordedAlarm {
    fn from_event(store: &str, event: &Event) -> RecordedAlarm {
        let message = event
            .context
            .as_ref()
            .and_then(|c| c.get("alarm"))
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        RecordedAlarm {
            store: redact_url(store),
            seq: event.seq,
            captured_at: event.captured_at,
            alarm: Alarm {
                code: event.operation.clone().unwrap_or_default(),
                schema: event.schema.clone(),
                table: event.table.clone(),
                message: message.to_string(),
            },
        }
    }

    /// One line for people.
    pub(crate) fn text(&self) -> String {
        let at = crate::describe::time(&self.captured_at);
        match self.seq {
            Some(seq) => format!("{at} event {seq}: {}", self.alarm.message),
            None => format!("{at} (not sealed yet): {}", self.alarm.message),
        }
    }
}

/// Trigger capture's conditions now in `db`, and the alarms recorded there
/// in the last [`RECENT_HOURS`].
pub(crate) async fn trigger_status(
    client: &tokio_postgres::Client,
    db: &str,
) -> anyhow::Result<(Vec<Alarm>, Vec<RecordedAlarm>)> {
    let mut now = pgtrail_triggers::health::check(client).await?;
    let store = pgtrail_store::open_in_database(db).await?;
    now.extend(pgtrail_store::health::recent_gap(store.as_ref(), GAP_WINDOW).await?);
    let mut recorded = recorded_in(store.as_ref(), db).await?;
    recorded.extend(
        pgtrail_triggers::health::pending_alarms(client)
            .await?
            .into_iter()
            .map(|(alarm, captured_at)| RecordedAlarm {
                store: redact_url(db),
                seq: None,
                captured_at,
                alarm,
            }),
    );
    Ok((now, recorded))
}

/// Logical replication's conditions now: the slot and publication of the
/// database `client` is connected to.
pub(crate) async fn capture_status(
    client: &tokio_postgres::Client,
    slot: &str,
    publication: &str,
) -> anyhow::Result<Vec<Alarm>> {
    Ok(pgtrail_cdc::health::check(client, slot, publication, &[])
        .await?
        .alarms)
}

/// A store's gap and its alarms of the last [`RECENT_HOURS`].
pub(crate) async fn store_status(
    store: &dyn Store,
    url: &str,
) -> anyhow::Result<(Vec<Alarm>, Vec<RecordedAlarm>)> {
    let gap = pgtrail_store::health::recent_gap(store, GAP_WINDOW).await?;
    Ok((gap.into_iter().collect(), recorded_in(store, url).await?))
}

async fn recorded_in(store: &dyn Store, url: &str) -> anyhow::Result<Vec<RecordedAlarm>> {
    let since = Utc::now() - chrono::Duration::hours(RECENT_HOURS);
    let events = pgtrail_store::health::recent_alarms(store, since, RECORDED_LIMIT).await?;
    Ok(events
        .iter()
        .rev()
        .map(|e| RecordedAlarm::from_event(url, e))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_core::alarm;

    #[test]
    fn an_alarm_is_recorded_once_per_onset() {
        let mut onsets = Onsets::default();
        let dropped = Alarm::on_table(alarm::CAPTURE_TRIGGER_DROPPED, "public", "orders", "a");
        let near = Alarm::new(alarm::SLOT_NEAR_LIMIT, "10 MB left");

        let first = vec![dropped.clone()];
        assert_eq!(onsets.fresh(&first), first);
        onsets.remember(&first);
        assert!(onsets.fresh(&first).is_empty(), "still there: not again");

        let second = vec![dropped.clone(), near.clone()];
        assert_eq!(onsets.fresh(&second), vec![near.clone()]);
        onsets.remember(&second);
        let moved = Alarm::new(alarm::SLOT_NEAR_LIMIT, "5 MB left");
        assert!(onsets.fresh(&[dropped.clone(), moved]).is_empty());

        onsets.remember(&[]);
        assert_eq!(onsets.fresh(&first), first, "gone, then back: a new onset");
    }
}
