//! Transaction assembly: pgoutput messages in, whole committed transactions
//! of `Event`s out.
//!
//! Changes are turned into events as they arrive (with the table shape of
//! that moment, so a change after `ALTER TABLE … ADD COLUMN` in the same
//! transaction decodes with the new column), but they are released only at
//! commit, when the commit LSN and time are known and, for streamed
//! transactions, aborted subtransactions have been dropped. Then each event
//! gets its `tx_seq`, `lsn`, `committed_at`, the actor that was current when
//! it was made, and a deterministic id: a UUIDv7 whose time is the commit
//! time and whose other bits hash (stream, commit LSN, tx_seq). Replaying a
//! transaction after a crash therefore yields the same ids, and the store
//! skips them.
//!
//! Memory: every held item is counted at a rough size (its strings and JSON
//! values plus per-entry overhead). With a spill directory
//! ([`Assembler::with_spill`]), once the items held for all open
//! transactions pass the budget, the largest open transaction's items move
//! to its spill file ([`spill`]); more of its items may follow in memory and
//! be spilled again later. A committed transaction is handed out as a
//! [`CommittedTx`] that yields its events in chunks — spilled ones first,
//! then those still in memory — so the caller can store a huge transaction
//! in several batches without ever holding all of it. That is safe because
//! ids depend only on the commit: a crash between two batches replays the
//! transaction and the store skips the part it already has.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{json, sql_comment, Event, Kind, Source};
use pgtrail_wire::replication::from_pg_epoch;
use pgtrail_wire::Lsn;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::actor::{Actor, DdlMessage, CONTEXT_PREFIX, DDL_PREFIX};
use crate::mask::Masking;
use crate::pgoutput::{ColumnValue, OldKind, PgOutput, Relation, Tuple, Xid};
use crate::value::{to_json, TypeRegistry};

mod spill;
#[cfg(test)]
mod tests;

pub use spill::{SpillDir, SpillError};
use spill::{SpillFile, SpillReader};

/// Why a message could not be assembled. Each means the stream and pgtrail
/// disagree; the consumer stops rather than store a wrong trail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// A change named a table no Relation message described.
    #[error("change to relation {oid} before its Relation message")]
    UnknownRelation {
        /// The table OID.
        oid: u32,
    },
    /// A tuple's column count differs from its Relation message.
    #[error("{table}: tuple has {got} columns, the relation has {expected}")]
    ColumnCount {
        /// `schema.table`.
        table: String,
        /// Columns in the Relation message.
        expected: usize,
        /// Columns in the tuple.
        got: usize,
    },
    /// A message arrived where the protocol does not allow it.
    #[error("unexpected {what} (xid {xid:?})")]
    OutOfOrder {
        /// Which message.
        what: &'static str,
        /// The transaction concerned.
        xid: Option<Xid>,
    },
    /// A large transaction could not be spilled to disk or read back.
    #[error("spilling a large transaction to disk failed; nothing past the stored changes is confirmed\n  hint: free space in the spill directory, or point [capture] spill_dir (--spill-dir) at a larger disk")]
    Spill(#[from] SpillError),
}

/// A committed transaction whose events are ready to store, taken in
/// chunks with [`CommittedTx::take_events`] (all at once with
/// [`CommittedTx::into_events`] when it is known to be small).
#[derive(Debug)]
pub struct CommittedTx {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: the flush position to confirm once stored.
    pub end_lsn: Lsn,
    /// Commit time.
    pub committed_at: DateTime<Utc>,
    /// Items read back from disk, first.
    spilled: Option<SpillReader>,
    /// Subtransactions aborted after some of their items were spilled.
    aborted: Vec<Xid>,
    /// Items still in memory, after the spilled ones.
    held: std::vec::IntoIter<Held>,
    stamp: Stamp,
}

/// What the events of a committed transaction get, in order.
#[derive(Debug)]
struct Stamp {
    stream_id: Arc<str>,
    lsn_text: String,
    /// The actor of the changes that follow.
    actor: Option<Actor>,
    comment_user_keys: Arc<[String]>,
    next_tx_seq: i64,
    /// The context trigger is installed: a row change with no actor before
    /// it is preceded by an `alarm` event (once per transaction).
    expect_actor: bool,
    /// The alarm of this transaction was made.
    alarmed: bool,
}

