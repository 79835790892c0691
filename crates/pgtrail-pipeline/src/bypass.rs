//! The bypass alarm: with the proxy and trigger capture both in `pgtrail
//! run`, a row change made by a server backend the proxy never opened is a
//! write that went around the proxy (a direct connection), and raises an
//! `alarm` event ([`WRITE_BYPASSED_PROXY`]).
//!
//! The proxy registers the backend of each session it opens
//! ([`Backends::opened`], a guard whose drop records the session's end).
//! [`watch`] follows trigger capture's store as it is sealed and judges
//! each row change by the backend pid the server recorded
//! (`pg_backend_pid()`) and the time the server received the statement:
//! made by a proxy backend while its session was open (with `skew` for the
//! two clocks), or not. Sealing happens after the fact, so ended sessions
//! are kept with their end times ([`KEEP_CLOSED`] of them); a change older
//! than what is kept, or than the proxy's start, is not judged (it cannot
//! be). A pid reused by a direct connection after the proxy's session on
//! it ended is judged by time, so it raises the alarm.
//!
//! Logical replication's changes carry no backend pid: they are never
//! judged (no false alarm, and no alarm). Roles in `[proxy] bypass_roles`
//! (a migration role) may write directly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgtrail_core::alarm::{Alarm, WRITE_BYPASSED_PROXY};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::Store;
use tokio::sync::watch as signal;

use crate::retry::Backoff;

/// Ended proxy sessions remembered, for changes sealed after their end.
pub const KEEP_CLOSED: usize = 100_000;

/// Events read from the store per step.
const PAGE: usize = 2_000;

/// The backends the proxy opened: live, and recently ended.
#[derive(Debug)]
pub struct Backends {
    started_at: DateTime<Utc>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Live sessions' pids, each with its sessions' start times.
    live: HashMap<i32, Vec<DateTime<Utc>>>,
    /// Ended sessions, oldest end first: (pid, start, end).
    closed: VecDeque<(i32, DateTime<Utc>, DateTime<Utc>)>,
    /// The end of the newest session forgotten: changes before it are not judged.
    forgotten_until: Option<DateTime<Utc>>,
}

/// What a row change's backend was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A backend of a proxy session, while it was open.
    Proxied,
    /// No proxy session had that backend then.
    Bypassed,
    /// Too old to judge (before the proxy started, or forgotten).
    Unknown,
}

/// A proxy session's backend, registered while the guard lives.
#[derive(Debug)]
pub struct Seen {
    backends: Arc<Backends>,
    pid: i32,
    start: DateTime<Utc>,
}

impl Drop for Seen {
    fn drop(&mut self) {
        self.backends.closed(self.pid, self.start, Utc::now());
    }
}

