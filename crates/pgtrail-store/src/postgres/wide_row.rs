//! The wide rows of schema versions 1 to 3, where each field of an event
//! had its own column, read back into the events that were hashed. Only
//! migration 4 reads them, to write each event's canonical body.
//!
//! Round-trip exactness is what keeps the migrated chain verifiable:
//! timestamps are microseconds on both sides, json columns keep their text
//! and core's reader keeps number spelling, and empty arrays were stored as
//! NULL and are read back as empty (the event's JSON leaves both out).

use pgtrail_core::event::Provenance;
use pgtrail_core::{json, Event};
use serde_json::Value;
use tokio_postgres::Row;

use super::json::RawJson;

/// Columns of a wide row (schema 3), in SELECT order.
pub(super) const WIDE_COLUMNS: &str = "id, seq, source, kind, captured_at, \
    db_user, app_user, client_addr, client_port, application_name, backend_pid, session_id, context, \
    database, schema_name, table_name, operation, objects, \
    pk, old, new, changed, partial, \
    sql, params, command_tag, rows, duration_us, sqlstate, error, \
    xid, lsn, committed_at, tx_seq, \
    prev_hash, hash, provenance";

/// Why a stored row is not a valid event.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    /// A column could not be read as its expected type.
    #[error("cannot read a stored event")]
    Column(#[from] tokio_postgres::Error),
    /// A JSON column does not hold what pgtrail wrote there.
    #[error("stored event {seq} has an invalid {column}")]
    Json {
        /// The event's position.
        seq: i64,
        /// The column.
        column: &'static str,
        /// What the reader found.
        #[source]
        source: json::JsonError,
    },
    /// `source` or `kind` holds a value pgtrail does not know.
    #[error("stored event {seq} has an invalid {column}: {reason}")]
    Value {
        /// The event's position.
        seq: i64,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// The event stored in `row` (selected with [`WIDE_COLUMNS`]), exactly as it was hashed.
pub(super) fn event_from_row(row: &Row) -> Result<Event, DecodeError> {
    let seq: i64 = row.try_get(1)?;
    let invalid = |column, reason| DecodeError::Value {
        seq,
        column,
        reason,
    };
    let source: String = row.try_get(2)?;
    let kind: String = row.try_get(3)?;
    Ok(Event {
        id: row.try_get(0)?,
        seq: Some(seq),
        source: source.parse().map_err(|r| invalid("source", r))?,
        kind: kind.parse().map_err(|r| invalid("kind", r))?,
        captured_at: row.try_get(4)?,
        db_user: row.try_get(5)?,
        app_user: row.try_get(6)?,
        client_addr: row.try_get(7)?,
        client_port: row.try_get(8)?,
        application_name: row.try_get(9)?,
        backend_pid: row.try_get(10)?,
        session_id: row.try_get(11)?,
        context: object(row, seq, 12, "context")?,
        provenance: provenance(row, seq)?,
        database: row.try_get(13)?,
        schema: row.try_get(14)?,
        table: row.try_get(15)?,
        operation: row.try_get(16)?,
        objects: array(row, 17)?,
        pk: object(row, seq, 18, "pk")?,
        old: object(row, seq, 19, "old")?,
        new: object(row, seq, 20, "new")?,
        nonce: None,
        changed: array(row, 21)?,
        partial: array(row, 22)?,
        sql: row.try_get(23)?,
        params: match json_column(row, seq, 24, "params")? {
            None => None,
            Some(Value::Array(params)) => Some(params),
            Some(_) => return Err(invalid("params", "not a JSON array".into())),
        },
        class: None,
        command_tag: row.try_get(25)?,
        rows: row.try_get(26)?,
        duration_us: row.try_get(27)?,
        sqlstate: row.try_get(28)?,
        error: row.try_get(29)?,
        xid: row.try_get(30)?,
        lsn: row.try_get(31)?,
        committed_at: row.try_get(32)?,
        tx_seq: row.try_get(33)?,
        prev_hash: row.try_get(34)?,
        hash: row.try_get(35)?,
    })
}

/// A json column, read with core's reader (any depth, any key).
fn json_column(
    row: &Row,
    seq: i64,
    index: usize,
    column: &'static str,
) -> Result<Option<Value>, DecodeError> {
    let Some(RawJson(text)) = row.try_get(index)? else {
        return Ok(None);
    };
    json::parse(text)
        .map(Some)
        .map_err(|source| DecodeError::Json {
            seq,
            column,
            source,
        })
}

fn object(
    row: &Row,
    seq: i64,
    index: usize,
    column: &'static str,
) -> Result<Option<pgtrail_core::event::JsonObject>, DecodeError> {
    match json_column(row, seq, index, column)? {
        None => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(DecodeError::Value {
            seq,
            column,
            reason: "not a JSON object".into(),
        }),
    }
}

/// The provenance column (schema v3): a small object pgtrail wrote itself.
fn provenance(row: &Row, seq: i64) -> Result<Option<Provenance>, DecodeError> {
    let Some(RawJson(text)) = row.try_get(36)? else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| DecodeError::Value {
            seq,
            column: "provenance",
            reason: e.to_string(),
        })
}

fn array(row: &Row, index: usize) -> Result<Vec<String>, DecodeError> {
    let value: Option<Vec<String>> = row.try_get(index)?;
    Ok(value.unwrap_or_default())
}

/// Rows read and rewritten at a time by [`fill_bodies`].
const FILL_BATCH: i32 = 5_000;

/// Migration 4's rewrite, inside its transaction: every stored event's
/// canonical body and `failed`, from its wide row. Reads through one
/// cursor (which sees the rows as they were when it opened, not the
/// rewritten ones) and rewrites each row by its primary key, so rows that
/// share a `seq` (a tampered store) are each rewritten from their own
/// columns. The body is what the columns say: a row changed after it was
/// sealed gets the body of its changed values, and its stored hash, kept
/// as it is, no longer matches: verify reports it as before.
///
/// A row that does not decode stops the migration, which then leaves the
/// store at version 3: the new build refuses to guess its body.
pub(super) async fn fill_bodies(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<(), crate::StoreError> {
    use pgtrail_core::canonical::CanonicalBody;
    let backend =
        |e| crate::StoreError::backend(location, "writing the events' bodies (migration 4)", e);
    // One primary-key probe per row, whatever the planner thinks of a
    // still-unanalyzed table (a hash join would scan it once per batch).
    tx.batch_execute("set local enable_hashjoin = off; set local enable_mergejoin = off")
        .await
        .map_err(backend)?;
    let portal = tx
        .bind(
            &format!("select {WIDE_COLUMNS} from pgtrail.events order by seq"),
            &[],
        )
        .await
        .map_err(backend)?;
    loop {
        let rows = tx
            .query_portal(&portal, FILL_BATCH)
            .await
            .map_err(backend)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        let mut bodies = Vec::with_capacity(rows.len());
        let mut failed = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get(1).map_err(backend)?;
            let event = event_from_row(row).map_err(|e| {
                let mut reason = e.to_string();
                if let Some(source) = std::error::Error::source(&e) {
                    reason = format!("{reason}: {source}");
                }
                crate::StoreError::Open {
                    location: location.to_string(),
                    reason: format!(
                        "migrating to schema 4 needs every stored event, and event {seq} does \
                         not decode ({reason}); the store is left at version 3: run `pgtrail \
                         verify` with the pgtrail that wrote it"
                    ),
                    source: None,
                }
            })?;
            ids.push(event.id);
            times.push(event.captured_at);
            failed.push(event.failed());
            bodies.push(CanonicalBody::of(&event).into_string());
        }
        tx.execute(
            "update pgtrail.events e set body = b.body::json, failed = b.failed \
             from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::bool[]) as b(id, captured_at, body, failed) \
             where e.id = b.id and e.captured_at = b.captured_at",
            &[&ids, &times, &bodies, &failed],
        )
        .await
        .map_err(backend)?;
    }
}
