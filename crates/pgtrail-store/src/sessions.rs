//! Who connected from where through the proxy: failed logins first
//! (someone guessing passwords, a service with a stale secret), then
//! successful sessions grouped by user and client address. What `pgtrail
//! sessions` prints and `GET /api/v1/sessions` answers.
//!
//! Read from the proxy's `session` events (`CONNECT`; a failed login has a
//! SQLSTATE and message): the store answers the time and user filters on
//! its indexes, the grouping is small.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Filter, Kind, Source};
use serde::Serialize;

use crate::{Result, Store};

/// Failed logins of one user, database, address and error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedLogins {
    pub user: Option<String>,
    pub database: Option<String>,
    pub client_addr: Option<String>,
    pub sqlstate: Option<String>,
    pub error: Option<String>,
    pub count: u64,
    #[serde(with = "pgtrail_core::time::micros")]
    pub first: DateTime<Utc>,
    #[serde(with = "pgtrail_core::time::micros")]
    pub last: DateTime<Utc>,
}

/// Successful sessions of one user from one address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sessions {
    pub user: Option<String>,
    pub client_addr: Option<String>,
    /// The databases they logged in to, sorted.
    pub databases: Vec<String>,
    pub count: u64,
    #[serde(with = "pgtrail_core::time::micros")]
    pub last: DateTime<Utc>,
}

/// Logins grouped: what `pgtrail sessions` and `GET /api/v1/sessions` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    pub failed_logins: Vec<FailedLogins>,
    pub sessions: Vec<Sessions>,
    /// True when more login events matched than were read (the `max` of [`read`]):
    /// the counts cover only the newest ones.
    pub partial: bool,
}

/// The logins `filter` matches (its kind, source and operation are set
/// here), grouped; at most the newest `max` are read, and the report says
/// when more matched.
pub async fn read(store: &dyn Store, mut filter: Filter, max: usize) -> Result<SessionReport> {
    filter.kind = Some(Kind::Session);
    filter.source = Some(Source::Proxy);
    filter.operation = Some("CONNECT".into());
    filter.limit = Some(max.saturating_add(1));
    let mut events = store.query(&filter).await?;
    let partial = events.len() > max;
    events.truncate(max);
    Ok(group(&events, partial))
}

/// Groups login events (any order): failed logins by user, database,
/// address and error, newest last attempt first; sessions by user and
/// address, most recent first.
pub fn group(events: &[Event], partial: bool) -> SessionReport {
    type FailedKey = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut failed: BTreeMap<FailedKey, FailedLogins> = BTreeMap::new();
    let mut ok: BTreeMap<(Option<String>, Option<String>), Sessions> = BTreeMap::new();
    for e in events {
        let at = e.captured_at;
        if e.failed() {
            let key = (
                e.db_user.clone(),
                e.database.clone(),
                e.client_addr.clone(),
                e.sqlstate.clone(),
                e.error.clone(),
            );
            let entry = failed.entry(key).or_insert_with(|| FailedLogins {
                user: e.db_user.clone(),
                database: e.database.clone(),
                client_addr: e.client_addr.clone(),
                sqlstate: e.sqlstate.clone(),
                error: e.error.clone(),
                count: 0,
                first: at,
                last: at,
            });
            entry.count += 1;
            entry.first = entry.first.min(at);
            entry.last = entry.last.max(at);
        } else {
            let key = (e.db_user.clone(), e.client_addr.clone());
            let entry = ok.entry(key).or_insert_with(|| Sessions {
                user: e.db_user.clone(),
                client_addr: e.client_addr.clone(),
                databases: Vec::new(),
                count: 0,
                last: at,
            });
            entry.count += 1;
            entry.last = entry.last.max(at);
            if let Some(db) = &e.database {
                if let Err(i) = entry.databases.binary_search(db) {
                    entry.databases.insert(i, db.clone());
                }
            }
        }
    }
    let mut failed_logins: Vec<FailedLogins> = failed.into_values().collect();
    failed_logins.sort_by(|a, b| b.last.cmp(&a.last).then(b.count.cmp(&a.count)));
    let mut sessions: Vec<Sessions> = ok.into_values().collect();
    sessions.sort_by(|a, b| b.last.cmp(&a.last).then(b.count.cmp(&a.count)));
    SessionReport {
        failed_logins,
        sessions,
        partial,
    }
}

/// How often one user or one address failed, and when last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureCount {
    /// The database role (as the client asked for it, for a failed login)
    /// or the client address; `None` when the event names none.
    pub value: Option<String>,
    pub count: u64,
    #[serde(with = "pgtrail_core::time::micros")]
    pub last: DateTime<Utc>,
}

/// Failures counted per user and per address, the most first: who is
/// guessing passwords, and from where; whose statements fail. What the
/// dashboard's sessions page and `GET /api/v1/failures` show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureReport {
    pub logins_by_user: Vec<FailureCount>,
    pub logins_by_addr: Vec<FailureCount>,
    pub statements_by_user: Vec<FailureCount>,
    pub statements_by_addr: Vec<FailureCount>,
    /// True when more failures matched than were read (the `max` of
    /// [`failures`]): the counts cover only the newest ones.
    pub partial: bool,
}

