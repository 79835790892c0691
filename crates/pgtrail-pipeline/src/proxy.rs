//! The statement proxy as a pipeline source: its events go through the
//! spool into the store, and no result reaches a client before its event
//! is in the spool.
//!
//! One path, in order: every event the proxy makes (statements, connects,
//! failed logins, disconnects) is pushed to the [`Spool`] by the session
//! that made it, before the session releases the result it completes
//! (`pgtrail_proxy`'s hold-back); one drainer ([`Spool::run`]) appends the
//! spool to the store, oldest first. The store skips ids it already has,
//! so a batch replayed after a crash (stored, not yet marked drained) is
//! stored once.
//!
//! - `durability = "async"`: a push returns once the batch is written to
//!   the spool's file (a kill -9 of pgtrail loses none of it); the spool's
//!   syncer fsyncs within milliseconds, without the result waiting.
//! - `durability = "strict"`: a push returns once the batch is fsync'd.
//! - A full spool with `when_full = "fail_closed"`: the push is refused,
//!   the session holds the result and tries again, and new statements and
//!   logins are refused ([`pgtrail_proxy::REFUSED_SQLSTATE`]) until the
//!   spool has room. With `fail_open` the batch is dropped, counted durably
//!   and reported as an `alarm` event once the spool drains.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::config::{Durability, IdentityConfig, ProxyConfig, WhenTrailFull};
use pgtrail_core::Event;
use pgtrail_proxy::{
    serve_until, Happened, ProxyError, Recorder, SessionContext, SessionRecorder, SessionStats,
    StartupInfo, Trail, TrailError, Upstream,
};
use pgtrail_store::open::redact_url;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bypass::{Backends, Seen};
use crate::retry::Backoff;
use crate::spool::{Pushed, Spool, SpoolError, SpoolOptions, WhenFull};

/// How long a stopping proxy waits for the spool to drain into the store
/// before it leaves the rest for the next start.
pub const DRAIN_ON_STOP: Duration = Duration::from_secs(10);

/// How long the drainer lets the proxy's events gather in the spool before
/// it appends them to the store (they are safe in the spool meanwhile).
pub const DRAIN_LINGER: Duration = Duration::from_millis(100);

/// Why the proxy part stopped for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyRunError {
    /// The `[proxy]` policy is invalid.
    #[error("[proxy]: {0}")]
    Policy(String),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] pgtrail_store::StoreError),
    /// The proxy itself stopped.
    #[error("the proxy stopped")]
    Proxy(#[source] ProxyError),
}

/// What the proxy part runs on.
pub struct ProxyPart {
    /// Where clients connect.
    pub listener: TcpListener,
    /// The server.
    pub upstream: Upstream,
    /// `[proxy]`: durability, when_full, what to log.
    pub proxy: ProxyConfig,
    /// `[identity]`: where application users are claimed.
    pub identity: IdentityConfig,
    /// The spool (open); `None` with `log = "none"` (audit off).
    pub spool: Option<Spool>,
    /// The store the spool drains into.
    pub store_url: String,
    /// Where the backends of the proxy's sessions are registered, for the
    /// bypass alarm (`crate::bypass`).
    pub backends: Option<Arc<Backends>>,
}

/// The spool options `[proxy]` asks for.
pub fn spool_options(proxy: &ProxyConfig) -> SpoolOptions {
    let max_bytes = proxy.spool_max_mb.max(1) << 20;
    let default = SpoolOptions::default();
    SpoolOptions {
        max_bytes,
        // Segments are freed whole once drained: several per spool, so a
        // full spool frees room while sessions keep pushing.
        segment_bytes: default.segment_bytes.min(max_bytes / 8),
        when_full: match proxy.when_full {
            WhenTrailFull::FailClosed => WhenFull::FailClosed,
            WhenTrailFull::FailOpen => WhenFull::FailOpen,
        },
        // Sessions push a statement or two at a time: draining each push
        // into the store on its own cost a store transaction and two
        // fsyncs per statement, the proxy's largest CPU cost (bench/proxy).
        drain_linger: DRAIN_LINGER,
    }
}

