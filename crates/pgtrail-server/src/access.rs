//! The audit of the auditors: every search, export, event, row and status
//! read through the server becomes an `access` event in the trail (who,
//! from where, what they asked for, how many events it returned), and so
//! do logins, failed logins and logouts.
//!
//! A read is answered only after its record is durable, and refused (503)
//! when it cannot be made durable: never served unrecorded. Durable means,
//! with an access spool (`AppState::with_access_spool`, what `pgtrail
//! serve` and `pgtrail run` give), fsync'd in the spool, which drains into
//! the store in batches ([`crate::access_spool`]); without one, appended to
//! the store by a group commit: one writer task takes every access record
//! waiting and appends them in one `Store::append`, then answers each
//! caller; while it appends, the next batch gathers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::Store;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Principal, Role};
use crate::AppState;

/// Most records appended in one batch.
const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before callers wait to queue.
const QUEUE: usize = 8192;

/// One read through the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// What was read: `search`, `export`, `event`, `row`, `ddl`, `sessions`,
    /// `status`, `verify`, `tail`, …
    pub action: &'static str,
    /// What was asked for: the filter, the row, the event (JSON).
    pub target: Value,
    /// How many events the answer held, when it is a list.
    pub results: Option<u64>,
}

/// The access record could not be written: the read must not be answered.
/// As a response: 503, `application/problem+json`, no detail (the reason
/// goes to the log).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot record this access in the trail: {0}")]
pub struct AccessError(Arc<str>);

impl AccessError {
    pub(crate) fn new(reason: impl std::fmt::Display) -> Self {
        AccessError(reason.to_string().into())
    }
}

impl From<pgtrail_store::StoreError> for AccessError {
    fn from(error: pgtrail_store::StoreError) -> Self {
        AccessError(error.to_string().into())
    }
}

impl IntoResponse for AccessError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self, "read refused: its access record cannot be written");
        crate::auth::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Access not recorded",
            "the trail cannot record this read right now, so it is not answered; try again later",
        )
    }
}

impl AppState {
    /// Appends the access event of `access` by `who`; durable on return.
    pub async fn record_access(&self, who: &Principal, access: Access) -> Result<(), AccessError> {
        self.record(access_event(who, access)).await
    }

    /// Makes `event` (an access event) durable: in the access spool, else
    /// in the store through the group-commit writer.
    pub(crate) async fn record(&self, event: Event) -> Result<(), AccessError> {
        if let Some(spool) = &self.access_spool {
            return spool.push(event).await;
        }
        let writer = self
            .access
            .get_or_init(|| AccessWriter::start(self.store.clone()));
        let (done, answer) = oneshot::channel();
        let stopped = || AccessError("the access writer stopped".into());
        writer
            .queue
            .send((event, done))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The access event of `access` by `who`.
pub fn access_event(who: &Principal, access: Access) -> Event {
    let mut event = server_event(who.client, access.action);
    event.app_user = Some(who.name.clone());
    event.rows = access.results.map(|n| n as i64);
    let mut context = Map::new();
    context.insert("role".into(), Value::from(who.role.as_str()));
    context.insert("target".into(), access.target);
    event.context = Some(context);
    event
}

/// A login the server refused: from where, through which door, why. The
/// presented token is never in it (a mistyped real token would leak).
pub fn failed_login_event(client: Option<SocketAddr>, door: &str, reason: &str) -> Event {
    let mut event = server_event(client, "login");
    event.error = Some(reason.to_string());
    let mut context = Map::new();
    context.insert("door".into(), Value::from(door));
    event.context = Some(context);
    event
}

/// A token created or revoked (`pgtrail token`): `action` is
/// `token_create` or `token_revoke`; `by` is who ran the command, as the
/// OS environment claims it.
pub fn token_event(action: &str, name: &str, role: Role, by: Option<&str>) -> Event {
    let mut event = Event::new(Source::Server, Kind::Access);
    event.operation = Some(action.to_ascii_uppercase());
    event.app_user = by.map(str::to_string);
    let mut context = Map::new();
    context.insert("token".into(), Value::from(name));
    context.insert("role".into(), Value::from(role.as_str()));
    event.context = Some(context);
    event
}

fn server_event(client: Option<SocketAddr>, action: &str) -> Event {
    let mut event = Event::new(Source::Server, Kind::Access);
    event.operation = Some(action.to_ascii_uppercase());
    if let Some(client) = client {
        event.client_addr = Some(client.ip().to_canonical().to_string());
        event.client_port = Some(i32::from(client.port()));
    }
    event
}

type Pending = (Event, oneshot::Sender<Result<(), AccessError>>);

/// The handle of the writer task; the task ends when the last handle goes.
pub(crate) struct AccessWriter {
    queue: mpsc::Sender<Pending>,
}

impl AccessWriter {
    fn start(store: Arc<dyn Store>) -> AccessWriter {
        let (queue, inbox) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, inbox));
        AccessWriter { queue }
    }
}

async fn write_batches(store: Arc<dyn Store>, mut inbox: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while inbox.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, callers): (Vec<Event>, Vec<_>) = batch.drain(..).unzip();
        let outcome = append(store.as_ref(), &events).await;
        if outcome.is_err() && events.len() > 1 {
            // One record the store refuses (a hostile filter) must not
            // refuse the reads of the others: each alone, then.
            for (event, caller) in events.iter().zip(callers) {
                let _ = caller.send(append(store.as_ref(), std::slice::from_ref(event)).await);
            }
            continue;
        }
        for caller in callers {
            // A caller that went away (client hung up) needs no answer.
            let _ = caller.send(outcome.clone());
        }
    }
}

async fn append(store: &dyn Store, events: &[Event]) -> Result<(), AccessError> {
    let started = std::time::Instant::now();
    store.append(events).await.map_err(AccessError::from)?;
    pgtrail_store::metrics::Tally::of(events).record(started.elapsed());
    Ok(())
}
