//! The checkpointing part of `pgtrail run`: signs the head of every store
//! the process writes to, so that removing the newest events, or rewriting
//! the tail and re-chaining it, no longer passes `verify`.
//!
//! Those stores are `[store] url` when logical replication captures into it,
//! and the `pgtrail` schema of the sealed database when trigger sealing runs
//! (the sealer appends there, not to `[store] url`). Each is signed every
//! `[signing] checkpoint_every` when its head moved, once at start (events
//! may have arrived while nothing ran) and once more at a graceful stop,
//! after the other parts stored what they had in hand.
//!
//! It runs beside the capture parts, not in their `JoinSet`: it must outlive
//! them to sign their last events, and it never fails for good. A store
//! error is logged at ERROR (the newest events are not covered by a
//! signature meanwhile) and retried next round; capture goes on. A key that
//! cannot be read is refused before anything starts: running on unsigned
//! after an operator asked for signatures would hide exactly what they
//! wanted to catch. Signing itself is `checkpoint::sign_head`, the same code
//! as `pgtrail checkpoint`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_store::open::redact_url;
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::{ChainHead, CheckpointKind, KeyPair, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::checkpoint::{sign_head, signing_key, Signed};
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
    /// Loads the key and starts signing `targets` (duplicates counted once).
    /// `None`, after saying so on stderr, when no key is configured.
    pub(crate) fn start(
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
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(checkpoint_loop(stores, key, every, ctx.clone(), stop));
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

/// One store, and what was last signed in it.
struct Tracked {
    target: Target,
    store: Option<Arc<dyn Store>>,
    /// The head of the newest checkpoint signed with this key; `None` until
    /// the store was read once.
    signed: Option<ChainHead>,
    /// Rounds failed in a row.
    failures: u32,
}

impl Tracked {
    fn new(target: Target) -> Self {
        Tracked {
            target,
            store: None,
            signed: None,
            failures: 0,
        }
    }
}

async fn checkpoint_loop(
    mut stores: Vec<Tracked>,
    key: KeyPair,
    every: Duration,
    ctx: Context,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stopping = *stop.borrow();
        for tracked in &mut stores {
            round(tracked, &key, &ctx, stopping, every).await;
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Signs `tracked`'s head if it moved, logging what happened.
async fn round(
    tracked: &mut Tracked,
    key: &KeyPair,
    ctx: &Context,
    stopping: bool,
    every: Duration,
) {
    let location = redact_url(tracked.target.url());
    let outcome = tokio::time::timeout(ROUND_TIMEOUT, sign_if_moved(tracked, key, ctx)).await;
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
        }
    }
}

/// Opens the store if needed and signs its head unless it is the one last
/// signed; the new checkpoint's head, if one was signed.
async fn sign_if_moved(
    tracked: &mut Tracked,
    key: &KeyPair,
    ctx: &Context,
) -> anyhow::Result<Option<ChainHead>> {
    let store = match &tracked.store {
        Some(store) => store.clone(),
        None => {
            let Some(store) = open(&tracked.target, ctx).await? else {
                return Ok(None);
            };
            if tracked.signed.is_none() {
                tracked.signed = last_signed_head(store.as_ref(), key).await?;
            }
            tracked.store.insert(store).clone()
        }
    };
    match sign_head(store.as_ref(), key, tracked.signed.as_ref()).await? {
        Signed::Empty | Signed::Unchanged => Ok(None),
        Signed::New(checkpoint) => {
            let head = ChainHead {
                seq: checkpoint.seq,
                hash: checkpoint.hash,
            };
            tracked.signed = Some(head.clone());
            Ok(Some(head))
        }
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
            Ok(Some(Arc::new(PostgresStore::connect(db).await?)))
        }
    }
}

/// The head of the newest head checkpoint signed with `key`, so a restart
/// does not sign an unchanged head again.
async fn last_signed_head(store: &dyn Store, key: &KeyPair) -> anyhow::Result<Option<ChainHead>> {
    let public = key.public_hex();
    let checkpoints = store.checkpoints().await?;
    Ok(checkpoints
        .into_iter()
        .rev()
        .find(|c| c.kind == CheckpointKind::Head && c.public_key.as_deref() == Some(&public))
        .map(|c| ChainHead {
            seq: c.seq,
            hash: c.hash,
        }))
}
