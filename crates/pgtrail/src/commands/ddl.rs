//! `pgtrail ddl`: schema changes grouped by transaction, oldest first, the
//! way a reviewer reads a migration.

use std::fmt::Write as _;
use std::process::ExitCode;

use chrono::Utc;
use pgtrail_core::Kind;
use pgtrail_store::ddl::{group_by_transaction, DdlTransaction};

use crate::cli::{DdlArgs, FilterArgs};
use crate::{describe, Invocation};

/// Runs `pgtrail ddl`.
pub async fn run(args: &DdlArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let filter_args = FilterArgs {
        since: args.since.clone(),
        until: args.until.clone(),
        user: args.user.clone(),
        ..FilterArgs::default()
    };
    let mut filter = crate::filters::filter(&filter_args, Some(args.limit), Utc::now())?;
    filter.kind = Some(Kind::Ddl);
    let store = ctx.open_existing_store().await?;
    let mut events = store.query(&filter).await?;
    events.reverse();
    let groups = group_by_transaction(events);
    ctx.output.records(&groups, text)?;
    Ok(crate::exit::ok())
}

fn text(groups: &[DdlTransaction]) -> String {
    if groups.is_empty() {
        return "no schema changes recorded\n".into();
    }
    let mut out = String::new();
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{}  by {}{}",
            describe::time(&group.at),
            group.actor.as_deref().unwrap_or("-"),
            group.xid.map(|x| format!("  xid {x}")).unwrap_or_default()
        );
        let mut last_sql: Option<&str> = None;
        for event in &group.events {
            let _ = writeln!(
                out,
                "  {:<16} {}",
                event.operation.as_deref().unwrap_or("?"),
                event.objects.first().map(String::as_str).unwrap_or("-")
            );
            // Commands of one statement share its text: show it once.
            if let Some(sql) = event.sql.as_deref().filter(|s| Some(*s) != last_sql) {
                for line in sql.trim().lines() {
                    let _ = writeln!(out, "      | {line}");
                }
                last_sql = Some(sql);
            }
        }
    }
    out
}
