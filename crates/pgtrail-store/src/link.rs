//! One trail across paths: a proxy statement and the row changes its
//! transaction made, found together from what the server vouches.
//!
//! **The rule.** The trigger path records each row change with the server
//! backend that made it (`backend_pid`, from `pg_backend_pid()`), its
//! transaction (`xid`) and the time the server received the statement
//! (`captured_at`, `statement_timestamp()`); every change of one
//! transaction shares one pid and one xid. The proxy records each statement
//! with the backend it was sent to (`backend_pid`, from BackendKeyData),
//! when it was sent and how long it took (`captured_at`, `duration_us`),
//! and in `context` which of its session's transactions it ran in (`tx`,
//! `tx_statement`, `tx_started_at`; see docs/proxy.md). A backend runs one
//! statement at a time, so each change belongs to the statement of its
//! backend that was running when the server received the change's
//! statement (`owner`: by the order of the backend's statements), and a
//! proxy transaction is the xid(s) of the changes its statements own. Time
//! only chooses among one backend's statements; from the xid on, the
//! server's pid and xid decide, so every change of that xid is linked,
//! also one no statement's span held.
//!
//! **Which statement made a change.** Inside one transaction, by what the
//! statement touched (the change's table among its objects, then its
//! operation) and then by time: a change made in a function or by a
//! trigger on another table goes to the statement running when the server
//! received it. Failed statements made nothing that lasted.
//!
//! **Limits.** `skew` is how far the proxy's clock may be from the
//! server's ([`default_skew`]); beyond it a change is not linked rather
//! than guessed. A pid reused by a later backend cannot be confused: the
//! earlier session's statements had ended. Logical replication has no
//! backend pid: its changes are linked only through a transaction found
//! on the trigger path (its xid is the same transaction's, 32 bits, and
//! its commit time must fall in the window). Claims (`pgtrail.context`)
//! are never read: only proxy statements' own keys and trigger changes'
//! server fields.

use chrono::{DateTime, Duration, Utc};
use pgtrail_core::{Event, Filter, Kind, Source};

use crate::{Result, Store};

/// The events of every store matching `filter`, newest first (by time: the
/// stores' `seq`s are their own). The trail may be split: trigger capture
/// seals into the audited database's own store, the proxy and logical
/// replication into `[store] url`.
async fn query(stores: &[&dyn Store], filter: &Filter) -> Result<Vec<Event>> {
    let mut events = Vec::new();
    for store in stores {
        events.extend(store.query(filter).await?);
    }
    events.sort_by_key(|e| std::cmp::Reverse((e.captured_at, e.seq, e.id)));
    events.dedup_by_key(|e| e.id);
    Ok(events)
}

/// How many of a backend's statements before a change are looked at.
const AROUND: usize = 256;

/// How far apart the proxy's clock and the server's may be, by default:
/// what NTP keeps two hosts within. A window widened by it is used only
/// when nothing falls inside the exact one.
pub fn default_skew() -> Duration {
    Duration::milliseconds(50)
}

/// A transaction to show: the server's, or the proxy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxId {
    /// A transaction id as the trigger path records it (`xid`).
    Xid(i64),
    /// A transaction as the proxy saw it: the backend it ran on and when its
    /// first statement started (`tx_started_at`), written `PID@TIME`.
    Proxy {
        /// The backend.
        backend_pid: i32,
        /// When its first statement started, on the proxy's clock.
        started_at: DateTime<Utc>,
    },
}

impl std::str::FromStr for TxId {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let s = s.trim();
        match s.split_once('@') {
            None => s
                .parse::<i64>()
                .map(TxId::Xid)
                .map_err(|_| format!("'{s}': expected an xid (a number) or PID@TIME")),
            Some((pid, at)) => {
                let backend_pid = pid
                    .parse::<i32>()
                    .map_err(|_| format!("'{s}': '{pid}' is not a backend pid"))?;
                let started_at = DateTime::parse_from_rfc3339(at)
                    .map_err(|e| format!("'{s}': '{at}' is not an RFC 3339 time: {e}"))?
                    .with_timezone(&Utc);
                Ok(TxId::Proxy {
                    backend_pid,
                    started_at,
                })
            }
        }
    }
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxId::Xid(xid) => write!(f, "{xid}"),
            TxId::Proxy {
                backend_pid,
                started_at,
            } => write!(
                f,
                "{backend_pid}@{}",
                pgtrail_core::time::format_micros(started_at)
            ),
        }
    }
}

