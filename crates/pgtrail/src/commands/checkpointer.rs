//! The checkpointing part of `pgtrail run`: signs the head of every store
//! the process writes to, so that removing the newest events, or rewriting
//! the tail and re-chaining it, no longer passes `verify`.
//!
//! Those stores are `[store] url` when logical replication captures into it,
//! and the `pgtrail` schema of the sealed database when trigger sealing runs
//! (the sealer appends there, not to `[store] url`). Each is signed every
//! `[signing] checkpoint_every`, also when its head did not move (a
//! heartbeat: the witness then records that nothing happened, rather than
//! nothing at all), once at start (events may have arrived while nothing
//! ran) and once more at a graceful stop when the head moved, after the
//! other parts stored what they had in hand.
//!
//! Nothing is signed over a chain that does not agree with the previous
//! signed checkpoint and the witness (`pgtrail_store::signing`). At start
//! that stops `pgtrail run` before it captures anything: tampering done
//! while pgtrail was stopped must not get a fresh signature. Found later, it
//! is logged at ERROR every round, nothing is signed, and capture goes on.
//!
//! It runs beside the capture parts, not in their `JoinSet`: it must outlive
//! them to sign their last events, and it never fails for good. A store
//! error is logged at ERROR (the newest events are not covered by a
//! signature meanwhile) and retried next round; capture goes on. A key that
//! cannot be read is refused before anything starts: running on unsigned
//! after an operator asked for signatures would hide exactly what they
//! wanted to catch. Signing itself is `checkpoint::sign_head`, the same code
//! as `pgtrail checkpoint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_store::open::redact_url;
use pgtrail_store::signing::{sign_head, SignError, Signed, Signer};
use pgtrail_store::{ChainHead, KeyPair, Store, TrustedKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::checkpoint::{signing_key, trusted_keys, witness_path};
use crate::Context;

/// Longest time one store's round may take: a store that hangs must not
/// hold up the final checkpoint of the others, nor the process's exit.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// A store `pgtrail run` writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `[store] url`, where logical-replication capture appends.
    Capture(String),
    /// The `pgtrail` schema of a database whose trigger capture is sealed.
    Sealed(String),
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Target::Capture(url) | Target::Sealed(url) => url,
        }
    }
}

/// The running checkpointer; [`Checkpointer::finish`] signs a last time.
pub(crate) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Checkpointer {
    /// Loads the key, signs `targets` once (duplicates counted once) and
    /// goes on signing them in the background. `None`, after saying so on
    /// stderr, when no key is configured. A store whose chain disagrees
    /// with what was signed before is an error: nothing may run on it.
    pub(crate) async fn start(
        private_key: Option<&Path>,
        targets: Vec<Target>,
        ctx: &Context,
    ) -> anyhow::Result<Option<Checkpointer>> {
        let every = ctx
            .config
            .signing
            .checkpoint_interval()
            .context("invalid [signing] checkpoint_every")?;
        let Some((path, key)) = signing_key(private_key, &ctx.config.signing)? else {
            eprintln!(
                "checkpoints: off, no private key (the newest events can then be removed unnoticed); \
                 make one with `pgtrail keygen --out FILE` and set [signing] private_key, \
                 PGTRAIL_SIGNING__PRIVATE_KEY or --private-key"
            );
            return Ok(None);
        };
        let keys = Keys {
            key,
            trusted: trusted_keys(&ctx.config.signing)?,
            witness: witness_path(None, &ctx.config.signing),
        };
        let mut stores: Vec<Tracked> = Vec::new();
        for target in targets {
            match stores.iter_mut().find(|s| s.target.url() == target.url()) {
                // Capture's store opens without waiting for trigger capture.
                Some(same) if matches!(target, Target::Capture(_)) => same.target = target,
                Some(_) => {}
                None => stores.push(Tracked::new(target)),
            }
        }
        eprintln!(
            "signing checkpoints of {} every {} with {}",
            stores
                .iter()
                .map(|s| redact_url(s.target.url()))
                .collect::<Vec<_>>()
                .join(" and "),
            ctx.config.signing.checkpoint_every,
            path.display()
        );
        for tracked in &mut stores {
            if let Err(refused) = round(tracked, &keys, ctx, false, every).await {
                return Err(anyhow::anyhow!(refused)).context(
                    "the store does not agree with its signed checkpoints: not starting. \
                     Run `pgtrail verify` to see what changed",
                );
            }
        }
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(checkpoint_loop(stores, keys, every, ctx.clone(), stop));
        Ok(Some(Checkpointer {
            stop: stop_tx,
            task,
        }))
    }

    /// Signs once more (when a head moved) and ends. Call it after the
    /// other parts stopped, so their last events are covered.
    pub(crate) async fn finish(self) {
        let _ = self.stop.send(true);
        if let Err(panic) = self.task.await {
            tracing::error!(error = %panic, "The checkpointer panicked: the newest events are not covered by a signed checkpoint.");
        }
    }
}

