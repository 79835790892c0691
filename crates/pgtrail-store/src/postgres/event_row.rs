//! The mapping between an [`Event`] and a row of `pgtrail.events`: the
//! column list (shared by COPY and SELECT), the column types of the binary
//! COPY, and the decoding of a row back into the event that was hashed.
//!
//! Round-trip exactness is what keeps `verify` meaningful: timestamps are
//! microseconds on both sides, json columns keep their text and serde_json
//! (with `arbitrary_precision`) keeps number spelling, and empty arrays are
//! stored as NULL and read back as empty (the event's JSON leaves both out).

use pgtrail_core::event::Provenance;
use pgtrail_core::{json, Event};
use postgres_types::{Json, ToSql, Type};
use serde_json::Value;
use tokio_postgres::Row;

use super::json::{JsonText, RawJson};

/// Columns of `pgtrail.events`, in COPY and SELECT order.
pub(super) const COLUMNS: &str = "id, seq, source, kind, captured_at, \
    db_user, app_user, client_addr, client_port, application_name, backend_pid, session_id, context, \
    database, schema_name, table_name, operation, objects, \
    pk, old, new, changed, partial, \
    sql, params, command_tag, rows, duration_us, sqlstate, error, \
    xid, lsn, committed_at, tx_seq, \
    prev_hash, hash, provenance";

/// Types of [`COLUMNS`], for the binary COPY.
pub(super) static COLUMN_TYPES: [Type; 37] = [
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
    // provenance (schema v3)
    Type::JSON,
];

/// The values of one sealed event's row, borrowed from the event.
pub(super) struct RowValues<'a> {
    event: &'a Event,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
    source: &'static str,
    kind: &'static str,
    context: Option<JsonText>,
    objects: Option<&'a [String]>,
    pk: Option<JsonText>,
    old: Option<JsonText>,
    new: Option<JsonText>,
    changed: Option<&'a [String]>,
    partial: Option<&'a [String]>,
    params: Option<JsonText>,
    provenance: Option<Json<&'a Provenance>>,
}

impl<'a> RowValues<'a> {
    /// The row of `event`, which must be sealed.
    pub(super) fn of(event: &'a Event) -> Self {
        let non_empty = |v: &'a Vec<String>| (!v.is_empty()).then_some(v.as_slice());
        let object = |o: &Option<_>| o.as_ref().map(|o| JsonText(json::object_to_string(o)));
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
            context: object(&event.context),
            objects: non_empty(&event.objects),
            pk: object(&event.pk),
            old: object(&event.old),
            new: object(&event.new),
            changed: non_empty(&event.changed),
            partial: non_empty(&event.partial),
            params: event
                .params
                .as_ref()
                .map(|p| JsonText(json::array_to_string(p))),
            provenance: event.provenance.as_ref().map(Json),
        }
    }

    /// The values in [`COLUMNS`] order.
    pub(super) fn values(&self) -> [&(dyn ToSql + Sync); 37] {
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
            &self.provenance,
        ]
    }
}

/// How deep the JSON of a column may be nested. Postgres parses `json`
/// and `jsonb` input recursively: with the default `max_stack_depth` (2MB)
/// it accepts about 13,000 levels (arrays 14,500, objects 13,000): a store
/// server with that setting takes any value up to this bound, with room for
/// the row image around the column and a smaller stack.
pub(super) const MAX_JSON_DEPTH: usize = 10_000;

