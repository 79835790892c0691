//! The search page: one box, results newest first, "older" by cursor, and a
//! live tail that polls for events newer than the newest shown.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use pgtrail_core::filter::TableName;
use pgtrail_core::{Event, Filter, Kind, Source};
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

/// The search page's query: the box (`q`) and the discrete filters links use.
#[derive(Debug, Default, Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    table: String,
    #[serde(default)]
    op: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    failed: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    tail: String,
}

impl SearchParams {
    /// The filter these parameters ask for (at most `limit` events).
    fn filter(&self, limit: usize) -> Result<Filter, PageError> {
        let bad = |e: String| PageError::BadRequest(e);
        let mut filter = Filter::default();
        let q = self.q.trim();
        if !q.is_empty() {
            filter.search = Some(q.to_string());
        }
        let set = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_string());
        if let Some(user) = set(&self.user) {
            filter.user = Some(user);
        }
        if let Some(table) = set(&self.table) {
            filter.table = Some(TableName::parse(&table).map_err(|e| bad(e.to_string()))?);
        }
        if let Some(op) = set(&self.op) {
            filter.operation = Some(op);
        }
        if let Some(kind) = set(&self.kind) {
            filter.kind = Some(kind.parse::<Kind>().map_err(bad)?);
        }
        if let Some(source) = set(&self.source) {
            filter.source = Some(source.parse::<Source>().map_err(bad)?);
        }
        if matches!(self.failed.as_str(), "1" | "true" | "on") {
            filter.failed = true;
        }
        filter.limit = Some(limit);
        Ok(filter)
    }

    fn before(&self) -> Result<Option<i64>, PageError> {
        seq_param(&self.before, "before")
    }

    /// The query string of these parameters but the cursors, plus `extra`.
    fn link(&self, extra: &[(&str, &str)]) -> String {
        let mut pairs = vec![
            ("q", self.q.as_str()),
            ("user", self.user.as_str()),
            ("table", self.table.as_str()),
            ("op", self.op.as_str()),
            ("kind", self.kind.as_str()),
            ("source", self.source.as_str()),
            ("failed", self.failed.as_str()),
        ];
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
) -> Result<(Results, Filter), PageError> {
    let mut filter = params.filter(PAGE)?;
    let before = params.before()?;
    // Until the store's cursor lands: ask for enough to cut at `before`.
    let events: Vec<Event> = page_before(state, &mut filter, before).await?;
    state
        .record_access(
            principal,
            Access {
                action: "search",
                target: serde_json::json!({ "filter": &filter, "before": before }),
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
    Ok((Results { lines, older }, filter))
}

/// The events of `filter` with `seq < before`, newest first, at most a page.
async fn page_before(
    state: &AppState,
    filter: &mut Filter,
    before: Option<i64>,
) -> Result<Vec<Event>, PageError> {
    let Some(before) = before else {
        return Ok(state.store.query(filter).await?);
    };
    let mut wanted = PAGE;
    loop {
        filter.limit = Some(wanted);
        let events = state.store.query(filter).await?;
        let exhausted = events.len() < wanted;
        let page: Vec<Event> = events
            .into_iter()
            .filter(|e| e.seq.is_some_and(|s| s < before))
            .take(PAGE)
            .collect();
        if page.len() == PAGE || exhausted {
            filter.limit = Some(PAGE);
            return Ok(page);
        }
        wanted = wanted.saturating_mul(4);
    }
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    principal: Principal,
    params_q: String,
    results: Results,
    filters: Vec<(String, String)>,
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
    let (results, _) = results(&state, &principal, &params).await?;
    let tail_on = !params.tail.is_empty();
    let head = results.lines.first().map(|l| l.seq);
    let head = match head {
        Some(seq) => seq,
        None => state.store.head().await?.map_or(0, |h| h.seq),
    };
    let tail = tail_on.then(|| params.link(&[("after", &head.to_string())]));
    let tail_toggle = if tail_on {
        params.link(&[])
    } else {
        params.link(&[("tail", "1")])
    };
    let filters = [
        ("user", &params.user),
        ("table", &params.table),
        ("op", &params.op),
        ("kind", &params.kind),
        ("source", &params.source),
        ("failed", &params.failed),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.clone()))
    .collect();
    html(&SearchPage {
        principal,
        params_q: params.q.clone(),
        results,
        filters,
        tail,
        tail_on,
        tail_toggle,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
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
    let (results, _) = results(&state, &principal, &params).await?;
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
                    target: serde_json::json!({ "filter": &filter, "after": after }),
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
