//! A row's page: its history with field diffs, the row as of a moment,
//! blame, and revert as SQL (shown, never run).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::{Event, RowRef};
use pgtrail_store::{revert, row};
use serde::Deserialize;

use super::view::{self, Who};
use super::{event, html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct RowParams {
    /// The moment to show the row at (`datetime-local`, UTC).
    #[serde(default)]
    at: String,
    /// Show the SQL that puts the row back as it was after this event.
    #[serde(default)]
    revert: String,
    /// Show the SQL that undoes this event's transaction.
    #[serde(default)]
    undo: String,
    /// Open every diff.
    #[serde(default)]
    expand: String,
}

struct Change {
    column: String,
    before: String,
    after: String,
}

struct Version {
    seq: i64,
    time: String,
    operation: String,
    who: Option<Who>,
    db_user: String,
    changes: Vec<Change>,
    has_tx: bool,
}

struct Blame {
    column: String,
    value: String,
    seq: i64,
    who: String,
    time: String,
}

struct AsOfView {
    at: String,
    state: String,
    values: Vec<(String, String)>,
    seq: Option<i64>,
}

struct RevertView {
    title: String,
    sql: Result<String, String>,
}

#[derive(Template)]
#[template(path = "row.html")]
struct RowPage {
    principal: Principal,
    table: String,
    pk: String,
    base: String,
    history: Vec<Version>,
    expand: bool,
    blame: Option<Vec<Blame>>,
    as_of: Option<AsOfView>,
    at_value: String,
    revert: Option<RevertView>,
    css: String,
    js: String,
}

/// A moment in any form the search box takes (`yesterday`, psql's
/// timestamptz, RFC 3339, …) or a `datetime-local` value
/// (`2026-12-06T02:19`, seconds optional) read as UTC.
fn parse_at(text: &str) -> Result<DateTime<Utc>, PageError> {
    let text = text.trim();
    if let Ok(at) = pgtrail_core::time::parse_time(text, Utc::now()) {
        return Ok(at);
    }
    [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .map(|t| t.and_utc())
    .ok_or_else(|| {
        PageError::BadRequest(format!("'{text}' is not a moment (e.g. 2026-12-06T02:19)"))
    })
}

fn seq(text: &str, name: &str) -> Result<Option<i64>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| PageError::BadRequest(format!("{name} must be an event's seq")))
}

fn values(values: &pgtrail_core::event::JsonObject) -> Vec<(String, String)> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), view::value_text(v)))
        .collect()
}

fn shown(value: &Option<serde_json::Value>) -> String {
    value
        .as_ref()
        .map(view::value_text)
        .unwrap_or_else(|| "(absent)".into())
}

pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Path((table, pk)): Path<(String, String)>,
    Query(params): Query<RowParams>,
) -> Result<Response, PageError> {
    let bad = |e: pgtrail_core::filter::FilterError| PageError::BadRequest(e.to_string());
    let row_ref = RowRef {
        table: TableName::parse(&table).map_err(bad)?,
        pk: PkFilter::parse(&pk).map_err(bad)?,
    };
    let at = (!params.at.trim().is_empty())
        .then(|| parse_at(&params.at))
        .transpose()?;
    let revert_to = seq(&params.revert, "revert")?;
    let undo = seq(&params.undo, "undo")?;
    let events: Vec<Event> = state.store.row_events(&row_ref).await?;
    // The transaction to undo: its events near the chosen one.
    let undo_events = match undo.map(|s| events.iter().find(|e| e.seq == Some(s))) {
        Some(Some(chosen)) => {
            let mut tx = event::transaction_of(&state, chosen).await?;
            tx.push(chosen.clone());
            Some(tx)
        }
        Some(None) => {
            return Err(PageError::NotFound(
                "that event is not a change of this row".into(),
            ))
        }
        None => None,
    };
    state
        .record_access(
            &principal,
            Access {
                action: "row",
                target: serde_json::json!({
                    "table": row_ref.table.to_string(),
                    "pk": row_ref.pk.canonical(),
                    "at": at,
                    "revert": revert_to,
                    "undo": undo,
                }),
                results: Some((events.len() + undo_events.as_ref().map_or(0, Vec::len)) as u64),
            },
        )
        .await?;
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| view::present(&principal, e))
        .collect();

    let history = row::history(&events)
        .into_iter()
        .map(|entry| Version {
            seq: entry.event.seq.unwrap_or_default(),
            time: view::time(row::event_time(&entry.event)),
            operation: entry.event.operation.clone().unwrap_or_default(),
            who: view::who(&entry.event),
            db_user: entry.event.db_user.clone().unwrap_or_default(),
            has_tx: entry.event.xid.is_some(),
            changes: entry
                .changes
                .iter()
                .map(|c| Change {
                    column: c.column.clone(),
                    before: shown(&c.old),
                    after: shown(&c.new),
                })
                .collect(),
        })
        .collect();
    let blame = row::blame(&events).map(|lines| {
        lines
            .into_iter()
            .map(|line| Blame {
                column: line.column,
                value: view::value_text(&line.value),
                seq: line.event.seq.unwrap_or_default(),
                who: line.event.actor().unwrap_or("").to_string(),
                time: view::time(row::event_time(&line.event)),
            })
            .collect()
    });
    let as_of = at.map(|at| {
        let (state, values, seq) = match row::as_of(&events, at) {
            row::AsOf::NotYetExisting { .. } => ("did not exist yet".to_string(), Vec::new(), None),
            row::AsOf::Existing { values: v, last } => (
                "existed with these values".to_string(),
                values(&v),
                last.seq,
            ),
            row::AsOf::Deleted { by } => ("had been deleted".to_string(), Vec::new(), by.seq),
        };
        AsOfView {
            at: view::time(at),
            state,
            values,
            seq,
        }
    });
    let revert = match (revert_to, undo_events) {
        (Some(seq), _) => Some(RevertView {
            title: format!("Revert to the row as it was after event {seq}"),
            sql: revert::to_version(&events, seq).map_err(|e| e.to_string()),
        }),
        (None, Some(tx)) => Some(RevertView {
            title: format!("Undo the transaction of event {}", undo.unwrap_or_default()),
            sql: revert::undo_transaction(&tx).map_err(|e| e.to_string()),
        }),
        (None, None) => None,
    };
    let table_text = view::table_text(&row_ref.table);
    let pk_text = view::pk_text(&row_ref.pk.0);
    html(&RowPage {
        principal,
        base: format!(
            "/rows/{}/{}",
            view::encode(&table_text),
            view::encode(&pk_text)
        ),
        table: table_text,
        pk: pk_text,
        history,
        expand: !params.expand.is_empty(),
        blame,
        as_of,
        at_value: params.at.clone(),
        revert,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}