/// What an `actor_missing` alarm says: changes that reached the WAL without
/// the actor message the context trigger sends before every statement.
pub use pgtrail_core::alarm::ACTOR_MISSING;

#[derive(Debug)]
enum Item {
    Actor(Actor),
    Event(Box<Event>),
}

/// An item held in memory: the (sub)transaction that made it and its rough size.
#[derive(Debug)]
struct Held {
    xid: Xid,
    item: Item,
    bytes: usize,
}

#[derive(Default)]
struct OpenTx {
    /// Items in memory, in order, after those in `spilled`.
    items: Vec<Held>,
    /// Rough bytes of `items`.
    bytes: usize,
    /// The earlier items, on disk.
    spilled: Option<SpillFile>,
    /// Subtransactions aborted after some of their items were spilled.
    aborted: Vec<Xid>,
}

impl CommittedTx {
    /// Appends the next events, in transaction order, to `out`: at most
    /// `max_events`, and no more once they reach about `max_bytes`. Returns
    /// their rough size in bytes. Nothing is appended once all were taken.
    pub fn take_events(
        &mut self,
        out: &mut Vec<Event>,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<usize, AssembleError> {
        let mut taken = 0;
        let mut bytes = 0;
        while taken < max_events && bytes < max_bytes {
            let next = match self.spilled.as_mut() {
                Some(reader) if reader.remaining() > 0 => match reader.next_item()? {
                    Some((xid, _, _)) if self.aborted.contains(&xid) => continue,
                    Some((_, item, size)) => Some((item, size)),
                    None => None,
                },
                _ => self.held.next().map(|held| (held.item, held.bytes)),
            };
            let Some((item, size)) = next else { break };
            let made = self.stamp(item, out);
            if made > 0 {
                taken += made;
                bytes += size;
            }
        }
        if self.spilled.as_ref().is_some_and(|r| r.remaining() == 0) {
            // Removes the file as soon as it is read.
            self.spilled = None;
        }
        Ok(bytes)
    }

    /// Every event, in transaction order.
    pub fn into_events(mut self) -> Result<Vec<Event>, AssembleError> {
        let mut events = Vec::with_capacity(self.held.len());
        self.take_events(&mut events, usize::MAX, usize::MAX)?;
        Ok(events)
    }

    /// Whether every event has been taken.
    pub fn is_done(&self) -> bool {
        self.spilled.as_ref().is_none_or(|r| r.remaining() == 0) && self.held.len() == 0
    }

    /// Whether part of the transaction is on disk, still to be read back.
    pub fn was_spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// Turns an item into the next event, pushed to `out` (or takes the
    /// actor it carries); a row change without an actor where one was
    /// expected comes after an `alarm` event saying so. Returns how many
    /// events it pushed.
    fn stamp(&mut self, item: Item, out: &mut Vec<Event>) -> usize {
        let mut event = match item {
            Item::Actor(actor) => {
                self.stamp.actor = Some(actor);
                return 0;
            }
            Item::Event(event) => *event,
        };
        let mut made = 0;
        // A DDL event carries its own actor; a row change takes the current one.
        if event.kind == Kind::RowChange {
            match &self.stamp.actor {
                Some(actor) => actor.apply_to(&mut event, &self.stamp.comment_user_keys),
                None if self.stamp.expect_actor && !self.stamp.alarmed => {
                    self.stamp.alarmed = true;
                    let alarm = actor_missing_alarm(&event);
                    out.push(self.finish_event(alarm));
                    made += 1;
                }
                None => {}
            }
        }
        out.push(self.finish_event(event));
        made + 1
    }

    /// Gives `event` the next `tx_seq`, its id and the transaction's fields.
    fn finish_event(&mut self, mut event: Event) -> Event {
        let tx_seq = self.stamp.next_tx_seq;
        self.stamp.next_tx_seq += 1;
        event.id = event_id(
            &self.stamp.stream_id,
            self.commit_lsn,
            tx_seq,
            self.committed_at,
        );
        event.xid = Some(i64::from(self.xid));
        event.lsn = Some(self.stamp.lsn_text.clone());
        event.committed_at = Some(self.committed_at);
        event.tx_seq = Some(tx_seq);
        event
    }
}

/// Builds events from the message stream of one replication connection.
pub struct Assembler {
    /// Seed of event ids: identifies the database stream (system id + database).
    stream_id: Arc<str>,
    types: TypeRegistry,
    relations: HashMap<u32, Relation>,
    primary_keys: HashMap<u32, Option<Vec<String>>>,
    current: Option<(Xid, OpenTx)>,
    streams: HashMap<Xid, OpenTx>,
    /// The top-level xid of the stream chunk being received.
    streaming: Option<Xid>,
    /// What every event starts from (source and database set).
    template: Event,
    /// Rough bytes of the items held in memory for all open transactions.
    held_bytes: usize,
    /// Past this many held bytes, the largest open transaction is spilled.
    memory_limit: usize,
    /// Where to spill; `None` holds everything in memory.
    spill: Option<SpillDir>,
    /// Keys of a sqlcommenter comment that name the application user.
    comment_user_keys: Arc<[String]>,
    /// The context trigger is installed: every change should have an actor.
    expect_actor: bool,
    /// Columns masked in row images and keys.
    masking: Arc<Masking>,
}

impl Assembler {
    /// An assembler for `database`; `stream_id` must be unique per captured
    /// database (e.g. the system identifier and the database name).
    pub fn new(stream_id: &str, database: &str, types: TypeRegistry) -> Self {
        Assembler {
            stream_id: Arc::from(stream_id),
            types,
            relations: HashMap::new(),
            primary_keys: HashMap::new(),
            current: None,
            streams: HashMap::new(),
            streaming: None,
            template: {
                let mut template = Event::new(Source::Cdc, Kind::RowChange);
                template.database = Some(database.to_string());
                template
            },
            held_bytes: 0,
            memory_limit: usize::MAX,
            spill: None,
            comment_user_keys: sql_comment::default_user_keys().into(),
            expect_actor: false,
            masking: Arc::default(),
        }
    }

