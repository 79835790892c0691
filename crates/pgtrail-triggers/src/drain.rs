//! Draining: moving finished transactions' inbox rows into the store, in
//! commit order.
//!
//! **What is final.** A transaction whose xid is below the snapshot's xmin
//! has ended: no row of it can still appear. That alone is not enough for
//! commit order: with T1 still running, T2 (newer xid) may commit before
//! T0 (older xid) does, and sealing T0 now would put T2 after it later. So
//! a transaction is sealed only when its xid is below xmin **and** it
//! committed before every already-committed transaction that is not yet
//! final. Sealed transactions are ordered by commit timestamp (xid breaks
//! ties). Without `track_commit_timestamp` the commit time is unknown and
//! xid order stands in for it (close, not exact: `pgtrail status` says so).
//!
//! **Exactly once.** One database transaction takes the inbox lock (one
//! drainer at a time), reads the chosen rows, appends them through the
//! store's [`append_in`] in the same transaction, deletes them, and
//! commits: all or nothing. Event ids are derived from the inbox row, so
//! even a drainer writing to another store cannot duplicate on retry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgtrail_core::json;
use pgtrail_core::quarantine::quarantine;
use pgtrail_sql::{RedactMode, Redactor};
use pgtrail_store::postgres::append_in;
use pgtrail_store::postgres::json::RawJson;
use pgtrail_store::postgres::PostgresStore;
use serde_json::Value;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, Row, Transaction};
use uuid::Uuid;

use crate::inbox::{self, InboxRow};
use crate::{Error, Result};

/// Rows sealed per database transaction (whole transactions are never split
/// across two, so one big transaction may exceed it).
pub const DEFAULT_BATCH_ROWS: i64 = 10_000;

/// Events appended to the store per COPY while streaming a batch.
const CHUNK: i32 = 2_000;

/// What a seal did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Events appended to the chain.
    pub events: usize,
    /// Transactions they came from.
    pub transactions: usize,
}

impl std::ops::AddAssign for DrainReport {
    fn add_assign(&mut self, other: DrainReport) {
        self.events += other.events;
        self.transactions += other.transactions;
    }
}

/// How often a [`Drainer`] creates the store's monthly partitions ahead.
const PREPARE_EVERY: Duration = Duration::from_secs(3600);

/// How far ahead a [`Drainer`] creates the store's partitions.
const PREPARE_AHEAD_DAYS: i64 = 62;

/// The one owner of sealing a database's trigger capture: it connects
/// (through `pgtrail-connect`, with the libpq environment), checks that
/// trigger capture is installed, creates the store's partitions ahead (so
/// events do not land in the default partition), and seals what is final.
///
/// A failed seal drops the connection, so the next one starts afresh; the
/// inbox keeps every captured row meanwhile. Whether to try again, and
/// when, is the caller's: [`Error::is_retryable`] says whether it may help.
pub struct Drainer {
    url: String,
    client: Option<Client>,
    store: Option<PostgresStore>,
    prepared_at: Option<Instant>,
    /// When the inbox's backlog was last measured for `/metrics`.
    measured_at: Option<Instant>,
}

impl std::fmt::Debug for Drainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only its redacted form is shown.
        f.debug_struct("Drainer")
            .field("target", &self.target())
            .field("connected", &self.client.is_some())
            .field("prepared_at", &self.prepared_at)
            .finish_non_exhaustive()
    }
}

impl Drainer {
    /// A drainer for the database at `url` (libpq URL or key=value); it
    /// connects on its first seal.
    pub fn new(url: impl Into<String>) -> Drainer {
        Drainer {
            url: url.into(),
            client: None,
            store: None,
            prepared_at: None,
            measured_at: None,
        }
    }

    /// The database, for messages (without a password).
    pub fn target(&self) -> String {
        pgtrail_store::open::redact_url(&self.url)
    }

    /// Seals everything that is final now, batch after batch.
    /// [`Error::NotInstalled`] when trigger capture is not (or no longer)
    /// installed.
    pub async fn drain(&mut self) -> Result<DrainReport> {
        let sealed = self.try_seal().await;
        if sealed.is_err() {
            self.client = None;
            self.store = None;
        }
        sealed
    }

