//! `pgtrail blame TABLE PK`: for each column of the row's current state,
//! who set that value, when, and in which transaction.

use std::process::ExitCode;

use pgtrail_store::row::{self, event_time, BlameLine};

use crate::cli::BlameArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail blame`.
pub async fn run(args: &BlameArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let row_ref = crate::filters::row(&args.table, &args.pk)?;
    let store = ctx.open_existing_store().await?;
    let events = store.row_events(&row_ref).await?;
    let what = format!("{} {}", row_ref.table, describe::pk(&row_ref.pk.0));
    match row::blame(&events) {
        Some(lines) => ctx.output.records(&lines, |lines| table(lines).render())?,
        None => {
            let reason = if events.is_empty() {
                "no changes recorded"
            } else {
                "it was deleted"
            };
            ctx.output
                .document(&serde_json::json!({ "exists": false }), || {
                    format!("{what} does not exist now: {reason}\n")
                })?
        }
    }
    Ok(crate::exit::ok())
}

fn table(lines: &[BlameLine]) -> Table {
    let mut table = Table::new(&["column", "value", "who", "when", "xid", "seq"]);
    for line in lines {
        let e = &line.event;
        table.push(vec![
            line.column.clone(),
            describe::value(&line.value),
            describe::actor(e),
            describe::time(&event_time(e)),
            describe::number(e.xid),
            describe::number(e.seq),
        ]);
    }
    table
}