    /// Expects an actor message before the changes of every transaction
    /// (the context trigger is installed): a transaction whose row changes
    /// come without one gets an `alarm` event ([`ACTOR_MISSING`]) before
    /// the first of them, which keep no actor.
    pub fn expecting_actor(mut self, expect: bool) -> Self {
        self.expect_actor = expect;
        self
    }

    /// Masks these columns in every row image and key, before the event is
    /// held or spilled.
    pub fn with_masking(mut self, masking: Arc<Masking>) -> Self {
        self.masking = masking;
        self
    }

    /// Names the application user after the first of these keys a
    /// statement's sqlcommenter comment has (default `user`, `app_user`).
    pub fn with_comment_user_keys(mut self, keys: &[String]) -> Self {
        self.comment_user_keys = keys.into();
        self
    }

    /// Spills to `dir` whenever the items held for open transactions pass
    /// `memory_limit` bytes (counted roughly).
    pub fn with_spill(mut self, dir: SpillDir, memory_limit: usize) -> Self {
        self.spill = Some(dir);
        self.memory_limit = memory_limit;
        self
    }

    /// Rough bytes held in memory for open transactions.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The type registry, to extend when new types appear.
    pub fn types_mut(&mut self) -> &mut TypeRegistry {
        &mut self.types
    }

    /// Records the primary-key columns of a table (from the catalog); `None`
    /// means it has none, and the replica identity columns are used if any.
    pub fn set_primary_key(&mut self, oid: u32, columns: Option<Vec<String>>) {
        self.primary_keys.insert(oid, columns);
    }

    /// Whether the primary key of `oid` is known.
    pub fn knows_primary_key(&self, oid: u32) -> bool {
        self.primary_keys.contains_key(&oid)
    }

    /// Whether a transaction is open (received but not committed): the flush
    /// position must then not move past what was stored.
    pub fn in_transaction(&self) -> bool {
        self.current.is_some() || !self.streams.is_empty()
    }

