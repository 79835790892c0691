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

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_wire::replication::from_pg_epoch;
use pgtrail_wire::Lsn;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::context::{Actor, DdlMessage, CONTEXT_PREFIX, DDL_PREFIX};
use crate::pgoutput::{ColumnValue, OldKind, PgOutput, Relation, Tuple, Xid};
use crate::value::{to_json, TypeRegistry};

#[cfg(test)]
mod tests;

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
}

/// A transaction whose events are complete and ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedTx {
    /// Transaction id.
    pub xid: Xid,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: the flush position to confirm once stored.
    pub end_lsn: Lsn,
    /// Commit time.
    pub committed_at: DateTime<Utc>,
    /// The events, in transaction order.
    pub events: Vec<Event>,
}

enum Item {
    Actor(Actor),
    Event(Box<Event>),
}

#[derive(Default)]
struct OpenTx {
    /// Items with the (sub)transaction that made them.
    items: Vec<(Xid, Item)>,
}

/// Builds events from the message stream of one replication connection.
pub struct Assembler {
    /// Seed of event ids: identifies the database stream (system id + database).
    stream_id: String,
    types: TypeRegistry,
    relations: HashMap<u32, Relation>,
    primary_keys: HashMap<u32, Option<Vec<String>>>,
    current: Option<(Xid, OpenTx)>,
    streams: HashMap<Xid, OpenTx>,
    /// The top-level xid of the stream chunk being received.
    streaming: Option<Xid>,
    /// What every event starts from (source and database set).
    template: Event,
}

impl Assembler {
    /// An assembler for `database`; `stream_id` must be unique per captured
    /// database (e.g. the system identifier and the database name).
    pub fn new(stream_id: &str, database: &str, types: TypeRegistry) -> Self {
        Assembler {
            stream_id: stream_id.to_string(),
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
        }
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
                return Ok(Some(self.finish(xid, tx, commit_lsn, end_lsn, commit_time)));
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
                    self.streams.remove(&xid);
                } else if let Some(tx) = self.streams.get_mut(&xid) {
                    tx.items.retain(|(item_xid, _)| *item_xid != subxid);
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
                return Ok(Some(self.finish(xid, tx, commit_lsn, end_lsn, commit_time)));
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
        match (xid, self.streaming) {
            (Some(sub), Some(top)) => {
                self.streams.entry(top).or_default().items.push((sub, item));
                Ok(())
            }
            (None, None) => match &mut self.current {
                Some((top, tx)) => {
                    tx.items.push((*top, item));
                    Ok(())
                }
                None => Err(AssembleError::OutOfOrder {
                    what: "change outside a transaction",
                    xid: None,
                }),
            },
            _ => Err(AssembleError::OutOfOrder {
                what: "change with a streamed xid outside a stream",
                xid,
            }),
        }
    }

    fn finish(
        &self,
        xid: Xid,
        tx: OpenTx,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    ) -> CommittedTx {
        let committed_at =
            DateTime::from_timestamp_micros(from_pg_epoch(commit_time)).unwrap_or_default();
        let lsn_text = commit_lsn.to_string();
        let mut actor: Option<Actor> = None;
        let mut events = Vec::new();
        for (_, item) in tx.items {
            match item {
                Item::Actor(a) => actor = Some(a),
                Item::Event(event) => {
                    let mut event = *event;
                    let tx_seq = i64::try_from(events.len()).expect("fewer than 2^63 events");
                    // A DDL event carries its own actor; a row change takes the current one.
                    if event.kind == Kind::RowChange {
                        if let Some(actor) = &actor {
                            actor.apply_to(&mut event);
                        }
                    }
                    event.id = event_id(&self.stream_id, commit_lsn, tx_seq, committed_at);
                    event.xid = Some(i64::from(xid));
                    event.lsn = Some(lsn_text.clone());
                    event.committed_at = Some(committed_at);
                    event.tx_seq = Some(tx_seq);
                    events.push(event);
                }
            }
        }
        CommittedTx {
            xid,
            commit_lsn,
            end_lsn,
            committed_at,
            events,
        }
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
        ddl.actor.apply_to(&mut event);
        event.operation = Some(ddl.command_tag.clone());
        event.command_tag = Some(ddl.command_tag);
        event.schema = ddl.schema;
        event.objects = ddl.objects;
        event.sql = ddl.sql;
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
                        image.values.insert(column, value.clone());
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
                            && old.values.get(&c.name) != image.values.get(&c.name)
                    })
                    .map(|c| c.name.clone())
                    .collect();
            }
            event.pk = self.key(relation, new);
            event.new = Some(image.values);
        }
        if let Some((_, tuple)) = &old {
            if event.pk.is_none() {
                event.pk = self.key(relation, tuple);
            }
        }
        event.old = old_image.map(|o| o.values);
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

#[derive(Default)]
struct Image {
    values: JsonObject,
    unchanged: Vec<String>,
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
