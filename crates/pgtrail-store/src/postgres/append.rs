//! Sealing a batch onto the chain and writing it with one binary COPY.
//!
//! Each event's canonical JSON (`CanonicalBody`) does not depend on the
//! chain, so it is written on the blocking pool, started before the lock is
//! requested: it runs while the lock is taken and the stored ids are looked
//! up (server work), so it usually adds no time under the lock. The chain
//! head row is locked `FOR UPDATE`: that serializes every appender of the
//! store (other processes included) for the rest of the transaction, so
//! `seq` stays gap-free and each event links to the one before it. Under
//! that lock, events whose id is already stored are dropped (a retried
//! batch is not duplicated), the rest are hashed in order from their
//! ready-made bytes, copied in, their facet counts are added to
//! `facet_hours` (`super::facets`), their hours' `seq` ranges widened in
//! `seq_hours` (`super::seq_hours`), their statements' relations indexed
//! (`super::objects`), and the head moves. The caller's
//! transaction makes it all or nothing.
//!
//! [`append_in`] is public so that a writer with its own work in the same
//! transaction (the trigger capture path deletes the inbox rows it seals) can
//! commit both at once. It takes the batch and fails as `Store::append`
//! does (a borrowed batch, [`StoreError`]), so every caller classifies its
//! failures with [`StoreError::is_retryable`].

use std::collections::HashSet;

use pgtrail_core::canonical::CanonicalBody;
use pgtrail_core::{time::truncate_micros, Event};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::Transaction;
use uuid::Uuid;

use pgtrail_core::quarantine::quarantine;

use super::event_row::{unstorable, RowValues, COLUMNS, COLUMN_TYPES};
use crate::seq_hours::Ranges;
use crate::{AppendReceipt, ChainHead, StoreError};

/// The location [`append_in`]'s errors name: it writes through a
/// transaction the caller opened, whose URL it does not know.
const CALLERS_TRANSACTION: &str = "pgtrail.events (in the caller's transaction)";

/// Seals `events` onto the store's chain and writes them, inside `tx`.
///
/// Nothing is visible to others until the caller commits `tx`; the chain
/// head stays locked until then, so commit promptly. Run it in a READ
/// COMMITTED transaction (the default): after waiting for the lock, each
/// statement must see what the previous appender committed. Events whose
/// `id` is already stored (or repeated in the batch) are skipped; incoming
/// `seq`, `prev_hash` and `hash` are ignored, and times are truncated to
/// microseconds, what Postgres keeps.
///
/// Fails as [`Store::append`](crate::Store::append) does: a
/// [`StoreError::Backend`] when the server fails (retryable; nothing of the
/// batch is kept once the caller rolls back, or drops, `tx`).
pub async fn append_in(
    tx: &Transaction<'_>,
    events: &[Event],
) -> Result<AppendReceipt, StoreError> {
    append_rows(tx, events).await.map_err(|e| {
        StoreError::backend(
            CALLERS_TRANSACTION,
            format!("appending {} events", events.len()),
            e,
        )
    })
}

