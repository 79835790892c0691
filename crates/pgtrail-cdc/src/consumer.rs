//! The replication session: stream → decode → assemble → hand over →
//! confirm.
//!
//! The session owns the replication connection: it decodes and assembles
//! transactions, groups them into batches (by size or age) and hands them
//! to the pipeline's queue (`pgtrail-pipeline`, which appends them to the
//! store); it also answers keepalives and sends status updates, even while
//! the queue is full, so the server never times the connection out. It
//! confirms (flush position) only what the pipeline acknowledged: the end
//! LSN of the newest batch whose `append` returned. A crash anywhere
//! therefore replays from the last confirmed transaction, and the
//! deterministic event ids let the store skip what it already has. A stop
//! while the store is down leaves the unstored changes in the slot.
//!
//! Memory stays near [`ReplicationOptions::memory_limit`] end to end: the
//! assembler spills the largest open transaction to disk past it (see
//! [`crate::assemble`]), and a committed transaction is handed over in
//! batches bounded by events and by bytes, through a queue of a few
//! batches. A transaction split over several batches is confirmed only with
//! its last one (a batch's end LSN is that of the last transaction it
//! completes); after a crash between two of them the transaction replays and
//! the store skips the events it already has.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgtrail_core::handover::{Acknowledged, Batch};
use pgtrail_core::Event;
use pgtrail_wire::replication::{to_pg_epoch, ReplicationMessage, StandbyStatus};
use pgtrail_wire::Lsn;
use tokio::sync::{mpsc, watch};

use crate::assemble::{Assembler, CommittedTx, SpillDir};
use crate::catalog::TableSelection;
use crate::connection::{ConnectOptions, ReplicationConnection};
use crate::mask::{self, Masking};
use crate::pgoutput::{Decoder, PgOutput};
use crate::value::TypeRegistry;
use crate::CdcError;
use crate::{catalog, setup, slot};

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// Replication slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Tables that must be in the publication (checked at start).
    pub selection: TableSelection,
    /// A batch is appended when it holds this many events…
    pub batch_events: usize,
    /// …or when its oldest transaction waited this long.
    pub batch_wait: Duration,
    /// Status updates are sent at least this often (keep below `wal_sender_timeout`).
    pub status_interval: Duration,
    /// Lag is logged this often.
    pub lag_report_interval: Duration,
    /// A warning is logged when the slot lags more than this many bytes.
    pub lag_warn_bytes: u64,
    /// First pause before retrying a failed store append or a lost
    /// connection (the pipeline's back-off starts here).
    pub retry_pause: Duration,
    /// Bytes (counted roughly) of changes held in memory for open
    /// transactions before the largest is spilled to disk; batches to the
    /// store are kept to a sixteenth of it (at least 4 MiB).
    pub memory_limit: usize,
    /// Where spill files go; the consumer uses a subdirectory per system and slot.
    pub spill_dir: PathBuf,
    /// Keys of a statement's sqlcommenter comment that name the application
    /// user (`[identity] comment_user_keys`).
    pub comment_user_keys: Vec<String>,
    /// Masked columns (`[capture] mask`, `mask_redact`); the key is read
    /// from the database at start.
    pub masking: Masking,
}

impl ReplicationOptions {
    /// Defaults for `slot` and `publication`.
    pub fn new(slot: &str, publication: &str) -> Self {
        ReplicationOptions {
            slot: slot.to_string(),
            publication: publication.to_string(),
            selection: TableSelection::default(),
            batch_events: 5_000,
            batch_wait: Duration::from_millis(50),
            status_interval: Duration::from_secs(1),
            lag_report_interval: Duration::from_secs(30),
            lag_warn_bytes: 256 * 1024 * 1024,
            retry_pause: Duration::from_millis(500),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            spill_dir: default_spill_dir(),
            comment_user_keys: pgtrail_core::sql_comment::default_user_keys(),
            masking: Masking::default(),
        }
    }

    /// Bytes (roughly) after which a batch is handed over even if
    /// it holds fewer than `batch_events`. About seven batches can be in
    /// flight (pending, the pipeline queue's four, the one being appended
    /// and the one being freed), so that adds under half the budget — but at least a few MB,
    /// as every append costs an fsync.
    pub fn batch_bytes(&self) -> usize {
        (self.memory_limit / 16).max(4 * 1024 * 1024)
    }
}

/// Default of [`ReplicationOptions::memory_limit`]: 256 MiB.
pub const DEFAULT_MEMORY_LIMIT: usize = 256 * 1024 * 1024;

/// Default of [`ReplicationOptions::spill_dir`]: `pgtrail-spill-UID` in the
/// system's temporary directory, one per user, so no user shares (or can
/// plant) another's; [`crate::assemble::SpillDir::open`] checks it is
/// this user's.
pub fn default_spill_dir() -> PathBuf {
    let uid = rustix::process::geteuid().as_raw();
    std::env::temp_dir().join(format!("pgtrail-spill-{uid}"))
}