impl Backends {
    /// A registry for a proxy starting now.
    pub fn new() -> Arc<Backends> {
        Arc::new(Backends {
            started_at: Utc::now(),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A proxy session on backend `pid` begins; it ends when the guard drops.
    pub fn opened(self: &Arc<Self>, pid: i32) -> Seen {
        let start = Utc::now();
        self.lock().live.entry(pid).or_default().push(start);
        Seen {
            backends: Arc::clone(self),
            pid,
            start,
        }
    }

    fn closed(&self, pid: i32, start: DateTime<Utc>, end: DateTime<Utc>) {
        let mut state = self.lock();
        if let Some(starts) = state.live.get_mut(&pid) {
            starts.retain(|s| *s != start);
            if starts.is_empty() {
                state.live.remove(&pid);
            }
        }
        state.closed.push_back((pid, start, end));
        while state.closed.len() > KEEP_CLOSED {
            if let Some((_, _, end)) = state.closed.pop_front() {
                state.forgotten_until = Some(state.forgotten_until.map_or(end, |f| f.max(end)));
            }
        }
    }

    /// Whether a change the server received at `at` from backend `pid` was
    /// a proxy session's, `skew` being how far apart the clocks may be.
    pub fn judge(&self, pid: i32, at: DateTime<Utc>, skew: chrono::Duration) -> Verdict {
        if at < self.started_at + skew {
            return Verdict::Unknown;
        }
        let state = self.lock();
        if state.forgotten_until.is_some_and(|f| at <= f + skew) {
            return Verdict::Unknown;
        }
        let live = state
            .live
            .get(&pid)
            .is_some_and(|starts| starts.iter().any(|s| *s - skew <= at));
        let ended = state
            .closed
            .iter()
            .rev()
            .any(|(p, start, end)| *p == pid && *start - skew <= at && at <= *end + skew);
        if live || ended {
            Verdict::Proxied
        } else {
            Verdict::Bypassed
        }
    }
}

/// What [`watch`] follows.
#[derive(Debug, Clone)]
pub struct BypassWatch {
    /// Trigger capture's store (the audited database's own).
    pub store_url: String,
    /// The proxy's backends.
    pub backends: Arc<Backends>,
    /// Database roles allowed to write around the proxy.
    pub roles: Vec<String>,
    /// How far apart the proxy's clock and the server's may be.
    pub skew: chrono::Duration,
    /// How often the store is read.
    pub interval: Duration,
}

/// Follows trigger capture's store from its head now until `stop`,
/// appending an alarm for each transaction written around the proxy.
pub async fn watch(
    part: BypassWatch,
    stop: signal::Receiver<bool>,
) -> Result<(), pgtrail_store::StoreError> {
    let meanwhile = "writes around the proxy are not judged meanwhile";
    let Some(store) =
        crate::store::open_patiently(&part.store_url, meanwhile, stop.clone()).await?
    else {
        return Ok(());
    };
    let mut after = store.head().await?.map_or(0, |h| h.seq);
    let mut alarmed: VecDeque<(i32, i64)> = VecDeque::new();
    let mut backoff = Backoff::new(part.interval, Duration::from_secs(30));
    let mut stop = stop;
    loop {
        let stopping = *stop.borrow();
        let pause = match step(&*store, &part, &mut after, &mut alarmed).await {
            Ok(()) => {
                backoff.succeeded();
                part.interval
            }
            Err(error) => {
                let pause = backoff.failed();
                tracing::warn!(%error, "bypass alarm: reading trigger capture's store failed; trying again");
                pause
            }
        };
        if stopping {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Judges the events sealed after `after`, appends the alarms.
async fn step(
    store: &dyn Store,
    part: &BypassWatch,
    after: &mut i64,
    alarmed: &mut VecDeque<(i32, i64)>,
) -> Result<(), pgtrail_store::StoreError> {
    loop {
        let page = store.scan(*after, PAGE).await?;
        let Some(last) = page.last().and_then(|e| e.seq) else {
            return Ok(());
        };
        let alarms = judge(&page, part, alarmed);
        if !alarms.is_empty() {
            let started = std::time::Instant::now();
            store.append(&alarms).await?;
            pgtrail_store::metrics::Tally::of(&alarms).record(started.elapsed());
        }
        *after = last;
        if page.len() < PAGE {
            return Ok(());
        }
    }
}

/// The alarms for `events`: one per transaction of a backend the proxy
/// did not open (not one per row), not repeated for one already raised.
pub fn judge(
    events: &[Event],
    part: &BypassWatch,
    alarmed: &mut VecDeque<(i32, i64)>,
) -> Vec<Event> {
    let mut rows: HashMap<(i32, i64), (usize, &Event)> = HashMap::new();
    let mut order = Vec::new();
    for event in events {
        if event.source != Source::Trigger || !matches!(event.kind, Kind::RowChange | Kind::Ddl) {
            continue;
        }
        let (Some(pid), Some(xid)) = (event.backend_pid, event.xid) else {
            continue;
        };
        if event
            .db_user
            .as_ref()
            .is_some_and(|u| part.roles.iter().any(|r| r == u))
        {
            continue;
        }
        if alarmed.contains(&(pid, xid)) {
            continue;
        }
        if part.backends.judge(pid, event.captured_at, part.skew) != Verdict::Bypassed {
            continue;
        }
        rows.entry((pid, xid))
            .or_insert_with(|| {
                order.push((pid, xid));
                (0, event)
            })
            .0 += 1;
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for key in order {
        if !seen.insert(key) {
            continue;
        }
        let Some((count, first)) = rows.get(&key) else {
            continue;
        };
        let (pid, xid) = key;
        let role = first.db_user.as_deref().unwrap_or("?");
        let from = first.client_addr.as_deref().unwrap_or("a local socket");
        let table = first.qualified_table().unwrap_or_else(|| "?".into());
        let message = format!(
            "a write bypassed the proxy: backend {pid} (role {role}, from {from}), which the proxy never opened, changed {table} ({count} row change(s) in this batch, transaction {xid})"
        );
        let alarm = match (&first.schema, &first.table) {
            (Some(schema), Some(table)) => {
                Alarm::on_table(WRITE_BYPASSED_PROXY, schema, table, message)
            }
            _ => Alarm::new(WRITE_BYPASSED_PROXY, message),
        };
        let mut event = alarm.event(Source::Proxy);
        event.backend_pid = Some(pid);
        event.xid = Some(xid);
        event.db_user = first.db_user.clone();
        event.client_addr = first.client_addr.clone();
        event.client_port = first.client_port;
        event.application_name = first.application_name.clone();
        event.database = first.database.clone();
        // Copied from the trigger's row, as the server recorded them.
        event.vouch_server_fields();
        out.push(event);
        alarmed.push_back(key);
        if alarmed.len() > 10_000 {
            alarmed.pop_front();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(pid: i32, xid: i64, at: DateTime<Utc>, role: &str) -> Event {
        let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
        e.schema = Some("public".into());
        e.table = Some("t".into());
        e.operation = Some("INSERT".into());
        e.backend_pid = Some(pid);
        e.xid = Some(xid);
        e.db_user = Some(role.into());
        e
    }

    fn part(backends: &Arc<Backends>) -> BypassWatch {
        BypassWatch {
            store_url: String::new(),
            backends: Arc::clone(backends),
            roles: vec!["migrator".into()],
            skew: chrono::Duration::zero(),
            interval: Duration::from_millis(100),
        }
    }

    /// Attacker: an application role that connects around the proxy, and
    /// one whose direct connection gets the pid of an ended proxy session.
    #[test]
    fn a_backend_the_proxy_never_opened_is_a_bypass() {
        let backends = Backends::new();
        let ms = chrono::Duration::milliseconds;
        std::thread::sleep(Duration::from_millis(2));
        let seen = backends.opened(100);
        std::thread::sleep(Duration::from_millis(2));
        let during = Utc::now();
        assert_eq!(backends.judge(100, during, ms(0)), Verdict::Proxied);
        assert_eq!(backends.judge(200, during, ms(0)), Verdict::Bypassed);
        drop(seen);
        std::thread::sleep(Duration::from_millis(2));
        let after = Utc::now();
        // Sealed after the session ended: still the proxy's.
        assert_eq!(backends.judge(100, during, ms(0)), Verdict::Proxied);
        // The pid reused after the session ended: a bypass.
        assert_eq!(backends.judge(100, after, ms(0)), Verdict::Bypassed);
        // Before the proxy started: not judged.
        assert_eq!(
            backends.judge(300, during - ms(60_000), ms(0)),
            Verdict::Unknown
        );

        let part = part(&backends);
        let mut alarmed = VecDeque::new();
        let events = [
            change(100, 1, during, "app"),
            change(200, 2, during, "app"),
            change(200, 2, during, "app"),
            change(300, 3, during, "migrator"),
            change(100, 4, after, "app"),
        ];
        let alarms = judge(&events, &part, &mut alarmed);
        let got: Vec<_> = alarms.iter().map(|a| (a.backend_pid, a.xid)).collect();
        assert_eq!(got, [(Some(200), Some(2)), (Some(100), Some(4))]);
        assert!(alarms.iter().all(|a| a.kind == Kind::Alarm
            && a.operation.as_deref() == Some(WRITE_BYPASSED_PROXY)
            && a.table.as_deref() == Some("t")));
        let message = alarms[0]
            .context
            .as_ref()
            .and_then(|c| c.get("alarm"))
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        assert!(message.contains("2 row change(s)"), "{message}");
        // Not raised twice for one transaction.
        assert!(judge(&events, &part, &mut alarmed).is_empty());
        // Logical replication carries no pid: never judged.
        let mut cdc = change(200, 9, during, "app");
        cdc.source = Source::Cdc;
        cdc.backend_pid = None;
        assert!(judge(&[cdc], &part, &mut VecDeque::new()).is_empty());
    }
}