/// One store.
struct Tracked {
    target: Target,
    store: Option<Arc<dyn Store>>,
    /// Rounds failed in a row.
    failures: u32,
}

impl Tracked {
    fn new(target: Target) -> Self {
        Tracked {
            target,
            store: None,
            failures: 0,
        }
    }
}

/// What signing needs: the key, the other trusted keys, the witness.
struct Keys {
    key: KeyPair,
    trusted: Vec<TrustedKey>,
    witness: Option<PathBuf>,
}

async fn checkpoint_loop(
    mut stores: Vec<Tracked>,
    keys: Keys,
    every: Duration,
    ctx: Context,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(every) => {}
        }
        let stopping = *stop.borrow();
        for tracked in &mut stores {
            // A refusal is logged inside; the loop goes on.
            let _ = round(tracked, &keys, &ctx, stopping, every).await;
        }
        if stopping {
            return;
        }
    }
}

/// Signs `tracked`'s head (when stopping, only if it moved), logging what
/// happened; the refusal when the chain disagrees with what was signed.
async fn round(
    tracked: &mut Tracked,
    keys: &Keys,
    ctx: &Context,
    stopping: bool,
    every: Duration,
) -> Result<(), String> {
    let location = redact_url(tracked.target.url());
    let outcome = tokio::time::timeout(ROUND_TIMEOUT, sign(tracked, keys, ctx, stopping)).await;
    let result = match outcome {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!(
            "no answer within {} seconds",
            ROUND_TIMEOUT.as_secs()
        )),
    };
    match result {
        Ok(signed) => {
            if tracked.failures > 0 {
                tracing::warn!(store = %location, failures = tracked.failures, "Checkpoints are signed again.");
            }
            tracked.failures = 0;
            // The hash goes to the log too: a copy kept off the store's
            // host is a record of the head that a store admin cannot edit.
            if let Some(ChainHead { seq, hash }) = signed {
                tracing::info!(store = %location, seq, hash = %hash, "Signed a checkpoint.");
                if stopping {
                    eprintln!(
                        "signed a last checkpoint of {location} at event {seq} (hash {hash})"
                    );
                }
            }
            Ok(())
        }
        Err(error) if is_refusal(&error) => {
            tracked.failures += 1;
            let error = format!("{error:#}");
            tracing::error!(store = %location, error = %error, "Refusing to sign a checkpoint: the chain does not agree with the checkpoints signed before, or with the witness. Run `pgtrail verify`.");
            Err(error)
        }
        Err(error) => {
            tracked.failures += 1;
            // Reconnect next time: the handle may be what is broken.
            tracked.store = None;
            let error = format!("{error:#}");
            if stopping {
                tracing::error!(store = %location, error = %error, "Cannot sign the last checkpoint before stopping: the newest events are not covered by a signature until the next `pgtrail run` or `pgtrail checkpoint`.");
            } else {
                tracing::error!(store = %location, failures = tracked.failures, retry_in_s = every.as_secs(), error = %error, "Cannot sign a checkpoint: the newest events are not covered by a signature until it works. Capture goes on; retrying next round.");
            }
            Ok(())
        }
    }
}

fn is_refusal(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<SignError>(),
        Some(SignError::Inconsistent { .. })
    )
}

/// Opens the store if needed, checks its chain and signs its head; the new
/// checkpoint's head, if one was signed.
async fn sign(
    tracked: &mut Tracked,
    keys: &Keys,
    ctx: &Context,
    only_if_moved: bool,
) -> anyhow::Result<Option<ChainHead>> {
    let store = match &tracked.store {
        Some(store) => store.clone(),
        None => {
            let Some(store) = open(&tracked.target, ctx).await? else {
                return Ok(None);
            };
            tracked.store.insert(store).clone()
        }
    };
    let signer = Signer {
        key: &keys.key,
        trusted: &keys.trusted,
        witness: keys.witness.as_deref(),
    };
    match sign_head(store.as_ref(), &signer, only_if_moved).await? {
        Signed::Empty | Signed::Unchanged => Ok(None),
        Signed::New(checkpoint) => Ok(Some(ChainHead {
            seq: checkpoint.seq,
            hash: checkpoint.hash,
        })),
    }
}

/// Opens a target's store; `None` while it does not exist yet (nothing to
/// sign, and creating it is the writer's job).
async fn open(target: &Target, ctx: &Context) -> anyhow::Result<Option<Arc<dyn Store>>> {
    match target {
        Target::Capture(url) => {
            if super::missing_sqlite_file(url).is_some() {
                return Ok(None);
            }
            let mut ctx = ctx.clone();
            ctx.config.store.url = url.clone();
            Ok(Some(ctx.open_store().await?))
        }
        Target::Sealed(db) => {
            // Connecting the store would create its schema: only once
            // trigger capture is installed (as the sealer does).
            let client = pgtrail_triggers::connect(db).await?;
            if pgtrail_triggers::install::installed_version(&client)
                .await?
                .is_none()
            {
                return Ok(None);
            }
            drop(client);
            Ok(Some(pgtrail_store::open_in_database(db).await?))
        }
    }
}