    async fn try_seal(&mut self) -> Result<DrainReport> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(crate::connect(&self.url).await?),
        };
        let version = crate::migrations::require_installed(client).await?;
        if self
            .prepared_at
            .is_none_or(|at| at.elapsed() >= PREPARE_EVERY)
        {
            // Only once trigger capture is there: opening the store creates it.
            let store = match &self.store {
                Some(store) => store,
                None => self.store.insert(PostgresStore::connect(&self.url).await?),
            };
            // Without partitions ahead, events land in the default
            // partition: a failure here (e.g. not the owner) must not stop
            // sealing.
            let until = Utc::now() + chrono::Duration::days(PREPARE_AHEAD_DAYS);
            // Never moves rows waiting in the default partition (that
            // would stall sealing): `pgtrail retention` does.
            if let Err(e) = store.prepare_ahead(until).await {
                tracing::warn!(error = %e, "Cannot create partitions ahead; events go to the default partition.");
            }
            self.prepared_at = Some(Instant::now());
        }
        let report = seal_installed(client, version).await?;
        if self
            .measured_at
            .is_none_or(|at| at.elapsed() >= MEASURE_EVERY)
        {
            self.measured_at = Some(Instant::now());
            measure_backlog(client, version).await;
        }
        Ok(report)
    }
}

/// How often a [`Drainer`] measures the inbox's backlog for `/metrics`
/// (a scan of the pending rows, as each seal's plan makes).
const MEASURE_EVERY: Duration = Duration::from_secs(5);

/// Sets `pgtrail_trigger_pending_rows` and
/// `pgtrail_trigger_oldest_pending_seconds` (0 when nothing waits): what
/// waits after a pass is what the next passes have to seal. A failure only
/// leaves the last values (logged): the seal itself succeeded.
async fn measure_backlog(client: &Client, version: i32) {
    let pending = inbox::pending_rows(version);
    let measured = client
        .query_one(
            &format!(
                "select count(*), coalesce(extract(epoch from clock_timestamp() - min(captured_at))::float8, 0) \
                 from {pending}"
            ),
            &[],
        )
        .await
        .and_then(|row| Ok((row.try_get::<_, i64>(0)?, row.try_get::<_, f64>(1)?)));
    match measured {
        Ok((rows, oldest)) => {
            metrics::gauge!("pgtrail_trigger_pending_rows").set(rows as f64);
            metrics::gauge!("pgtrail_trigger_oldest_pending_seconds").set(oldest.max(0.0));
        }
        Err(error) => tracing::debug!(%error, "Cannot measure the inbox's backlog."),
    }
}

/// Seals everything that is final now, batch after batch, over an open
/// connection (`pgtrail seal`'s work without the store's partitions; see
/// [`Drainer`]).
pub async fn drain_all(client: &mut Client) -> Result<DrainReport> {
    let version = crate::migrations::require_installed(client).await?;
    seal_installed(client, version).await
}

/// One pass: batch after batch while a batch was cut at its size, so what
/// was final when the pass began is sealed, and what became final while it
/// ran waits for the next pass. Chasing every newly final transaction kept
/// a busy drainer sealing a handful of events per database transaction, each
/// paying a seal's fixed cost on the server (reading the settings, choosing,
/// locking, `delete_sealed`'s check): 991 µs of server CPU per event under
/// one writer (bench/triggers/README.md, session 6).
async fn seal_installed(client: &mut Client, version: i32) -> Result<DrainReport> {
    let mut total = DrainReport::default();
    loop {
        let (report, more) = seal_batch(client, version, DEFAULT_BATCH_ROWS).await?;
        total += report;
        if !more {
            return Ok(total);
        }
    }
}

/// Seals the oldest final transactions, about `max_rows` rows of them (at
/// least one transaction), in one database transaction.
pub async fn drain_once(client: &mut Client, max_rows: i64) -> Result<DrainReport> {
    let version = crate::migrations::require_installed(client).await?;
    Ok(seal_batch(client, version, max_rows).await?.0)
}

