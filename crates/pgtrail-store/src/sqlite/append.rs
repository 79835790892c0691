//! Appending a batch: one `BEGIN IMMEDIATE` transaction that reads the chain
//! head, links each new event onto it and inserts it with its full-text row.
//!
//! `BEGIN IMMEDIATE` takes SQLite's write lock up front, so appends from other
//! connections and other processes wait (busy timeout) instead of forking the
//! chain. Idempotency costs no extra lookup: the insert says `on conflict (id)
//! do nothing`, and an event that was not inserted does not advance the chain.
//! Any error drops the transaction, which rolls the whole batch back.
//!
//! Encoding and hashing do not need SQLite, so a large batch is pipelined: a
//! second thread encodes the events in chunks and, once told the chain head,
//! hashes them too, assuming each one goes in; this thread only inserts. An
//! event already stored shifts the chain behind it, and the inserts then
//! re-link the rest themselves (`ChainEnd::link`). The inserts commit only
//! after receiving as many events as the batch holds: if encoding stopped
//! early, nothing is written.

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use pgtrail_core::{Event, GENESIS_HASH};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::encode::{prepare, prepare_ahead, Ahead, ChainEnd, Prepared};
use super::{facets, seq_hours};
use crate::cpu::{self, Stage};
use crate::{AppendReceipt, ChainHead, Result, StoreError};

const INSERT_EVENT: &str = "insert into events (seq, id, captured_at, source, kind, schema_name, \
     table_name, pk, app_user, db_user, operation, failed, body, prev_hash, hash, row_key, \
     app_user_key, db_user_key, client_addr, database, backend_pid, xid) \
     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22) \
     on conflict (id) do nothing";
const INSERT_FTS: &str = "insert into events_fts (rowid, sql) values (?1, ?2)";
const INSERT_OBJECT: &str =
    "insert into events_objects (table_name, schema_name, seq) values (?1, ?2, ?3)";
const SELECT_HEAD: &str = "select seq, hash from chain_head where singleton = 1";
const UPSERT_HEAD: &str = "insert into chain_head (singleton, seq, hash) values (1, ?1, ?2) \
     on conflict (singleton) do update set seq = excluded.seq, hash = excluded.hash";

/// Events the encoding thread hands over at a time.
const CHUNK: usize = 500;
/// Encoded chunks waiting for the inserts, at most.
const CHUNKS_AHEAD: usize = 4;
/// Smaller batches are encoded on this thread: a second one would not pay.
const PIPELINE_MIN: usize = 4 * CHUNK;

/// Seals and stores `events` atomically. See the module docs.
pub fn append(conn: &mut Connection, events: &[Event], location: &str) -> Result<AppendReceipt> {
    let expected = events.len();
    if expected < PIPELINE_MIN {
        // Encode before taking the write lock: other writers wait only for
        // the inserts.
        let prepared: Vec<Prepared> =
            cpu::measure(Stage::Encode, || events.iter().map(prepare).collect());
        return insert_all(conn, expected, [prepared], None, location);
    }
    std::thread::scope(|scope| {
        let (chunk_tx, chunks) = mpsc::sync_channel(CHUNKS_AHEAD);
        let (head_tx, head) = mpsc::sync_channel(1);
        let (spent_tx, spent) = mpsc::channel();
        std::thread::Builder::new()
            .name("pgtrail-sqlite-encode".into())
            .spawn_scoped(scope, move || {
                // Takes the sender, so the inserts see the end of the chunks.
                encode_ahead(events, &head, chunk_tx);
                // Freeing inserted rows is work too: done here, beside the
                // inserts, until they finish and drop their sender.
                spent.into_iter().for_each(drop);
            })
            .map_err(|e| StoreError::backend(location, "starting the encoding thread", e))?;
        let helper = Helper {
            head: head_tx,
            spent: spent_tx,
        };
        insert_all(conn, expected, chunks, Some(helper), location)
    })
}

/// Seals and stores `events`, encoded ahead into `ahead` (one each), atomically.
/// Only the index columns are left to compute here; seals computed ahead
/// are used where they fit the chain, the rest are hashed again.
pub fn append_ahead(
    conn: &mut Connection,
    events: &[Event],
    ahead: &[Ahead],
    location: &str,
) -> Result<AppendReceipt> {
    let prepared: Vec<Prepared> = cpu::measure(Stage::Encode, || {
        events
            .iter()
            .zip(ahead)
            .map(|(event, ahead)| prepare_ahead(event, ahead))
            .collect()
    });
    insert_all(conn, events.len(), [prepared], None, location)
}

/// The chain's end as `ChainEnd`, from a head in hex.
pub fn chain_end(head: &ChainHead) -> Result<ChainEnd> {
    Ok(ChainEnd {
        seq: head.seq,
        hash: decode_hash(&head.hash)?,
    })
}

