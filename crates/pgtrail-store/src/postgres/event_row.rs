//! The mapping between an [`Event`] and a row of `pgtrail.events` (schema
//! 4): the event's canonical body once, in `body`, and beside it only what
//! readers filter and look up by, the seal, and the partition key.
//!
//! `body` is the text that was hashed (`CanonicalBody`, without `seq`,
//! `prev_hash` and `hash`, which are columns): an event is read back from
//! it alone. The other columns are copies of body fields for indexes and
//! filters (and `failed`, derived from two of them); `verify` recomputes
//! each from the body and reports any that differs.

use pgtrail_core::filter::canonical_pk;
use pgtrail_core::{json, Event};
use postgres_types::{ToSql, Type};
use serde_json::Value;
use tokio_postgres::Row;

use super::json::{JsonStr, JsonText, RawJson};
use crate::Mismatch;

/// Columns of `pgtrail.events` in COPY order.
pub(super) const COLUMNS: &str = "id, seq, captured_at, source, kind, \
    db_user, app_user, schema_name, table_name, operation, pk, sql, xid, failed, \
    body, prev_hash, hash";

/// Types of [`COLUMNS`], for the binary COPY.
pub(super) static COLUMN_TYPES: [Type; 17] = [
    Type::UUID,
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::JSONB,
    Type::TEXT,
    Type::INT8,
    Type::BOOL,
    Type::JSON,
    Type::TEXT,
    Type::TEXT,
];

/// What readers select: the event is its body plus the seal columns.
pub(super) const READ_COLUMNS: &str = "seq, body, prev_hash, hash";

/// What verify selects: [`READ_COLUMNS`], then every copied column.
pub(super) const VERIFY_COLUMNS: &str = "seq, body, prev_hash, hash, \
    id, captured_at, source, kind, db_user, app_user, schema_name, table_name, operation, \
    pk, sql, xid, failed";

/// The values of one sealed event's row, borrowed from the event and its body.
pub(super) struct RowValues<'a> {
    event: &'a Event,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
    source: &'static str,
    kind: &'static str,
    pk: Option<JsonText>,
    failed: bool,
    body: JsonStr<'a>,
}

impl<'a> RowValues<'a> {
    /// The row of `event` sealed at `seq` after `prev_hash` with `hash`,
    /// `body` being its canonical body (or, for the bench's baseline, any
    /// JSON of it).
    pub(super) fn of(
        event: &'a Event,
        body: &'a str,
        seq: i64,
        prev_hash: &'a str,
        hash: &'a str,
    ) -> Self {
        RowValues {
            event,
            seq,
            prev_hash,
            hash,
            source: event.source.as_str(),
            kind: event.kind.as_str(),
            pk: event.pk.as_ref().map(|pk| JsonText(canonical_pk(pk))),
            failed: event.failed(),
            body: JsonStr(body),
        }
    }

    /// The values in [`COLUMNS`] order.
    pub(super) fn values(&self) -> [&(dyn ToSql + Sync); 17] {
        let e = self.event;
        [
            &e.id,
            &self.seq,
            &e.captured_at,
            &self.source,
            &self.kind,
            &e.db_user,
            &e.app_user,
            &e.schema,
            &e.table,
            &e.operation,
            &self.pk,
            &e.sql,
            &e.xid,
            &self.failed,
            &self.body,
            &self.prev_hash,
            &self.hash,
        ]
    }
}

/// How deep the JSON of an event's field may be nested. Postgres parses
/// `json` and `jsonb` input recursively: with the default `max_stack_depth`
/// (2MB) it accepts about 13,000 levels (arrays 14,500, objects 13,000): a
/// store server with that setting takes any body up to this bound (two
/// levels more: the body and the field), with room for a smaller stack.
pub(super) const MAX_JSON_DEPTH: usize = 10_000;

/// Why this store cannot keep `event` as it is, if it cannot: a `text`
/// column cannot hold NUL (nor can `jsonb`: `\u0000`), and JSON nested past
/// [`MAX_JSON_DEPTH`] may exceed the server's stack. The body is `json`,
/// which keeps NUL as the escape `\u0000`: fields that are only in the
/// body (row images, context, errors, ...) keep NUL exactly.
pub(super) fn unstorable(event: &Event) -> Option<String> {
    let e = event;
    let texts = [
        ("db_user", &e.db_user),
        ("app_user", &e.app_user),
        ("schema", &e.schema),
        ("table", &e.table),
        ("operation", &e.operation),
        ("sql", &e.sql),
    ];
    let nul = |text: &str| text.contains('\0');
    if let Some((column, _)) = texts
        .iter()
        .find(|(_, text)| text.as_deref().is_some_and(nul))
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
    /// The body is not the JSON of an event.
    #[error("stored event {seq} has an invalid body")]
    Body {
        /// The event's position.
        seq: i64,
        /// What the reader found.
        #[source]
        source: serde_json::Error,
    },
}

