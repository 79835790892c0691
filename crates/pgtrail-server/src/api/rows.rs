//! One row: `GET /rows/{table}/{pk}/history`, `/as-of?at=…` and `/blame`,
//! the same answers as `pgtrail history`, `as-of` and `blame`
//! (`pgtrail_store::row` over `Store::row_events`).
//!
//! `{table}` is `table` or `schema.table` (identifiers may be
//! double-quoted, as on the command line), `{pk}` is `id=42`, `a=1,b=x`
//! or a JSON object, percent-encoded. Both are only ever values bound in
//! the store's queries: nothing in them reaches a file path or SQL text.

use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::time::parse_time;
use pgtrail_core::{Event, RowRef};
use pgtrail_store::row::{self, AsOf, BlameLine, HistoryEntry};
use serde::Serialize;
use serde_json::json;

use super::params::{Params, MAX_VALUE_LEN};
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// A row's history, newest first, each change with its field diff.
#[derive(Debug, Serialize)]
pub struct History {
    pub row: RowRef,
    pub changes: Vec<HistoryEntry>,
}

/// A row at one moment.
#[derive(Debug, Serialize)]
pub struct RowAsOf {
    pub row: RowRef,
    #[serde(with = "pgtrail_core::time::micros")]
    pub at: chrono::DateTime<Utc>,
    #[serde(flatten)]
    pub state: AsOf,
}

/// Who set each current value of a row.
#[derive(Debug, Serialize)]
pub struct Blame {
    pub row: RowRef,
    /// False when the row does not exist now (never did, or was deleted).
    pub exists: bool,
    pub columns: Vec<BlameLine>,
}

/// `GET /api/v1/rows/{table}/{pk}/history`.
pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path((table, pk)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<History>> {
    params.only(&[])?;
    let row_ref = row_ref(&table, &pk)?;
    let events = read(&state, &principal, &row_ref, "history", None).await?;
    Ok(Json(History {
        changes: row::history(&events),
        row: row_ref,
    }))
}

/// `GET /api/v1/rows/{table}/{pk}/as-of?at=TIME`.
pub async fn as_of(
    State(state): State<AppState>,
    principal: Principal,
    Path((table, pk)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<RowAsOf>> {
    params.only(&["at"])?;
    let row_ref = row_ref(&table, &pk)?;
    let at = params
        .parsed("at", |v| parse_time(v, Utc::now()))?
        .ok_or_else(|| Problem::bad_parameter("at", "required: the moment to show the row at"))?;
    let events = read(&state, &principal, &row_ref, "as_of", Some(at)).await?;
    Ok(Json(RowAsOf {
        state: row::as_of(&events, at),
        row: row_ref,
        at,
    }))
}

/// `GET /api/v1/rows/{table}/{pk}/blame`.
pub async fn blame(
    State(state): State<AppState>,
    principal: Principal,
    Path((table, pk)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Blame>> {
    params.only(&[])?;
    let row_ref = row_ref(&table, &pk)?;
    let events = read(&state, &principal, &row_ref, "blame", None).await?;
    let columns = row::blame(&events);
    Ok(Json(Blame {
        row: row_ref,
        exists: columns.is_some(),
        columns: columns.unwrap_or_default(),
    }))
}

/// The row the path names, or a 400 saying which part is wrong.
fn row_ref(table: &str, pk: &str) -> ApiResult<RowRef> {
    for (name, value) in [("table", table), ("pk", pk)] {
        if value.len() > MAX_VALUE_LEN {
            return Err(Problem::bad_parameter(
                name,
                format!("{} bytes long; at most {MAX_VALUE_LEN}", value.len()),
            ));
        }
    }
    Ok(RowRef {
        table: TableName::parse(table)
            .map_err(|e| Problem::bad_parameter("table", e.to_string()))?,
        pk: PkFilter::parse(pk).map_err(|e| Problem::bad_parameter("pk", e.to_string()))?,
    })
}

/// The row's events, after recording who asked for which view of it.
async fn read(
    state: &AppState,
    principal: &Principal,
    row_ref: &RowRef,
    view: &str,
    at: Option<chrono::DateTime<Utc>>,
) -> ApiResult<Vec<Event>> {
    let events = state.store.row_events(row_ref).await?;
    let mut target = json!({ "row": row_ref, "view": view });
    if let Some(at) = at {
        target["at"] = json!(pgtrail_core::time::format_micros(&at));
    }
    state
        .record_access(
            principal,
            Access {
                action: "row",
                target,
                results: Some(events.len() as u64),
            },
        )
        .await?;
    Ok(super::events::present_all(principal, events))
}
