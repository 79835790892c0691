//! `GET /events` (a search, newest first, a page at a time) and
//! `GET /events/{seq}` (one event, every field, with the other events of
//! its transaction).

use axum::extract::{Path, State};
use axum::Json;
use chrono::Utc;
use pgtrail_core::{Event, Filter};
use serde::Serialize;
use serde_json::json;

use super::params::{Params, DEFAULT_LIMIT, FILTER_PARAMS, MAX_LIMIT};
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::{present, Principal};
use crate::AppState;

/// One page of a search.
#[derive(Debug, Serialize)]
pub struct Page {
    /// Newest first.
    pub events: Vec<Event>,
    /// Pass as `before=` for the next page; `null` on the last page.
    pub next: Option<i64>,
}

/// `GET /api/v1/events`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Page>> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.push("limit");
    params.only(&allowed)?;
    let limit = params.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let mut filter = params.filter(Utc::now())?;
    let mut page = page(&state, &mut filter, limit).await?;
    page.events = present_all(&principal, page.events);
    state
        .record_access(
            &principal,
            Access {
                action: "search",
                target: json!({ "filter": filter }),
                results: Some(page.events.len() as u64),
            },
        )
        .await?;
    Ok(Json(page))
}

/// The page of `filter` (from its `before_seq`) of at most `limit` events,
/// and the cursor of the next one. One event more is read to know whether
/// there is a next page, so the last page says so (no empty page after it).
pub async fn page(state: &AppState, filter: &mut Filter, limit: usize) -> ApiResult<Page> {
    filter.limit = Some(limit + 1);
    let mut events = state.store.query(filter).await?;
    filter.limit = Some(limit);
    let more = events.len() > limit;
    events.truncate(limit);
    let next = if more {
        events.last().and_then(|e| e.seq)
    } else {
        None
    };
    Ok(Page { events, next })
}

/// An event with what surrounds it.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub event: Event,
    pub transaction: Transaction,
}

/// The other events of an event's transaction.
#[derive(Debug, Serialize)]
pub struct Transaction {
    /// Chain order, the event itself left out.
    pub events: Vec<Event>,
    /// False when the transaction has more than [`MAX_TX_EVENTS`] other events.
    pub complete: bool,
}

/// Most of a transaction's other events shown with one event.
const MAX_TX_EVENTS: usize = 1000;

/// `GET /api/v1/events/{seq}`.
pub async fn one(
    State(state): State<AppState>,
    principal: Principal,
    Path(seq): Path<String>,
) -> ApiResult<Json<EventView>> {
    let seq = match seq.parse::<i64>() {
        Ok(seq) if seq > 0 => seq,
        _ => {
            return Err(Problem::bad_parameter(
                "seq",
                "expected an event's seq (a positive number)",
            ))
        }
    };
    let event = state
        .store
        .scan(seq - 1, 1)
        .await?
        .into_iter()
        .find(|e| e.seq == Some(seq))
        .ok_or_else(|| Problem::not_found(format!("no event {seq} in the trail")))?;
    let transaction = transaction_of(&state, &event).await?;
    // Statement ↔ row changes (`pgtrail_store::link`) join the view here
    // once it lands.
    state
        .record_access(
            &principal,
            Access {
                action: "event",
                target: json!({ "seq": seq }),
                results: Some(1 + transaction.events.len() as u64),
            },
        )
        .await?;
    let event = present(&principal, event);
    let mut transaction = transaction;
    transaction.events = present_all(&principal, transaction.events);
    Ok(Json(EventView { event, transaction }))
}

/// What `principal`'s role may see of each of `events`.
pub fn present_all(principal: &Principal, events: Vec<Event>) -> Vec<Event> {
    events.into_iter().map(|e| present(principal, e)).collect()
}

/// The other events of `event`'s transaction on its capture path
/// (`pgtrail_store::link::same_transaction`).
async fn transaction_of(state: &AppState, event: &Event) -> ApiResult<Transaction> {
    let (events, complete) =
        pgtrail_store::link::same_transaction(state.store.as_ref(), event, MAX_TX_EVENTS).await?;
    Ok(Transaction { events, complete })
}