/// One transaction with both sides: the proxy's statements and the row
/// changes, each change with the statement that made it when known.
#[derive(Debug, Default)]
pub struct Transaction {
    /// The server's transaction ids (none for a transaction that wrote no
    /// captured row, or whose rows were rolled back).
    pub xids: Vec<i64>,
    /// The backend that ran it.
    pub backend_pid: Option<i32>,
    /// The proxy's statements, oldest first.
    pub statements: Vec<Event>,
    /// The row changes (trigger and logical replication), in chain order.
    pub changes: Vec<Event>,
    /// For each of `changes`, the index in `statements` of the statement
    /// that made it.
    pub made_by: Vec<Option<usize>>,
}

/// The proxy transaction of a proxy statement event: its id and its place
/// in its session (`session_id`, `tx`). `None` for any other event.
pub fn proxy_tx(statement: &Event) -> Option<(TxId, String, u64)> {
    if statement.source != Source::Proxy || statement.kind != Kind::Statement {
        return None;
    }
    let context = statement.context.as_ref()?;
    let number = context.get("tx")?.as_u64()?;
    let started_at = DateTime::parse_from_rfc3339(context.get("tx_started_at")?.as_str()?)
        .ok()?
        .with_timezone(&Utc);
    Some((
        TxId::Proxy {
            backend_pid: statement.backend_pid?,
            started_at,
        },
        statement.session_id.clone()?,
        number,
    ))
}

/// The transaction of `event` across capture paths, as [`transaction`]
/// finds it: by the proxy's transaction for a proxy statement, by the xid
/// for a row change. `None` for any other event, or when nothing is found.
pub async fn transaction_of_event(
    stores: &[&dyn Store],
    event: &Event,
    skew: Duration,
) -> Result<Option<(TxId, Transaction)>> {
    let id = match (proxy_tx(event), event.kind, event.xid) {
        (Some((id, _, _)), _, _) => id,
        (None, Kind::RowChange, Some(xid)) => TxId::Xid(xid),
        _ => return Ok(None),
    };
    Ok(transaction(stores, &id, skew).await?.map(|t| (id, t)))
}

/// The other events of `event`'s transaction on its own capture path
/// (the same source, database, xid and commit time: two clusters feeding
/// one store may share an xid), oldest first, at most `limit`, and whether
/// that is all of them. Found by the stores' xid index, wherever in the
/// chain they are. None for an event without an xid.
pub async fn same_transaction(
    store: &dyn Store,
    event: &Event,
    limit: usize,
) -> Result<(Vec<Event>, bool)> {
    let Some(xid) = event.xid else {
        return Ok((Vec::new(), true));
    };
    let filter = Filter {
        xid: Some(xid),
        source: Some(event.source),
        database: event.database.clone(),
        limit: Some(limit.saturating_add(2)),
        ..Default::default()
    };
    let mut found = store.query(&filter).await?;
    found.retain(|e| {
        e.id != event.id && e.database == event.database && e.committed_at == event.committed_at
    });
    let complete = found.len() <= limit;
    found.truncate(limit);
    found.reverse();
    Ok((found, complete))
}