/// The failed logins and failed statements `filter` matches (its kind,
/// source, operation and `failed` are set here), counted per user and per
/// address, at most `top` of each; at most the newest `max` of each kind
/// are read.
pub async fn failures(
    store: &dyn Store,
    filter: Filter,
    max: usize,
    top: usize,
) -> Result<FailureReport> {
    let read = |kind: Kind, operation: Option<&str>| {
        let filter = Filter {
            kind: Some(kind),
            source: Some(Source::Proxy),
            operation: operation.map(str::to_string),
            failed: true,
            limit: Some(max.saturating_add(1)),
            ..filter.clone()
        };
        async move { store.query(&filter).await }
    };
    let mut logins = read(Kind::Session, Some("CONNECT")).await?;
    let mut statements = read(Kind::Statement, None).await?;
    let partial = logins.len() > max || statements.len() > max;
    logins.truncate(max);
    statements.truncate(max);
    Ok(FailureReport {
        logins_by_user: count_by(&logins, |e| e.db_user.clone(), top),
        logins_by_addr: count_by(&logins, |e| e.client_addr.clone(), top),
        statements_by_user: count_by(&statements, |e| e.db_user.clone(), top),
        statements_by_addr: count_by(&statements, |e| e.client_addr.clone(), top),
        partial,
    })
}

/// Failed events counted by `key`, the most first (ties: the latest
/// first, then by name), at most `top`.
pub fn count_by(
    events: &[Event],
    key: impl Fn(&Event) -> Option<String>,
    top: usize,
) -> Vec<FailureCount> {
    let mut counts: BTreeMap<Option<String>, FailureCount> = BTreeMap::new();
    for e in events.iter().filter(|e| e.failed()) {
        let value = key(e);
        let entry = counts.entry(value.clone()).or_insert_with(|| FailureCount {
            value,
            count: 0,
            last: e.captured_at,
        });
        entry.count += 1;
        entry.last = entry.last.max(e.captured_at);
    }
    let mut counts: Vec<FailureCount> = counts.into_values().collect();
    counts.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(b.last.cmp(&a.last))
            .then(a.value.cmp(&b.value))
    });
    counts.truncate(top);
    counts
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn login(user: &str, addr: &str, at: i64, sqlstate: Option<&str>) -> Event {
        let mut e = Event::new(Source::Proxy, Kind::Session);
        e.operation = Some("CONNECT".into());
        e.db_user = Some(user.into());
        e.database = Some("shop".into());
        e.client_addr = Some(addr.into());
        e.captured_at = Utc.timestamp_opt(at, 0).single().expect("time");
        if let Some(code) = sqlstate {
            e.sqlstate = Some(code.into());
            e.error = Some(format!(
                "password authentication failed for user \"{user}\""
            ));
        }
        e
    }

    #[test]
    fn failed_logins_are_grouped_and_come_first() {
        let events = [
            login("admin", "10.0.0.9", 100, Some("28P01")),
            login("app", "10.0.0.2", 150, None),
            login("admin", "10.0.0.9", 300, Some("28P01")),
            login("admin", "10.0.0.9", 200, Some("28P01")),
            login("app", "10.0.0.2", 120, None),
            login("app", "10.0.0.3", 90, None),
        ];
        let report = group(&events, false);
        assert_eq!(report.failed_logins.len(), 1);
        let f = &report.failed_logins[0];
        assert_eq!(
            (f.count, f.first.timestamp(), f.last.timestamp()),
            (3, 100, 300)
        );
        assert_eq!(f.sqlstate.as_deref(), Some("28P01"));
        assert_eq!(report.sessions.len(), 2);
        assert_eq!(report.sessions[0].client_addr.as_deref(), Some("10.0.0.2"));
        assert_eq!(report.sessions[0].count, 2);
        assert_eq!(report.sessions[0].last.timestamp(), 150);
    }

    #[test]
    fn failures_are_counted_per_user_and_per_address_the_most_first() {
        let events = [
            login("admin", "10.0.0.9", 100, Some("28P01")),
            login("root", "10.0.0.9", 110, Some("28P01")),
            login("admin", "10.0.0.9", 120, Some("28P01")),
            login("app", "10.0.0.2", 130, Some("28P01")),
            login("app", "10.0.0.2", 140, None),
        ];
        let by_user = count_by(&events, |e| e.db_user.clone(), 10);
        let users: Vec<_> = by_user
            .iter()
            .map(|c| (c.value.as_deref().unwrap_or("-"), c.count))
            .collect();
        // The success is no failure; ties go to the latest.
        assert_eq!(users, [("admin", 2), ("app", 1), ("root", 1)]);
        assert_eq!(by_user[0].last.timestamp(), 120);
        let by_addr = count_by(&events, |e| e.client_addr.clone(), 1);
        assert_eq!(by_addr.len(), 1, "at most top");
        assert_eq!(
            (by_addr[0].value.as_deref(), by_addr[0].count),
            (Some("10.0.0.9"), 3)
        );
    }
}
