//! The integrity page (`/integrity`): the last verify (live from the
//! server's verify job, else read back from the trail), the checkpoints,
//! the alarms, and what the store says of each capture path; a "Verify
//! now" button (auditors only, CSRF-checked like every POST) that starts
//! the API's verify job (`api::verify::begin`, one at a time per store)
//! and a fragment htmx polls for its progress.
//!
//! With a probe of the audited databases (`capture`), the capture section
//! shows tracked tables, rows waiting to be sealed and the slot's lag.
//!
//! The store's state is `api::status::compute`, what `GET /api/v1/status`
//! answers, so the page and the API agree.

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use pgtrail_core::{Event, Filter, Kind, Source};
use serde_json::Value;

use super::view::{self, time};
use super::{html, PageError};
use crate::access::Access;
use crate::api::status;
use crate::api::verify::{self, Begin, Progress};
use crate::auth::{CsrfToken, Principal, Role};
use crate::capture::CapturePath;
use crate::AppState;

/// How far back the newest event of each capture path is looked for.
const CAPTURE_HOURS: i64 = 24;

/// Signed checkpoints listed, newest first.
const CHECKPOINTS_SHOWN: usize = 10;

/// A verify as the page shows it.
pub struct VerifyView {
    /// `running`, `ok`, `failed` (problems found), `error` (could not run) or `none`.
    pub state: &'static str,
    pub by: String,
    pub started: String,
    pub finished: String,
    pub checked: u64,
    pub head_seq: i64,
    pub problems: Vec<(i64, String)>,
    pub problem_count: u64,
    pub error: String,
    /// Read back from the trail (a verify before this server started).
    pub recorded: bool,
}

impl VerifyView {
    fn none() -> Self {
        VerifyView {
            state: "none",
            by: String::new(),
            started: String::new(),
            finished: String::new(),
            checked: 0,
            head_seq: 0,
            problems: Vec::new(),
            problem_count: 0,
            error: String::new(),
            recorded: false,
        }
    }

