//! Appending a batch: one `BEGIN IMMEDIATE` transaction that reads the chain
//! head, links each new event onto it and inserts it with its full-text row.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, so appends from other
//! connections and other processes wait (busy timeout) instead of forking the
//! chain. Idempotency costs no extra lookup: the insert says `on conflict (id)
//! do nothing`, and an event that was not inserted does not advance the chain.
//! Any error drops the transaction, which rolls the whole batch back.
//!
//! Encoding an event (see `encode`) does not depend on the chain, so it is
//! done before the lock is taken; inside, each event costs one SHA-256 over
//! its ready-made bytes and two inserts.

use pgtrail_core::{Event, GENESIS_HASH};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::encode::{prepare, Prepared};
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
    // Encode everything before taking the write lock: other writers wait
    // only for the inserts.
    let prepared = events.into_iter().map(prepare).collect();
    insert_all(conn, prepared, location)
}

/// Links and inserts the prepared events in one transaction.
fn insert_all(
    conn: &mut Connection,
    prepared: Vec<Prepared>,
    location: &str,
) -> Result<AppendReceipt> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("locking the store to append"))?;
    let head = read_head(&tx, location)?;
    let (mut last_seq, mut prev_hex) = match &head {
        Some(head) => (head.seq, head.hash.clone()),
        None => (0, GENESIS_HASH.to_string()),
    };
    let mut prev = decode_hash(&prev_hex)?;
    let mut first_seq = None;
    {
        let mut insert = tx
            .prepare_cached(INSERT_EVENT)
            .map_err(db("preparing the event insert"))?;
        let mut insert_fts = tx
            .prepare_cached(INSERT_FTS)
            .map_err(db("preparing the full-text insert"))?;
        for row in prepared {
            let seq = last_seq + 1;
            let hash = row.body.sealed_hash(seq, &prev_hex);
            let inserted = insert
                .execute(params![
                    seq,
                    row.id,
                    row.captured_at,
                    row.source,
                    row.kind,
                    row.schema,
                    row.table,
                    row.pk,
                    row.app_user,
                    row.db_user,
                    row.operation,
                    row.failed,
                    row.body.as_str(),
                    prev,
                    hash,
                ])
                .map_err(|e| StoreError::backend(location, format!("inserting event {seq}"), e))?;
            if inserted == 0 {
                continue; // already stored: a retried batch
            }
            if let Some(sql) = &row.sql {
                insert_fts.execute(params![seq, sql]).map_err(|e| {
                    StoreError::backend(location, format!("indexing the SQL of event {seq}"), e)
                })?;
            }
            first_seq.get_or_insert(seq);
            last_seq = seq;
            prev = hash;
            prev_hex = hex::encode(prev);
        }
    }
    if first_seq.is_none() {
        // Nothing new: the transaction rolls back having written nothing.
        return Ok(AppendReceipt { first_seq, head });
    }
    tx.prepare_cached(UPSERT_HEAD)
        .and_then(|mut s| s.execute(params![last_seq, prev]))
        .map_err(db("moving the chain head"))?;
    tx.commit().map_err(db("committing the batch"))?;
    Ok(AppendReceipt {
        first_seq,
        head: Some(ChainHead {
            seq: last_seq,
            hash: prev_hex,
        }),
    })
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

fn decode_hash(hex_text: &str) -> Result<[u8; 32]> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Invalid(format!("'{hex_text}' is not a SHA-256 hash in hex")))
}
