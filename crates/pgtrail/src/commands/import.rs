//! `pgtrail import FILE.jsonl`: appends events read from JSON Lines.
//!
//! Streams in batches of [`BATCH`] lines, so a file of any size runs in
//! bounded memory. Each batch is parsed whole before it is appended, and the
//! store appends a batch all or nothing: a bad line stops the import with
//! its line number, and nothing of its batch is written (earlier batches
//! are, and the message says how many events that was). Incoming `seq`,
//! `prev_hash` and `hash` are dropped: the store seals every event anew and
//! skips events whose `id` it already has, so re-running an import is safe.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_core::Event;
use pgtrail_store::Store;
use serde::Serialize;

use crate::cli::ImportArgs;
use crate::Invocation;

/// Lines appended per store transaction.
const BATCH: usize = 10_000;

/// What an import did.
#[derive(Debug, Default, Serialize)]
struct ImportSummary {
    /// Events appended and sealed.
    imported: u64,
    /// Events skipped because the store already had their id.
    duplicates: u64,
    /// The chain's last `seq` afterwards.
    head_seq: Option<i64>,
}

/// Runs `pgtrail import`.
pub async fn run(args: &ImportArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let (name, reader): (String, Box<dyn BufRead>) = if args.file == Path::new("-") {
        ("standard input".into(), Box::new(std::io::stdin().lock()))
    } else {
        let file = File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        (
            args.file.display().to_string(),
            Box::new(BufReader::new(file)),
        )
    };
    let store = ctx.open_store().await?;
    let summary = import(reader, &name, store.as_ref()).await?;
    ctx.output.document(&summary, || {
        format!(
            "imported {} events into {} ({} skipped as duplicates); the chain now ends at event {}\n",
            summary.imported,
            store.location(),
            summary.duplicates,
            summary.head_seq.map_or_else(|| "-".into(), |s| s.to_string()),
        )
    })?;
    Ok(crate::exit::ok())
}

async fn import(
    reader: Box<dyn BufRead>,
    name: &str,
    store: &dyn Store,
) -> anyhow::Result<ImportSummary> {
    let mut summary = ImportSummary {
        head_seq: store.head().await?.map(|h| h.seq),
        ..ImportSummary::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_start = 1;
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("cannot read {name} at line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        if batch.is_empty() {
            batch_start = number;
        }
        let event: Event = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{name} line {number}: not a valid event: {e}; nothing from line {batch_start} on was imported \
                 ({} events before it were)",
                summary.imported
            )
        })?;
        batch.push(event.unsealed());
        if batch.len() == BATCH {
            append(
                store,
                std::mem::take(&mut batch),
                &mut summary,
                name,
                batch_start,
            )
            .await?;
        }
    }
    if !batch.is_empty() {
        append(store, batch, &mut summary, name, batch_start).await?;
    }
    Ok(summary)
}

async fn append(
    store: &dyn Store,
    batch: Vec<Event>,
    summary: &mut ImportSummary,
    name: &str,
    batch_start: usize,
) -> anyhow::Result<()> {
    let size = batch.len() as u64;
    let receipt = store.append(&batch).await.with_context(|| {
        format!(
            "cannot append the batch starting at {name} line {batch_start}; nothing of it was written ({} events before it were)",
            summary.imported
        )
    })?;
    let before = summary.head_seq.unwrap_or(0);
    let after = receipt.head.map(|h| h.seq);
    let appended = (after.unwrap_or(0) - before).max(0) as u64;
    summary.imported += appended;
    summary.duplicates += size.saturating_sub(appended);
    summary.head_seq = after.or(summary.head_seq);
    Ok(())
}
