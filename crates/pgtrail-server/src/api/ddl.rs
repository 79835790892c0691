//! `GET /ddl`: schema changes grouped by transaction, oldest first, the
//! way a reviewer reads a migration (`pgtrail ddl`,
//! `pgtrail_store::ddl::group_by_transaction`), with `q=` words over the
//! commands' SQL.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use pgtrail_core::filter::TableName;
use pgtrail_core::time::parse_time;
use pgtrail_core::{Filter, Kind};
use pgtrail_store::ddl::{group_by_transaction, DdlTransaction};
use serde::Serialize;
use serde_json::json;

use super::params::Params;
use super::problem::ApiResult;
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Commands read when `limit` is not given, and at most.
const DEFAULT_COMMANDS: usize = 500;
const MAX_COMMANDS: usize = 5_000;

/// Schema changes.
#[derive(Debug, Serialize)]
pub struct Ddl {
    /// Oldest first.
    pub transactions: Vec<DdlTransaction>,
    /// True when more commands matched than `limit`: only the newest were
    /// read (the oldest transaction may be missing some of its commands).
    pub partial: bool,
}

/// `GET /api/v1/ddl?q=&user=&table=&since=&until=&limit=`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Ddl>> {
    params.only(&["q", "user", "table", "since", "until", "limit"])?;
    let limit = params.limit(DEFAULT_COMMANDS, MAX_COMMANDS)?;
    let now = Utc::now();
    let filter = Filter {
        kind: Some(Kind::Ddl),
        // Keywords only: `q=` here is words over the SQL, not the search language.
        search: params.get("q").map(str::to_string),
        user: params.get("user").map(str::to_string),
        table: params.parsed("table", TableName::parse)?,
        since: params.parsed("since", |v| parse_time(v, now))?,
        until: params.parsed("until", |v| parse_time(v, now))?,
        limit: Some(limit + 1),
        ..Filter::default()
    };
    let mut events = state.store.query(&filter).await?;
    let partial = events.len() > limit;
    events.truncate(limit);
    events.reverse();
    let transactions = group_by_transaction(events);
    state
        .record_access(
            &principal,
            Access {
                action: "ddl",
                target: json!({ "filter": filter }),
                results: Some(transactions.iter().map(|t| t.events.len() as u64).sum()),
            },
        )
        .await?;
    Ok(Json(Ddl {
        transactions,
        partial,
    }))
}
