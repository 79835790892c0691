//! `pgtrail status`: tracked tables, how they are captured, events so far.

use std::process::ExitCode;

use pgtrail_triggers::Status;

use crate::cli::StatusArgs;
use crate::output::Table;
use crate::{describe, Context};

/// Runs `pgtrail status`.
pub async fn run(args: &StatusArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    let status = pgtrail_triggers::status(&client).await?;
    ctx.output.document(&status, || text(&status))?;
    Ok(crate::exit::ok())
}

fn text(status: &Status) -> String {
    let mut table = Table::new(&[
        "table",
        "capture",
        "ignored",
        "masked",
        "events",
        "pending",
        "last event",
    ]);
    for t in &status.tables {
        table.push(vec![
            t.tracked.qualified(),
            t.mode.clone(),
            t.tracked.ignored.join(","),
            t.tracked.masked.join(","),
            t.events.to_string(),
            t.pending.to_string(),
            t.last_event_at
                .as_ref()
                .map(describe::time)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = if table.is_empty() {
        "no tables tracked (pgtrail track --db URL TABLE…)\n".to_string()
    } else {
        table.render()
    };
    out.push_str(&format!("\ntrigger capture version {}", status.version));
    if !status.auto_schemas.is_empty() {
        out.push_str(&format!(
            "; new tables tracked automatically in: {}",
            status.auto_schemas.join(", ")
        ));
    }
    out.push('\n');
    match &status.oldest_pending_at {
        Some(oldest) => out.push_str(&format!(
            "{} change(s) waiting to be sealed, the oldest from {} (run `pgtrail seal` or keep `pgtrail run` going)\n",
            status.pending,
            describe::time(oldest)
        )),
        None => out.push_str("nothing waiting to be sealed\n"),
    }
    if !status.commit_timestamps {
        out.push_str(
            "warning: track_commit_timestamp is off: events are sealed in transaction-id order, which can differ \
             from commit order; set track_commit_timestamp = on (restart needed)\n",
        );
    }
    out
}