/// The transaction `id`, both sides; `None` when the store has nothing of it.
pub async fn transaction(
    stores: &[&dyn Store],
    id: &TxId,
    skew: Duration,
) -> Result<Option<Transaction>> {
    let mut statements = Vec::new();
    let mut changes = Vec::new();
    let backend_pid;
    let mut xids = Vec::new();
    match id {
        TxId::Xid(xid) => {
            changes = trigger_changes(stores, *xid, None).await?;
            if changes.is_empty() {
                // Logical replication only: no pid to link by.
                changes = query(
                    stores,
                    &Filter {
                        xid: Some(*xid),
                        source: Some(Source::Cdc),
                        ..Default::default()
                    },
                )
                .await?;
                changes.reverse();
                return Ok((!changes.is_empty()).then(|| Transaction {
                    xids: vec![*xid],
                    made_by: vec![None; changes.len()],
                    changes,
                    ..Default::default()
                }));
            }
            xids.push(*xid);
            backend_pid = changes.iter().find_map(|c| c.backend_pid);
            // Two clusters feeding one store may each have this xid: one
            // backend's changes are one transaction.
            changes.retain(|c| c.backend_pid == backend_pid);
            if let Some(pid) = backend_pid {
                for (session, number, started) in
                    proxy_txs_around(stores, pid, &changes, skew).await?
                {
                    statements.extend(
                        proxy_statements(stores, pid, Some((&session, number)), started).await?,
                    );
                }
            }
        }
        TxId::Proxy {
            backend_pid: pid,
            started_at,
        } => {
            statements = proxy_statements(stores, *pid, None, *started_at).await?;
            if statements.is_empty() {
                return Ok(None);
            }
            backend_pid = Some(*pid);
            let (start, end) = window(&statements);
            if !rolled_back(&statements) {
                xids = xids_in_window(stores, id, start, end, skew).await?;
            }
            for xid in &xids {
                changes.extend(trigger_changes(stores, *xid, Some(*pid)).await?);
            }
        }
    }
    statements.sort_by_key(|s| (s.captured_at, s.seq, s.id));
    statements.dedup_by_key(|s| s.id);
    if !statements.is_empty() {
        let (start, end) = window(&statements);
        for xid in &xids {
            changes.extend(cdc_changes(stores, *xid, start - skew, end + skew).await?);
        }
    }
    changes.sort_by_key(|c| (c.captured_at, c.seq, c.id));
    changes.dedup_by_key(|c| c.id);
    let made_by = changes
        .iter()
        .map(|c| made_by(&statements, c, skew))
        .collect();
    Ok(Some(Transaction {
        xids,
        backend_pid,
        statements,
        changes,
        made_by,
    }))
}

/// For each of `changes` (a row's history, say), the proxy statement that
/// made it, when the proxy saw it: one lookup per transaction.
pub async fn statements_for(
    stores: &[&dyn Store],
    changes: &[Event],
    skew: Duration,
) -> Result<Vec<Option<Event>>> {
    let mut found: Vec<((i32, i64), Vec<Event>)> = Vec::new();
    let mut out = Vec::with_capacity(changes.len());
    for change in changes {
        let (Source::Trigger, Some(pid), Some(xid)) =
            (change.source, change.backend_pid, change.xid)
        else {
            out.push(None);
            continue;
        };
        let at = found.iter().position(|(key, _)| *key == (pid, xid));
        let at = match at {
            Some(at) => at,
            None => {
                let tx_changes = trigger_changes(stores, xid, Some(pid)).await?;
                let mut statements = Vec::new();
                for (session, number, started) in
                    proxy_txs_around(stores, pid, &tx_changes, skew).await?
                {
                    statements.extend(
                        proxy_statements(stores, pid, Some((&session, number)), started).await?,
                    );
                }
                found.push(((pid, xid), statements));
                found.len() - 1
            }
        };
        let statements = &found[at].1;
        out.push(made_by(statements, change, skew).map(|i| statements[i].clone()));
    }
    Ok(out)
}

/// The trigger path's changes of `xid` (of backend `pid` when given), in
/// chain order.
async fn trigger_changes(stores: &[&dyn Store], xid: i64, pid: Option<i32>) -> Result<Vec<Event>> {
    let mut changes = query(
        stores,
        &Filter {
            xid: Some(xid),
            source: Some(Source::Trigger),
            ..Default::default()
        },
    )
    .await?;
    changes.retain(|c| pid.is_none() || c.backend_pid == pid);
    changes.reverse();
    Ok(changes)
}

/// Logical replication's changes of the transaction `xid` (its 32 bits,
/// as pgoutput sends it) that committed between `from` and `to`.
async fn cdc_changes(
    stores: &[&dyn Store],
    xid: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let mut changes = query(
        stores,
        &Filter {
            xid: Some(xid & 0xFFFF_FFFF),
            source: Some(Source::Cdc),
            ..Default::default()
        },
    )
    .await?;
    changes.retain(|c| c.committed_at.is_some_and(|at| at >= from && at <= to));
    Ok(changes)
}

/// Start and end of a statement, on the proxy's clock.
fn span(statement: &Event) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = statement.captured_at;
    (
        start,
        start + Duration::microseconds(statement.duration_us.unwrap_or(0)),
    )
}