/// One batch, and whether it was cut at `max_rows` (more was final).
async fn seal_batch(
    client: &mut Client,
    version: i32,
    max_rows: i64,
) -> Result<(DrainReport, bool)> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("starting a seal"))?;
    tx.batch_execute("lock table pgtrail.inbox in share update exclusive mode")
        .await
        .map_err(Error::pg("locking the inbox"))?;
    let source = inbox::pending_rows(version);
    let (plan, cut) = plan(&tx, source, max_rows).await?;
    if plan.is_empty() {
        tx.commit().await.map_err(Error::pg("ending a seal"))?;
        return Ok((DrainReport::default(), false));
    }
    let SealSettings {
        install_id,
        database,
        head_before,
        masking,
        comment_user_keys,
    } = SealSettings::read(&tx).await?;
    let mut redactor = Redactor::default();
    let xids: Vec<i64> = plan.iter().map(|t| t.xid).collect();
    let committed: HashMap<i64, Option<DateTime<Utc>>> =
        plan.iter().map(|t| (t.xid, t.committed_at)).collect();

    // The xids' range is also a filter (not only the join), so that each
    // part of the view converts only the images of the rows being sealed
    // (and a few beside them): a join is not pushed into a UNION ALL, and
    // `= any (array)` would compare every row with every xid.
    let statement = tx
        .prepare(&format!(
            "select i.id, i.xid::text::bigint as xid, i.captured_at, i.kind, i.operation, i.schema_name, i.table_name, \
                    i.keyless, i.pk, i.old, i.new, i.db_user, i.role_name, i.app_user, i.context, \
                    host(i.client_addr) as client_addr, i.client_port, i.application_name, i.backend_pid, i.sql, i.detail, \
                    row_number() over (partition by i.xid order by i.id) - 1 as tx_seq \
             from {source} i \
             join unnest($1::bigint[]) with ordinality as p(xid, ord) on i.xid = p.xid::text::xid8 \
             where i.xid between (select min(x)::text::xid8 from unnest($1::bigint[]) as x) \
                             and (select max(x)::text::xid8 from unnest($1::bigint[]) as x) \
             order by p.ord, i.id"
        ))
        .await
        .map_err(Error::pg("reading the inbox"))?;
    let portal = tx
        .bind(&statement, &[&xids])
        .await
        .map_err(Error::pg("reading the inbox"))?;
    let mut events_total = 0;
    // For /metrics, recorded once the commit made them durable.
    let mut tally = pgtrail_store::metrics::Tally::default();
    let mut appending = Duration::ZERO;
    loop {
        let rows = tx
            .query_portal(&portal, CHUNK)
            .await
            .map_err(Error::pg("reading the inbox"))?;
        if rows.is_empty() {
            break;
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut inbox_row = read_row(row)?;
            inbox_row.committed_at = committed.get(&inbox_row.xid).copied().flatten();
            let committed_at = inbox_row.committed_at;
            let mut event = match inbox::to_event(inbox_row, &install_id, &database) {
                Ok(event) => event,
                // A row pgtrail's triggers did not write as they do (someone
                // who can write the inbox): kept as a quarantine event, and
                // sealing goes on.
                Err(reason) => {
                    let mut unreadable = unreadable_row(row, &install_id, &database)?;
                    unreadable.committed_at = committed_at;
                    tracing::warn!(id = %unreadable.id, %reason, "Quarantined an inbox row that is not an event.");
                    events.push(quarantine(&unreadable, &format!("inbox row: {reason}")));
                    continue;
                }
            };
            // A sqlcommenter comment names the user where no setting did.
            pgtrail_core::sql_comment::apply(&mut event, &comment_user_keys);
            // No secret, nor (where columns are masked) any row value, in
            // statement text. A DDL event's text is the client's whole query
            // string, which may carry an INSERT of a masked value beside the
            // migration: its data statements lose their constants, its
            // schema changes keep their text.
            let mode = match (masking, event.kind) {
                (true, pgtrail_core::Kind::RowChange) => RedactMode::Constants,
                (true, pgtrail_core::Kind::Ddl) => RedactMode::ConstantsOutsideDdl,
                _ => RedactMode::Secrets,
            };
            redactor.redact_in_place(&mut event.sql, mode);
            events.push(event);
        }
        events_total += events.len();
        let started = Instant::now();
        append_in(&tx, &events).await?;
        appending += started.elapsed();
        tally.add(&events);
    }
    // From migration 5, delete_sealed checks each transaction's events
    // are in the chain, among those after the head this seal started from.
    let deleted = match version {
        5.. => {
            tx.execute(
                "select pgtrail.delete_sealed($1::bigint[], $2)",
                &[&xids, &head_before],
            )
            .await
        }
        4 => {
            tx.execute("select pgtrail.delete_sealed($1::bigint[])", &[&xids])
                .await
        }
        _ => tx.execute(
            "delete from pgtrail.inbox where xid in (select x::text::xid8 from unnest($1::bigint[]) as x)",
            &[&xids],
        )
        .await,
    };
    deleted.map_err(Error::pg("removing sealed rows from the inbox"))?;
    let started = Instant::now();
    tx.commit().await.map_err(Error::pg("committing a seal"))?;
    tally.record(appending + started.elapsed());
    tracing::debug!(
        events = events_total,
        transactions = plan.len(),
        "Sealed trigger events."
    );
    Ok((
        DrainReport {
            events: events_total,
            transactions: plan.len(),
        },
        cut,
    ))
}

