//! `GET /tail`: the live tail, as server-sent events. Each new event the
//! filter matches is sent as it is sealed (`id:` its seq, `data:` the
//! event's JSON), oldest first; a reconnecting client's `Last-Event-ID`
//! resumes after the last event it got, so nothing sealed meanwhile is
//! missed. The store's head is polled every [`POLL`]: one cheap read when
//! nothing is new.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::stream;
use pgtrail_core::{Event, Filter};
use serde_json::json;

use super::params::{cursor, Params, FILTER_PARAMS};
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::{present, Principal};
use crate::AppState;

/// How often the store's head is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// New events read per query while catching up.
const PAGE: usize = 500;

/// `GET /api/v1/tail?…filters` (`Last-Event-ID` or `after=SEQ` to resume).
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    let mut allowed: Vec<&str> = FILTER_PARAMS
        .iter()
        .copied()
        .filter(|p| *p != "before")
        .collect();
    allowed.push("after");
    params.only(&allowed)?;
    let filter = params.filter(Utc::now())?;
    let resume = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| "not text")
                .and_then(cursor)
                .map_err(|e| Problem::bad_parameter("Last-Event-ID", e))?,
        ),
        None => params.parsed("after", cursor)?,
    };
    let after = match resume {
        Some(seq) => seq,
        None => state.store.head().await?.map_or(0, |h| h.seq),
    };
    state
        .record_access(
            &principal,
            Access {
                action: "tail",
                target: json!({ "filter": filter, "after": after }),
                results: None,
            },
        )
        .await?;
    let events = stream::unfold(
        Tail {
            state,
            principal,
            filter,
            after,
            read_to: after,
            ready: Vec::new(),
            caught_up: true,
        },
        |mut tail| async move {
            loop {
                if let Some(event) = tail.ready.pop() {
                    let event = present(&tail.principal, event);
                    let seq = event.seq.unwrap_or(tail.after);
                    tail.after = tail.after.max(seq);
                    let sse = Sse::default()
                        .id(seq.to_string())
                        .json_data(&event)
                        .unwrap_or_else(|_| Sse::default().comment("unencodable event"));
                    return Some((Ok::<_, Infallible>(sse), tail));
                }
                // Every match up to `read_to` was sent.
                tail.after = tail.after.max(tail.read_to);
                if tail.caught_up {
                    tokio::time::sleep(POLL).await;
                }
                // A token revoked while the stream is open ends it.
                if !crate::auth::still_admitted(&tail.state, &tail.principal) {
                    return None;
                }
                match newer(&tail.state, &tail.filter, tail.after).await {
                    // Newest first: popped from the end, the oldest goes first.
                    Ok((events, read_to, caught_up)) => {
                        tail.ready = events;
                        tail.read_to = read_to;
                        tail.caught_up = caught_up;
                    }
                    Err(error) => {
                        // Logged; the next poll tries again.
                        Problem::store(&error);
                        tail.caught_up = true;
                    }
                }
            }
        },
    );
    Ok(axum::response::Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Where one tail is.
struct Tail {
    state: AppState,
    /// Whose tail: what its role may see of each event.
    principal: Principal,
    filter: Filter,
    /// The last seq sent, or skipped as not matching.
    after: i64,
    /// How far `ready` was read.
    read_to: i64,
    /// Matches not sent yet, newest first.
    ready: Vec<Event>,
    /// False while the chain runs further past `read_to` than one read takes.
    caught_up: bool,
}

/// The chain positions one read looks at, at most: what bounds a tail's
/// memory when it resumes far behind or a burst arrives.
const MAX_WINDOW: i64 = 10_000;

/// The events `filter` matches with `seq > after`, at most [`MAX_WINDOW`]
/// positions on, newest first; the position they were read to; and whether
/// that is the head. Nothing is read but the head when it has not moved.
pub(crate) async fn newer(
    state: &AppState,
    filter: &Filter,
    after: i64,
) -> pgtrail_store::Result<(Vec<Event>, i64, bool)> {
    let head = state.store.head().await?.map_or(0, |h| h.seq);
    if head <= after {
        return Ok((Vec::new(), after, true));
    }
    let read_to = head.min(after.saturating_add(MAX_WINDOW));
    let mut found = Vec::new();
    let mut page = Filter {
        before_seq: Some(read_to + 1),
        limit: Some(PAGE),
        ..filter.clone()
    };
    loop {
        let events = state.store.query(&page).await?;
        let full = events.len() == PAGE;
        let mut reached = false;
        for event in events {
            if event.seq.is_some_and(|s| s > after) {
                page.before_seq = event.seq;
                found.push(event);
            } else {
                reached = true;
                break;
            }
        }
        if reached || !full {
            return Ok((found, read_to, read_to == head));
        }
    }
}
