//! `pgtrail checkpoint`: signs the chain's current head and stores it, so
//! that rewriting the chain up to here later cannot go unnoticed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_store::{Checkpoint, CheckpointKind, KeyPair};

use crate::cli::CheckpointArgs;
use crate::Context;

/// Runs `pgtrail checkpoint`.
pub async fn run(args: &CheckpointArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let key_path = args
        .private_key
        .clone()
        .or_else(|| ctx.config.signing.private_key.as_ref().map(PathBuf::from))
        .context(
            "no private key to sign with: set [signing] private_key (or PGTRAIL_SIGNING__PRIVATE_KEY), \
             or pass --private-key; make one with `pgtrail keygen --out FILE`",
        )?;
    let key = KeyPair::load(&key_path)?;
    let store = ctx.open_existing_store().await?;
    let Some(head) = store.head().await? else {
        crate::output::line(&format!(
            "{} is empty: nothing to checkpoint yet",
            store.location()
        ))?;
        return Ok(crate::exit::ok());
    };
    let checkpoint =
        Checkpoint::new(CheckpointKind::Head, head.seq, head.hash, head.seq).signed(&key);
    store.add_checkpoint(&checkpoint).await?;
    ctx.output.document(&checkpoint, || {
        format!(
            "signed checkpoint at event {} (hash {}) in {}\n",
            checkpoint.seq,
            checkpoint.hash,
            store.location()
        )
    })?;
    Ok(crate::exit::ok())
}
