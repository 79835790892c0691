//! `pgtrail checkpoint`: signs the chain's current head and stores it, so
//! that rewriting the chain up to here later cannot go unnoticed.
//!
//! The key lookup ([`signing_key`]) and the signing itself ([`sign_head`])
//! are shared with the checkpointing part of `pgtrail run`
//! (`checkpointer.rs`): one code path signs every head checkpoint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_core::config::SigningConfig;
use pgtrail_store::{ChainHead, Checkpoint, CheckpointKind, KeyPair, Store, StoreError};

use crate::cli::CheckpointArgs;
use crate::Context;

/// Runs `pgtrail checkpoint`.
pub async fn run(args: &CheckpointArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let Some((key_path, key)) = signing_key(args.private_key.as_deref(), &ctx.config.signing)?
    else {
        anyhow::bail!(
            "no private key to sign with: set [signing] private_key (or PGTRAIL_SIGNING__PRIVATE_KEY), \
             or pass --private-key; make one with `pgtrail keygen --out FILE`"
        );
    };
    tracing::debug!(key = %key_path.display(), "Signing with this key.");
    let store = ctx.open_existing_store().await?;
    let checkpoint = match sign_head(store.as_ref(), &key, None).await? {
        Signed::New(checkpoint) => checkpoint,
        Signed::Empty | Signed::Unchanged => {
            crate::output::line(&format!(
                "{} is empty: nothing to checkpoint yet",
                store.location()
            ))?;
            return Ok(crate::exit::ok());
        }
    };
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

/// The private key named by `flag` or `[signing] private_key`, loaded;
/// `None` when neither names one. A key that is named but cannot be read is
/// an error, never a reason to go on unsigned.
pub(crate) fn signing_key(
    flag: Option<&Path>,
    config: &SigningConfig,
) -> anyhow::Result<Option<(PathBuf, KeyPair)>> {
    let Some(path) = flag
        .map(Path::to_path_buf)
        .or_else(|| config.private_key.as_ref().map(PathBuf::from))
    else {
        return Ok(None);
    };
    let key = KeyPair::load(&path).context("cannot load the signing key")?;
    warn_if_readable_by_others(&path);
    Ok(Some((path, key)))
}

/// Anyone who can read the private key can sign a rewritten chain.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "The private signing key is readable by other users: chmod 600 it."
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// What [`sign_head`] did.
#[derive(Debug)]
pub(crate) enum Signed {
    /// The store holds no event yet.
    Empty,
    /// The head is the one given as already signed.
    Unchanged,
    /// A checkpoint of the head was signed and stored.
    New(Checkpoint),
}

/// Signs the store's current head and stores the checkpoint, unless the
/// head is still `signed` (the head of the last checkpoint taken).
pub(crate) async fn sign_head(
    store: &dyn Store,
    key: &KeyPair,
    signed: Option<&ChainHead>,
) -> Result<Signed, StoreError> {
    let Some(head) = store.head().await? else {
        return Ok(Signed::Empty);
    };
    if signed == Some(&head) {
        return Ok(Signed::Unchanged);
    }
    let checkpoint =
        Checkpoint::new(CheckpointKind::Head, head.seq, head.hash, head.seq).signed(key);
    store.add_checkpoint(&checkpoint).await?;
    Ok(Signed::New(checkpoint))
}