    fn live(p: &Progress) -> Self {
        let report = p.report.as_ref();
        VerifyView {
            state: match (p.state, p.ok) {
                ("running", _) => "running",
                ("done", Some(true)) => "ok",
                ("done", _) => "failed",
                _ => "error",
            },
            by: p.by.clone().unwrap_or_default(),
            started: p.started_at.map(time).unwrap_or_default(),
            finished: p.finished_at.map(time).unwrap_or_default(),
            checked: report.map_or(p.events_checked, |r| r.events_checked),
            head_seq: report.map_or(p.head_seq.unwrap_or(0), |r| r.head_seq),
            problems: report
                .map(|r| {
                    r.problems
                        .iter()
                        .take(20)
                        .map(|p| (p.seq, p.detail.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            problem_count: report.map_or(0, |r| r.problems.len() as u64),
            error: p.error.clone().unwrap_or_default(),
            recorded: false,
        }
    }

    /// From the `VERIFY_RESULT` access event a server recorded.
    fn recorded(event: &Event) -> Self {
        let target = event
            .context
            .as_ref()
            .and_then(|c| c.get("target"))
            .cloned()
            .unwrap_or(Value::Null);
        let int = |key: &str| target.get(key).and_then(Value::as_i64).unwrap_or(0);
        let error = target
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let first = target.get("first_problem");
        VerifyView {
            state: match (target.get("ok").and_then(Value::as_bool), error.is_empty()) {
                (_, false) => "error",
                (Some(true), true) => "ok",
                _ => "failed",
            },
            by: event.app_user.clone().unwrap_or_default(),
            started: String::new(),
            finished: time(event.captured_at),
            checked: u64::try_from(int("events_checked")).unwrap_or(0),
            head_seq: int("head_seq"),
            problems: first
                .map(|p| {
                    vec![(
                        p.get("seq").and_then(Value::as_i64).unwrap_or(0),
                        p.get("detail")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    )]
                })
                .unwrap_or_default(),
            problem_count: u64::try_from(int("problems")).unwrap_or(0),
            error: error.to_string(),
            recorded: true,
        }
    }
}

/// The last verify: the live job's, else the one the trail recorded.
async fn last_verify(state: &AppState) -> Result<VerifyView, PageError> {
    let live = verify::current(state);
    if live.state != "idle" {
        return Ok(VerifyView::live(&live));
    }
    Ok(verify::last_recorded(state.store.as_ref())
        .await?
        .as_ref()
        .map_or_else(VerifyView::none, VerifyView::recorded))
}

/// One signed checkpoint.
pub struct CheckpointLine {
    pub seq: i64,
    pub kind: String,
    pub time: String,
    /// The signer's key, abbreviated (its first 16 hex digits).
    pub key_id: String,
}

/// One alarm event.
pub struct AlarmLine {
    pub seq: i64,
    pub time: String,
    pub code: String,
    pub table: String,
    pub message: String,
}

/// The newest event of one capture path.
pub struct CaptureLine {
    pub source: &'static str,
    pub newest: String,
    pub seq: i64,
}

/// One capture path as its database reports it (see `capture`).
pub struct ProbeLine {
    pub path: &'static str,
    pub database: String,
    pub detail: String,
    pub warning: String,
    pub error: String,
}

impl ProbeLine {
    fn of(found: &CapturePath) -> Self {
        let mut parts = Vec::new();
        if let Some(n) = found.tables_tracked {
            parts.push(format!("{n} tables tracked"));
        }
        if let Some(n) = found.pending_rows {
            let oldest = found
                .oldest_pending_seconds
                .filter(|_| n > 0)
                .map(|s| format!(" (the oldest {s:.0} s old)"))
                .unwrap_or_default();
            parts.push(format!("{n} rows waiting to be sealed{oldest}"));
        }
        if let Some(slot) = &found.slot {
            let state = match found.slot_active {
                Some(true) => "a consumer holds it",
                Some(false) => "no consumer holds it",
                None => "state unknown",
            };
            parts.push(format!("slot {slot}: {state}"));
        }
        if let Some(bytes) = found.lag_bytes {
            let seconds = found
                .lag_seconds
                .map(|s| format!(", {s:.1} s"))
                .unwrap_or_default();
            parts.push(format!("{bytes} bytes of WAL behind{seconds}"));
        }
        ProbeLine {
            path: found.path,
            database: found.database.clone(),
            detail: parts.join("; "),
            warning: found.warning.clone().unwrap_or_default(),
            error: found.error.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "integrity.html")]
struct IntegrityPage {
    principal: Principal,
    csrf: String,
    can_verify: bool,
    verify: VerifyView,
    store: String,
    head_seq: i64,
    checkpoint_count: usize,
    newest_checkpoint: String,
    events_since: i64,
    checkpoint_warning: String,
    checkpoints: Vec<CheckpointLine>,
    gaps: Vec<String>,
    alarms: Vec<AlarmLine>,
    capture: Vec<CaptureLine>,
    /// `None`: the server was given no probe of the audited databases.
    probed: Option<Vec<ProbeLine>>,
    /// The witness servers whose cosignature of the newest signed
    /// checkpoint the store keeps, with the time each states (listed, not
    /// verified: the server holds no witness key).
    cosigners: Vec<String>,
    css: String,
    js: String,
}

#[derive(Template)]
#[template(path = "verify.html")]
struct VerifyFragment {
    verify: VerifyView,
}

/// `GET /integrity`.
pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    csrf: CsrfToken,
) -> Result<Response, PageError> {
    let store = state.store.as_ref();
    let found = status::compute(store).await?;
    let checkpoints: Vec<CheckpointLine> = store
        .checkpoints()
        .await?
        .iter()
        .rev()
        .filter(|c| c.public_key.is_some())
        .take(CHECKPOINTS_SHOWN)
        .map(|c| CheckpointLine {
            seq: c.seq,
            kind: format!("{:?}", c.kind).to_lowercase(),
            time: time(c.created_at),
            key_id: c
                .public_key
                .as_deref()
                .map(|k| k.chars().take(16).collect())
                .unwrap_or_default(),
        })
        .collect();
    let cosigners = cosigners(store, checkpoints.first().map(|c| c.seq)).await?;
    let mut capture = Vec::new();
    // Bounded by time (the stores index it): a path with no event lately
    // would otherwise be looked for through the whole trail.
    let lately = Utc::now() - chrono::Duration::hours(CAPTURE_HOURS);
    for source in [Source::Trigger, Source::Cdc, Source::Proxy] {
        let newest = store
            .query(&Filter {
                source: Some(source),
                since: Some(lately),
                limit: Some(1),
                ..Filter::default()
            })
            .await?;
        if let Some(e) = newest.first() {
            capture.push(CaptureLine {
                source: match source {
                    Source::Trigger => "trigger",
                    Source::Cdc => "cdc",
                    _ => "proxy",
                },
                newest: time(e.captured_at),
                seq: e.seq.unwrap_or_default(),
            });
        }
    }
    let probed = match &state.capture {
        Some(probe) => Some(probe.probe().await.iter().map(ProbeLine::of).collect()),
        None => None,
    };
    let verify = last_verify(&state).await?;
    let alarms: Vec<AlarmLine> = found
        .recent_alarms
        .iter()
        .filter(|e| e.kind == Kind::Alarm)
        .map(|e| AlarmLine {
            seq: e.seq.unwrap_or_default(),
            time: time(e.captured_at),
            code: e.operation.clone().unwrap_or_default(),
            table: e.qualified_table().unwrap_or_default(),
            message: e
                .context
                .as_ref()
                .and_then(|c| c.get("alarm"))
                .map(view::value_text)
                .unwrap_or_default(),
        })
        .collect();
    state
        .record_access(
            &principal,
            Access {
                action: "integrity",
                target: serde_json::json!({}),
                results: Some(alarms.len() as u64),
            },
        )
        .await?;
    html(&IntegrityPage {
        can_verify: principal.role == Role::Auditor,
        principal,
        csrf: csrf.as_str().to_string(),
        verify,
        store: found.store,
        head_seq: found.head.as_ref().map_or(0, |h| h.seq),
        checkpoint_count: found.checkpoints.count,
        newest_checkpoint: found
            .checkpoints
            .newest
            .as_ref()
            .map(|c| {
                format!(
                    "event {} at {}{}",
                    c.seq,
                    time(c.created_at),
                    if c.signed { "" } else { " (unsigned)" }
                )
            })
            .unwrap_or_else(|| "none".into()),
        events_since: found.checkpoints.events_since,
        checkpoint_warning: found.checkpoints.warning.unwrap_or_default(),
        checkpoints,
        gaps: found.alarms.into_iter().map(|a| a.message).collect(),
        alarms,
        capture,
        probed,
        cosigners,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}

/// The witnesses' cosignatures the store keeps for the newest signed
/// checkpoint's exact text (the checkpoint at `seq`): "name at time".
async fn cosigners(
    store: &dyn pgtrail_store::Store,
    seq: Option<i64>,
) -> Result<Vec<String>, PageError> {
    let Some(seq) = seq else {
        return Ok(Vec::new());
    };
    let Some(note) = store
        .checkpoints()
        .await?
        .into_iter()
        .rev()
        .find(|c| c.seq == seq && c.note.is_some())
        .and_then(|c| c.note)
        .and_then(|n| pgtrail_store::note::SignedNote::parse(&n).ok())
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for kept in store.cosignatures(seq).await? {
        if kept.checkpoint != note.text {
            continue;
        }
        let Ok(lines) = pgtrail_store::cosignature::parse_lines(&kept.line) else {
            continue;
        };
        for line in lines {
            // A cosignature's blob after the key id: 8 bytes of time, then the signature.
            let stated = line
                .signature
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .and_then(|b| i64::try_from(u64::from_be_bytes(b)).ok())
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(time)
                .unwrap_or_else(|| "an unreadable time".into());
            out.push(format!("{} at {stated}", line.name));
        }
    }
    Ok(out)
}

/// `GET /fragments/verify`: the verify's progress (polled while it runs).
/// Its last answer, the result, is recorded as the API's `GET /verify`
/// is; the polls before it showed only a count (an open tab would
/// otherwise write a record every second).
pub async fn progress(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, PageError> {
    let verify = last_verify(&state).await?;
    if verify.state != "running" {
        state
            .record_access(
                &principal,
                Access {
                    action: "verify",
                    target: serde_json::json!({ "state": verify.state }),
                    results: None,
                },
            )
            .await?;
    }
    html(&VerifyFragment { verify })
}

/// `POST /integrity/verify`: starts a verify (auditors only). htmx gets
/// the progress fragment; a plain form post goes back to the page.
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    if principal.role != Role::Auditor {
        return Err(PageError::Forbidden(
            "only an auditor may start a verify".into(),
        ));
    }
    let status = match verify::begin(&state, &principal).await {
        Ok(_) => StatusCode::ACCEPTED,
        // The one running is shown: a second start joins it.
        Err(Begin::Running) => StatusCode::CONFLICT,
        Err(Begin::Viewer) => {
            return Err(PageError::Forbidden(
                "only an auditor may start a verify".into(),
            ))
        }
        Err(Begin::Store(error)) => return Err(error.into()),
        Err(Begin::Access(error)) => return Err(error.into()),
    };
    if headers.contains_key("hx-request") {
        let mut fragment = html(&VerifyFragment {
            verify: last_verify(&state).await?,
        })?;
        // htmx swaps only 2xx answers: the status is said in a header.
        fragment.headers_mut().insert(
            "x-verify-start",
            axum::http::HeaderValue::from_static(if status == StatusCode::ACCEPTED {
                "started"
            } else {
                "running"
            }),
        );
        return Ok(fragment);
    }
    if status == StatusCode::CONFLICT {
        let body = "<!doctype html><title>Verify running</title><p>A verify is running: \
                    <a href=\"/integrity\">follow it on the integrity page</a>.</p>";
        return Ok((status, axum::response::Html(body)).into_response());
    }
    Ok(Redirect::to("/integrity").into_response())
}
