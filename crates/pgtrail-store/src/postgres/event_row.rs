//! The mapping between an [`Event`] and a row of `pgtrail.events`: the
//! column list (shared by COPY and SELECT), the column types of the binary
//! COPY, and the decoding of a row back into the event that was hashed.
//!
//! Round-trip exactness is what keeps `verify` meaningful: timestamps are
//! microseconds on both sides, json columns keep their text and serde_json
//! (with `arbitrary_precision`) keeps number spelling, and empty arrays are
//! stored as NULL and read back as empty (the event's JSON leaves both out).

use pgtrail_core::event::JsonObject;
use pgtrail_core::Event;
use postgres_types::{Json, ToSql, Type};
use serde_json::Value;
use tokio_postgres::Row;

/// Columns of `pgtrail.events`, in COPY and SELECT order.
pub(super) const COLUMNS: &str = "id, seq, source, kind, captured_at, \
    db_user, app_user, client_addr, client_port, application_name, backend_pid, session_id, context, \
    database, schema_name, table_name, operation, objects, \
    pk, old, new, changed, partial, \
    sql, params, command_tag, rows, duration_us, sqlstate, error, \
    xid, lsn, committed_at, tx_seq, \
    prev_hash, hash";

/// Types of [`COLUMNS`], for the binary COPY.
pub(super) static COLUMN_TYPES: [Type; 36] = [
    Type::UUID,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    // actor
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::INT4,
    Type::TEXT,
    Type::JSON,
    // target
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT_ARRAY,
    // row change
    Type::JSONB,
    Type::JSON,
    Type::JSON,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    // statement
    Type::TEXT,
    Type::JSON,
    Type::TEXT,
    Type::INT8,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
    // transaction
    Type::INT8,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::INT8,
    // seal
    Type::TEXT,
    Type::TEXT,
];

/// The values of one sealed event's row, borrowed from the event.
pub(super) struct RowValues<'a> {
    event: &'a Event,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
    source: &'static str,
    kind: &'static str,
    context: Option<Json<&'a JsonObject>>,
    objects: Option<&'a [String]>,
    pk: Option<Json<&'a JsonObject>>,
    old: Option<Json<&'a JsonObject>>,
    new: Option<Json<&'a JsonObject>>,
    changed: Option<&'a [String]>,
    partial: Option<&'a [String]>,
    params: Option<Json<&'a Vec<Value>>>,
}

impl<'a> RowValues<'a> {
    /// The row of `event`, which must be sealed.
    pub(super) fn of(event: &'a Event) -> Self {
        let non_empty = |v: &'a Vec<String>| (!v.is_empty()).then_some(v.as_slice());
        RowValues {
            event,
            seq: event
                .seq
                .expect("events are sealed before they are written"),
            prev_hash: event
                .prev_hash
                .as_deref()
                .expect("events are sealed before they are written"),
            hash: event
                .hash
                .as_deref()
                .expect("events are sealed before they are written"),
            source: event.source.as_str(),
            kind: event.kind.as_str(),
            context: event.context.as_ref().map(Json),
            objects: non_empty(&event.objects),
            pk: event.pk.as_ref().map(Json),
            old: event.old.as_ref().map(Json),
            new: event.new.as_ref().map(Json),
            changed: non_empty(&event.changed),
            partial: non_empty(&event.partial),
            params: event.params.as_ref().map(Json),
        }
    }

    /// The values in [`COLUMNS`] order.
    pub(super) fn values(&self) -> [&(dyn ToSql + Sync); 36] {
        let e = self.event;
        [
            &e.id,
            &self.seq,
            &self.source,
            &self.kind,
            &e.captured_at,
            &e.db_user,
            &e.app_user,
            &e.client_addr,
            &e.client_port,
            &e.application_name,
            &e.backend_pid,
            &e.session_id,
            &self.context,
            &e.database,
            &e.schema,
            &e.table,
            &e.operation,
            &self.objects,
            &self.pk,
            &self.old,
            &self.new,
            &self.changed,
            &self.partial,
            &e.sql,
            &self.params,
            &e.command_tag,
            &e.rows,
            &e.duration_us,
            &e.sqlstate,
            &e.error,
            &e.xid,
            &e.lsn,
            &e.committed_at,
            &e.tx_seq,
            &self.prev_hash,
            &self.hash,
        ]
    }
}

/// Why a stored row is not a valid event.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    /// A column could not be read as its expected type.
    #[error("cannot read a stored event")]
    Column(#[from] tokio_postgres::Error),
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

/// The event stored in `row` (selected with [`COLUMNS`]), exactly as it was hashed.
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
        context: json(row, 12)?,
        database: row.try_get(13)?,
        schema: row.try_get(14)?,
        table: row.try_get(15)?,
        operation: row.try_get(16)?,
        objects: array(row, 17)?,
        pk: json(row, 18)?,
        old: json(row, 19)?,
        new: json(row, 20)?,
        changed: array(row, 21)?,
        partial: array(row, 22)?,
        sql: row.try_get(23)?,
        params: json(row, 24)?,
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

/// The json columns as the text Postgres keeps (after [`COLUMNS`], for
/// verify): json keeps its input verbatim, so a duplicate key or an
/// oddly spelled value would show to SQL readers while the event decoded
/// from it, and hashed, says otherwise. Each must be the canonical encoding
/// of its decoded value.
pub(super) const JSON_TEXT: &str = "context::text, old::text, new::text, params::text";

/// A row selected with [`COLUMNS`] and [`JSON_TEXT`], as verify sees it.
pub(super) fn stored_event(row: &Row) -> Result<crate::StoredEvent, tokio_postgres::Error> {
    let seq: i64 = row.try_get(1)?;
    let event = event_from_row(row).map_err(|e| match e {
        DecodeError::Column(e) => {
            format!("a column does not decode: {}", super::schema::describe(&e))
        }
        e @ DecodeError::Value { .. } => e.to_string(),
    });
    let mut mismatches = Vec::new();
    if let Ok(event) = &event {
        let canonical: [(&str, Option<String>); 4] = [
            ("context", event.context.as_ref().map(canonical)),
            ("old", event.old.as_ref().map(canonical)),
            ("new", event.new.as_ref().map(canonical)),
            ("params", event.params.as_ref().map(canonical)),
        ];
        for (i, (column, expected)) in canonical.into_iter().enumerate() {
            let found: Option<String> = row.try_get(COLUMN_TYPES.len() + i)?;
            if found != expected {
                let show = |v: Option<String>| v.unwrap_or_else(|| "NULL".into());
                mismatches.push(crate::Mismatch {
                    column: column.to_string(),
                    found: show(found),
                    expected: show(expected),
                });
            }
        }
    }
    Ok(crate::StoredEvent {
        seq,
        event,
        body: None,
        mismatches,
    })
}

/// The canonical JSON of a value: what the event's hash covers.
fn canonical<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, index: usize) -> Result<Option<T>, DecodeError> {
    let value: Option<Json<T>> = row.try_get(index)?;
    Ok(value.map(|Json(v)| v))
}

fn array(row: &Row, index: usize) -> Result<Vec<String>, DecodeError> {
    let value: Option<Vec<String>> = row.try_get(index)?;
    Ok(value.unwrap_or_default())
}
