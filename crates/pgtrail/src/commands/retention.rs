//! `pgtrail retention`: removes events older than the window (archiving them
//! first when asked), after a prune checkpoint that keeps the chain provable.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::Utc;
use pgtrail_store::signing::SignError;
use pgtrail_store::KeyPair;

use crate::cli::RetentionArgs;
use crate::Invocation;

/// Runs `pgtrail retention`.
pub async fn run(args: &RetentionArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let keep_text = args
        .keep
        .clone()
        .or_else(|| ctx.config.retention.keep.clone())
        .context("how long to keep events? pass --keep 400d or set [retention] keep")?;
    let keep = pgtrail_core::time::parse_duration(&keep_text).context("--keep")?;
    if Utc::now().checked_sub_signed(keep).is_none() {
        anyhow::bail!(
            "--keep {keep_text} is out of range: the cut-off would fall outside the calendar (keep at most a few thousand years, e.g. 36500d)"
        );
    }
    let archive = args
        .archive
        .clone()
        .or_else(|| ctx.config.retention.archive_dir.as_ref().map(PathBuf::from));
    let key = match &ctx.config.signing.private_key {
        Some(path) => Some(KeyPair::load(path.as_ref())?),
        None => {
            tracing::warn!(
                "No [signing] private_key configured: the prune checkpoint will not be signed"
            );
            None
        }
    };
    let trusted = super::checkpoint::trusted_keys(&ctx.config.signing)?;
    let witness = super::checkpoint::witness_path(None, &ctx.config.signing);
    let store = ctx.open_existing_store().await?;
    let outcome = match pgtrail_store::retention::apply(
        store.as_ref(),
        keep,
        Utc::now(),
        archive.as_deref(),
        key.as_ref(),
        &trusted,
        witness.as_deref(),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(refused @ SignError::Inconsistent { .. }) => {
            eprintln!("pgtrail: {refused}; nothing was removed. Run `pgtrail verify` to see what changed.");
            return Ok(crate::exit::check_failed());
        }
        Err(e) => return Err(e.into()),
    };
    ctx.output.document(&outcome, || {
        let mut out = String::new();
        match outcome.through_seq {
            Some(through) => {
                let _ = writeln!(
                    out,
                    "removed {} events older than {keep_text} (through event {through}){}",
                    outcome.removed,
                    if key.is_some() {
                        ", signed prune checkpoint recorded"
                    } else {
                        ", unsigned prune checkpoint recorded"
                    }
                );
            }
            None => {
                let _ = writeln!(out, "nothing older than {keep_text} to remove");
            }
        }
        if let Some(path) = &outcome.archive {
            let _ = writeln!(
                out,
                "archived to {} (checksum in {}.sha256)",
                path.display(),
                path.display()
            );
        }
        if !outcome.dropped_partitions.is_empty() {
            let _ = writeln!(
                out,
                "dropped partitions: {}",
                outcome.dropped_partitions.join(", ")
            );
        }
        if !outcome.created_partitions.is_empty() {
            let _ = writeln!(
                out,
                "created partitions: {}",
                outcome.created_partitions.join(", ")
            );
        }
        out
    })?;
    Ok(crate::exit::ok())
}
