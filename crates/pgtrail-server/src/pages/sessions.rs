//! The sessions and failures page: the proxy's logins, failed logins and
//! disconnects, and failed statements, counted per user and per address
//! (the most first) over a time window, and the newest of each listed.
//! The groupings are `pgtrail_store::sessions` (`failures` and `read`), as
//! `GET /api/v1/failures` and `GET /api/v1/sessions` use them.

use askama::Template;
use axum::extract::{Query, State};
use chrono::Utc;
use pgtrail_core::filter::AddrFilter;
use pgtrail_core::time::parse_time;
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_store::sessions::{self, FailureCount, FailureReport, SessionReport};
use serde::Deserialize;

use super::view::{self, EventLine};
use super::{html, PageError};
use crate::access::Access;
use crate::auth::Principal;
use crate::AppState;

/// Events of each kind counted at most per view; past it the page says so.
const MAX_COUNTED: usize = 20_000;
/// Users and addresses listed per count.
const TOP: usize = 10;
/// Session events and failed statements listed.
const RECENT: usize = 50;
/// The longest filter value taken.
const MAX_VALUE: usize = 512;

#[derive(Debug, Default, Deserialize)]
pub struct SessionParams {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    ip: String,
}

impl SessionParams {
    fn filter(&self) -> Result<Filter, PageError> {
        for (name, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("user", &self.user),
            ("ip", &self.ip),
        ] {
            if value.len() > MAX_VALUE {
                return Err(PageError::BadRequest(format!(
                    "{name} is longer than {MAX_VALUE} bytes"
                )));
            }
        }
        let now = Utc::now();
        let time = |name: &str, text: &str| {
            let text = text.trim();
            (!text.is_empty())
                .then(|| {
                    parse_time(text, now).map_err(|e| PageError::BadRequest(format!("{name}: {e}")))
                })
                .transpose()
        };
        let user = self.user.trim();
        let ip = self.ip.trim();
        Ok(Filter {
            since: time("since", &self.since)?,
            until: time("until", &self.until)?,
            user: (!user.is_empty()).then(|| user.to_string()),
            client_addr: (!ip.is_empty())
                .then(|| {
                    AddrFilter::parse(ip).map_err(|e| PageError::BadRequest(format!("ip: {e}")))
                })
                .transpose()?,
            ..Filter::default()
        })
    }
}

/// One session event as the page lists it.
pub struct SessionLine {
    pub line: EventLine,
    pub client: String,
    pub database: String,
    /// For a disconnect: how long, how many statements, bytes each way.
    pub duration: String,
    pub statements: String,
    pub bytes: String,
}

fn session_line(event: &Event) -> SessionLine {
    let context = |key: &str| {
        event
            .context
            .as_ref()
            .and_then(|c| c.get(key))
            .and_then(|v| v.as_u64())
    };
    let disconnect = event.operation.as_deref() == Some("DISCONNECT");
    SessionLine {
        line: EventLine::new(event),
        client: event.client_addr.clone().unwrap_or_default(),
        database: event.database.clone().unwrap_or_default(),
        duration: match (disconnect, event.duration_us) {
            (true, Some(us)) => duration_text(us),
            _ => String::new(),
        },
        statements: context("statements")
            .filter(|_| disconnect)
            .map(|n| n.to_string())
            .unwrap_or_default(),
        bytes: match (context("bytes_from_client"), context("bytes_to_client")) {
            (Some(from), Some(to)) if disconnect => format!("{from} in, {to} out"),
            _ => String::new(),
        },
    }
}

