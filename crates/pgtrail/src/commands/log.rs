//! `pgtrail log`: events matching filters, newest first.

use std::process::ExitCode;

use chrono::Utc;
use pgtrail_core::Event;

use crate::cli::LogArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail log`.
pub async fn run(args: &LogArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let filter = crate::filters::filter(&args.filter, Some(args.limit), Utc::now())?;
    let store = ctx.open_existing_store().await?;
    let events = store.query(&filter).await?;
    ctx.output
        .records(&events, |events| table(events).render())?;
    Ok(crate::exit::ok())
}

fn table(events: &[Event]) -> Table {
    let mut table = Table::new(&[
        "seq", "time", "user", "source", "op", "table", "pk", "summary",
    ]);
    for e in events {
        table.push(vec![
            describe::number(e.seq),
            describe::time(&e.captured_at),
            describe::actor(e),
            e.source.to_string(),
            e.operation.clone().unwrap_or_else(|| e.kind.to_string()),
            describe::table(e),
            e.pk.as_ref().map(describe::pk).unwrap_or_default(),
            describe::summary(e),
        ]);
    }
    table
}
