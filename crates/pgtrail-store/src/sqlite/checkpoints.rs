//! Checkpoints: a plain table, one row per checkpoint, oldest first by `id`.

use rusqlite::{params, Connection};

use crate::{Checkpoint, CheckpointKind, Result, StoreError};

/// Records `checkpoint` durably (its own transaction, fsync'd on commit).
pub fn add(conn: &Connection, checkpoint: &Checkpoint, location: &str) -> Result<()> {
    conn.prepare_cached(
        "insert into checkpoints (kind, seq, hash, count, created_at, public_key, signature) \
         values (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
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
        ])
    })
    .map_err(|e| StoreError::backend(location, "recording a checkpoint", e))?;
    Ok(())
}

/// All checkpoints, oldest first.
pub fn all(conn: &Connection, location: &str) -> Result<Vec<Checkpoint>> {
    let db = |e| StoreError::backend(location, "reading checkpoints", e);
    let mut statement = conn
        .prepare_cached(
            "select kind, seq, hash, count, created_at, public_key, signature from checkpoints order by id",
        )
        .map_err(db)?;
    let mut rows = statement.query([]).map_err(db)?;
    let mut checkpoints = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(1).map_err(db)?;
        let corrupt = |what: &str| {
            StoreError::backend(
                location,
                "reading checkpoints",
                format!("checkpoint at event {seq} has an invalid {what}"),
            )
        };
        let kind: String = row.get(0).map_err(db)?;
        let created_at: i64 = row.get(4).map_err(db)?;
        checkpoints.push(Checkpoint {
            kind: CheckpointKind::parse(&kind).ok_or_else(|| corrupt("kind"))?,
            seq,
            hash: row.get(2).map_err(db)?,
            count: row.get(3).map_err(db)?,
            created_at: chrono::DateTime::from_timestamp_micros(created_at)
                .ok_or_else(|| corrupt("time"))?,
            public_key: row.get(5).map_err(db)?,
            signature: row.get(6).map_err(db)?,
        });
    }
    Ok(checkpoints)
}
