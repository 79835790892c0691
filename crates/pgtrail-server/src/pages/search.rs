//! The search page: one box, results newest first, "older" by cursor, and a
//! live tail of events newer than the newest shown, as server-sent events.
//! The facets of the search come in a second request (`/fragments/facets`,
//! htmx on load): counting up to 200,000 matches must not hold the results
//! back.

use askama::Template;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use futures_util::stream;
use pgtrail_core::search::parse_search;
use pgtrail_core::{Event, Filter, Kind};
use serde::Deserialize;

use super::view::{self, query_string, EventLine};
use super::{html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Events per page (and per "older" fragment).
const PAGE: usize = 50;
/// How many new events one tail message shows at most.
const TAIL: usize = 50;

/// The search page's query: the box (`q`, the search language of
/// `pgtrail_core::search`), the cursors, and the live tail switch.
#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    tail: String,
}

impl SearchParams {
    /// The filter the box asks for (at most `limit` events).
    fn filter(&self, limit: usize) -> Result<Filter, PageError> {
        let mut filter =
            parse_search(&self.q, Utc::now()).map_err(|e| PageError::BadRequest(e.to_string()))?;
        filter.limit = Some(limit);
        filter.before_seq = seq_param(&self.before, "before")?;
        Ok(filter)
    }

    /// The query string of this search (no cursor), plus `extra`.
    fn link(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![("q", self.q.as_str())];
        pairs.extend_from_slice(extra);
        query_string(&pairs)
    }
}

pub(super) fn seq_param(text: &str, name: &str) -> Result<Option<i64>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| PageError::BadRequest(format!("{name} must be an event's seq")))
}

/// One page of results and the link to the next older page.
struct Results {
    lines: Vec<EventLine>,
    /// The query string of the next older page, when there may be one.
    older: Option<String>,
}

/// Reads one page of events older than `before` (all when `None`),
/// recording the access first.
async fn results(
    state: &AppState,
    principal: &Principal,
    params: &SearchParams,
) -> Result<Results, PageError> {
    let filter = params.filter(PAGE)?;
    let events: Vec<Event> = state.store.query(&filter).await?;
    state
        .record_access(
            principal,
            Access {
                action: "search",
                target: serde_json::json!({ "q": &params.q, "filter": &filter }),
                results: Some(events.len() as u64),
            },
        )
        .await?;
    let older = (events.len() == PAGE)
        .then(|| events.last().and_then(|e| e.seq))
        .flatten()
        .map(|seq| params.link(&[("before", &seq.to_string())]));
    let lines = events
        .into_iter()
        .map(|e| EventLine::new(&view::present(principal, e)))
        .collect();
    Ok(Results { lines, older })
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    principal: Principal,
    params_q: String,
    results: Results,
    /// The query string of the search's facets fragment, when it is valid.
    facets: Option<String>,
    /// Why the search was refused (shown above the box).
    error: Option<String>,
    tail: Option<String>,
    tail_on: bool,
    tail_toggle: String,
    css: String,
    js: String,
    /// htmx's SSE extension, loaded only with the live tail on.
    sse_js: String,
}

pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let (results, error) = match results(&state, &principal, &params).await {
        Ok(results) => (results, None),
        // A search the language refuses: the page again, with the reason.
        Err(PageError::BadRequest(why)) => (
            Results {
                lines: Vec::new(),
                older: None,
            },
            Some(why),
        ),
        Err(e) => return Err(e),
    };
    let tail_on = !params.tail.is_empty() && error.is_none();
    let head = match results.lines.first().map(|l| l.seq) {
        Some(seq) => seq,
        None => state.store.head().await?.map_or(0, |h| h.seq),
    };
    let tail = tail_on.then(|| params.link(&[("after", &head.to_string())]));
    let tail_toggle = if tail_on {
        params.link(&[])
    } else {
        params.link(&[("tail", "1")])
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = html(&SearchPage {
        principal,
        params_q: params.q.clone(),
        facets: error.is_none().then(|| params.link(&[])),
        results,
        error,
        tail,
        tail_on,
        tail_toggle,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
        sse_js: super::asset_path("htmx-ext-sse.min.js"),
    })?;
    Ok((status, page).into_response())
}

#[derive(Template)]
#[template(path = "older.html")]
struct Older {
    results: Results,
}

/// The next older page, for the "older" button (htmx swaps it in).
pub async fn older(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let results = results(&state, &principal, &params).await?;
    html(&Older { results })
}

