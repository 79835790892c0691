//! `GET /events.ndjson` and `GET /events.csv`: every event a search
//! matches, newest first, streamed a page at a time (never the whole
//! result in memory). A store failure mid-way aborts the response, so a
//! cut-off export never looks complete.
//!
//! NDJSON is exact: one event per line, as the store holds it. CSV is for
//! spreadsheets: one column per event field (objects and lists as compact
//! JSON), RFC 4180 quoting, and any text cell starting with `=`, `+`, `-`,
//! `@`, a tab, a carriage return or `'` prefixed with `'` so a spreadsheet
//! shows it as text instead of running it as a formula (CSV injection).
//! The CSV is written by `pgtrail_sink`'s `csv` encoder, so it is the same
//! as `pgtrail export --format csv` and a CSV sink's. Use the NDJSON export
//! where exact values matter.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::{stream, StreamExt as _};
use pgtrail_core::{Event, Filter};
use pgtrail_sink::format::{Encoder, Format as EncoderFormat};
use serde_json::json;

use super::params::{Params, FILTER_PARAMS};
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Events read per round trip.
pub const PAGE: usize = 1_000;

/// The CSV columns (those of `pgtrail export --format csv`).
pub use pgtrail_sink::format::CSV_COLUMNS;

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
    let csv = Encoder::new(EncoderFormat::Csv);
    for event in events {
        match format {
            Format::Ndjson => {
                if serde_json::to_writer(&mut out, event).is_ok() {
                    out.push(b'\n');
                }
            }
            // The CSV encoder cannot fail (only JSON Lines goes through serde).
            Format::Csv => {
                let _ = csv.encode(event, &mut out);
            }
        }
    }
    Bytes::from(out)
}

/// The CSV header line.
pub fn csv_header() -> Vec<u8> {
    Encoder::new(EncoderFormat::Csv).header()
}
