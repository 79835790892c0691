//! `pgtrail report NAME`: the compliance reports of `pgtrail_store::reports`
//! (bulk changes, after hours, DELETE spikes, who read a row), the same
//! functions the dashboard's `/reports` and the API's `/api/v1/reports`
//! answer through, with the same parameters.
//!
//! The CLI reads the store as its owner: who-read looks at statement
//! parameters (as an auditor's report does).

use std::process::ExitCode;

use chrono::Utc;
use pgtrail_store::reports::{self, Mention, Scanned, MAX_COUNT, MAX_SCAN};

use crate::cli::{ReportArgs, ReportName};
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail report`.
pub async fn run(args: &ReportArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let get = |name: &str| -> Option<&str> {
        match name {
            "since" => args.since.as_deref(),
            "until" => args.until.as_deref(),
            "threshold" => args.threshold.as_deref(),
            "table" => args.table.as_deref(),
            "hours" => args.hours.as_deref(),
            "days" => args.days.as_deref(),
            "tz" => args.tz.as_deref(),
            "multiple" => args.multiple.as_deref(),
            "min" => args.min.as_deref(),
            "pk" => args.pk.as_deref(),
            _ => None,
        }
    };
    let bad = |e: reports::ParamError| anyhow::anyhow!("--{}: {}", e.parameter, e.detail);
    let now = Utc::now();
    let store = ctx.open_existing_store().await?;
    let store = store.as_ref();
    match args.name {
        ReportName::BulkChanges => {
            let p = reports::BulkParams::parse(&get, now).map_err(bad)?;
            let r = reports::bulk_changes(store, &p, MAX_COUNT).await?;
            capped(&r.scanned);
            ctx.output.document(&r, || {
                let mut t = Table::new(&["user", "table", "operation", "rows", "first", "last"]);
                for b in &r.rows {
                    t.push(vec![
                        b.user.clone(),
                        b.table.clone(),
                        b.operation.clone(),
                        b.rows.to_string(),
                        describe::time(&b.first),
                        describe::time(&b.last),
                    ]);
                }
                or_none(
                    t,
                    &format!(
                        "no user changed more than {} rows of one table with one operation\n",
                        p.threshold
                    ),
                )
            })?;
        }
        ReportName::AfterHours => {
            let p = reports::AfterHoursParams::parse(&get, now).map_err(bad)?;
            let r = reports::after_hours(store, &p, MAX_SCAN).await?;
            capped(&r.scanned);
            ctx.output.document(&r, || {
                let mut t = Table::new(&["user", "events", "first", "last"]);
                for u in &r.users {
                    t.push(vec![
                        u.user.clone(),
                        u.events.to_string(),
                        describe::time(&u.first),
                        describe::time(&u.last),
                    ]);
                }
                or_none(t, "nothing outside working hours\n")
            })?;
        }
        ReportName::DeleteSpikes => {
            let p = reports::SpikeParams::parse(&get, now).map_err(bad)?;
            let r = reports::delete_spikes(store, &p, MAX_COUNT).await?;
            capped(&r.scanned);
            ctx.output.document(&r, || {
                let mut t = Table::new(&["hour", "table", "deletes", "usual per hour", "by"]);
                for s in &r.spikes {
                    t.push(vec![
                        describe::time(&s.hour),
                        s.table.clone(),
                        s.deletes.to_string(),
                        format!("{:.2}", s.usual_per_hour),
                        s.users
                            .iter()
                            .map(|(u, n)| format!("{u} ({n})"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]);
                }
                or_none(t, "no DELETE spike\n")
            })?;
        }
        ReportName::WhoRead => {
            let p = reports::WhoReadParams::parse(&get, now).map_err(bad)?;
            let r = reports::who_read(store, &p, true, MAX_SCAN).await?;
            capped(&r.scanned);
            ctx.output.document(&r, || {
                let mut t = Table::new(&[
                    "seq",
                    "time",
                    "user",
                    "from",
                    "rows",
                    "names the key",
                    "sql",
                ]);
                for read in &r.reads {
                    t.push(vec![
                        describe::number(read.line.seq),
                        describe::time(&read.line.at),
                        read.line.user.clone(),
                        read.line.client_addr.clone().unwrap_or_else(|| "-".into()),
                        describe::number(read.rows),
                        match read.mentions {
                            Mention::Text => "yes, in its text",
                            Mention::Params => "yes, in a parameter",
                            Mention::No => "not by value",
                            Mention::Unknown => "unknown",
                        }
                        .into(),
                        read.sql.clone().unwrap_or_default(),
                    ]);
                }
                let mut out = or_none(t, "no logged read of this table\n");
                out.push_str(
                    "the proxy logs statements, not the rows they returned: a read that does not \
                     name the key may still have read the row\n",
                );
                out
            })?;
        }
    }
    Ok(crate::exit::ok())
}

fn capped(scanned: &Scanned) {
    if scanned.capped {
        eprintln!(
            "pgtrail report: stopped after {} events (the cap): only the newest part of the \
             window is counted (narrow --since or --table)",
            scanned.cap
        );
    }
}

fn or_none(table: Table, none: &str) -> String {
    if table.is_empty() {
        none.to_string()
    } else {
        table.render()
    }
}
