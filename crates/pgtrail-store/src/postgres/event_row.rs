//! The mapping between an [`Event`] and a row of `pgtrail.events` (schema
//! 5): the event's canonical body once, in `body` (`text`), and beside it
//! only what readers filter and look up by (with the integer
//! [`row_key`](super::row_key) the row index holds), the seal, and the
//! partition key.
//!
//! `body` is the text that was hashed (`CanonicalBody`, without `seq`,
//! `prev_hash` and `hash`, which are columns): an event is read back from
//! it alone. The other columns are copies of body fields for indexes and
//! filters (and `failed` and `row_key`, derived from them); `verify` recomputes
//! each from the body and reports any that differs.

use std::net::IpAddr;

use pgtrail_core::filter::canonical_pk;
use pgtrail_core::{json, Event};
use postgres_types::{ToSql, Type};
use tokio_postgres::Row;

use super::json::{JsonStr, JsonText, RawJson};
use super::row_key;
use crate::Mismatch;

/// Columns of `pgtrail.events` in COPY order.
pub(super) const COLUMNS: &str = "id, seq, captured_at, source, kind, \
    db_user, app_user, schema_name, table_name, operation, pk, sql, xid, failed, \
    body, prev_hash, hash, row_key, backend_pid, client_addr";

/// Types of [`COLUMNS`], for the binary COPY.
pub(super) static COLUMN_TYPES: [Type; 20] = [
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
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::INT4,
    Type::INET,
];

/// What readers select: the event is its body plus the seal columns.
pub(super) const READ_COLUMNS: &str = "seq, body, prev_hash, hash";

/// The first `seq` whose row has its `client_addr` column written (schema
/// 17), as a scalar subquery: the rows below hold NULL there, and `ip:`
/// reads their body. Migration 17's fill, `ip:` and verify all ask this.
macro_rules! client_addr_start {
    () => {
        "(select first_seq from pgtrail.column_starts where name = 'client_addr')"
    };
}
pub(super) use client_addr_start;

/// What verify selects: [`READ_COLUMNS`], then every copied column, then
/// whether the row's `client_addr` is written ([`client_addr_start`]).
pub(super) const VERIFY_COLUMNS: &str = concat!(
    "seq, body, prev_hash, hash, \
     id, captured_at, source, kind, db_user, app_user, schema_name, table_name, operation, \
     pk, sql, xid, failed, row_key, backend_pid, client_addr, \
     coalesce(seq >= ",
    client_addr_start!(),
    ", true)"
);

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
    row_key: Option<i64>,
    client_addr: Option<IpAddr>,
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
        let pk = event.pk.as_ref().map(|pk| JsonText(canonical_pk(pk)));
        RowValues {
            event,
            seq,
            prev_hash,
            hash,
            source: event.source.as_str(),
            kind: event.kind.as_str(),
            row_key: row_key::of(event, pk.as_ref().map(|JsonText(pk)| pk.as_str())),
            pk,
            failed: event.failed(),
            body: JsonStr(body),
            client_addr: client_addr(event),
        }
    }

    /// The values in [`COLUMNS`] order.
    pub(super) fn values(&self) -> [&(dyn ToSql + Sync); 20] {
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
            &self.row_key,
            &e.backend_pid,
            &self.client_addr,
        ]
    }
}

/// The `client_addr` column of `event` (schema 17): the address its
/// `client_addr` names, as every `ip:` reads it; NULL for none, or for
/// text that is no address (in no block).
pub(super) fn client_addr(event: &Event) -> Option<IpAddr> {
    event
        .client_addr
        .as_deref()
        .and_then(pgtrail_core::filter::host_addr)
}