/// One final transaction waiting in the inbox.
struct Pending {
    xid: i64,
    rows: i64,
    committed_at: Option<DateTime<Utc>>,
}

/// The final transactions to seal now, in commit order, cut after about
/// `max_rows` rows; and whether it was cut (more final ones wait).
async fn plan(tx: &Transaction<'_>, source: &str, max_rows: i64) -> Result<(Vec<Pending>, bool)> {
    let commit_ts: bool = tx
        .query_one(
            "select current_setting('track_commit_timestamp') = 'on'",
            &[],
        )
        .await
        .map_err(Error::pg("reading track_commit_timestamp"))?
        .try_get(0)
        .map_err(Error::pg("reading track_commit_timestamp"))?;
    let committed_at = if commit_ts {
        "pg_xact_commit_timestamp(xid(xid))"
    } else {
        "null::timestamptz"
    };
    let rows = tx
        .query(
            &format!(
                "with txs as ( \
                     select xid, count(*) as n, {committed_at} as committed_at from {source} group by xid), \
                 horizon as (select pg_snapshot_xmin(pg_current_snapshot()) as xmin), \
                 not_final as (select min(t.committed_at) as at from txs t, horizon h where t.xid >= h.xmin) \
                 select t.xid::text::bigint, t.n, t.committed_at \
                 from txs t, horizon h, not_final f \
                 where t.xid < h.xmin and (f.at is null or t.committed_at is null or t.committed_at < f.at) \
                 order by t.committed_at nulls first, t.xid"
            ),
            &[],
        )
        .await
        .map_err(Error::pg("finding final transactions"))?;
    let mut chosen = Vec::new();
    let mut total = 0;
    for row in rows {
        if total >= max_rows && !chosen.is_empty() {
            return Ok((chosen, true));
        }
        let read = |source| Error::Postgres {
            action: "reading a final transaction".into(),
            source,
        };
        let pending = Pending {
            xid: row.try_get(0).map_err(&read)?,
            rows: row.try_get(1).map_err(&read)?,
            committed_at: row.try_get(2).map_err(&read)?,
        };
        total += pending.rows;
        chosen.push(pending);
    }
    Ok((chosen, false))
}

/// What a seal reads of the install besides the rows, in one round trip
/// (plus one for the sqlcommenter keys where an install wrote them). Read
/// in every seal, inside its transaction, never cached: a column masked a
/// moment ago must already keep its values out of statement text.
struct SealSettings {
    install_id: Uuid,
    database: String,
    /// The chain's head before this seal appended.
    head_before: i64,
    /// Whether any table is tracked (or any schema auto-tracked) with
    /// masked columns. Then row events' statement text loses all its
    /// constants: a masked value can reach the text of any captured
    /// statement (as an argument of a function that writes the masked
    /// table, say), so the rule is install-wide rather than per table.
    masking: bool,
    /// The sqlcommenter keys naming the user, as the last install wrote
    /// them from the configuration; the defaults for an install older than that.
    comment_user_keys: Vec<String>,
}

impl SealSettings {
    async fn read(tx: &Transaction<'_>) -> Result<SealSettings> {
        let context = "reading the install's settings";
        let row = tx
            .query_one(
                "select s.install_id, current_database()::text, \
                        (select seq from pgtrail.chain_head), \
                        exists (select 1 from pgtrail.tracked where cardinality(masked) > 0) \
                          or exists (select 1 from pgtrail.auto_track where cardinality(masked) > 0), \
                        to_regprocedure('pgtrail.comment_user_keys()') is not null \
                 from pgtrail.capture_settings s",
                &[],
            )
            .await
            .map_err(Error::pg(context))?;
        let keys_written: bool = row.try_get(4).map_err(Error::pg(context))?;
        let comment_user_keys = if keys_written {
            tx.query_one("select pgtrail.comment_user_keys()", &[])
                .await
                .and_then(|row| row.try_get(0))
                .map_err(Error::pg("reading the sqlcommenter keys"))?
        } else {
            pgtrail_core::sql_comment::default_user_keys()
        };
        Ok(SealSettings {
            install_id: row.try_get(0).map_err(Error::pg(context))?,
            database: row.try_get(1).map_err(Error::pg(context))?,
            head_before: row.try_get(2).map_err(Error::pg(context))?,
            masking: row.try_get(3).map_err(Error::pg(context))?,
            comment_user_keys,
        })
    }
}

