//! The schema-changes page: DDL grouped by transaction, newest first, the
//! way a reviewer reads a migration (who ran it, from where, when, every
//! command and its SQL), with words over the commands' SQL and "older" by
//! cursor. The grouping is `pgtrail_store::ddl::group_by_transaction`, as
//! `pgtrail ddl` and `GET /api/v1/ddl` use it.

use askama::Template;
use axum::extract::{Query, State};
use pgtrail_core::{Event, Filter, Kind};
use pgtrail_store::ddl::{group_by_transaction, DdlTransaction};
use serde::Deserialize;

use super::view::{self, query_string};
use super::{html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Commands per page.
const PAGE: usize = 100;
/// SQL longer than this (or of more lines) is collapsed behind its first line.
const SHORT_SQL: usize = 160;
/// The longest `q=` taken: words over SQL, not a document.
const MAX_Q: usize = 4096;

#[derive(Debug, Default, Deserialize)]
pub struct DdlParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    before: String,
}

/// One command of a transaction as the page shows it.
pub struct Command {
    pub seq: i64,
    pub time: String,
    pub operation: String,
    pub object: String,
    /// The whole SQL, and its first line when it is long enough to collapse.
    pub sql: String,
    pub summary: Option<String>,
    /// The same text as the command before it: trigger capture records the
    /// whole query string the client sent (`current_query()`), so each
    /// command of a script sent at once carries all of it.
    pub same_as_above: bool,
    pub failed: bool,
    pub outcome: String,
}

/// One transaction as the page shows it.
pub struct Migration {
    pub xid: Option<i64>,
    pub time: String,
    pub database: String,
    pub db_user: String,
    pub who: Option<view::Who>,
    pub client: String,
    pub application: String,
    /// The search for every event of the transaction (`tx:`), when it has an xid.
    pub events_link: Option<String>,
    pub commands: Vec<Command>,
    /// The page ended inside it: its earlier commands are on the older page.
    pub continued: bool,
}

fn command(event: &Event) -> Command {
    let sql = event.sql.clone().unwrap_or_default();
    let first = sql.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let long = sql.chars().count() > SHORT_SQL || sql.trim().lines().count() > 1;
    Command {
        seq: event.seq.unwrap_or_default(),
        time: view::time(event.captured_at),
        operation: event.operation.clone().unwrap_or_default(),
        object: event
            .qualified_table()
            .or_else(|| event.objects.first().cloned())
            .unwrap_or_default(),
        summary: long.then(|| {
            let cut: String = first.chars().take(SHORT_SQL).collect();
            format!("{} …", cut.trim_end())
        }),
        sql,
        same_as_above: false,
        failed: event.failed(),
        outcome: view::outcome(event),
    }
}

fn migration(group: &DdlTransaction) -> Migration {
    let first = group.events.first();
    let text = |f: fn(&Event) -> Option<String>| first.and_then(f).unwrap_or_default();
    Migration {
        xid: group.xid,
        time: view::time(group.at),
        database: text(|e| e.database.clone()),
        db_user: text(|e| e.db_user.clone()),
        who: first.and_then(view::who),
        client: text(|e| {
            e.client_addr.clone().map(|addr| match e.client_port {
                Some(port) => format!("{addr} port {port}"),
                None => addr,
            })
        }),
        application: text(|e| e.application_name.clone()),
        events_link: group
            .xid
            .map(|xid| format!("/?{}", query_string(&[("q", &format!("tx:{xid}"))]))),
        commands: group
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut c = command(e);
                c.same_as_above = i > 0 && !c.sql.is_empty() && group.events[i - 1].sql == e.sql;
                c
            })
            .collect(),
        continued: false,
    }
}

#[derive(Template)]
#[template(path = "ddl.html")]
struct DdlPage {
    principal: crate::auth::Principal,
    q: String,
    migrations: Vec<Migration>,
    older: Option<String>,
    /// Back to the newest page, from an older one.
    newest: Option<String>,
    css: String,
    js: String,
}

/// `GET /ddl?q=words&before=SEQ`.
pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<DdlParams>,
) -> Result<axum::response::Response, PageError> {
    if params.q.len() > MAX_Q {
        return Err(PageError::BadRequest(format!(
            "the search is longer than {MAX_Q} bytes"
        )));
    }
    let before = super::search::seq_param(&params.before, "before")?;
    let words = params.q.trim();
    let filter = Filter {
        kind: Some(Kind::Ddl),
        // Words over the commands' SQL, as `GET /api/v1/ddl?q=`: never query syntax.
        search: (!words.is_empty()).then(|| words.to_string()),
        before_seq: before,
        limit: Some(PAGE + 1),
        ..Filter::default()
    };
    let mut events = state.store.query(&filter).await?;
    let more = events.len() > PAGE;
    events.truncate(PAGE);
    state
        .record_access(
            &principal,
            Access {
                action: "ddl",
                target: serde_json::json!({ "q": &params.q, "filter": &filter }),
                results: Some(events.len() as u64),
            },
        )
        .await?;
    let cursor = events.last().and_then(|e| e.seq);
    let events: Vec<Event> = events
        .into_iter()
        .rev()
        .map(|e| view::present(&principal, e))
        .collect();
    // Grouped oldest first (the order the grouping reads), shown newest first.
    let mut migrations: Vec<Migration> =
        group_by_transaction(events).iter().map(migration).collect();
    if more {
        // The oldest transaction on the page may go on below the cursor.
        if let Some(oldest) = migrations.first_mut() {
            oldest.continued = true;
        }
    }
    migrations.reverse();
    let older = more
        .then_some(cursor)
        .flatten()
        .map(|seq| query_string(&[("q", &params.q), ("before", &seq.to_string())]));
    html(&DdlPage {
        principal,
        q: params.q.clone(),
        migrations,
        older,
        newest: before.map(|_| query_string(&[("q", &params.q)])),
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}
