//! Events as stored, not decoded ([`crate::Store::scan_raw`]): the body
//! text and the seal, for readers that pass events on as JSON.

use tokio_postgres::Row;

use super::json::RawJson;
use crate::RawEvent;

/// Sealed events after `$1`, ascending, at most `$2`.
pub(super) const SCAN: &str =
    "select seq, body, prev_hash, hash from pgtrail.events where seq > $1 order by seq limit $2";

/// The event in `row` (selected with [`SCAN`]).
pub(super) fn raw_event(row: &Row) -> Result<RawEvent, tokio_postgres::Error> {
    let RawJson(body) = row.try_get(1)?;
    Ok(RawEvent {
        seq: row.try_get(0)?,
        body: body.to_string(),
        prev_hash: row.try_get(2)?,
        hash: row.try_get(3)?,
    })
}
