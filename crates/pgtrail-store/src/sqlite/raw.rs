//! Events as stored, not decoded ([`crate::Store::scan_raw`]): the body
//! text and the seal, for readers that pass events on as JSON.

use rusqlite::Connection;

use crate::{RawEvent, Result, StoreError};

/// Sealed events with `seq > after`, ascending, at most `limit`.
pub fn scan(conn: &Connection, after: i64, limit: usize, location: &str) -> Result<Vec<RawEvent>> {
    let db = |e| StoreError::backend(location, "reading events", e);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut statement = conn
        .prepare_cached(
            "select seq, body, prev_hash, hash from events where seq > ?1 order by seq limit ?2",
        )
        .map_err(db)?;
    let mut rows = statement.query((after, limit)).map_err(db)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let body = row.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(db)?;
        let prev_hash = row.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(db)?;
        let hash = row.get_ref(3).and_then(|v| Ok(v.as_blob()?)).map_err(db)?;
        events.push(RawEvent {
            seq,
            body: body.to_string(),
            prev_hash: pgtrail_core::hex::encode(prev_hash),
            hash: pgtrail_core::hex::encode(hash),
        });
    }
    Ok(events)
}
