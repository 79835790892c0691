//! `pgtrail track` and `pgtrail untrack`: which tables are captured.

use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_triggers::{CaptureMode, MaskMode, TrackOptions, TrackedTable};

use crate::cli::{TrackArgs, UntrackArgs};
use crate::output;
use crate::Invocation;

/// Runs `pgtrail track`.
pub async fn run(args: &TrackArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    let options = TrackOptions {
        ignore: args.ignore.clone(),
        mask: args.mask.clone(),
        mask_mode: if args.mask_mode == "redact" {
            MaskMode::Redact
        } else {
            MaskMode::Hash
        },
        capture_sql: args.sql,
        mode: if args.mode == "statement" {
            CaptureMode::Statement
        } else {
            CaptureMode::Row
        },
    };
    let mut tracked = Vec::new();
    if args.all {
        let schema = args.schema.as_deref().unwrap_or("public");
        tracked = pgtrail_triggers::track_schema(&client, schema, &options, args.auto)
            .await
            .with_context(|| format!("cannot track the tables of schema {schema}"))?;
        if args.auto {
            output::line(&format!(
                "new tables created in schema {schema} will be tracked automatically"
            ))?;
        }
    } else {
        if args.tables.is_empty() {
            anyhow::bail!("name the tables to track, or use --all [--schema S]");
        }
        for name in &args.tables {
            let table = crate::filters::table(name)?;
            tracked.push(pgtrail_triggers::track(&client, &table, &options).await?);
        }
    }
    for table in &tracked {
        output::line(&describe(table))?;
    }
    if tracked.is_empty() {
        output::line("no tables to track")?;
    }
    Ok(crate::exit::ok())
}

/// Runs `pgtrail untrack`.
pub async fn untrack(args: &UntrackArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let client = pgtrail_triggers::connect(&args.db).await?;
    for name in &args.tables {
        let table = crate::filters::table(name)?;
        if pgtrail_triggers::untrack(&client, &table).await? {
            output::line(&format!("stopped tracking {table} (its trail is kept)"))?;
        } else {
            output::line(&format!("{table} was not tracked"))?;
        }
    }
    Ok(crate::exit::ok())
}

fn describe(table: &TrackedTable) -> String {
    let mut text = format!(
        "tracking {}: {} triggers, {}",
        table.qualified(),
        table.mode.as_str(),
        table.identity()
    );
    if !table.ignored.is_empty() {
        text.push_str(&format!("; ignoring {}", table.ignored.join(", ")));
    }
    if !table.masked.is_empty() {
        text.push_str(&format!(
            "; masking {} ({})",
            table.masked.join(", "),
            table.mask_mode.as_str()
        ));
    }
    if table.capture_sql {
        text.push_str("; with statement text");
    }
    text
}