/// The encoding thread: chunks of prepared events, linked into the chain
/// from the head the inserts send (unlinked if they send none).
fn encode_ahead<'a>(
    events: &'a [Event],
    head: &Receiver<ChainEnd>,
    out: SyncSender<Vec<Prepared<'a>>>,
) {
    let mut events = events.iter();
    let mut end: Option<ChainEnd> = None;
    let mut asked = false;
    loop {
        let mut chunk: Vec<Prepared> = cpu::measure(Stage::Encode, || {
            events.by_ref().take(CHUNK).map(prepare).collect()
        });
        if chunk.is_empty() {
            return;
        }
        if !asked {
            // The inserts read the head once they hold the write lock.
            end = head.recv().ok();
            asked = true;
        }
        if let Some(end) = &mut end {
            cpu::measure(Stage::Encode, || {
                for row in &mut chunk {
                    let link = end.next(&row.body);
                    *end = ChainEnd::after(&link);
                    row.link = Some(link);
                }
            });
        }
        if out.send(chunk).is_err() {
            return; // the inserts failed and stopped listening
        }
    }
}

/// The encoding thread, seen from the inserts.
struct Helper<'a> {
    /// Where the chain starts, once the write lock is held.
    head: SyncSender<ChainEnd>,
    /// Chunks inserted, for the helper to free.
    spent: Sender<Vec<Prepared<'a>>>,
}

/// Links and inserts `expected` prepared events, arriving in `chunks`, in
/// one transaction; tells the `helper`, if any, where the chain starts.
fn insert_all<'a>(
    conn: &mut Connection,
    expected: usize,
    chunks: impl IntoIterator<Item = Vec<Prepared<'a>>>,
    helper: Option<Helper<'a>>,
    location: &str,
) -> Result<AppendReceipt> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("locking the store to append"))?;
    let head = read_head(&tx, location)?;
    let mut end = ChainEnd {
        seq: head.as_ref().map_or(0, |h| h.seq),
        hash: decode_hash(head.as_ref().map_or(GENESIS_HASH, |h| h.hash.as_str()))?,
    };
    if let Some(helper) = &helper {
        // Capacity 1 and sent once: never blocks. Unheard if encoding stopped.
        let _ = helper.head.send(end);
    }
    let mut first_seq = None;
    let mut received = 0;
    let mut facet_counts = facets::Counts::new();
    let mut ranges = crate::seq_hours::Ranges::default();
    {
        let mut insert = tx
            .prepare_cached(INSERT_EVENT)
            .map_err(db("preparing the event insert"))?;
        let mut insert_fts = tx
            .prepare_cached(INSERT_FTS)
            .map_err(db("preparing the full-text insert"))?;
        let mut insert_object = tx
            .prepare_cached(INSERT_OBJECT)
            .map_err(db("preparing the object index insert"))?;
        for chunk in chunks {
            received += chunk.len();
            for row in &chunk {
                let link = end.link(row);
                let seq = link.seq;
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
                        link.prev,
                        link.hash,
                        row.row_key,
                        row.app_user_key,
                        row.db_user_key,
                        row.client_addr.as_ref().map(|k| k.as_bytes()),
                        row.database,
                        row.backend_pid,
                        row.xid,
                    ])
                    .map_err(|e| {
                        StoreError::backend(location, format!("inserting event {seq}"), e)
                    })?;
                if inserted == 0 {
                    continue; // already stored: a retried batch
                }
                if let Some(sql) = &row.sql {
                    insert_fts.execute(params![seq, sql]).map_err(|e| {
                        StoreError::backend(location, format!("indexing the SQL of event {seq}"), e)
                    })?;
                }
                for (schema, table) in &row.objects {
                    insert_object
                        .execute(params![table, schema, seq])
                        .map_err(|e| {
                            StoreError::backend(
                                location,
                                format!("indexing the objects of event {seq}"),
                                e,
                            )
                        })?;
                }
                facets::add(&mut facet_counts, &row.columns, 1);
                ranges.add(seq, row.captured_at);
                first_seq.get_or_insert(seq);
                end = ChainEnd::after(&link);
            }
            if let Some(helper) = &helper {
                let _ = helper.spent.send(chunk); // if it is gone, drop here
            }
        }
    }
    if received != expected {
        // Never commit part of a batch.
        return Err(StoreError::backend(
            location,
            "encoding the batch",
            format!("only {received} of {expected} events were encoded"),
        ));
    }
    if first_seq.is_none() {
        // Nothing new: the transaction rolls back having written nothing.
        return Ok(AppendReceipt { first_seq, head });
    }
    facets::write(&tx, &facet_counts, location)?;
    seq_hours::write(&tx, &ranges, location)?;
    tx.prepare_cached(UPSERT_HEAD)
        .and_then(|mut s| s.execute(params![end.seq, end.hash]))
        .map_err(db("moving the chain head"))?;
    tx.commit().map_err(db("committing the batch"))?;
    Ok(AppendReceipt {
        first_seq,
        head: Some(ChainHead {
            seq: end.seq,
            hash: hex::encode(end.hash),
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
