//! `pgtrail checkpoint`: checks the chain against what was signed before,
//! then signs the chain's current head as a note, stores it and appends it
//! to the witness, so that rewriting the chain up to here later cannot go
//! unnoticed; then submits it to the witness servers of
//! `[[signing.witnesses]]` and keeps their cosignatures, as `pgtrail run`'s
//! checkpointer does.
//!
//! The key lookup ([`signing_key`], [`trusted_keys`], [`witness_path`]) and
//! the signing itself (`pgtrail_store::signing::sign_head`) are shared with
//! the checkpointer of `pgtrail run` (`pgtrail_pipeline::checkpointer`) and with
//! `retention`: one code path checks and signs every checkpoint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_core::config::SigningConfig;
use pgtrail_pipeline::witnesses::{WitnessServer, Witnesses};
use pgtrail_store::checkpoint::load_public_key;
use pgtrail_store::signing::{sign_head, SignError, Signed, Signer};
use pgtrail_store::{KeyPair, TrustedKey};

use crate::cli::CheckpointArgs;
use crate::Invocation;

/// Runs `pgtrail checkpoint`.
pub async fn run(args: &CheckpointArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let Some((key_path, key)) = signing_key(args.private_key.as_deref(), &ctx.config.signing)?
    else {
        anyhow::bail!(
            "no private key to sign with: set [signing] private_key (or PGTRAIL_SIGNING__PRIVATE_KEY), \
             or pass --private-key; make one with `pgtrail keygen --out FILE`"
        );
    };
    tracing::debug!(key = %key_path.display(), "Signing with this key.");
    let trusted = trusted_keys(&ctx.config.signing)?;
    let witness = witness_path(args.witness.as_deref(), &ctx.config.signing);
    let servers = witness_servers(&ctx.config.signing)?;
    let store = ctx.open_existing_store().await?;
    let signer = Signer {
        key: &key,
        trusted: &trusted,
        witness: witness.as_deref(),
    };
    let checkpoint = match sign_head(store.as_ref(), &signer, false).await {
        Ok(Signed::New(checkpoint)) => checkpoint,
        Ok(Signed::Empty | Signed::Unchanged) => {
            crate::output::line(&format!(
                "{} is empty: nothing to checkpoint yet",
                store.location()
            ))?;
            return Ok(crate::exit::ok());
        }
        Err(refused @ SignError::Inconsistent { .. }) => {
            eprintln!(
                "pgtrail: {refused}; nothing was signed. Run `pgtrail verify` to see what changed."
            );
            return Ok(crate::exit::check_failed());
        }
        Err(e) => return Err(e.into()),
    };
    // A witness that is down or refuses never undoes the checkpoint: it is
    // signed and stored; the next one is submitted again.
    let location = store.location();
    let outcomes = Witnesses::new(servers)
        .submit(store.as_ref(), &checkpoint, &location)
        .await;
    let mut cosigned = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => cosigned.push(name),
            Err(error) => {
                eprintln!("pgtrail: the witness {name} did not cosign the checkpoint: {error}")
            }
        }
    }
    let document = Document {
        checkpoint: &checkpoint,
        cosigned_by: &cosigned,
    };
    ctx.output.document(&document, || {
        format!(
            "signed checkpoint at event {} (hash {}) in {}{}\n",
            checkpoint.seq,
            checkpoint.hash,
            store.location(),
            witness
                .as_ref()
                .map(|w| format!(", witnessed in {}", w.display()))
                .unwrap_or_default()
        ) + &cosigned
            .iter()
            .map(|name| format!("cosigned by the witness {name}\n"))
            .collect::<String>()
    })?;
    Ok(crate::exit::ok())
}

/// What `--format json` prints: the checkpoint and the witnesses that
/// cosigned it.
#[derive(serde::Serialize)]
struct Document<'a> {
    #[serde(flatten)]
    checkpoint: &'a pgtrail_store::Checkpoint,
    cosigned_by: &'a [String],
}

/// The witness servers of `[[signing.witnesses]]`.
pub(crate) fn witness_servers(config: &SigningConfig) -> anyhow::Result<Vec<WitnessServer>> {
    config
        .witnesses
        .iter()
        .enumerate()
        .map(|(i, server)| {
            WitnessServer::parse(&server.url, &server.vkey)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("[[signing.witnesses]] entry {}", i + 1))
        })
        .collect()
}

/// The witness named by `flag` or `[signing] witness`.
pub(crate) fn witness_path(flag: Option<&Path>, config: &SigningConfig) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.witness.as_ref().map(PathBuf::from))
}

/// The keys whose checkpoints are trusted besides the signing key:
/// `[signing] public_key` and `previous_public_keys`.
pub(crate) fn trusted_keys(config: &SigningConfig) -> anyhow::Result<Vec<TrustedKey>> {
    config
        .public_key
        .iter()
        .chain(&config.previous_public_keys)
        .map(|entry| parse_trusted_key(entry))
        .collect()
}

/// Reads `PATH` (a current key) or `PATH@N` (a retired key, trusted for
/// checkpoints up to event N).
pub(crate) fn parse_trusted_key(entry: &str) -> anyhow::Result<TrustedKey> {
    let (path, through_seq) = match entry.rsplit_once('@') {
        Some((path, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let n: i64 = n
                .parse()
                .with_context(|| format!("'{entry}': the event number after @ is too large"))?;
            (path, Some(n))
        }
        _ => (entry, None),
    };
    let key = load_public_key(Path::new(path))?;
    Ok(TrustedKey { key, through_seq })
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
