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
    /// Across capture paths: the proxy's statements of the event's
    /// transaction and the row changes they made (`pgtrail_store::link`),
    /// when the event is a proxy statement or a row change with an xid.
    pub linked: Option<Linked>,
}

/// One transaction seen from both sides: what the proxy saw run and what
/// row capture saw change.
#[derive(Debug, Serialize)]
pub struct Linked {
    /// The transaction, as `pgtrail log --tx` takes it (an xid or `PID@TIME`).
    pub tx: String,
    pub xids: Vec<i64>,
    pub backend_pid: Option<i32>,
    /// The proxy's statements, oldest first.
    pub statements: Vec<Event>,
    /// The row changes, in chain order.
    pub changes: Vec<Event>,
    /// For each change, the index in `statements` of the one that made it.
    pub made_by: Vec<Option<usize>>,
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
    let linked = linked_of(&state, &event).await?;
    let linked_count = linked
        .as_ref()
        .map_or(0, |l| l.statements.len() + l.changes.len());
    state
        .record_access(
            &principal,
            Access {
                action: "event",
                target: json!({ "seq": seq }),
                results: Some((1 + transaction.events.len() + linked_count) as u64),
            },
        )
        .await?;
    let event = present(&principal, event);
    let mut transaction = transaction;
    transaction.events = present_all(&principal, transaction.events);
    let linked = linked.map(|l| Linked {
        statements: present_all(&principal, l.statements),
        changes: present_all(&principal, l.changes),
        ..l
    });
    Ok(Json(EventView {
        event,
        transaction,
        linked,
    }))
}

/// The statements and row changes of `event`'s transaction across capture
/// paths (`pgtrail_store::link::transaction_of_event`).
async fn linked_of(state: &AppState, event: &Event) -> ApiResult<Option<Linked>> {
    use pgtrail_store::link;
    let found =
        link::transaction_of_event(&[state.store.as_ref()], event, link::default_skew()).await?;
    Ok(found.map(|(id, t)| Linked {
        tx: id.to_string(),
        xids: t.xids,
        backend_pid: t.backend_pid,
        statements: t.statements,
        changes: t.changes,
        made_by: t.made_by,
    }))
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
