//! `GET /reports/{name}`: the reports of `pgtrail_store::reports` (bulk
//! changes, after hours, DELETE spikes, who read a row) as JSON, with the
//! parameters the dashboard's report forms take. Each is recorded as an
//! access (`REPORT`) before it answers.

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use pgtrail_store::reports::{self, ParamError, MAX_COUNT, MAX_SCAN};
use serde::Serialize;
use serde_json::json;

use super::params::Params;
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

fn bad(error: ParamError) -> Problem {
    Problem::bad_parameter(error.parameter, error.detail)
}

/// Records the report `name` run with `params`, `results` lines long.
pub(crate) async fn record(
    state: &AppState,
    principal: &Principal,
    name: &str,
    params: &impl Serialize,
    results: usize,
) -> Result<(), crate::access::AccessError> {
    state
        .record_access(
            principal,
            Access {
                action: "report",
                target: json!({ "report": name, "params": params }),
                results: Some(results as u64),
            },
        )
        .await
}

/// `GET /api/v1/reports/bulk-changes`.
pub async fn bulk_changes(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<reports::BulkReport>> {
    params.only(&["since", "until", "threshold", "table"])?;
    let p = reports::BulkParams::parse(&|n| params.get(n), Utc::now()).map_err(bad)?;
    let report = reports::bulk_changes(state.store.as_ref(), &p, MAX_COUNT).await?;
    record(&state, &principal, "bulk-changes", &p, report.rows.len()).await?;
    Ok(Json(report))
}

/// `GET /api/v1/reports/after-hours`.
pub async fn after_hours(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<reports::AfterHoursReport>> {
    params.only(&["since", "until", "hours", "days", "tz"])?;
    let p = reports::AfterHoursParams::parse(&|n| params.get(n), Utc::now()).map_err(bad)?;
    let report = reports::after_hours(state.store.as_ref(), &p, MAX_SCAN).await?;
    record(&state, &principal, "after-hours", &p, report.events.len()).await?;
    Ok(Json(report))
}

/// `GET /api/v1/reports/delete-spikes`.
pub async fn delete_spikes(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<reports::SpikeReport>> {
    params.only(&["since", "until", "multiple", "min", "table"])?;
    let p = reports::SpikeParams::parse(&|n| params.get(n), Utc::now()).map_err(bad)?;
    let report = reports::delete_spikes(state.store.as_ref(), &p, MAX_COUNT).await?;
    record(&state, &principal, "delete-spikes", &p, report.spikes.len()).await?;
    Ok(Json(report))
}

/// `GET /api/v1/reports/who-read`. A viewer's report never looks at
/// statement parameters (it would tell what they hold).
pub async fn who_read(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<reports::WhoReadReport>> {
    params.only(&["since", "until", "table", "pk"])?;
    let p = reports::WhoReadParams::parse(&|n| params.get(n), Utc::now()).map_err(bad)?;
    let report =
        reports::who_read(state.store.as_ref(), &p, principal.sees_params(), MAX_SCAN).await?;
    record(&state, &principal, "who-read", &p, report.reads.len()).await?;
    Ok(Json(report))
}
