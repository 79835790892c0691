//! `pgtrail import`: appends events read from JSON Lines, or, with
//! `--from`, old audit history turned into events by `pgtrail_import`
//! (pgAudit's lines in a server log, a trigger-fed audit table).
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

use pgtrail_import::pgaudit;
use pgtrail_import::prefix::{parse_offset, LinePrefix};
use pgtrail_import::table::AuditTable;

use crate::cli::{ImportArgs, ImportFrom};
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
    /// Log records read (`--from pgaudit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    records_read: Option<u64>,
    /// Of them, pgAudit's (`--from pgaudit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_records: Option<u64>,
    /// The audit table's last key read (`--from table`): `--after` resumes there.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_key: Option<i64>,
}

impl ImportSummary {
    /// Nothing imported yet into `store`, whose chain ends where it ends.
    async fn from_head(store: &dyn Store) -> anyhow::Result<Self> {
        Ok(ImportSummary {
            head_seq: store.head().await?.map(|h| h.seq),
            ..ImportSummary::default()
        })
    }
}

/// Runs `pgtrail import`.
pub async fn run(args: &ImportArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let store = ctx.open_store().await?;
    let summary = match args.from {
        ImportFrom::Jsonl => {
            let (name, reader) = open_input(&args.input)?;
            import(reader, &name, store.as_ref()).await?
        }
        ImportFrom::Pgaudit => pgaudit(args, store.as_ref()).await?,
        ImportFrom::Table => table(args, store.as_ref()).await?,
    };
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

/// The file named `input`, or standard input for `-`.
fn open_input(input: &str) -> anyhow::Result<(String, Box<dyn BufRead>)> {
    if input == "-" {
        return Ok(("standard input".into(), Box::new(std::io::stdin().lock())));
    }
    let file = File::open(Path::new(input)).with_context(|| format!("cannot open {input}"))?;
    Ok((input.to_string(), Box::new(BufReader::new(file))))
}

/// `--from pgaudit`: a server log's AUDIT lines, batch by batch.
async fn pgaudit(args: &ImportArgs, store: &dyn Store) -> anyhow::Result<ImportSummary> {
    let (name, reader) = open_input(&args.input)?;
    let options = pgaudit::Options {
        format: args
            .log_format
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("--log-format: {e}"))?,
        prefix: LinePrefix::parse(&args.log_line_prefix)
            .map_err(|e| anyhow::anyhow!("--log-line-prefix: {e}"))?,
        utc_offset: match &args.log_utc_offset {
            Some(text) => Some(parse_offset(text).with_context(|| {
                format!("--log-utc-offset {text:?}: give it as +01:00, -0500 or +01")
            })?),
            None => None,
        },
        keep_params: args.keep_params,
        origin: name.clone(),
    };
    let mut reader = pgaudit::Reader::new(reader, options);
    let mut summary = ImportSummary::from_head(store).await?;
    loop {
        let batch = reader.next_batch(BATCH).map_err(|e| {
            anyhow::anyhow!(
                "{e}; nothing from that record on was imported ({} events before it were)",
                summary.imported
            )
        })?;
        if batch.is_empty() {
            break;
        }
        let place = format!(
            "{name} (after {} events)",
            summary.imported + summary.duplicates
        );
        append(store, batch, &mut summary, &place).await?;
    }
    let stats = reader.stats();
    summary.records_read = Some(stats.records);
    summary.audit_records = Some(stats.audit_records);
    Ok(summary)
}

/// `--from table`: an audit table's rows in key order, page by page.
async fn table(args: &ImportArgs, store: &dyn Store) -> anyhow::Result<ImportSummary> {
    let qualified = args
        .table
        .as_deref()
        .context("--from table needs --table SCHEMA.TABLE: the audit table to read")?;
    let client = pgtrail_import::table::connect(&args.input)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the audit table's database {}",
                pgtrail_store::open::redact_url(&args.input)
            )
        })?;
    let mut audit = AuditTable::open(&client, qualified).await?;
    let mut summary = ImportSummary::from_head(store).await?;
    let mut after = args.after;
    loop {
        let (events, last) = audit
            .next_page(&client, after, BATCH as i64)
            .await
            .with_context(|| {
                format!(
                    "nothing after key {after} was imported ({} events before it were; resume with --after {after})",
                    summary.imported
                )
            })?;
        let Some(last) = last else { break };
        let place = format!("{qualified} key {after}");
        append(store, events, &mut summary, &place).await?;
        after = last;
        summary.last_key = Some(last);
    }
    Ok(summary)
}

async fn import(
    reader: Box<dyn BufRead>,
    name: &str,
    store: &dyn Store,
) -> anyhow::Result<ImportSummary> {
    let mut summary = ImportSummary::from_head(store).await?;
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
            let place = format!("{name} line {batch_start}");
            append(store, std::mem::take(&mut batch), &mut summary, &place).await?;
        }
    }
    if !batch.is_empty() {
        let place = format!("{name} line {batch_start}");
        append(store, batch, &mut summary, &place).await?;
    }
    Ok(summary)
}

async fn append(
    store: &dyn Store,
    batch: Vec<Event>,
    summary: &mut ImportSummary,
    batch_place: &str,
) -> anyhow::Result<()> {
    let size = batch.len() as u64;
    let receipt = store.append(&batch).await.with_context(|| {
        format!(
            "cannot append the batch starting at {batch_place}; nothing of it was written ({} events before it were)",
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
