//! `pgtrail as-of TABLE PK TIME`: one row as it was at a moment, or a plain
//! sentence saying it did not exist yet or had been deleted (when, by whom).

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use pgtrail_store::row::{self, event_time, AsOf};

use crate::cli::AsOfArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail as-of`.
pub async fn run(args: &AsOfArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let row_ref = crate::filters::row(&args.table, &args.pk)?;
    let at = pgtrail_core::time::parse_time(&args.time, Utc::now()).context("TIME")?;
    let store = ctx.open_existing_store().await?;
    let events = store.row_events(&row_ref).await?;
    let state = row::as_of(&events, at);
    let what = format!("{} {}", row_ref.table, describe::pk(&row_ref.pk.0));
    ctx.output.document(&state, || text(&what, at, &state))?;
    Ok(crate::exit::ok())
}

fn text(what: &str, at: DateTime<Utc>, state: &AsOf) -> String {
    let at = describe::time(&at);
    match state {
        AsOf::NotYetExisting { first: Some(first) } => format!(
            "{what} did not exist yet at {at} (first seen {} by {})\n",
            describe::time(&event_time(first)),
            describe::actor(first)
        ),
        AsOf::NotYetExisting { first: None } => format!("{what}: no changes recorded\n"),
        AsOf::Deleted { by } => format!(
            "{what} did not exist at {at}: deleted at {} by {}{}\n",
            describe::time(&event_time(by)),
            describe::actor(by),
            if by
                .operation
                .as_deref()
                .is_some_and(|op| op.eq_ignore_ascii_case("TRUNCATE"))
            {
                " (table truncated)"
            } else {
                ""
            }
        ),
        AsOf::Existing { values, last } => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "{what} at {at} (last changed {} by {}, event #{}):",
                describe::time(&event_time(last)),
                describe::actor(last),
                describe::number(last.seq)
            );
            let mut table = Table::new(&["column", "value"]);
            for (column, value) in values {
                table.push(vec![column.clone(), describe::value(value)]);
            }
            out.push_str(&table.render());
            out
        }
    }
}