    /// Applies one message; returns a transaction when it committed.
    pub fn apply(&mut self, message: PgOutput) -> Result<Option<CommittedTx>, AssembleError> {
        match message {
            PgOutput::Begin { xid, .. } => {
                if self.current.is_some() {
                    return Err(AssembleError::OutOfOrder {
                        what: "Begin inside a transaction",
                        xid: Some(xid),
                    });
                }
                self.current = Some((xid, OpenTx::default()));
            }
            PgOutput::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let (xid, tx) = self.current.take().ok_or(AssembleError::OutOfOrder {
                    what: "Commit without Begin",
                    xid: None,
                })?;
                self.held_bytes -= tx.bytes;
                return self
                    .finish(xid, tx, commit_lsn, end_lsn, commit_time)
                    .map(Some);
            }
            PgOutput::Origin { .. } | PgOutput::Type { .. } => {}
            PgOutput::Relation { relation, .. } => {
                self.relations.insert(relation.oid, relation);
            }
            PgOutput::StreamStart { xid, .. } => {
                self.streams.entry(xid).or_default();
                self.streaming = Some(xid);
            }
            PgOutput::StreamStop => self.streaming = None,
            PgOutput::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    // Dropping the transaction removes its spill file.
                    if let Some(tx) = self.streams.remove(&xid) {
                        self.held_bytes -= tx.bytes;
                    }
                } else if let Some(tx) = self.streams.get_mut(&xid) {
                    tx.items.retain(|held| held.xid != subxid);
                    let bytes: usize = tx.items.iter().map(|held| held.bytes).sum();
                    self.held_bytes -= tx.bytes - bytes;
                    tx.bytes = bytes;
                    if tx.spilled.is_some() {
                        tx.aborted.push(subxid);
                    }
                }
            }
            PgOutput::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                let tx = self.streams.remove(&xid).ok_or(AssembleError::OutOfOrder {
                    what: "Stream Commit of an unknown transaction",
                    xid: Some(xid),
                })?;
                self.held_bytes -= tx.bytes;
                return self
                    .finish(xid, tx, commit_lsn, end_lsn, commit_time)
                    .map(Some);
            }
            PgOutput::Message {
                xid,
                transactional,
                prefix,
                content,
                ..
            } => {
                if !transactional {
                    return Ok(None);
                }
                let item = match prefix.as_str() {
                    CONTEXT_PREFIX => match Actor::parse(&content) {
                        Ok(actor) => Item::Actor(actor),
                        Err(error) => {
                            tracing::warn!(%error, "Ignoring a malformed pgtrail context message");
                            return Ok(None);
                        }
                    },
                    DDL_PREFIX => match DdlMessage::parse(&content) {
                        Ok(ddl) => Item::Event(Box::new(self.ddl_event(ddl))),
                        Err(error) => {
                            tracing::warn!(%error, "Ignoring a malformed pgtrail DDL message");
                            return Ok(None);
                        }
                    },
                    _ => return Ok(None),
                };
                self.push(xid, item)?;
            }
            PgOutput::Insert { xid, relation, new } => {
                let event = self.row_event(relation, "INSERT", None, Some(new))?;
                self.push(xid, Item::Event(Box::new(event)))?;
            }
            PgOutput::Update {
                xid,
                relation,
                old,
                new,
            } => {
                let event = self.row_event(relation, "UPDATE", old, Some(new))?;
                self.push(xid, Item::Event(Box::new(event)))?;
            }
            PgOutput::Delete { xid, relation, old } => {
                let event = self.row_event(relation, "DELETE", Some(old), None)?;
                self.push(xid, Item::Event(Box::new(event)))?;
            }
            PgOutput::Truncate { xid, relations, .. } => {
                for oid in relations {
                    let relation = self.relation(oid)?;
                    let mut event = self.blank(Kind::RowChange);
                    event.schema = Some(relation.schema.clone());
                    event.table = Some(relation.name.clone());
                    event.operation = Some("TRUNCATE".into());
                    self.push(xid, Item::Event(Box::new(event)))?;
                }
            }
        }
        Ok(None)
    }

    fn push(&mut self, xid: Option<Xid>, item: Item) -> Result<(), AssembleError> {
        let (tx, item_xid) = match (xid, self.streaming) {
            (Some(sub), Some(top)) => (self.streams.entry(top).or_default(), sub),
            (None, None) => match &mut self.current {
                Some((top, tx)) => (tx, *top),
                None => {
                    return Err(AssembleError::OutOfOrder {
                        what: "change outside a transaction",
                        xid: None,
                    })
                }
            },
            _ => {
                return Err(AssembleError::OutOfOrder {
                    what: "change with a streamed xid outside a stream",
                    xid,
                })
            }
        };
        let bytes = item_bytes(&item);
        tx.items.push(Held {
            xid: item_xid,
            item,
            bytes,
        });
        tx.bytes += bytes;
        self.held_bytes += bytes;
        if self.held_bytes > self.memory_limit {
            self.spill_largest()?;
        }
        Ok(())
    }

    /// Moves the items of the largest open transactions to their spill files
    /// until the held bytes are within the budget again.
    fn spill_largest(&mut self) -> Result<(), AssembleError> {
        let Some(dir) = self.spill.as_mut() else {
            return Ok(());
        };
        while self.held_bytes > self.memory_limit {
            let largest = self
                .current
                .iter_mut()
                .map(|(xid, tx)| (*xid, tx))
                .chain(self.streams.iter_mut().map(|(xid, tx)| (*xid, tx)))
                .max_by_key(|(_, tx)| tx.bytes);
            let Some((xid, tx)) = largest.filter(|(_, tx)| tx.bytes > 0) else {
                break;
            };
            let file = match &mut tx.spilled {
                Some(file) => file,
                None => {
                    let file = dir.create(xid)?;
                    tracing::info!(xid, held_bytes = self.held_bytes, memory_limit = self.memory_limit, file = %dir.path().display(), "Spilling a large transaction to disk");
                    tx.spilled.insert(file)
                }
            };
            for held in tx.items.drain(..) {
                file.write(held.xid, &held.item)?;
            }
            tracing::debug!(
                xid,
                records = file.records(),
                bytes = file.bytes(),
                "Spilled"
            );
            self.held_bytes -= tx.bytes;
            tx.bytes = 0;
        }
        Ok(())
    }

    fn finish(
        &self,
        xid: Xid,
        tx: OpenTx,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> Result<CommittedTx, AssembleError> {
        let committed_at =
            DateTime::from_timestamp_micros(from_pg_epoch(commit_time)).unwrap_or_default();
        let spilled = match tx.spilled {
            Some(file) => Some(file.into_reader()?),
            None => None,
        };
        Ok(CommittedTx {
            xid,
            commit_lsn,
            end_lsn,
            committed_at,
            spilled,
            aborted: tx.aborted,
            held: tx.items.into_iter(),
            stamp: Stamp {
                stream_id: self.stream_id.clone(),
                lsn_text: commit_lsn.to_string(),
                actor: None,
                comment_user_keys: self.comment_user_keys.clone(),
                next_tx_seq: 0,
                expect_actor: self.expect_actor,
                alarmed: false,
            },
        })
    }

    fn blank(&self, kind: Kind) -> Event {
        // Cloning a template is cheaper than Event::new, whose random UUIDv7
        // would be replaced by the deterministic id at commit anyway.
        let mut event = self.template.clone();
        event.kind = kind;
        event.captured_at = pgtrail_core::time::truncate_micros(Utc::now());
        event
    }

    fn relation(&self, oid: u32) -> Result<&Relation, AssembleError> {
        self.relations
            .get(&oid)
            .ok_or(AssembleError::UnknownRelation { oid })
    }

    fn ddl_event(&self, ddl: DdlMessage) -> Event {
        let mut event = self.blank(Kind::Ddl);
        ddl.actor.apply_to(&mut event, &self.comment_user_keys);
        event.operation = Some(ddl.command_tag.clone());
        event.command_tag = Some(ddl.command_tag);
        event.schema = ddl.schema;
        event.objects = ddl.objects;
        event.sql = ddl.sql;
        // A migration tool's comment on the DDL statement names its user.
        sql_comment::apply(&mut event, &self.comment_user_keys);
        // Before the event is held or spilled: no secret reaches disk.
        if let Some(sql) = event.sql.as_mut() {
            *sql = pgtrail_sql::redact_secrets(sql).0;
        }
        event
    }

    fn row_event(
        &self,
        oid: u32,
        operation: &str,
        old: Option<(OldKind, Tuple)>,
        new: Option<Tuple>,
    ) -> Result<Event, AssembleError> {
        let relation = self.relation(oid)?;
        let mut event = self.blank(Kind::RowChange);
        event.schema = Some(relation.schema.clone());
        event.table = Some(relation.name.clone());
        event.operation = Some(operation.to_string());

        let old_image = match &old {
            Some((kind, tuple)) => Some(self.image(relation, tuple, *kind == OldKind::Key)?),
            None => None,
        };
        let old_is_full = matches!(old, Some((OldKind::Full, _)));
        if let Some(new) = &new {
            let mut image = self.image(relation, new, false)?;
            // Unchanged TOAST values: take them from a full old image, else say we could not see them.
            for column in std::mem::take(&mut image.unchanged) {
                match old_image.as_ref().and_then(|o| o.values.get(&column)) {
                    Some(value) if old_is_full => {
                        image.values.insert(column, json::clone(value));
                    }
                    _ => event.partial.push(column),
                }
            }
            if let Some(old) = &old_image {
                event.changed = relation
                    .columns
                    .iter()
                    .filter(|c| {
                        old.values.contains_key(&c.name)
                            && !same(old.values.get(&c.name), image.values.get(&c.name))
                    })
                    .map(|c| c.name.clone())
                    .collect();
            }
            event.pk = self.key(relation, new);
            event.new = Some(std::mem::take(&mut image.values));
        }
        if let Some((_, tuple)) = &old {
            if event.pk.is_none() {
                event.pk = self.key(relation, tuple);
            }
        }
        event.old = old_image.map(|mut o| std::mem::take(&mut o.values));
        if self.masking.masks(&relation.schema, &relation.name) {
            for image in [&mut event.old, &mut event.new, &mut event.pk]
                .into_iter()
                .flatten()
            {
                self.masking.apply(&relation.schema, &relation.name, image);
            }
        }
        Ok(event)
    }

    /// Key columns and their text values, or `None` when the table has no
    /// key or a key value is missing from `tuple`.
    fn key(&self, relation: &Relation, tuple: &Tuple) -> Option<JsonObject> {
        let columns: Vec<&str> = match self.primary_keys.get(&relation.oid) {
            Some(Some(pk)) => pk.iter().map(String::as_str).collect(),
            _ if relation.replica_identity == b'f' => return None,
            _ => relation
                .columns
                .iter()
                .filter(|c| c.replica_key)
                .map(|c| c.name.as_str())
                .collect(),
        };
        if columns.is_empty() {
            return None;
        }
        let mut key = JsonObject::new();
        for name in columns {
            let index = relation.columns.iter().position(|c| c.name == name)?;
            match tuple.get(index)? {
                ColumnValue::Text(bytes) => {
                    key.insert(
                        name.to_string(),
                        Value::String(String::from_utf8_lossy(bytes).into_owned()),
                    );
                }
                _ => return None,
            }
        }
        Some(key)
    }

    fn image(
        &self,
        relation: &Relation,
        tuple: &Tuple,
        key_only: bool,
    ) -> Result<Image, AssembleError> {
        if tuple.len() != relation.columns.len() {
            return Err(AssembleError::ColumnCount {
                table: format!("{}.{}", relation.schema, relation.name),
                expected: relation.columns.len(),
                got: tuple.len(),
            });
        }
        let mut image = Image::default();
        for (column, value) in relation.columns.iter().zip(tuple) {
            if key_only && !column.replica_key {
                continue;
            }
            let json = match value {
                ColumnValue::Null => Value::Null,
                ColumnValue::UnchangedToast => {
                    image.unchanged.push(column.name.clone());
                    continue;
                }
                ColumnValue::Text(bytes) => to_json(
                    self.types.kind(column.type_oid),
                    &String::from_utf8_lossy(bytes),
                ),
                ColumnValue::Binary(bytes) => Value::String(format!("\\x{}", hex_encode(bytes))),
            };
            image.values.insert(column.name.clone(), json);
        }
        Ok(image)
    }
}