/// The window of a proxy transaction: first start to last end.
fn window(statements: &[Event]) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = statements
        .iter()
        .map(|s| span(s).0)
        .min()
        .unwrap_or_default();
    let end = statements.iter().map(|s| span(s).1).max().unwrap_or(start);
    (start, end)
}

/// The newest proxy statements of backend `pid` that started before `until`.
async fn statements_before(
    stores: &[&dyn Store],
    pid: i32,
    until: DateTime<Utc>,
) -> Result<Vec<Event>> {
    query(
        stores,
        &Filter {
            source: Some(Source::Proxy),
            kind: Some(Kind::Statement),
            backend_pid: Some(pid),
            until: Some(until + Duration::microseconds(1)),
            limit: Some(AROUND),
            ..Default::default()
        },
    )
    .await
}

/// How much later than the server the proxy may stamp a statement's start
/// on a busy host (it stamps once it handled the client's bytes).
fn stamp_lag() -> Duration {
    Duration::milliseconds(10)
}

/// The statement (of one backend's `statements`) that made `change`, by the
/// order of the backend's statements: the last one that started before the
/// server received the change's statement, if it ran until then (within
/// `skew`); else the next one, if it started within `skew` after (the
/// clocks differ). Failed statements made nothing that lasted. The next
/// one is also taken when it started within [`stamp_lag`] after, made
/// this kind of change to this table (an INSERT into it, for an inserted
/// row), and the last one did not touch the table: the proxy stamped its
/// start late.
fn owner<'a>(statements: &'a [Event], change: &Event, skew: Duration) -> Option<&'a Event> {
    let at = change.captured_at;
    let mut ran: Vec<&Event> = statements
        .iter()
        .filter(|s| !s.failed() && !not_run(s))
        .collect();
    ran.sort_by_key(|s| (s.captured_at, s.seq));
    let split = ran.partition_point(|s| s.captured_at <= at);
    let last = split.checked_sub(1).and_then(|i| ran.get(i).copied());
    let next = ran.get(split).copied();
    let same =
        |s: &Event| touched(s, change) && s.operation.is_some() && s.operation == change.operation;
    if let (Some(l), Some(n)) = (last, next) {
        if n.captured_at - at <= stamp_lag() && same(n) && !touched(l, change) {
            return Some(n);
        }
    }
    if let Some(l) = last.filter(|l| at <= span(l).1 + skew) {
        return Some(l);
    }
    next.filter(|n| n.captured_at - at <= skew)
}

/// Whether `statement` named the table `change` is on among its objects.
fn touched(statement: &Event, change: &Event) -> bool {
    let Some(table) = &change.table else {
        return false;
    };
    pgtrail_core::filter::object_tables(&statement.objects)
        .iter()
        .any(|o| o.table == *table && (o.schema.is_none() || o.schema == change.schema))
}

/// The proxy transactions (session, number, start) of backend `pid` whose
/// statements were running when the server received one of `changes`.
async fn proxy_txs_around(
    stores: &[&dyn Store],
    pid: i32,
    changes: &[Event],
    skew: Duration,
) -> Result<Vec<(String, u64, DateTime<Utc>)>> {
    let Some(last) = changes.iter().map(|c| c.captured_at).max() else {
        return Ok(Vec::new());
    };
    let recent = statements_before(stores, pid, last + skew).await?;
    let mut txs: Vec<(String, u64, DateTime<Utc>)> = Vec::new();
    for change in changes {
        let found = owner(&recent, change, skew).and_then(proxy_tx);
        if let Some((TxId::Proxy { started_at, .. }, session, number)) = found {
            if !txs.iter().any(|(s, n, _)| *s == session && *n == number) {
                txs.push((session, number, started_at));
            }
        }
    }
    Ok(txs)
}

