//! `GET /events.ndjson` and `GET /events.csv`: every event a search
//! matches, newest first, streamed a page at a time (never the whole
//! result in memory). A store failure mid-way aborts the response, so a
//! cut-off export never looks complete.
//!
//! NDJSON is exact: one event per line, as the store holds it. CSV is for
//! spreadsheets: one column per event field (objects and lists as compact
//! JSON), RFC 4180 quoting, and any text cell starting with `=`, `+`, `-`,
//! `@`, a tab or a carriage return prefixed with `'` so a spreadsheet shows
//! it as text instead of running it as a formula (CSV injection). Use the
//! NDJSON export where exact values matter.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::{stream, StreamExt as _};
use pgtrail_core::{Event, Filter};
use serde_json::{json, Value};

use super::params::{Params, FILTER_PARAMS};
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Events read per round trip.
pub const PAGE: usize = 1_000;

/// The CSV columns: every field of an event, in the schema's order.
pub const CSV_COLUMNS: [&str; 38] = [
    "seq",
    "id",
    "source",
    "kind",
    "captured_at",
    "db_user",
    "app_user",
    "client_addr",
    "client_port",
    "application_name",
    "backend_pid",
    "session_id",
    "context",
    "provenance",
    "database",
    "schema",
    "table",
    "operation",
    "objects",
    "pk",
    "old",
    "new",
    "changed",
    "partial",
    "sql",
    "params",
    "class",
    "command_tag",
    "rows",
    "duration_us",
    "sqlstate",
    "error",
    "xid",
    "lsn",
    "committed_at",
    "tx_seq",
    "prev_hash",
    "hash",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

/// `GET /api/v1/events.ndjson`.
pub async fn ndjson(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Response> {
    export(state, principal, params, Format::Ndjson).await
}

/// `GET /api/v1/events.csv`.
pub async fn csv(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Response> {
    export(state, principal, params, Format::Csv).await
}

async fn export(
    state: AppState,
    principal: Principal,
    params: Params,
    format: Format,
) -> ApiResult<Response> {
    params.only(&FILTER_PARAMS)?;
    let filter = params.filter(Utc::now())?;
    let name = match format {
        Format::Ndjson => "ndjson",
        Format::Csv => "csv",
    };
    // Recorded before the first byte; how many events it will hold is not known yet.
    state
        .record_access(
            &principal,
            Access {
                action: "export",
                target: json!({ "filter": filter, "format": name }),
                results: None,
            },
        )
        .await?;
    let first = match format {
        Format::Csv => Some(Bytes::from(csv_header())),
        Format::Ndjson => None,
    };
    let pages = stream::unfold(Some(filter), move |cursor| {
        let state = state.clone();
        let principal = principal.clone();
        async move {
            let mut filter = cursor?;
            filter.limit = Some(PAGE);
            match state.store.query(&filter).await {
                Ok(events) => {
                    let next = match events.last().and_then(|e| e.seq) {
                        Some(last) if events.len() == PAGE => Some(Filter {
                            before_seq: Some(last),
                            ..filter
                        }),
                        _ => None,
                    };
                    if events.is_empty() {
                        return None;
                    }
                    let events = super::events::present_all(&principal, events);
                    Some((Ok(encode(&events, format)), next))
                }
                Err(error) => {
                    let problem = Problem::store(&error);
                    Some((Err(std::io::Error::other(problem.detail)), None))
                }
            }
        }
    });
    let body = stream::iter(first.map(Ok)).chain(pages);
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let disposition = format!("attachment; filename=\"pgtrail-events.{name}\"");
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A page of events in the export's format.
fn encode(events: &[Event], format: Format) -> Bytes {
    let mut out = Vec::with_capacity(events.len() * 512);
    for event in events {
        match format {
            Format::Ndjson => {
                if serde_json::to_writer(&mut out, event).is_ok() {
                    out.push(b'\n');
                }
            }
            Format::Csv => out.extend_from_slice(csv_row(event).as_bytes()),
        }
    }
    Bytes::from(out)
}

/// The CSV header line.
pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// One event as a CSV line (CRLF-terminated, as RFC 4180 has it).
pub fn csv_row(event: &Event) -> String {
    let value = serde_json::to_value(event).unwrap_or(Value::Null);
    let mut line = String::new();
    for (i, column) in CSV_COLUMNS.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        match value.get(column) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => line.push_str(&csv_text(text)),
            Some(Value::Number(n)) => line.push_str(&n.to_string()),
            Some(Value::Bool(b)) => line.push_str(if *b { "true" } else { "false" }),
            Some(other) => line.push_str(&csv_text(&other.to_string())),
        }
    }
    line.push_str("\r\n");
    line
}

/// A text cell: neutralised against formulas, quoted when it holds a
/// comma, a quote or a line break (quotes doubled).
pub fn csv_text(text: &str) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let cell = if formula {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}
