//! `GET /status`: what `pgtrail status` reports that the store itself
//! knows — the chain's head, how far it runs past the newest checkpoint,
//! a gap among the newest events, and the alarms recorded lately. (Capture
//! status — tracked tables, pending rows, slot lag — needs the audited
//! database, which the server does not connect to.)

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::Utc;
use pgtrail_core::alarm::Alarm;
use pgtrail_core::Event;
use pgtrail_store::freshness::{self, NewestCheckpoint};
use serde::Serialize;
use serde_json::json;

use super::params::Params;
use super::problem::ApiResult;
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// How many of the chain's newest events are checked for a gap (as `status`).
const GAP_WINDOW: usize = 1_000;
/// How far back recorded alarms are listed, and how many at most (as `status`).
const RECENT_HOURS: i64 = 24;
const RECENT_LIMIT: usize = 50;
/// The checkpoint interval a checkpoint is judged against: `[signing]
/// checkpoint_every`'s default (the server is not given the config).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(600);

/// The store's state.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Where the store is (path, or URL without password).
    pub store: String,
    pub head: Option<Head>,
    pub checkpoints: Checkpoints,
    /// What leaves the trail incomplete now (a gap among the newest events).
    pub alarms: Vec<Alarm>,
    /// Alarm events of the last 24 hours, newest first.
    pub recent_alarms: Vec<Event>,
}

/// The newest sealed event.
#[derive(Debug, Serialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

/// How far the chain runs past its newest checkpoint.
#[derive(Debug, Serialize)]
pub struct Checkpoints {
    pub count: usize,
    pub newest: Option<NewestCheckpoint>,
    /// Events no checkpoint covers yet: their removal would go unnoticed.
    pub events_since: i64,
    pub warning: Option<String>,
}

/// `GET /api/v1/status`.
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    params: Params,
) -> ApiResult<Json<Status>> {
    params.only(&[])?;
    let status = compute(state.store.as_ref()).await?;
    state
        .record_access(
            &principal,
            Access {
                action: "status",
                target: json!({}),
                results: Some(status.recent_alarms.len() as u64),
            },
        )
        .await?;
    Ok(Json(status))
}

/// The store's state, as `GET /status` answers it and the integrity page
/// shows it (one computation, so they agree).
pub(crate) async fn compute(
    store: &dyn pgtrail_store::Store,
) -> Result<Status, pgtrail_store::StoreError> {
    let now = Utc::now();
    let head = store.head().await?;
    let checkpoints = store.checkpoints().await?;
    let fresh = freshness::checkpoint_freshness(head.as_ref(), &checkpoints, CHECKPOINT_EVERY, now);
    let gap = pgtrail_store::health::recent_gap(store, GAP_WINDOW).await?;
    let since = now - chrono::Duration::hours(RECENT_HOURS);
    let recent_alarms = pgtrail_store::health::recent_alarms(store, since, RECENT_LIMIT).await?;
    Ok(Status {
        store: store.location(),
        head: head.map(|h| Head {
            seq: h.seq,
            hash: h.hash,
        }),
        checkpoints: Checkpoints {
            count: checkpoints.len(),
            newest: fresh.newest,
            events_since: fresh.events_since,
            warning: fresh.stale.map(|s| s.to_string()),
        },
        alarms: gap.into_iter().collect(),
        recent_alarms,
    })
}
