//! The search page: one box, results newest first, "older" by cursor, and a
//! live tail that polls for events newer than the newest shown.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use pgtrail_core::search::{parse_search, Facets};
use pgtrail_core::{Event, Filter, Kind};
use serde::Deserialize;

use super::view::{self, query_string, EventLine};
use super::{html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Events per page (and per "older" fragment).
const PAGE: usize = 50;
/// How many new events one tail poll shows at most.
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

fn seq_param(text: &str, name: &str) -> Result<Option<i64>, PageError> {
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
    with_facets: bool,
) -> Result<(Results, Option<Facets>), PageError> {
    let filter = params.filter(PAGE)?;
    let events: Vec<Event> = state.store.query(&filter).await?;
    // Counted before the access record, so they count what the list shows.
    let facets = match with_facets {
        true => Some(state.store.facets(&filter, super::facets::TOP).await?),
        false => None,
    };
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
    Ok((Results { lines, older }, facets))
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    principal: Principal,
    params_q: String,
    results: Results,
    facets: Vec<super::facets::FacetView>,
    facets_complete: bool,
    facets_counted: u64,
    /// Why the search was refused (shown above the box).
    error: Option<String>,
    tail: Option<String>,
    tail_on: bool,
    tail_toggle: String,
    css: String,
    js: String,
}

pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let (results, error, facets) = match results(&state, &principal, &params, true).await {
        Ok((results, facets)) => (results, None, facets),
        // A search the language refuses: the page again, with the reason.
        Err(PageError::BadRequest(why)) => (
            Results {
                lines: Vec::new(),
                older: None,
            },
            Some(why),
            None,
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
        results,
        facets_complete: facets.as_ref().is_none_or(|f| f.complete),
        facets_counted: facets.as_ref().map_or(0, |f| f.counted),
        facets: facets
            .as_ref()
            .map(|f| super::facets::views(f, &params.q))
            .unwrap_or_default(),
        error,
        tail,
        tail_on,
        tail_toggle,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
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
    let (results, _) = results(&state, &principal, &params, false).await?;
    html(&Older { results })
}

#[derive(Template)]
#[template(path = "tail.html")]
struct Tail {
    lines: Vec<EventLine>,
    next: String,
    more: bool,
}

/// Events newer than `after` that the search matches, newest first, and the
/// poller that asks again in two seconds from the newest one.
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SearchParams>,
) -> Result<Response, PageError> {
    let after = seq_param(&params.after, "after")?.unwrap_or(0);
    let filter = params.filter(TAIL)?;
    let events: Vec<Event> = state
        .store
        .query(&filter)
        .await?
        .into_iter()
        .filter(|e| e.seq.is_some_and(|s| s > after))
        // The tail's own access records would feed it forever.
        .filter(|e| !(e.kind == Kind::Access && e.operation.as_deref() == Some("TAIL")))
        .collect();
    let more = events.len() == TAIL;
    let newest = events.first().and_then(|e| e.seq).unwrap_or(after);
    // A poll that found nothing showed nothing: only polls that show events
    // are recorded (else an open tab writes an event every two seconds).
    if !events.is_empty() {
        state
            .record_access(
                &principal,
                Access {
                    action: "tail",
                    target: serde_json::json!({ "q": &params.q, "filter": &filter, "after": after }),
                    results: Some(events.len() as u64),
                },
            )
            .await?;
    }
    let lines = events
        .into_iter()
        .map(|e| EventLine::new(&view::present(&principal, e)))
        .collect();
    html(&Tail {
        lines,
        next: params.link(&[("tail", "1"), ("after", &newest.to_string())]),
        more,
    })
}
