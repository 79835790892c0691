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
    match begin(&state, &principal).await {
        Ok(progress) => Ok((StatusCode::ACCEPTED, Json(progress))),
        Err(Begin::Viewer) => Err(Problem::forbidden(
            "only an auditor may start a verify; a viewer may follow it with GET /api/v1/verify",
        )),
        Err(Begin::Running) => Err(Problem::conflict(
            "a verify is running; follow it with GET /api/v1/verify",
        )),
        Err(Begin::Store(error)) => Err(error.into()),
        Err(Begin::Access(error)) => Err(error.into()),
    }
}

/// Why a verify did not start.
#[derive(Debug)]
pub(crate) enum Begin {
    /// The principal is a viewer: a verify reads every event (and loads
    /// the store), so only an auditor starts one.
    Viewer,
    /// One is running already (one at a time per store).
    Running,
    Store(pgtrail_store::StoreError),
    Access(crate::access::AccessError),
}

/// The progress of the verify of `state`'s store (the API's and the
/// integrity page's: the same job).
pub(crate) fn current(state: &AppState) -> Progress {
    job_of(state).progress()
}

/// Starts a verify of `state`'s store by `principal` in the background,
/// recording the start first; when it ends, its outcome is recorded too
/// (an access event `VERIFY_RESULT`, [`last_recorded`] reads it back), so
/// the integrity page shows the last result after a restart.
pub(crate) async fn begin(state: &AppState, principal: &Principal) -> Result<Progress, Begin> {
    if principal.role != crate::auth::Role::Auditor {
        return Err(Begin::Viewer);
    }
    let job = job_of(state);
    if job.running() {
        return Err(Begin::Running);
    }
    let head_seq = state
        .store
        .head()
        .await
        .map_err(Begin::Store)?
        .map_or(0, |h| h.seq);
    state
        .record_access(
            principal,
            Access {
                action: "verify",
                target: json!({ "start": true, "head_seq": head_seq }),
                results: None,
            },
        )
        .await
        .map_err(Begin::Access)?;
    let mut guard = job.0.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_some_and(|run| run.outcome.is_none()) {
        return Err(Begin::Running);
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
    let (state, principal, finished) = (state.clone(), principal.clone(), job.clone());
    tokio::spawn(async move {
        let options = VerifyOptions::default();
        let outcome = pgtrail_store::verify_with_progress(state.store.as_ref(), &options, &checked)
            .await
            .map_err(|error| {
                tracing::warn!(%error, "api: verify could not run");
                "the store could not be read to the end; the server's log says why".to_string()
            });
        crate::metrics::verified(outcome.as_ref().is_ok_and(VerifyReport::ok));
        let result = result_access(&outcome, checked.load(Ordering::Relaxed), head_seq);
        {
            let mut guard = finished.0.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(run) = guard.as_mut() {
                run.outcome = Some((Utc::now(), outcome));
            }
        }
        // Shown live from the job either way; the record is for after a restart.
        if let Err(error) = state.record_access(&principal, result).await {
            tracing::error!(%error, "the verify's result was not recorded in the trail");
        }
    });
    Ok(job.progress())
}

/// The operation of the access event that records a verify's outcome.
pub const RESULT_OPERATION: &str = "VERIFY_RESULT";

fn result_access(outcome: &Result<VerifyReport, String>, checked: u64, head_seq: i64) -> Access {
    let target = match outcome {
        Ok(report) => json!({
            "ok": report.ok(),
            "events_checked": report.events_checked,
            "head_seq": report.head_seq,
            "checkpoints": report.checkpoints,
            "problems": report.problems.len(),
            "first_problem": report.problems.first().map(|p| json!({ "seq": p.seq, "detail": p.detail })),
            "signatures_checked": false,
        }),
        Err(error) => {
            json!({ "ok": false, "events_checked": checked, "head_seq": head_seq, "error": error })
        }
    };
    Access {
        action: "verify_result",
        target,
        results: Some(checked),
    }
}

/// How far back [`last_recorded`] looks.
pub const RESULT_DAYS: i64 = 7;

/// The last verify result recorded in the trail by a server in the last
/// [`RESULT_DAYS`] days (any server on this store, before a restart too): when, by whom, and its target
/// (`ok`, `events_checked`, `problems`, …).
pub(crate) async fn last_recorded(
    store: &dyn pgtrail_store::Store,
) -> Result<Option<pgtrail_core::Event>, pgtrail_store::StoreError> {
    // Bounded by time (indexed in both stores): without it, a store where
    // no verify was recorded would be read through all its access events.
    let since = Utc::now() - chrono::Duration::days(RESULT_DAYS);
    let filter = pgtrail_core::Filter {
        kind: Some(pgtrail_core::Kind::Access),
        source: Some(pgtrail_core::Source::Server),
        operation: Some(RESULT_OPERATION.into()),
        since: Some(since),
        limit: Some(1),
        ..pgtrail_core::Filter::default()
    };
    Ok(store.query(&filter).await?.into_iter().next())
}
