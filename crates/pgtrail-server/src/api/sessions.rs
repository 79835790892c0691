//! `GET /sessions`: failed logins first, then sessions by user and address
//! (`pgtrail sessions`, `pgtrail_store::sessions`); `GET /failures`:
//! failed logins and failed statements counted per user and per address.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use pgtrail_core::filter::AddrFilter;
use pgtrail_core::time::parse_time;
use pgtrail_core::Filter;
use pgtrail_store::sessions::{self, FailureReport, SessionReport};
use serde_json::json;

use super::params::{boolean, Params};
use super::problem::ApiResult;
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Logins read at most per request; past it the report says `partial`.
const MAX_LOGINS: usize = 100_000;

/// `GET /api/v1/sessions?since=&until=&user=&failed=`.
pub async fn report(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<SessionReport>> {
    params.only(&["since", "until", "user", "failed"])?;
    let now = Utc::now();
    let filter = Filter {
        since: params.parsed("since", |v| parse_time(v, now))?,
        until: params.parsed("until", |v| parse_time(v, now))?,
        user: params.get("user").map(str::to_string),
        failed: params.parsed("failed", boolean)?.unwrap_or(false),
        ..Filter::default()
    };
    let report = sessions::read(state.store.as_ref(), filter.clone(), MAX_LOGINS).await?;
    let logins: u64 = report.failed_logins.iter().map(|f| f.count).sum::<u64>()
        + report.sessions.iter().map(|s| s.count).sum::<u64>();
    state
        .record_access(
            &principal,
            Access {
                action: "sessions",
                target: json!({ "filter": filter }),
                results: Some(logins),
            },
        )
        .await?;
    Ok(Json(report))
}

/// Failures of each kind read at most per request.
const MAX_FAILURES: usize = 100_000;
/// Users and addresses listed at most per count.
const TOP: usize = 20;

/// `GET /api/v1/failures?since=&until=&user=&ip=`.
pub async fn failures(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<FailureReport>> {
    params.only(&["since", "until", "user", "ip"])?;
    let now = Utc::now();
    let filter = Filter {
        since: params.parsed("since", |v| parse_time(v, now))?,
        until: params.parsed("until", |v| parse_time(v, now))?,
        user: params.get("user").map(str::to_string),
        client_addr: params.parsed("ip", AddrFilter::parse)?,
        ..Filter::default()
    };
    let report =
        sessions::failures(state.store.as_ref(), filter.clone(), MAX_FAILURES, TOP).await?;
    let counted: u64 = report.logins_by_user.iter().map(|f| f.count).sum::<u64>()
        + report
            .statements_by_user
            .iter()
            .map(|f| f.count)
            .sum::<u64>();
    state
        .record_access(
            &principal,
            Access {
                action: "failures",
                target: json!({ "filter": filter }),
                results: Some(counted),
            },
        )
        .await?;
    Ok(Json(report))
}
