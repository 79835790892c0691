//! Checkpoints: a plain table, one row per checkpoint, oldest first by `id`.

use rusqlite::{params, Connection};

use crate::cosignature::StoredCosignature;
use crate::{Checkpoint, CheckpointKind, Result, StoreError};

/// Records `checkpoint` durably (its own transaction, fsync'd on commit).
pub fn add(conn: &Connection, checkpoint: &Checkpoint, location: &str) -> Result<()> {
    conn.prepare_cached(
        "insert into checkpoints (kind, seq, hash, count, created_at, public_key, signature, note, frontier) \
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            checkpoint.kind.as_str(),
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.count,
            checkpoint.created_at.timestamp_micros(),
            checkpoint.public_key,
            checkpoint.signature,
            checkpoint.note,
            checkpoint.frontier,
        ])
    })
    .map_err(|e| StoreError::backend(location, "recording a checkpoint", e))?;
    Ok(())
}

/// All checkpoints, oldest first.
pub fn all(conn: &Connection, location: &str) -> Result<Vec<Checkpoint>> {
    let db = |e| StoreError::backend(location, "reading checkpoints", e);
    // `*`: a store from before notes (schema < 7, read without migrating)
    // has no note and frontier columns.
    let mut statement = conn
        .prepare_cached("select * from checkpoints order by id")
        .map_err(db)?;
    let column = |name: &str| statement.column_index(name).map_err(db);
    let [kind_at, seq_at, hash_at, count_at, created_at_at, public_key_at, signature_at] = [
        column("kind")?,
        column("seq")?,
        column("hash")?,
        column("count")?,
        column("created_at")?,
        column("public_key")?,
        column("signature")?,
    ];
    let (note_at, frontier_at) = (column("note").ok(), column("frontier").ok());
    let mut rows = statement.query([]).map_err(db)?;
    let mut checkpoints = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(seq_at).map_err(db)?;
        let corrupt = |what: &str| {
            StoreError::backend(
                location,
                "reading checkpoints",
                format!("checkpoint at event {seq} has an invalid {what}"),
            )
        };
        let kind: String = row.get(kind_at).map_err(db)?;
        let created_at: i64 = row.get(created_at_at).map_err(db)?;
        let optional = |at: Option<usize>| match at {
            Some(at) => row.get::<_, Option<String>>(at).map_err(db),
            None => Ok(None),
        };
        checkpoints.push(Checkpoint {
            kind: CheckpointKind::parse(&kind).ok_or_else(|| corrupt("kind"))?,
            seq,
            hash: row.get(hash_at).map_err(db)?,
            count: row.get(count_at).map_err(db)?,
            created_at: chrono::DateTime::from_timestamp_micros(created_at)
                .ok_or_else(|| corrupt("time"))?,
            public_key: row.get(public_key_at).map_err(db)?,
            signature: row.get(signature_at).map_err(db)?,
            note: optional(note_at)?,
            frontier: optional(frontier_at)?,
        });
    }
    Ok(checkpoints)
}

/// The store's random id (schema 7 on); `None` in an older store.
pub fn store_id(conn: &Connection, location: &str) -> Result<Option<String>> {
    let has_table = super::schema::has_table(conn, "store_identity")
        .map_err(|e| StoreError::backend(location, "looking for the store's id", e))?;
    if !has_table {
        return Ok(None);
    }
    conn.query_row("select id from store_identity", [], |r| r.get(0))
        .map(Some)
        .map_err(|e| StoreError::backend(location, "reading the store's id", e))
}

/// Keeps a cosignature (once per checkpoint text and line).
pub fn add_cosignature(
    conn: &Connection,
    cosignature: &StoredCosignature,
    location: &str,
) -> Result<()> {
    conn.prepare_cached(
        "insert or ignore into cosignatures (seq, checkpoint, line, received_at) \
         values (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            cosignature.seq,
            cosignature.checkpoint,
            cosignature.line,
            cosignature.received_at.timestamp_micros(),
        ])
    })
    .map_err(|e| StoreError::backend(location, "recording a cosignature", e))?;
    Ok(())
}

/// The cosignatures of the checkpoints of size `seq`, oldest first.
pub fn cosignatures(conn: &Connection, seq: i64, location: &str) -> Result<Vec<StoredCosignature>> {
    let db = |e| StoreError::backend(location, "reading cosignatures", e);
    let mut statement = conn
        .prepare_cached(
            "select checkpoint, line, received_at from cosignatures where seq = ?1 order by rowid",
        )
        .map_err(db)?;
    let rows = statement
        .query_map([seq], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows {
        let (checkpoint, line, received_at) = row.map_err(db)?;
        out.push(StoredCosignature {
            seq,
            checkpoint,
            line,
            received_at: chrono::DateTime::from_timestamp_micros(received_at).ok_or_else(|| {
                StoreError::backend(location, "reading cosignatures", "an invalid time")
            })?,
        });
    }
    Ok(out)
}
