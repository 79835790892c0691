//! `POST /verify` starts a verify of the whole store in the background
//! (`pgtrail_store::verify`, one at a time); `GET /verify` shows its
//! progress and, once done, its report.
//!
//! The server is not given signing keys, so checkpoint signatures are not
//! checked here (the report says so): `pgtrail verify` with the public key
//! is the proof; this is the dashboard's quick look.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use pgtrail_store::{VerifyOptions, VerifyReport};
use serde::Serialize;
use serde_json::json;

use super::params::Params;
use super::problem::{ApiResult, Problem};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// The verify of one store: the one running or the last one finished.
#[derive(Clone, Default)]
pub struct VerifyJob(Arc<Mutex<Option<Run>>>);

/// The verify job of each store this process serves, by its location: one
/// at a time per store, however many routers serve it.
static JOBS: LazyLock<Mutex<HashMap<String, VerifyJob>>> = LazyLock::new(Default::default);

/// The verify job of `state`'s store.
fn job_of(state: &AppState) -> VerifyJob {
    let mut jobs = JOBS.lock().unwrap_or_else(|e| e.into_inner());
    jobs.entry(state.store.location()).or_default().clone()
}

/// One verify.
struct Run {
    by: String,
    started_at: DateTime<Utc>,
    /// The chain's head when it started: how far it will walk, about.
    head_seq: i64,
    checked: Arc<AtomicU64>,
    outcome: Option<(DateTime<Utc>, Result<VerifyReport, String>)>,
}

/// What `GET /verify` answers.
#[derive(Debug, Serialize)]
pub struct Progress {
    /// `idle` (none yet), `running`, `done` or `failed` (could not run).
    pub state: &'static str,
    pub by: Option<String>,
    #[serde(with = "pgtrail_core::time::micros_opt")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(with = "pgtrail_core::time::micros_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    pub events_checked: u64,
    pub head_seq: Option<i64>,
    /// Whether checkpoint signatures were checked (never, here).
    pub signatures_checked: bool,
    /// True when nothing was found wrong; set when done.
    pub ok: Option<bool>,
    pub report: Option<VerifyReport>,
    /// Why it could not run; set when failed.
    pub error: Option<String>,
}

impl VerifyJob {
    fn running(&self) -> bool {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|run| run.outcome.is_none())
    }

    fn progress(&self) -> Progress {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(run) = guard.as_ref() else {
            return Progress {
                state: "idle",
                by: None,
                started_at: None,
                finished_at: None,
                events_checked: 0,
                head_seq: None,
                signatures_checked: false,
                ok: None,
                report: None,
                error: None,
            };
        };
        let (state, finished_at, report, error) = match &run.outcome {
            None => ("running", None, None, None),
            Some((at, Ok(report))) => ("done", Some(*at), Some(report.clone()), None),
            Some((at, Err(error))) => ("failed", Some(*at), None, Some(error.clone())),
        };
        Progress {
            state,
            by: Some(run.by.clone()),
            started_at: Some(run.started_at),
            finished_at,
            events_checked: run.checked.load(Ordering::Relaxed),
            head_seq: Some(run.head_seq),
            signatures_checked: false,
            ok: report.as_ref().map(VerifyReport::ok),
            report,
            error,
        }
    }
}

/// `GET /api/v1/verify`.
pub async fn progress(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Progress>> {
    params.only(&[])?;
    let job = job_of(&state);
    let progress = job.progress();
    state
        .record_access(
            &principal,
            Access {
                action: "verify",
                target: json!({ "state": progress.state }),
                results: None,
            },
        )
        .await?;
    Ok(Json(progress))
}

/// `POST /api/v1/verify`: 202 with the progress of the verify it started,
/// 409 while one runs.
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<(StatusCode, Json<Progress>)> {
    params.only(&[])?;
    let job = job_of(&state);
    let running = || Problem::conflict("a verify is running; follow it with GET /api/v1/verify");
    if job.running() {
        return Err(running());
    }
    let head_seq = state.store.head().await?.map_or(0, |h| h.seq);
    state
        .record_access(
            &principal,
            Access {
                action: "verify",
                target: json!({ "start": true, "head_seq": head_seq }),
                results: None,
            },
        )
        .await?;
    let mut guard = job.0.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_some_and(|run| run.outcome.is_none()) {
        return Err(running());
    }
    let checked = Arc::new(AtomicU64::new(0));
    *guard = Some(Run {
        by: principal.name.clone(),
        started_at: Utc::now(),
        head_seq,
        checked: Arc::clone(&checked),
        outcome: None,
    });
    drop(guard);
    let (store, finished) = (Arc::clone(&state.store), job.clone());
    tokio::spawn(async move {
        let options = VerifyOptions::default();
        let outcome = pgtrail_store::verify_with_progress(store.as_ref(), &options, &checked)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "api: verify could not run");
                "the store could not be read to the end; the server's log says why".to_string()
            });
        crate::metrics::verified(outcome.as_ref().is_ok_and(VerifyReport::ok));
        let mut guard = finished.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(run) = guard.as_mut() {
            run.outcome = Some((Utc::now(), outcome));
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job.progress())))
}
