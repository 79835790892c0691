//! `pgtrail history TABLE PK`: every change to one row, newest first, each
//! with a field-level diff (column | old | new).

use std::fmt::Write as _;
use std::process::ExitCode;

use pgtrail_store::row::{self, HistoryEntry};

use crate::cli::HistoryArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail history`.
pub async fn run(args: &HistoryArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let row_ref = crate::filters::row(&args.table, &args.pk)?;
    let store = ctx.open_existing_store().await?;
    let events = store.row_events(&row_ref).await?;
    let entries = row::history(&events);
    let what = format!("{} {}", row_ref.table, describe::pk(&row_ref.pk.0));
    ctx.output
        .records(&entries, |entries| text(&what, entries))?;
    Ok(crate::exit::ok())
}

fn text(what: &str, entries: &[HistoryEntry]) -> String {
    if entries.is_empty() {
        return format!("no changes recorded for {what}\n");
    }
    let mut out = String::new();
    for (i, entry) in entries.iter().enumerate() {
        let e = &entry.event;
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "#{seq}  {time}  {op}  by {actor}{xid}",
            seq = describe::number(e.seq),
            time = describe::time(&pgtrail_store::row::event_time(e)),
            op = e.operation.as_deref().unwrap_or(e.kind.as_str()),
            actor = describe::actor(e),
            xid = e.xid.map(|x| format!("  xid {x}")).unwrap_or_default(),
        );
        if entry.changes.is_empty() {
            out.push_str("  (no column changed)\n");
            continue;
        }
        let mut table = Table::new(&["column", "old", "new"]);
        for change in &entry.changes {
            table.push(vec![
                change.column.clone(),
                describe::maybe_value(change.old.as_ref()),
                describe::maybe_value(change.new.as_ref()),
            ]);
        }
        for line in table.render().lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}