/// Whether `[proxy] log` turns recording off (`"none"`).
pub fn audit_off(proxy: &ProxyConfig) -> bool {
    proxy
        .log
        .iter()
        .any(|level| level.eq_ignore_ascii_case("none"))
}

/// Runs the proxy until `stop`: serves clients, records into the spool,
/// drains the spool into the store. On stop it stops accepting, ends the
/// sessions once their events are written, fsyncs the spool and waits up
/// to [`DRAIN_ON_STOP`] for it to drain (what remains drains at the next
/// start).
pub async fn run(part: ProxyPart, stop: watch::Receiver<bool>) -> Result<(), ProxyRunError> {
    let mut stopped = stop.clone();
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    let Some(spool) = part.spool else {
        // Audit off: forward only.
        let off = Off {
            backends: part.backends,
        };
        return serve_until(part.listener, part.upstream, Arc::new(off), shutdown)
            .await
            .map_err(ProxyRunError::Proxy);
    };
    let recorder = Recorder::new(&part.proxy, &part.identity)
        .map_err(|e| ProxyRunError::Policy(e.to_string()))?;
    let trail = Arc::new(SpoolTrail {
        recorder: Arc::new(recorder),
        spool: spool.clone(),
        strict: part.proxy.durability == Durability::Strict,
        max_bytes: spool_options(&part.proxy).max_bytes,
        full: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        backends: part.backends,
    });

    // The drainer stops after the proxy, so the last events drain too.
    let (drain_stop, drain_stopped) = watch::channel(false);
    let drainer = tokio::spawn(drain(spool.clone(), part.store_url, drain_stopped));

    let served = serve_until(part.listener, part.upstream, trail.clone(), shutdown).await;
    if let Err(error) = spool.sync().await {
        tracing::error!(%error, "proxy: the spool's last fsync failed");
    }
    let deadline = Instant::now() + DRAIN_ON_STOP;
    while !spool.is_empty() && Instant::now() < deadline && !drainer.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = spool.waiting();
    if waiting.batches > 0 {
        tracing::warn!(
            batches = waiting.batches,
            "proxy: stopping with events still in the spool; they drain into the store at the next start"
        );
    }
    let _ = drain_stop.send(true);
    let drained = drainer.await.map_err(|e| SpoolError::Task(e.to_string()))?;
    served.map_err(ProxyRunError::Proxy)?;
    drained
}

/// The spool's drainer: opens the store (waiting while a Postgres store is
/// away) and appends whatever is pushed, until `stop`.
async fn drain(
    spool: Spool,
    store_url: String,
    stop: watch::Receiver<bool>,
) -> Result<(), ProxyRunError> {
    let meanwhile = "the proxy's events wait in the spool";
    let Some(store) = crate::store::open_patiently(&store_url, meanwhile, stop.clone()).await?
    else {
        return Ok(());
    };
    tracing::info!(store = %redact_url(&store_url), dir = %spool.dir().display(), "proxy: draining the spool into the store");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let mut stop = stop;
    spool.run(&*store, &mut backoff, &mut stop).await?;
    Ok(())
}

/// The trail `pgtrail proxy` and `pgtrail run` record into: events from the
/// events engine, pushed to the spool.
struct SpoolTrail {
    recorder: Arc<Recorder>,
    spool: Spool,
    strict: bool,
    max_bytes: u64,
    /// A push was refused for lack of room (fail_closed).
    full: AtomicBool,
    /// Events dropped by a full spool (fail_open) since the start.
    dropped: AtomicU64,
    backends: Option<Arc<Backends>>,
}

/// One session's recorder, and its backend registered while it lives.
struct Session {
    recorder: SessionRecorder,
    _backend: Option<Seen>,
}

/// Registers the backend of a session that logged in.
fn seen(backends: &Option<Arc<Backends>>, context: &SessionContext) -> Option<Seen> {
    match (backends, context.backend_pid) {
        (Some(backends), Some(pid)) => Some(backends.opened(pid)),
        _ => None,
    }
}