/// An inbox row as the drainer reads it. Every column is read with
/// `try_get` (a value of an unexpected type is an error naming the column
/// and the row, never a panic), and JSON with core's reader: any depth, any
/// key, numbers as written; of a key a `json` value repeats, the last value
/// is kept and the earlier ones are recorded (see [`InboxRow::duplicates`]).
fn read_row(row: &Row) -> Result<InboxRow> {
    let id: i64 = column(row, "id", None)?;
    let mut duplicates = Vec::new();
    let mut json = |name: &'static str| -> Result<Option<Value>> {
        let Some(RawJson(text)) = column(row, name, Some(id))? else {
            return Ok(None);
        };
        let parsed = json::parse_captured(text).map_err(|e| Error::BadInbox {
            id,
            reason: format!("{name} is not JSON: {e}"),
        })?;
        duplicates.extend(parsed.duplicates.into_iter().map(|d| (name, d)));
        Ok(Some(parsed.value))
    };
    let (pk, old, new, detail) = (json("pk")?, json("old")?, json("new")?, json("detail")?);
    let kind: i8 = column(row, "kind", Some(id))?;
    Ok(InboxRow {
        id,
        xid: column(row, "xid", Some(id))?,
        captured_at: column(row, "captured_at", Some(id))?,
        kind: kind.to_ne_bytes()[0],
        operation: column(row, "operation", Some(id))?,
        schema: column(row, "schema_name", Some(id))?,
        table: column(row, "table_name", Some(id))?,
        keyless: column(row, "keyless", Some(id))?,
        pk,
        old,
        new,
        db_user: column(row, "db_user", Some(id))?,
        role: column(row, "role_name", Some(id))?,
        app_user: column(row, "app_user", Some(id))?,
        context: column(row, "context", Some(id))?,
        client_addr: column(row, "client_addr", Some(id))?,
        client_port: column(row, "client_port", Some(id))?,
        application_name: column(row, "application_name", Some(id))?,
        backend_pid: column(row, "backend_pid", Some(id))?,
        sql: column(row, "sql", Some(id))?,
        detail,
        committed_at: None,
        tx_seq: column(row, "tx_seq", Some(id))?,
        duplicates,
    })
}

/// What can be read of a pending row that is not an event: its position,
/// and its columns' text in `new`, for its quarantine event.
fn unreadable_row(row: &Row, install_id: &Uuid, database: &str) -> Result<pgtrail_core::Event> {
    let id: i64 = column(row, "id", None)?;
    let captured_at = column(row, "captured_at", Some(id))?;
    let mut event = pgtrail_core::Event::at(
        pgtrail_core::Source::Trigger,
        pgtrail_core::Kind::RowChange,
        captured_at,
    );
    event.id = inbox::event_id(install_id, id, captured_at);
    event.database = Some(database.to_string());
    event.xid = Some(column(row, "xid", Some(id))?);
    event.tx_seq = Some(column(row, "tx_seq", Some(id))?);
    event.schema = column(row, "schema_name", Some(id))?;
    event.table = column(row, "table_name", Some(id))?;
    event.operation = column(row, "operation", Some(id))?;
    let mut columns = pgtrail_core::event::JsonObject::new();
    for name in ["pk", "old", "new", "detail"] {
        if let Some(RawJson(text)) = column(row, name, Some(id))? {
            columns.insert(name.into(), Value::String(text.to_string()));
        }
    }
    for name in ["db_user", "role_name", "app_user", "context", "sql"] {
        if let Some(text) = column::<Option<String>>(row, name, Some(id))? {
            columns.insert(name.into(), Value::String(text));
        }
    }
    event.new = Some(columns);
    Ok(event)
}

/// Column `name` of a pending row, or an error that names both.
fn column<'a, T: FromSql<'a>>(row: &'a Row, name: &str, id: Option<i64>) -> Result<T> {
    row.try_get(name).map_err(|source| Error::Postgres {
        action: match id {
            Some(id) => format!("reading column {name} of inbox row {id}"),
            None => format!("reading column {name} of a pending row"),
        },
        source,
    })
}