/// Every statement of a proxy transaction on `pid` that began at
/// `started`: number `tx.1` of session `tx.0`, or when not given, the one
/// whose `tx_started_at` is `started` (its first statement may not have
/// been logged). Read forward in growing windows until the session's next
/// transaction, another session on the pid, or now.
async fn proxy_statements(
    stores: &[&dyn Store],
    pid: i32,
    tx: Option<(&str, u64)>,
    started: DateTime<Utc>,
) -> Result<Vec<Event>> {
    let mut want = tx.map(|(s, n)| (s.to_string(), n));
    let mut out = Vec::new();
    let mut from = started;
    let mut step = Duration::seconds(10);
    let now = Utc::now();
    loop {
        let to = from + step;
        let mut page = query(
            stores,
            &Filter {
                source: Some(Source::Proxy),
                backend_pid: Some(pid),
                since: Some(from),
                until: Some(to),
                ..Default::default()
            },
        )
        .await?;
        page.reverse();
        let mut done = false;
        for event in page {
            let found = proxy_tx(&event);
            if want.is_none() {
                match &found {
                    Some((TxId::Proxy { started_at, .. }, session, n))
                        if *started_at == started =>
                    {
                        want = Some((session.clone(), *n));
                    }
                    _ => continue,
                }
            }
            let Some((session, number)) = &want else {
                continue;
            };
            if event.session_id.as_ref() != Some(session) {
                done = true;
                continue;
            }
            match found {
                Some((_, _, n)) if n == *number => out.push(event),
                Some((_, _, n)) if n > *number => done = true,
                // The session's DISCONNECT.
                None if event.kind == Kind::Session => done = true,
                _ => {}
            }
        }
        if done || to > now {
            return Ok(out);
        }
        from = to;
        step = step * 2;
    }
}

/// The xids of backend `pid`'s trigger changes made while a statement of
/// the proxy transaction `id` was running (`[start, end]` its window): each
/// change belongs to the statement of that backend running when the server
/// received it ([`owner`]), so a neighbouring transaction's rows stay its own.
async fn xids_in_window(
    stores: &[&dyn Store],
    id: &TxId,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    skew: Duration,
) -> Result<Vec<i64>> {
    let TxId::Proxy { backend_pid, .. } = id else {
        return Ok(Vec::new());
    };
    let changes = query(
        stores,
        &Filter {
            source: Some(Source::Trigger),
            backend_pid: Some(*backend_pid),
            since: Some(start - skew),
            until: Some(end + skew + Duration::microseconds(1)),
            ..Default::default()
        },
    )
    .await?;
    let recent = statements_before(stores, *backend_pid, end + skew).await?;
    let mut xids: Vec<i64> = changes
        .iter()
        .filter(|c| {
            owner(&recent, c, skew)
                .and_then(proxy_tx)
                .is_some_and(|(tx, _, _)| tx == *id)
        })
        .filter_map(|c| c.xid)
        .collect();
    xids.sort_unstable();
    xids.dedup();
    Ok(xids)
}

/// Whether the proxy saw the transaction end rolled back (a ROLLBACK, a
/// COMMIT answered ROLLBACK, a failed statement outside a block): its
/// rows are in neither the trigger nor the logical-replication path.
fn rolled_back(statements: &[Event]) -> bool {
    let Some(last) = statements.iter().max_by_key(|s| span(s).1) else {
        return false;
    };
    let idle = last
        .context
        .as_ref()
        .and_then(|c| c.get("transaction_status"))
        .and_then(|s| s.as_str())
        == Some("idle");
    idle && (last.command_tag.as_deref() == Some("ROLLBACK") || last.failed())
}

/// Which of `statements` (one transaction's) made `change`: not a failed
/// one; first one that touched its table, then with its operation, then
/// running when the server received it (within `skew`), then the nearest.
fn made_by(statements: &[Event], change: &Event, skew: Duration) -> Option<usize> {
    let at = change.captured_at;
    statements
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.failed() && !not_run(s))
        .filter_map(|(i, s)| {
            let (start, end) = span(s);
            let touched = touched(s, change);
            let running = at >= start - skew && at <= end + skew;
            if !touched && !running {
                return None;
            }
            let same_op = s.operation.is_some() && s.operation == change.operation;
            let distance = if at < start {
                start - at
            } else if at > end {
                at - end
            } else {
                Duration::zero()
            };
            Some((i, (touched, same_op, running, -distance)))
        })
        .max_by(|a, b| a.1.cmp(&b.1))
        .map(|(i, _)| i)
}

/// A statement the server never ran (an earlier one of its pipeline failed).
fn not_run(statement: &Event) -> bool {
    statement
        .context
        .as_ref()
        .and_then(|c| c.get("outcome"))
        .and_then(|o| o.as_str())
        == Some("not_run")
}
