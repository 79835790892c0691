//! Appending a batch: one `BEGIN IMMEDIATE` transaction that reads the chain
//! head, seals each new event onto it and inserts it with its full-text row.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, so appends from other
//! connections and other processes wait (busy timeout) instead of forking the
//! chain. Idempotency costs no extra lookup: the insert says `on conflict (id)
//! do nothing`, and an event that was not inserted does not advance the chain.
//! Any error drops the transaction, which rolls the whole batch back.

use pgtrail_core::canonical::seal;
use pgtrail_core::filter::canonical_pk;
use pgtrail_core::{Event, GENESIS_HASH};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{AppendReceipt, ChainHead, Result, StoreError};

const INSERT_EVENT: &str = "insert into events (seq, id, captured_at, source, kind, schema_name, \
     table_name, pk, app_user, db_user, operation, failed, body, prev_hash, hash) \
     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
     on conflict (id) do nothing";
const INSERT_FTS: &str = "insert into events_fts (rowid, sql) values (?1, ?2)";
const SELECT_HEAD: &str = "select seq, hash from chain_head where singleton = 1";
const UPSERT_HEAD: &str = "insert into chain_head (singleton, seq, hash) values (1, ?1, ?2) \
     on conflict (singleton) do update set seq = excluded.seq, hash = excluded.hash";

/// Seals and stores `events` atomically. See the module docs.
pub fn append(conn: &mut Connection, events: Vec<Event>, location: &str) -> Result<AppendReceipt> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("locking the store to append"))?;
    let mut head = read_head(&tx, location)?;
    let mut first_seq = None;
    let mut head_hash = [0u8; 32];
    {
        let mut insert = tx
            .prepare_cached(INSERT_EVENT)
            .map_err(db("preparing the event insert"))?;
        let mut insert_fts = tx
            .prepare_cached(INSERT_FTS)
            .map_err(db("preparing the full-text insert"))?;
        let mut prev_hex = head
            .as_ref()
            .map_or_else(|| GENESIS_HASH.to_string(), |h| h.hash.clone());
        for event in events {
            let seq = head.as_ref().map_or(1, |h| h.seq + 1);
            let mut event = event.unsealed();
            let body = serde_json::to_string(&event).map_err(|e| {
                StoreError::Invalid(format!("event {} cannot be encoded: {e}", event.id))
            })?;
            seal(&mut event, seq, &prev_hex);
            let hash_hex = event.hash.take().expect("seal sets the hash");
            let row = Row::new(&event, body, &prev_hex, &hash_hex)?;
            let inserted = insert
                .execute(params![
                    seq,
                    row.id,
                    row.captured_at,
                    event.source.as_str(),
                    event.kind.as_str(),
                    event.schema,
                    event.table,
                    row.pk,
                    event.app_user,
                    event.db_user,
                    row.operation,
                    event.failed(),
                    row.body,
                    row.prev_hash,
                    row.hash,
                ])
                .map_err(|e| StoreError::backend(location, format!("inserting event {seq}"), e))?;
            if inserted == 0 {
                continue; // already stored: a retried batch
            }
            if let Some(sql) = &event.sql {
                insert_fts.execute(params![seq, sql]).map_err(|e| {
                    StoreError::backend(location, format!("indexing the SQL of event {seq}"), e)
                })?;
            }
            first_seq.get_or_insert(seq);
            head_hash = row.hash;
            head = Some(ChainHead {
                seq,
                hash: hash_hex.clone(),
            });
            prev_hex = hash_hex;
        }
    }
    if first_seq.is_some() {
        let head = head.as_ref().expect("a stored event sets the head");
        tx.prepare_cached(UPSERT_HEAD)
            .and_then(|mut s| s.execute(params![head.seq, head_hash]))
            .map_err(db("moving the chain head"))?;
        tx.commit().map_err(db("committing the batch"))?;
    }
    Ok(AppendReceipt { first_seq, head })
}

/// The chain head, read inside the caller's transaction.
pub fn read_head(conn: &Connection, location: &str) -> Result<Option<ChainHead>> {
    conn.prepare_cached(SELECT_HEAD)
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(ChainHead {
                    seq: r.get(0)?,
                    hash: hex::encode(r.get_ref(1)?.as_blob()?),
                })
            })
            .optional()
        })
        .map_err(|e| StoreError::backend(location, "reading the chain head", e))
}

/// The column values of one event that are not taken from it as they are.
struct Row {
    id: [u8; 16],
    captured_at: i64,
    pk: Option<String>,
    operation: Option<String>,
    body: String,
    prev_hash: [u8; 32],
    hash: [u8; 32],
}

impl Row {
    fn new(event: &Event, body: String, prev_hex: &str, hash_hex: &str) -> Result<Self> {
        Ok(Row {
            id: *event.id.as_bytes(),
            captured_at: event.captured_at.timestamp_micros(),
            pk: event.pk.as_ref().map(canonical_pk),
            operation: event.operation.as_deref().map(str::to_uppercase),
            body,
            prev_hash: decode_hash(prev_hex)?,
            hash: decode_hash(hash_hex)?,
        })
    }
}

fn decode_hash(hex_text: &str) -> Result<[u8; 32]> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Invalid(format!("'{hex_text}' is not a SHA-256 hash in hex")))
}