#[derive(Template)]
#[template(path = "facets.html")]
struct FacetsFragment {
    facets: Vec<super::facets::FacetView>,
    complete: bool,
    counted: u64,
}

/// The facets of a search, for the search page's second request: counts
/// of the matching events by user, table, operation, source and outcome,
/// each value a link that narrows the search. Counts tell of the events,
/// so the access is recorded first, as for the results.
pub async fn facets(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let mut filter = params.filter(PAGE)?;
    filter.limit = None;
    let facets = state.store.facets(&filter, super::facets::TOP).await?;
    state
        .record_access(
            &principal,
            Access {
                action: "facets",
                target: serde_json::json!({ "q": &params.q, "filter": &filter }),
                results: Some(facets.counted),
            },
        )
        .await?;
    html(&FacetsFragment {
        facets: super::facets::views(&facets, &params.q),
        complete: facets.complete,
        counted: facets.counted,
    })
}

#[derive(Template)]
#[template(path = "tail.html")]
struct Tail {
    lines: Vec<EventLine>,
    more: bool,
}

/// Where one page's live tail is.
struct Following {
    state: AppState,
    principal: Principal,
    q: String,
    filter: Filter,
    /// Every match up to here was sent (or skipped as not matching).
    after: i64,
    /// False while the chain runs further past `after` than one read takes.
    caught_up: bool,
}

/// The live tail: server-sent events (htmx's SSE extension swaps each in
/// at the top of the list), one `events` message of rows per batch of
/// new events the search matches, newest first; its `id` is the newest
/// seq read, so a reconnecting browser's `Last-Event-ID` resumes after
/// it. Each message that shows events records an access first; when that
/// record cannot be written, the stream ends and shows nothing more.
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let resume = match headers.get("last-event-id") {
        Some(value) => seq_param(value.to_str().unwrap_or("x"), "Last-Event-ID")?,
        None => seq_param(&params.after, "after")?,
    };
    let after = match resume {
        Some(seq) => seq,
        None => state.store.head().await?.map_or(0, |h| h.seq),
    };
    let mut filter = params.filter(TAIL)?;
    filter.before_seq = None;
    let following = Following {
        state,
        principal,
        q: params.q,
        filter,
        after,
        caught_up: true,
    };
    let messages = stream::unfold(following, |mut tail| async move {
        loop {
            if tail.caught_up {
                tokio::time::sleep(crate::api::tail::POLL).await;
            }
            if !crate::auth::still_admitted(&tail.state, &tail.principal) {
                // Its token was revoked (or the local operator's door
                // closed) while the tab stayed open: nothing more is shown.
                return None;
            }
            let (events, read_to, caught_up) =
                match crate::api::tail::newer(&tail.state, &tail.filter, tail.after).await {
                    Ok(found) => found,
                    Err(error) => {
                        tracing::warn!(%error, "live tail: cannot read the trail; trying again");
                        tail.caught_up = true;
                        continue;
                    }
                };
            let from = tail.after;
            tail.after = tail.after.max(read_to);
            tail.caught_up = caught_up;
            let events: Vec<Event> = events
                .into_iter()
                // The tail's own access records would feed it forever.
                .filter(|e| !(e.kind == Kind::Access && e.operation.as_deref() == Some("TAIL")))
                .collect();
            if events.is_empty() {
                continue;
            }
            let more = events.len() > TAIL;
            let shown = events.len().min(TAIL);
            let recorded = tail
                .state
                .record_access(
                    &tail.principal,
                    Access {
                        action: "tail",
                        target: serde_json::json!({ "q": &tail.q, "filter": &tail.filter, "after": from }),
                        results: Some(shown as u64),
                    },
                )
                .await;
            if let Err(error) = recorded {
                // Not recorded, not shown: the stream ends.
                tracing::error!(%error, "live tail: the access cannot be recorded; ending the tail");
                return None;
            }
            let lines = events
                .into_iter()
                .take(TAIL)
                .map(|e| EventLine::new(&view::present(&tail.principal, e)))
                .collect();
            let message = match (Tail { lines, more }).render() {
                Ok(rows) => Sse::default()
                    .event("events")
                    .id(tail.after.to_string())
                    .data(rows),
                Err(error) => {
                    tracing::error!(%error, "live tail: cannot render");
                    return None;
                }
            };
            return Some((Ok::<_, Infallible>(message), tail));
        }
    });
    Ok(axum::response::Sse::new(messages)
        .keep_alive(KeepAlive::default())
        .into_response())
}