/// The event stored in `row` (selected with [`READ_COLUMNS`] first), exactly
/// as it was hashed.
pub(super) fn event_from_row(row: &Row) -> Result<Event, DecodeError> {
    let seq: i64 = row.try_get(0)?;
    let RawJson(body) = row.try_get(1)?;
    // The event's JSON fields go through core's reader (any depth, any key).
    let mut event: Event =
        serde_json::from_str(body).map_err(|source| DecodeError::Body { seq, source })?;
    event.seq = Some(seq);
    event.prev_hash = Some(row.try_get(2)?);
    event.hash = Some(row.try_get(3)?);
    Ok(event)
}

/// A row selected with [`VERIFY_COLUMNS`], as verify sees it: the event
/// decoded from the body, the body's text (verify requires it to be the
/// canonical body), and every copied column that is not what the body says.
pub(super) fn stored_event(row: &Row) -> Result<crate::StoredEvent, tokio_postgres::Error> {
    let seq: i64 = row.try_get(0)?;
    let body: Option<RawJson> = row.try_get(1)?;
    let event = event_from_row(row).map_err(|e| match e {
        DecodeError::Column(e) => {
            format!("a column does not decode: {}", super::schema::describe(&e))
        }
        // As the SQLite store says it.
        DecodeError::Body { source, .. } => format!("its body is not an event: {source}"),
    });
    let mismatches = match &event {
        Ok(event) => copied_mismatches(row, event)?,
        Err(_) => Vec::new(),
    };
    Ok(crate::StoredEvent {
        seq,
        event,
        body: body.map(|RawJson(text)| text.to_string()),
        mismatches,
    })
}

/// The copied columns of `row` (after [`READ_COLUMNS`]) that differ from
/// what [`RowValues`] would write for `event`, shown as SQL literals (text
/// quoted, NULL bare), as the SQLite store shows its own.
fn copied_mismatches(row: &Row, event: &Event) -> Result<Vec<Mismatch>, tokio_postgres::Error> {
    let quoted = |v: Option<&str>| v.map_or_else(|| "NULL".to_string(), |v| format!("'{v}'"));
    let found_text = |i: usize| -> Result<String, tokio_postgres::Error> {
        Ok(quoted(row.try_get::<_, Option<&str>>(i)?))
    };
    let mut compared: Vec<(&str, String, String)> = vec![
        (
            "id",
            quoted(Some(&row.try_get::<_, uuid::Uuid>(4)?.to_string())),
            quoted(Some(&event.id.to_string())),
        ),
        (
            "captured_at",
            quoted(Some(&pgtrail_core::time::format_micros(
                &row.try_get::<_, chrono::DateTime<chrono::Utc>>(5)?,
            ))),
            quoted(Some(&pgtrail_core::time::format_micros(&event.captured_at))),
        ),
        (
            "source",
            found_text(6)?,
            quoted(Some(event.source.as_str())),
        ),
        ("kind", found_text(7)?, quoted(Some(event.kind.as_str()))),
        ("db_user", found_text(8)?, quoted(event.db_user.as_deref())),
        (
            "app_user",
            found_text(9)?,
            quoted(event.app_user.as_deref()),
        ),
        (
            "schema_name",
            found_text(10)?,
            quoted(event.schema.as_deref()),
        ),
        (
            "table_name",
            found_text(11)?,
            quoted(event.table.as_deref()),
        ),
        (
            "operation",
            found_text(12)?,
            quoted(event.operation.as_deref()),
        ),
        ("sql", found_text(14)?, quoted(event.sql.as_deref())),
        (
            "xid",
            row.try_get::<_, Option<i64>>(15)?
                .map_or_else(|| "NULL".into(), |x| x.to_string()),
            event.xid.map_or_else(|| "NULL".into(), |x| x.to_string()),
        ),
        (
            "failed",
            row.try_get::<_, bool>(16)?.to_string(),
            event.failed().to_string(),
        ),
    ];
    // jsonb keeps no text of its own (it respaces and reorders keys):
    // compare the values.
    let found_pk: Option<RawJson> = row.try_get(13)?;
    let pk_matches = match (found_pk, &event.pk) {
        (None, None) => true,
        (Some(RawJson(found)), Some(pk)) => {
            json::parse(found).is_ok_and(|v| json::eq(&v, &Value::Object(json::clone_object(pk))))
        }
        _ => false,
    };
    if !pk_matches {
        let expected = event.pk.as_ref().map(canonical_pk);
        compared.push((
            "pk",
            quoted(found_pk.map(|RawJson(t)| t)),
            quoted(expected.as_deref()),
        ));
    }
    Ok(compared
        .into_iter()
        .filter(|(_, found, expected)| found != expected)
        .map(|(column, found, expected)| Mismatch {
            column: column.to_string(),
            found,
            expected,
        })
        .collect())
}