/// Why this store cannot keep `event` as it is, if it cannot: a `text`
/// column cannot hold NUL (nor can `jsonb`: `\u0000`), and JSON nested past
/// [`MAX_JSON_DEPTH`] may exceed the server's stack. The `json` columns
/// keep NUL as the escape `\u0000`, so row images and context with NUL are
/// kept exactly.
pub(super) fn unstorable(event: &Event) -> Option<String> {
    let e = event;
    let texts = [
        ("db_user", &e.db_user),
        ("app_user", &e.app_user),
        ("client_addr", &e.client_addr),
        ("application_name", &e.application_name),
        ("session_id", &e.session_id),
        ("database", &e.database),
        ("schema", &e.schema),
        ("table", &e.table),
        ("operation", &e.operation),
        ("sql", &e.sql),
        ("command_tag", &e.command_tag),
        ("sqlstate", &e.sqlstate),
        ("error", &e.error),
        ("lsn", &e.lsn),
    ];
    let nul = |text: &str| text.contains('\0');
    if let Some((column, _)) = texts
        .iter()
        .find(|(_, text)| text.as_deref().is_some_and(nul))
    {
        return Some(format!("a Postgres text column cannot hold NUL ({column})"));
    }
    let lists = [
        ("objects", &e.objects),
        ("changed", &e.changed),
        ("partial", &e.partial),
    ];
    if let Some((column, _)) = lists
        .iter()
        .find(|(_, list)| list.iter().any(|text| nul(text)))
    {
        return Some(format!("a Postgres text column cannot hold NUL ({column})"));
    }
    if let Some(pk) = &e.pk {
        if pk
            .iter()
            .any(|(key, value)| key.contains('\0') || json::has_nul(value))
        {
            return Some("a Postgres jsonb column cannot hold NUL (pk)".into());
        }
    }
    let objects = [
        ("context", &e.context),
        ("pk", &e.pk),
        ("old", &e.old),
        ("new", &e.new),
    ];
    let params = e
        .params
        .iter()
        .flatten()
        .map(|p| ("params", 1 + json::depth(p)));
    let deepest = objects
        .iter()
        .flat_map(|(column, object)| {
            object
                .iter()
                .flat_map(|o| o.values())
                .map(move |v| (*column, 1 + json::depth(v)))
        })
        .chain(params)
        .max_by_key(|(_, depth)| *depth);
    match deepest {
        Some((column, depth)) if depth > MAX_JSON_DEPTH => Some(format!(
            "{column} is nested {depth} levels deep; the Postgres store keeps JSON up to {MAX_JSON_DEPTH}"
        )),
        _ => None,
    }
}

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
        changed: array(row, 21)?,
        partial: array(row, 22)?,
        sql: row.try_get(23)?,
        params: match json_column(row, seq, 24, "params")? {
            None => None,
            Some(Value::Array(params)) => Some(params),
            Some(_) => return Err(invalid("params", "not a JSON array".into())),
        },
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

/// The json columns as the text Postgres keeps (after [`COLUMNS`], for
/// verify): json keeps its input verbatim, so a duplicate key or an
/// oddly spelled value would show to SQL readers while the event decoded
/// from it, and hashed, says otherwise. Each must be the canonical encoding
/// of its decoded value.
pub(super) const JSON_TEXT: &str =
    "context::text, old::text, new::text, params::text, provenance::text";

/// A row selected with [`COLUMNS`] and [`JSON_TEXT`], as verify sees it.
pub(super) fn stored_event(row: &Row) -> Result<crate::StoredEvent, tokio_postgres::Error> {
    let seq: i64 = row.try_get(1)?;
    let event = event_from_row(row).map_err(|e| match e {
        DecodeError::Column(e) => {
            format!("a column does not decode: {}", super::schema::describe(&e))
        }
        e @ (DecodeError::Value { .. } | DecodeError::Json { .. }) => {
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(&e) {
                text = format!("{text}: {source}");
            }
            text
        }
    });
    let mut mismatches = Vec::new();
    if let Ok(event) = &event {
        // What the store writes for each: core's writer for captured
        // values, serde for pgtrail's own provenance object.
        let canonical: [(&str, Option<String>); 5] = [
            (
                "context",
                event.context.as_ref().map(json::object_to_string),
            ),
            ("old", event.old.as_ref().map(json::object_to_string)),
            ("new", event.new.as_ref().map(json::object_to_string)),
            ("params", event.params.as_deref().map(json::array_to_string)),
            (
                "provenance",
                event
                    .provenance
                    .as_ref()
                    .and_then(|p| serde_json::to_string(p).ok()),
            ),
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

fn array(row: &Row, index: usize) -> Result<Vec<String>, DecodeError> {
    let value: Option<Vec<String>> = row.try_get(index)?;
    Ok(value.unwrap_or_default())
}