/// A duration in microseconds as a person reads it.
fn duration_text(us: i64) -> String {
    let s = us / 1_000_000;
    match s {
        _ if us < 1_000 => format!("{us} µs"),
        _ if s < 1 => format!("{} ms", us / 1_000),
        _ if s < 60 => format!("{s} s"),
        _ if s < 3_600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

/// A failed statement as the page lists it.
pub struct FailedStatement {
    pub line: EventLine,
    pub client: String,
    pub sql: String,
    /// Its bound parameters, for an auditor (a viewer never gets them).
    pub params: Option<String>,
}

/// A count as a row of a table, with the link that narrows the page to it.
pub struct CountLine {
    pub value: String,
    pub count: u64,
    pub last: String,
    pub href: Option<String>,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    principal: Principal,
    since: String,
    until: String,
    user: String,
    ip: String,
    logins_by_user: Vec<CountLine>,
    logins_by_addr: Vec<CountLine>,
    statements_by_user: Vec<CountLine>,
    statements_by_addr: Vec<CountLine>,
    report: SessionReport,
    partial: bool,
    recent: Vec<SessionLine>,
    failed_statements: Vec<FailedStatement>,
    css: String,
    js: String,
}

fn counts(params: &SessionParams, counts: &[FailureCount], key: &str) -> Vec<CountLine> {
    counts
        .iter()
        .map(|c| CountLine {
            value: c.value.clone().unwrap_or_else(|| "(none)".into()),
            count: c.count,
            last: view::time(c.last),
            href: c.value.as_ref().map(|v| {
                let mut pairs = vec![
                    ("since", params.since.as_str()),
                    ("until", params.until.as_str()),
                    ("user", params.user.as_str()),
                    ("ip", params.ip.as_str()),
                ];
                for pair in pairs.iter_mut() {
                    if pair.0 == key {
                        pair.1 = v.as_str();
                    }
                }
                format!("/sessions?{}", view::query_string(&pairs))
            }),
        })
        .collect()
}

/// `GET /sessions?since=&until=&user=&ip=`.
pub async fn page(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<SessionParams>,
) -> Result<axum::response::Response, PageError> {
    let filter = params.filter()?;
    let store = state.store.as_ref();
    let failures: FailureReport =
        sessions::failures(store, filter.clone(), MAX_COUNTED, TOP).await?;
    let report = sessions::read(store, filter.clone(), MAX_COUNTED).await?;
    let recent = store
        .query(&Filter {
            kind: Some(Kind::Session),
            source: Some(Source::Proxy),
            limit: Some(RECENT),
            ..filter.clone()
        })
        .await?;
    let failed = store
        .query(&Filter {
            kind: Some(Kind::Statement),
            failed: true,
            limit: Some(RECENT),
            ..filter.clone()
        })
        .await?;
    let counted: u64 = failures.logins_by_user.iter().map(|c| c.count).sum::<u64>()
        + failures
            .statements_by_user
            .iter()
            .map(|c| c.count)
            .sum::<u64>()
        + report.sessions.iter().map(|s| s.count).sum::<u64>()
        + (recent.len() + failed.len()) as u64;
    state
        .record_access(
            &principal,
            Access {
                action: "sessions",
                target: serde_json::json!({ "filter": &filter }),
                results: Some(counted),
            },
        )
        .await?;
    let recent = recent
        .into_iter()
        .map(|e| session_line(&view::present(&principal, e)))
        .collect();
    let failed_statements = failed
        .into_iter()
        .map(|e| {
            let e = view::present(&principal, e);
            FailedStatement {
                line: EventLine::new(&e),
                client: e.client_addr.clone().unwrap_or_default(),
                sql: e.sql.clone().unwrap_or_default(),
                params: e
                    .params
                    .as_ref()
                    .map(|p| pgtrail_core::json::to_string(&serde_json::Value::from(p.clone()))),
            }
        })
        .collect();
    html(&SessionsPage {
        principal,
        logins_by_user: counts(&params, &failures.logins_by_user, "user"),
        logins_by_addr: counts(&params, &failures.logins_by_addr, "ip"),
        statements_by_user: counts(&params, &failures.statements_by_user, "user"),
        statements_by_addr: counts(&params, &failures.statements_by_addr, "ip"),
        partial: failures.partial || report.partial,
        report,
        recent,
        failed_statements,
        since: params.since,
        until: params.until,
        user: params.user,
        ip: params.ip,
        css: super::asset_path("pgtrail.css"),
        js: super::asset_path("htmx.min.js"),
    })
}

#[cfg(test)]
mod tests {
    use super::duration_text;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(900), "900 µs");
        assert_eq!(duration_text(2_500), "2 ms");
        assert_eq!(duration_text(42_000_000), "42 s");
        assert_eq!(duration_text(125_000_000), "2 min 5 s");
        assert_eq!(duration_text(7_380_000_000), "2 h 3 min");
    }
}
