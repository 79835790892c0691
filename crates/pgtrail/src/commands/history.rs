//! `pgtrail history TABLE PK`: every change to one row, newest first, each
//! with a field-level diff (column | old | new) and, when the proxy saw
//! it, the statement that made it (`pgtrail_store::link`).

use std::fmt::Write as _;
use std::process::ExitCode;

use pgtrail_core::Event;
use pgtrail_store::link;
use pgtrail_store::row::{self, HistoryEntry};
use serde::Serialize;

use crate::cli::HistoryArgs;
use crate::output::Table;
use crate::{describe, Invocation};

/// Runs `pgtrail history`.
pub async fn run(args: &HistoryArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let row_ref = crate::filters::row(&args.table, &args.pk)?;
    let store = ctx.open_existing_store().await?;
    let events = store.row_events(&row_ref).await?;
    let history = row::history(&events);
    let changes: Vec<Event> = history.iter().map(|e| e.event.clone()).collect();
    let stores = super::log::link_stores(ctx).await?;
    let stores: Vec<&dyn pgtrail_store::Store> = stores.iter().map(|s| &**s).collect();
    let statements = link::statements_for(&stores, &changes, link::default_skew()).await?;
    let entries: Vec<Entry> = history
        .into_iter()
        .zip(statements)
        .map(|(entry, statement)| Entry { entry, statement })
        .collect();
    let what = format!("{} {}", row_ref.table, describe::pk(&row_ref.pk.0));
    ctx.output
        .records(&entries, |entries| text(&what, entries))?;
    Ok(crate::exit::ok())
}

/// A history entry and the proxy statement that made it (absent when the
/// proxy did not see it: the JSON of a history without the proxy is as
/// before).
#[derive(Serialize)]
struct Entry {
    #[serde(flatten)]
    entry: HistoryEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    statement: Option<Event>,
}

fn text(what: &str, entries: &[Entry]) -> String {
    if entries.is_empty() {
        return format!("no changes recorded for {what}\n");
    }
    let mut out = String::new();
    for (i, Entry { entry, statement }) in entries.iter().enumerate() {
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
        if let Some(s) = statement {
            let _ = writeln!(
                out,
                "  statement #{seq} by {actor}{tx}: {summary}",
                seq = describe::number(s.seq),
                actor = describe::actor(s),
                tx = link::proxy_tx(s)
                    .map(|(id, _, _)| format!(" (tx {id})"))
                    .unwrap_or_default(),
                summary = describe::summary(s),
            );
        }
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