/// [`append_in`] with the server's error as it came, for the store (which
/// names its own location).
pub(super) async fn append_rows(
    tx: &Transaction<'_>,
    events: &[Event],
) -> Result<AppendReceipt, tokio_postgres::Error> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    // Encoded on the blocking pool, which needs its own copy.
    let events = events.to_vec();
    let encoding =
        tokio::task::spawn_blocking(move || events.into_iter().map(encode).collect::<Vec<_>>());
    // Durable on commit even inside a caller's transaction on a connection
    // the store did not open (the trigger sealer's).
    tx.batch_execute("set local synchronous_commit = on")
        .await?;
    let head = tx
        .query_one("select seq, hash from pgtrail.chain_head for update", &[])
        .await?;
    let (mut seq, mut prev_hash): (i64, String) = (head.try_get(0)?, head.try_get(1)?);

    let mut keep = not_stored(tx, &ids).await?;
    let encoded = match encoding.await {
        Ok(encoded) => encoded,
        // Encoding has no failure of its own: a panic there is a bug, and
        // goes on up as the panic it was.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let fresh: Vec<(Event, CanonicalBody)> = encoded
        .into_iter()
        .filter(|(event, _)| keep.remove(&event.id))
        .collect();
    if fresh.is_empty() {
        return Ok(AppendReceipt {
            first_seq: None,
            head: (seq > 0).then_some(ChainHead {
                seq,
                hash: prev_hash,
            }),
        });
    }

    // Each event is hashed just before its row is written, so the server
    // works on the rows already sent while the next ones are hashed.
    let first_seq = seq + 1;
    // The facet summary gains these events in the same transaction.
    let facet_counts = super::facets::counts_of(fresh.iter().map(|(event, _)| event));
    let sink = tx
        .copy_in(&format!(
            "copy pgtrail.events ({COLUMNS}) from stdin (format binary)"
        ))
        .await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COLUMN_TYPES));
    // And each hour's seq range (`super::seq_hours`) widens to hold them,
    // and each statement's relations are indexed (`super::objects`).
    let mut seq_ranges = Ranges::default();
    let mut objects = super::objects::Rows::default();
    for (event, body) in fresh {
        seq += 1;
        seq_ranges.add(seq, event.captured_at.timestamp_micros());
        objects.add(seq, &event);
        let hash = hex::encode(body.sealed_hash(seq, &prev_hash));
        writer
            .as_mut()
            .write(&RowValues::of(&event, body.as_str(), seq, &prev_hash, &hash).values())
            .await?;
        prev_hash = hash;
    }
    writer.as_mut().finish().await?;
    super::facets::write(tx, &facet_counts).await?;
    super::seq_hours::write(tx, &seq_ranges).await?;
    super::objects::write(tx, &objects).await?;

    tx.execute(
        "update pgtrail.chain_head set seq = $1, hash = $2",
        &[&seq, &prev_hash],
    )
    .await?;
    Ok(AppendReceipt {
        first_seq: Some(first_seq),
        head: Some(ChainHead {
            seq,
            hash: prev_hash,
        }),
    })
}

/// For `bench/store` only: the unsealed baseline. Writes `events` into
/// `pgtrail.events` with the same row mapping and the same COPY as
/// [`append_in`], numbered from `first_seq`, but without what sealing adds:
/// no chain lock, no lookup of stored ids, no canonical encoding, no hash
/// (the hash columns hold a placeholder). The JSON is serde_json's.
/// `bench/store` divides the two rates to price sealing alone.
#[doc(hidden)]
pub async fn copy_unsealed(
    tx: &Transaction<'_>,
    events: &[Event],
    first_seq: i64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let sink = tx
        .copy_in(&format!(
            "copy pgtrail.events ({COLUMNS}) from stdin (format binary)"
        ))
        .await?;
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &COLUMN_TYPES));
    let placeholder = "0".repeat(64);
    for (seq, event) in (first_seq..).zip(events) {
        let body = serde_json::to_string(event)?;
        writer
            .as_mut()
            .write(&RowValues::of(event, &body, seq, &placeholder, &placeholder).values())
            .await?;
    }
    writer.as_mut().finish().await?;
    Ok(())
}

/// `event` as Postgres will keep it (times in microseconds) with its
/// canonical JSON, ready to be linked into the chain.
///
/// An event this store cannot keep as it is (see [`unstorable`]) is kept as
/// its quarantine event (`pgtrail_core::quarantine`): same id, so a retry is
/// still deduplicated, and every byte of the original in `raw_base64`. This
/// is the one place both capture paths (and import) go through, so one
/// value can never stop capture.
fn encode(mut event: Event) -> (Event, CanonicalBody) {
    event.captured_at = truncate_micros(event.captured_at);
    event.committed_at = event.committed_at.map(truncate_micros);
    if let Some(reason) = unstorable(&event) {
        tracing::warn!(id = %event.id, lsn = event.lsn.as_deref(), xid = event.xid, %reason, "Quarantined an event the Postgres store cannot keep as captured.");
        event = quarantine(&event, &reason);
    }
    let body = CanonicalBody::of(&event);
    (event, body)
}

/// The ids among `ids` not yet stored, without repeats.
///
/// One primary-key probe per id, whatever the table's size: the LATERAL
/// subquery with LIMIT cannot be turned into a join, so Postgres never
/// trades the probes for a scan of the whole table (which it would for a
/// batch-sized `id = any(…)` on a table that is still small).
async fn not_stored(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, tokio_postgres::Error> {
    let mut keep: HashSet<Uuid> = ids.iter().copied().collect();
    if ids.is_empty() {
        return Ok(keep);
    }
    let stored = tx
        .query(
            "select b.id from unnest($1::uuid[]) as b(id) \
             cross join lateral (select 1 from pgtrail.events e where e.id = b.id limit 1) as stored",
            &[&ids],
        )
        .await?;
    for row in stored {
        keep.remove(&row.try_get::<_, Uuid>(0)?);
    }
    Ok(keep)
}