/// The alarm recorded at start while roles other than superusers and
/// pgtrail's own may execute `pg_logical_emit_message`: each can emit a
/// `pgtrail` message, attaching any actor to its changes or making up DDL.
fn emitters_alarm(database: &str, roles: &[String]) -> Event {
    let detail = format!(
        "roles {} may execute pg_logical_emit_message in database {database}: each can forge the \
         actor of its changes and DDL events; revoke it (pgtrail capture --setup --context does)",
        roles.join(", ")
    );
    let mut alarm =
        pgtrail_core::alarm::Alarm::new(MESSAGE_EMITTERS, detail).event(pgtrail_core::Source::Cdc);
    alarm.database = Some(database.to_string());
    if let Some(context) = alarm.context.as_mut() {
        context.insert("roles".to_string(), serde_json::json!(roles));
    }
    alarm
}

/// What the alarm of [`emitters_alarm`] says.
pub use pgtrail_core::alarm::MESSAGE_EMITTERS;

/// One replication session: streams from the slot, handing batches to
/// `batches` and confirming what `acknowledged` says is stored, until
/// `shutdown` turns true (`Ok`) or something fails. It starts from the
/// acknowledged position. Before returning it closes `batches` and waits
/// for the pipeline to finish what it was handed (the acknowledgement
/// channel closes), then confirms that. Reconnecting is the caller's.
pub async fn session(
    connect: &ConnectOptions,
    options: &ReplicationOptions,
    batches: mpsc::Sender<Batch<Lsn>>,
    acknowledged: watch::Receiver<Acknowledged<Lsn>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), CdcError> {
    let catalog = connect.connect_sql().await?;
    let facts = catalog::check_ready(&catalog).await?;
    let tables = catalog::resolve_tables(&catalog, &options.selection).await?;
    let required = if options.selection.is_all() {
        Vec::new()
    } else {
        tables
    };
    setup::check_replication(&catalog, &options.slot, &options.publication, &required).await?;
    let mut types = TypeRegistry::builtin();
    types.load(&catalog::load_types(&catalog).await?);
    let masking = mask::keyed(&catalog, &options.masking).await?;

    // With the context trigger installed, every change should come with an
    // actor, and only pgtrail's functions may emit one: checked at each
    // start, since a superuser may have granted EXECUTE on
    // pg_logical_emit_message since the setup.
    let actor_owner = crate::triggers::actor_trigger_owner(&catalog).await?;
    let emitters = match &actor_owner {
        Some(owner) => crate::triggers::message_emitters(&catalog, owner).await?,
        None => Vec::new(),
    };

    let mut conn = ReplicationConnection::connect(connect).await?;
    let system = conn.identify_system().await?;
    let stream_id = format!("{}/{}", system.system_id, system.dbname);
    let start = acknowledged.borrow().position;
    let mut start_alarms = Vec::new();
    if !emitters.is_empty() {
        tracing::warn!(roles = %emitters.join(", "), "Roles other than pgtrail's may emit logical messages, and so forge actors and DDL events");
        start_alarms.push(emitters_alarm(&system.dbname, &emitters));
    }
    if let Err(error) = conn
        .start_replication(
            &options.slot,
            &options.publication,
            start,
            facts.proto_version(),
        )
        .await
    {
        if error.sqlstate() == Some("55006") {
            return Err(slot::slot_in_use(&options.slot, None));
        }
        return Err(error);
    }
    tracing::info!(slot = %options.slot, publication = %options.publication, from = %start, proto = facts.proto_version(), "Streaming changes");
    // Opened only now that the slot is ours: opening removes leftover files.
    let spill_dir = SpillDir::open(
        options
            .spill_dir
            .join(format!("{}-{}", system.system_id, options.slot)),
    )
    .map_err(crate::assemble::AssembleError::from)?;

    let mut reader = Reader {
        options,
        catalog,
        assembler: Assembler::new(&stream_id, &system.dbname, types)
            .with_spill(spill_dir, options.memory_limit)
            .with_comment_user_keys(&options.comment_user_keys)
            .expecting_actor(actor_owner.is_some())
            .with_masking(masking),
        decoder: Decoder::new(),
        tried_types: HashSet::new(),
        pending_since: (!start_alarms.is_empty()).then(Instant::now),
        pending: start_alarms,
        pending_bytes: 0,
        batch_bytes: options.batch_bytes(),
        emitting: false,
        // A batch of start alarms alone confirms nothing new.
        pending_end: start,
        pending_commit: None,
        sent_lsn: start,
        received: start,
        server_end: start,
        idle_lsn: start,
        last_status: Instant::now(),
        last_lag_report: Instant::now(),
        acknowledged,
    };
    let result = reader.run(&mut conn, &batches, shutdown).await;
    // The pipeline finishes what it was handed (or stops) and then closes
    // the acknowledgement channel.
    drop(batches);
    let mut finished = reader.acknowledged.clone();
    while finished.changed().await.is_ok() {}
    if result.is_ok() {
        // Confirm what was stored after the last status.
        let _ = reader.send_status(&mut conn, false).await;
        conn.close().await;
    }
    result
}