/// The names `events_objects` holds for `event` (`super::objects`): its
/// `objects` as `--table` looks them up
/// (`pgtrail_core::filter::object_index_names`), `None` for an event that
/// touched none (row changes, sessions). Statements only: `--table` keeps
/// matching row changes and DDL by their own table. Migration 6 also
/// filled the `object_names` column (dropped by 15) with it.
pub(super) fn object_names(event: &Event) -> Option<Vec<String>> {
    (event.kind == pgtrail_core::Kind::Statement && !event.objects.is_empty())
        .then(|| pgtrail_core::filter::object_index_names(&event.objects))
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
    if e.objects.iter().any(|o| nul(o)) {
        return Some("a Postgres text column cannot hold NUL (objects)".into());
    }
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
    // Compared as typed values; the text of a mismatch is made only when
    // there is one (verify reads every event: no strings per row).
    fn quoted(v: Option<&str>) -> String {
        v.map_or_else(|| "NULL".to_string(), |v| format!("'{v}'"))
    }
    fn number(v: Option<i64>) -> String {
        v.map_or_else(|| "NULL".into(), |x| x.to_string())
    }
    let mut mismatches = Vec::new();
    let mut check =
        |column: &str, equal: bool, found: &dyn Fn() -> String, expected: &dyn Fn() -> String| {
            if !equal {
                mismatches.push(Mismatch {
                    column: column.to_string(),
                    found: found(),
                    expected: expected(),
                });
            }
        };

    let id: uuid::Uuid = row.try_get(4)?;
    check(
        "id",
        id == event.id,
        &|| quoted(Some(&id.to_string())),
        &|| quoted(Some(&event.id.to_string())),
    );
    let captured_at: chrono::DateTime<chrono::Utc> = row.try_get(5)?;
    check(
        "captured_at",
        captured_at.timestamp_micros() == event.captured_at.timestamp_micros(),
        &|| quoted(Some(&pgtrail_core::time::format_micros(&captured_at))),
        &|| quoted(Some(&pgtrail_core::time::format_micros(&event.captured_at))),
    );
    let texts: [(&str, usize, Option<&str>); 8] = [
        ("source", 6, Some(event.source.as_str())),
        ("kind", 7, Some(event.kind.as_str())),
        ("db_user", 8, event.db_user.as_deref()),
        ("app_user", 9, event.app_user.as_deref()),
        ("schema_name", 10, event.schema.as_deref()),
        ("table_name", 11, event.table.as_deref()),
        ("operation", 12, event.operation.as_deref()),
        ("sql", 14, event.sql.as_deref()),
    ];
    for (column, index, expected) in texts {
        let found: Option<&str> = row.try_get(index)?;
        check(column, found == expected, &|| quoted(found), &|| {
            quoted(expected)
        });
    }
    let xid: Option<i64> = row.try_get(15)?;
    check("xid", xid == event.xid, &|| number(xid), &|| {
        number(event.xid)
    });
    let failed: bool = row.try_get(16)?;
    check(
        "failed",
        failed == event.failed(),
        &|| failed.to_string(),
        &|| event.failed().to_string(),
    );
    let found_key: Option<i64> = row.try_get(17)?;
    let expected_key = row_key::of_event(event);
    check(
        "row_key",
        found_key == expected_key,
        &|| number(found_key),
        &|| number(expected_key),
    );
    let pid: Option<i32> = row.try_get(18)?;
    check(
        "backend_pid",
        pid == event.backend_pid,
        &|| number(pid.map(i64::from)),
        &|| number(event.backend_pid.map(i64::from)),
    );
    // Written from schema 17 on: an event stored before may have NULL
    // (`ip:` reads its body), any other must have what the body names.
    let addr: Option<IpAddr> = row.try_get(19)?;
    let written: bool = row.try_get(20)?;
    let expected_addr = client_addr(event);
    check(
        "client_addr",
        addr == expected_addr || (addr.is_none() && !written),
        &|| quoted(addr.map(|a| a.to_string()).as_deref()),
        &|| quoted(expected_addr.map(|a| a.to_string()).as_deref()),
    );
    // jsonb keeps no text of its own (it respaces and reorders keys):
    // compare the values.
    let found_pk: Option<RawJson> = row.try_get(13)?;
    let pk_matches = match (found_pk, &event.pk) {
        (None, None) => true,
        (Some(RawJson(found)), Some(pk)) => {
            json::parse(found).is_ok_and(|v| v.as_object().is_some_and(|v| json::eq_object(v, pk)))
        }
        _ => false,
    };
    check(
        "pk",
        pk_matches,
        &|| quoted(found_pk.map(|RawJson(t)| t)),
        &|| quoted(event.pk.as_ref().map(canonical_pk).as_deref()),
    );
    Ok(mismatches)
}
