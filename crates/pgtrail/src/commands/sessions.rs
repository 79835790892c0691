//! `pgtrail sessions`: who connected from where through the proxy. Failed
//! logins first (someone guessing passwords, a service with a stale secret),
//! then successful sessions grouped by user and client address.
//!
//! The grouping is the store's read side (`pgtrail_store::sessions`), so
//! the HTTP API answers the same.

use std::fmt::Write as _;
use std::process::ExitCode;

use chrono::Utc;
use pgtrail_core::Filter;
use pgtrail_store::sessions::{self, SessionReport};

use crate::cli::{FilterArgs, SessionsArgs};
use crate::output::Table;
use crate::{describe, Invocation};

/// Login events read at most; past it the answer says it is partial.
const MAX_EVENTS: usize = 1_000_000;

/// Runs `pgtrail sessions`.
pub async fn run(args: &SessionsArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let filter_args = FilterArgs {
        since: args.since.clone(),
        user: args.user.clone(),
        failed: args.failed,
        ..FilterArgs::default()
    };
    let filter: Filter = crate::filters::filter(&filter_args, None, Utc::now())?;
    let store = ctx.open_existing_store().await?;
    let report = sessions::read(store.as_ref(), filter, MAX_EVENTS).await?;
    if report.partial {
        eprintln!(
            "pgtrail sessions: more than {MAX_EVENTS} logins match; \
             only the newest are counted (narrow with --since)"
        );
    }
    ctx.output.document(&report, || text(&report))?;
    Ok(crate::exit::ok())
}

fn or_dash(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

/// The report as two plain tables.
pub fn text(report: &SessionReport) -> String {
    let mut out = String::new();
    if report.failed_logins.is_empty() {
        out.push_str("no failed logins\n");
    } else {
        out.push_str("failed logins\n");
        let mut table = Table::new(&[
            "user", "database", "from", "sqlstate", "count", "first", "last", "error",
        ]);
        for f in &report.failed_logins {
            table.push(vec![
                or_dash(&f.user),
                or_dash(&f.database),
                or_dash(&f.client_addr),
                or_dash(&f.sqlstate),
                f.count.to_string(),
                describe::time(&f.first),
                describe::time(&f.last),
                or_dash(&f.error),
            ]);
        }
        out.push_str(&table.render());
    }
    out.push('\n');
    if report.sessions.is_empty() {
        out.push_str("no sessions\n");
    } else {
        out.push_str("sessions\n");
        let mut table = Table::new(&["user", "from", "databases", "count", "last"]);
        for s in &report.sessions {
            table.push(vec![
                or_dash(&s.user),
                or_dash(&s.client_addr),
                s.databases.join(","),
                s.count.to_string(),
                describe::time(&s.last),
            ]);
        }
        out.push_str(&table.render());
    }
    if report.partial {
        let _ = writeln!(
            out,
            "\n(only the newest {MAX_EVENTS} logins were counted: narrow with --since)"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use pgtrail_core::{Event, Kind, Source};

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
    fn failed_logins_are_printed_first() {
        let events = [
            login("admin", "10.0.0.9", 100, Some("28P01")),
            login("app", "10.0.0.2", 150, None),
        ];
        let text = text(&sessions::group(&events, false));
        let failed_at = text.find("failed logins").expect("failed section");
        let sessions_at = text.find("\nsessions").expect("sessions section");
        assert!(failed_at < sessions_at, "{text}");
        assert!(text.contains("28P01"), "{text}");
    }
}