struct Reader<'a> {
    options: &'a ReplicationOptions,
    catalog: tokio_postgres::Client,
    assembler: Assembler,
    decoder: Decoder,
    tried_types: HashSet<u32>,
    pending: Vec<Event>,
    /// Rough bytes of `pending`.
    pending_bytes: usize,
    batch_bytes: usize,
    /// A committed transaction is being handed over in several batches.
    emitting: bool,
    pending_end: Lsn,
    pending_commit: Option<DateTime<Utc>>,
    pending_since: Option<Instant>,
    /// End LSN of the last batch handed over.
    sent_lsn: Lsn,
    /// Furthest WAL position received.
    received: Lsn,
    /// The server's end of WAL, from the last message.
    server_end: Lsn,
    /// A keepalive position seen while nothing was open or pending.
    idle_lsn: Lsn,
    last_status: Instant,
    last_lag_report: Instant,
    acknowledged: watch::Receiver<Acknowledged<Lsn>>,
}

impl Reader<'_> {
    async fn run(
        &mut self,
        conn: &mut ReplicationConnection,
        batches: &mpsc::Sender<Batch<Lsn>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), CdcError> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = conn.next_message() => {
                    self.handle(conn, message?, batches).await?;
                    // Then everything that arrived with it, without going through select.
                    loop {
                        if self.batch_full() {
                            self.send_batch(conn, batches).await?;
                        }
                        match conn.next_buffered()? {
                            Some(message) => self.handle(conn, message, batches).await?,
                            None => break,
                        }
                        // A long backlog (a huge transaction arriving) must not
                        // starve the server of replies past wal_sender_timeout.
                        self.keep_alive(conn).await?;
                    }
                }
                _ = tick.tick() => {
                    if self.pending_since.is_some_and(|t| t.elapsed() >= self.options.batch_wait) {
                        self.send_batch(conn, batches).await?;
                    }
                    if self.last_status.elapsed() >= self.options.status_interval {
                        self.send_status(conn, false).await?;
                    }
                    if batches.is_closed() {
                        return Err(CdcError::Unexpected { action: "handing changes to the pipeline".into(), detail: "the pipeline stopped".into() });
                    }
                }
                _ = shutdown.changed() => {
                    self.send_batch(conn, batches).await?;
                    return Ok(());
                }
            }
        }
    }

    async fn handle(
        &mut self,
        conn: &mut ReplicationConnection,
        message: ReplicationMessage,
        batches: &mpsc::Sender<Batch<Lsn>>,
    ) -> Result<(), CdcError> {
        match message {
            ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                data,
                ..
            } => {
                self.received = self.received.max(wal_start);
                self.server_end = self.server_end.max(wal_end);
                let message = self.decoder.decode(&data)?;
                self.prepare(&message).await?;
                if let Some(tx) = self.assembler.apply(message)? {
                    self.received = self.received.max(tx.end_lsn);
                    self.emit(conn, batches, tx).await?;
                }
            }
            ReplicationMessage::PrimaryKeepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                self.server_end = self.server_end.max(wal_end);
                if !self.assembler.in_transaction() && self.pending.is_empty() {
                    self.idle_lsn = self.idle_lsn.max(wal_end);
                    self.received = self.received.max(wal_end);
                }
                if reply_requested {
                    self.send_status(conn, false).await?;
                }
            }
        }
        Ok(())
    }

    /// Moves a committed transaction's events into pending batches, handing
    /// full ones over as it goes, so a huge transaction never sits
    /// in memory whole. Only the batch holding its last event carries its
    /// end LSN. A transaction without events (PostgreSQL 14 sends empty
    /// ones) needs no batch: the idle keepalive position covers it.
    async fn emit(
        &mut self,
        conn: &mut ReplicationConnection,
        batches: &mpsc::Sender<Batch<Lsn>>,
        mut tx: CommittedTx,
    ) -> Result<(), CdcError> {
        let mut emitted = false;
        self.emitting = true;
        loop {
            let was_empty = self.pending.is_empty();
            let before = self.pending.len();
            let room_events = self.options.batch_events.saturating_sub(before).max(1);
            let room_bytes = self.batch_bytes.saturating_sub(self.pending_bytes).max(1);
            self.pending_bytes += tx.take_events(&mut self.pending, room_events, room_bytes)?;
            if self.pending.len() > before {
                emitted = true;
                if was_empty {
                    self.pending_since = Some(Instant::now());
                }
            }
            if tx.is_done() {
                break;
            }
            self.keep_alive(conn).await?;
            // Full, with more of the transaction to come: this batch confirms
            // only the transactions it completes.
            self.send_batch(conn, batches).await?;
        }
        if emitted {
            self.pending_end = tx.end_lsn;
            self.pending_commit = Some(tx.committed_at);
        }
        self.emitting = false;
        Ok(())
    }

    /// Sends a status update when the last is `status_interval` old.
    async fn keep_alive(&mut self, conn: &mut ReplicationConnection) -> Result<(), CdcError> {
        if self.last_status.elapsed() >= self.options.status_interval {
            self.send_status(conn, false).await?;
        }
        Ok(())
    }

    fn batch_full(&self) -> bool {
        self.pending.len() >= self.options.batch_events || self.pending_bytes >= self.batch_bytes
    }

    /// Looks up what a Relation message needs from the catalog: the primary
    /// key (pgoutput only knows the replica identity) and unknown types.
    async fn prepare(&mut self, message: &PgOutput) -> Result<(), CdcError> {
        let oids: Vec<u32> = match message {
            PgOutput::Relation { relation, .. } => {
                let pk = catalog::primary_key(&self.catalog, relation.oid).await?;
                self.assembler.set_primary_key(relation.oid, pk);
                relation.columns.iter().map(|c| c.type_oid).collect()
            }
            PgOutput::Type { oid, .. } => vec![*oid],
            _ => return Ok(()),
        };
        let unknown: Vec<u32> = oids
            .into_iter()
            .filter(|oid| {
                *oid >= 10_000
                    && !self.assembler.types_mut().knows(*oid)
                    && !self.tried_types.contains(oid)
            })
            .collect();
        if !unknown.is_empty() {
            self.tried_types.extend(unknown);
            let rows = catalog::load_types(&self.catalog).await?;
            self.assembler.types_mut().load(&rows);
        }
        Ok(())
    }

    /// Hands the pending transactions to the pipeline, answering the
    /// server while its queue is full.
    async fn send_batch(
        &mut self,
        conn: &mut ReplicationConnection,
        batches: &mpsc::Sender<Batch<Lsn>>,
    ) -> Result<(), CdcError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = Batch {
            events: std::mem::take(&mut self.pending),
            end: self.pending_end,
            last_commit: self.pending_commit.take(),
        };
        self.pending_bytes = 0;
        self.pending_since = None;
        self.sent_lsn = batch.end;
        loop {
            tokio::select! {
                permit = batches.reserve() => {
                    let permit = permit.map_err(|_| CdcError::Unexpected { action: "handing changes to the pipeline".into(), detail: "the pipeline stopped".into() })?;
                    permit.send(batch);
                    return Ok(());
                }
                _ = tokio::time::sleep(self.options.status_interval) => self.send_status(conn, false).await?,
            }
        }
    }

    /// Confirms what is durable: the acknowledged position, or — when nothing
    /// is open, pending or in flight — the last idle keepalive position.
    async fn send_status(
        &mut self,
        conn: &mut ReplicationConnection,
        reply: bool,
    ) -> Result<(), CdcError> {
        let progress = *self.acknowledged.borrow();
        let all_stored = progress.position >= self.sent_lsn
            && self.pending.is_empty()
            && !self.emitting
            && !self.assembler.in_transaction();
        let flush = if all_stored {
            progress.position.max(self.idle_lsn)
        } else {
            progress.position
        };
        let now_micros = Utc::now().timestamp_micros();
        conn.send_status(&StandbyStatus {
            write: self.received.max(flush),
            flush,
            apply: flush,
            send_time: to_pg_epoch(now_micros),
            reply_requested: reply,
        })
        .await?;
        self.last_status = Instant::now();
        let lag_bytes = self.server_end.0.saturating_sub(flush.0);
        let lag_seconds = if lag_bytes == 0 || all_stored {
            0.0
        } else {
            progress.last_commit.map_or(0.0, |t| {
                (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
            })
        };
        // For /metrics at every status update, the log line less often.
        metrics::gauge!("pgtrail_replication_lag_bytes").set(lag_bytes as f64);
        metrics::gauge!("pgtrail_replication_lag_seconds").set(lag_seconds);
        if self.last_lag_report.elapsed() >= self.options.lag_report_interval {
            self.last_lag_report = Instant::now();
            if lag_bytes > self.options.lag_warn_bytes {
                tracing::warn!(slot = %self.options.slot, lag_bytes, lag_seconds, confirmed = %flush, "Capture is falling behind");
            } else {
                tracing::info!(slot = %self.options.slot, lag_bytes, lag_seconds, confirmed = %flush, events = progress.events, "Capture lag");
            }
        }
        Ok(())
    }
}