/// Room a full spool must have again before new statements are taken.
fn headroom(max_bytes: u64) -> u64 {
    (max_bytes / 20).max(64 * 1024)
}

impl Trail for SpoolTrail {
    type Recorder = Session;
    type Event = Event;

    fn open(&self, context: Arc<SessionContext>, startup: &StartupInfo) -> Session {
        let backend = seen(&self.backends, &context);
        let mut recorder = self.recorder.session(context);
        recorder.startup(startup);
        Session {
            recorder,
            _backend: backend,
        }
    }

    fn prepare(session: &mut Session, sql: &str) {
        session.recorder.prepare(sql);
    }

    fn event(session: &mut Session, what: Happened<'_>) -> Option<Event> {
        let recorder = &mut session.recorder;
        match what {
            Happened::Connected { at } => recorder.logs_session().then(|| recorder.connected(at)),
            Happened::LoginFailed { error, at } => recorder
                .logs_session()
                .then(|| recorder.login_failed(error, at)),
            Happened::Parameter { name, value } => {
                recorder.parameter_status(name, value);
                None
            }
            Happened::Statement(record) => recorder.statement(record),
            Happened::Disconnected { stats, at } => {
                let stats = SessionStats {
                    statements: stats.statements,
                    bytes_from_client: stats.bytes_from_client,
                    bytes_to_client: stats.bytes_to_client,
                    started_at: stats.started_at.unwrap_or(at),
                };
                recorder
                    .logs_session()
                    .then(|| recorder.disconnected(&stats, at))
            }
        }
    }

    async fn write(&self, events: &mut Vec<Event>) -> Result<(), TrailError> {
        let pushed = if self.strict {
            self.spool.push_taking(events).await
        } else {
            self.spool.push_async_taking(events).await
        };
        match pushed {
            // The refusal ends only once the spool has room again (see
            // `refusal`), not when a small batch happened to fit.
            Ok(Pushed::Spooled) => Ok(()),
            Ok(Pushed::Dropped { events }) => {
                let total = self.dropped.fetch_add(events, Ordering::Relaxed) + events;
                tracing::error!(
                    dropped_now = events,
                    dropped_since_start = total,
                    "proxy: the spool is full and when_full = \"fail_open\": events DROPPED, not stored (an alarm event reports them once the spool drains)"
                );
                Ok(())
            }
            Err(error @ SpoolError::Full { .. }) => {
                self.full.store(true, Ordering::Relaxed);
                Err(TrailError::Full(error.to_string()))
            }
            Err(error) => Err(TrailError::Failed(error.to_string())),
        }
    }

    fn refusal(&self) -> Option<String> {
        if !self.full.load(Ordering::Relaxed) {
            return None;
        }
        let used = self.spool.waiting().disk_bytes;
        if used + headroom(self.max_bytes) <= self.max_bytes {
            self.full.store(false, Ordering::Relaxed);
            return None;
        }
        Some(format!(
            "pgtrail: the audit trail is full (its spool holds {used} of {} bytes while the store cannot take events): new statements are refused until it drains (when_full = \"fail_closed\")",
            self.max_bytes
        ))
    }
}

/// Audit off (`log = "none"`): nothing recorded, nothing held (the
/// sessions' backends are still registered for the bypass alarm).
struct Off {
    backends: Option<Arc<Backends>>,
}

impl Trail for Off {
    type Recorder = Option<Seen>;
    type Event = ();

    fn records(&self) -> bool {
        false
    }

    fn open(&self, context: Arc<SessionContext>, _startup: &StartupInfo) -> Option<Seen> {
        seen(&self.backends, &context)
    }

    fn event(_recorder: &mut Option<Seen>, _what: Happened<'_>) -> Option<()> {
        None
    }

    async fn write(&self, events: &mut Vec<()>) -> Result<(), TrailError> {
        events.clear();
        Ok(())
    }

    fn refusal(&self) -> Option<String> {
        None
    }
}