/// Whether two column values are the same, at any depth.
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => json::eq(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// The alarm before the first change of a transaction that came without the
/// actor message the context trigger sends before every statement: the
/// trigger is missing or disabled on that table, the session ran with
/// `session_replication_role = replica` (a superuser's setting), or an
/// actor message was lost. Who made the changes is unknown.
fn actor_missing_alarm(change: &Event) -> Event {
    let detail = format!(
        "changes to {} reached the WAL without pgtrail's actor message: who made them is unknown \
         (the context trigger is missing or disabled on the table, or the session ran with \
         session_replication_role = replica)",
        change.qualified_table().unwrap_or_else(|| "a table".into())
    );
    let alarm = pgtrail_core::alarm::Alarm {
        code: ACTOR_MISSING.into(),
        schema: change.schema.clone(),
        table: change.table.clone(),
        message: detail,
    };
    let mut event = alarm.event(Source::Cdc);
    event.captured_at = change.captured_at;
    event.database = change.database.clone();
    event
}

#[derive(Default)]
struct Image {
    values: JsonObject,
    unchanged: Vec<String>,
}

impl Drop for Image {
    // An image dropped on an error path may hold a deep json value.
    fn drop(&mut self) {
        json::drop_object(std::mem::take(&mut self.values));
    }
}

/// Rough heap bytes of a held item: what the memory budget counts.
fn item_bytes(item: &Item) -> usize {
    match item {
        Item::Actor(_) => std::mem::size_of::<Actor>() + 128,
        Item::Event(event) => approx_event_bytes(event),
    }
}

/// Rough heap bytes of an event: the struct, its texts and its JSON values
/// with a per-entry overhead. Cheap to compute, within a small factor of
/// the truth, which is all a memory budget needs.
pub fn approx_event_bytes(event: &Event) -> usize {
    let texts = [
        &event.schema,
        &event.table,
        &event.operation,
        &event.sql,
        &event.command_tag,
        &event.app_user,
        &event.db_user,
    ]
    .iter()
    .map(|text| text.as_ref().map_or(0, String::len))
    .sum::<usize>();
    let lists = [&event.changed, &event.partial, &event.objects]
        .iter()
        .flat_map(|list| list.iter())
        .map(|name| 24 + name.len())
        .sum::<usize>();
    let objects = [&event.pk, &event.old, &event.new, &event.context]
        .iter()
        .map(|object| object.as_ref().map_or(0, object_bytes))
        .sum::<usize>();
    std::mem::size_of::<Event>() + texts + lists + objects
}

/// Rough heap bytes of a JSON object, counted as [`approx_event_bytes`] does.
pub fn object_bytes(object: &JsonObject) -> usize {
    object
        .iter()
        .map(|(key, value)| 64 + key.len() + value_bytes(value))
        .sum()
}

/// Walked with a heap stack: a value may be nested thousands deep.
fn value_bytes(value: &Value) -> usize {
    let mut total = 0;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total += match value {
            Value::String(text) => text.len(),
            // Digits kept as text (arbitrary precision).
            Value::Number(_) => 24,
            Value::Array(items) => {
                stack.extend(items);
                32 * items.len()
            }
            Value::Object(object) => {
                stack.extend(object.values());
                object.keys().map(|key| 64 + key.len()).sum()
            }
            Value::Null | Value::Bool(_) => 0,
        };
    }
    total
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of the event at `tx_seq` in the transaction committed at
/// `commit_lsn` on stream `stream_id`: a UUIDv7 (sortable by commit time)
/// whose random bits are a hash of the three, so a replay gives the same id.
pub fn event_id(
    stream_id: &str,
    commit_lsn: Lsn,
    tx_seq: i64,
    committed_at: DateTime<Utc>,
) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(stream_id.as_bytes());
    hasher.update([0]);
    hasher.update(commit_lsn.0.to_be_bytes());
    hasher.update(tx_seq.to_be_bytes());
    let digest = hasher.finalize();
    let millis = u64::try_from(committed_at.timestamp_millis()).unwrap_or(0);
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}
