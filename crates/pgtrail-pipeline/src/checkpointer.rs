//! The checkpointer of `pgtrail run`: signs the head of every store the
//! process writes to, so that removing the newest events, or rewriting the
//! tail and re-chaining it, no longer passes `verify`.
//!
//! Those stores are `[store] url` when logical replication appends to it,
//! and the store inside a database whose trigger capture is drained there
//! (the drain appends in that database, not to `[store] url`). Each is
//! signed every `interval`, also when its head did not move (a heartbeat:
//! the witness then records that nothing happened, rather than nothing at
//! all), once at start (events may have arrived while nothing ran) and once
//! more at a graceful stop when the head moved, after the other parts
//! stored what they had in hand.
//!
//! Nothing is signed over a chain that does not agree with the previous
//! signed checkpoint and the witness (`pgtrail_store::signing`). At start
//! that is an error, so `pgtrail run` stops before it captures anything:
//! tampering done while pgtrail was stopped must not get a fresh signature.
//! Found later, it is logged at ERROR every round, nothing is signed, and
//! capture goes on.
//!
//! It runs beside the supervised parts, not among them: it must outlive
//! them to sign their last events, and it never fails for good. A store
//! that cannot be reached is retried through [`crate::retry`] (sooner than
//! the next round, backing off up to it) and logged there; the newest
//! events are not covered by a signature meanwhile, and capture goes on.
//! Signing itself is `signing::sign_head`, the same code as `pgtrail
//! checkpoint`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgtrail_store::open::redact_url;
use pgtrail_store::signing::{sign_head, SignError, Signed, Signer};
use pgtrail_store::{ChainHead, Checkpoint, KeyPair, Store, StoreError, TrustedKey};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::retry::{self, Backoff, Retryable};
use crate::witnesses::{WitnessServer, Witnesses};

/// Longest time one store's round may take: a store that hangs must not
/// hold up the final checkpoint of the others, nor the process's exit.
pub const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// First pause before signing again after a store failed; it doubles up to
/// the interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// A store the checkpointer signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A store URL (`[store] url`, where logical replication appends). A
    /// SQLite file that does not exist yet is waited for, not created.
    Url(String),
    /// The store inside an audited database (libpq URL or key=value), where
    /// trigger capture is drained: signed once trigger capture is installed
    /// there (opening it earlier would create its schema).
    InDatabase(String),
}

impl Target {
    /// The URL or connection string.
    pub fn location(&self) -> &str {
        match self {
            Target::Url(url) | Target::InDatabase(url) => url,
        }
    }
}

/// What signing needs: the key, the other trusted keys, the witness.
pub struct Keys {
    /// The private key that signs.
    pub key: KeyPair,
    /// Keys whose earlier checkpoints are trusted besides `key`'s.
    pub trusted: Vec<TrustedKey>,
    /// The witness file every checkpoint is also appended to.
    pub witness: Option<PathBuf>,
    /// Witness servers every new checkpoint is submitted to.
    pub witness_servers: Vec<WitnessServer>,
}

/// Why a store's checkpoint was not signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The chain disagrees with its signed checkpoints or the witness.
    #[error(transparent)]
    Refused(SignError),
    /// The store could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audited database could not be asked whether trigger capture is
    /// installed.
    #[error("cannot check trigger capture's install")]
    Install(#[source] pgtrail_triggers::Error),
    /// The round took longer than [`ROUND_TIMEOUT`].
    #[error("no answer within {} seconds", ROUND_TIMEOUT.as_secs())]
    Timeout,
}

impl From<SignError> for CheckpointError {
    fn from(error: SignError) -> Self {
        match error {
            SignError::Store(store) => CheckpointError::Store(store),
            refused => CheckpointError::Refused(refused),
        }
    }
}

impl Retryable for CheckpointError {
    /// A refusal waits for the next round (an operator must look); anything
    /// else may pass (a store restarting), and is tried again sooner.
    fn is_retryable(&self) -> bool {
        !matches!(self, CheckpointError::Refused(_))
    }
}

/// The running checkpointer; [`Checkpointer::finish`] signs a last time.
pub struct Checkpointer {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<(String, ChainHead)>>,
}

impl Checkpointer {
    /// Signs `targets` once (a location named twice counts once, a
    /// [`Target::Url`] winning) and goes on signing them every `interval`
    /// in the background. A store whose chain disagrees with what was
    /// signed before is [`CheckpointError::Refused`]: nothing may run on it.
    pub async fn start(
        keys: Keys,
        targets: Vec<Target>,
        interval: Duration,
    ) -> Result<Checkpointer, CheckpointError> {
        let mut stores: Vec<Tracked> = Vec::new();
        for target in targets {
            match stores
                .iter_mut()
                .find(|s| s.target.location() == target.location())
            {
                // A URL store opens without waiting for trigger capture.
                Some(same) if matches!(target, Target::Url(_)) => same.target = target,
                Some(_) => {}
                None => stores.push(Tracked::new(target, interval, &keys.witness_servers)),
            }
        }
        for tracked in &mut stores {
            if let Err(refused @ CheckpointError::Refused(_)) =
                round(tracked, &keys, false, interval).await
            {
                return Err(refused);
            }
        }
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(checkpoint_loop(stores, keys, interval, stop));
        Ok(Checkpointer {
            stop: stop_tx,
            task,
        })
    }

    /// Signs once more (each store whose head moved) and ends; returns the
    /// heads that last round signed, by redacted location. Call it after
    /// the other parts stopped, so their last events are covered.
    pub async fn finish(self) -> Vec<(String, ChainHead)> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(signed) => signed,
            Err(panic) => {
                tracing::error!(error = %panic, "The checkpointer panicked: the newest events are not covered by a signed checkpoint.");
                Vec::new()
            }
        }
    }
}

/// One store, and when it is due.
struct Tracked {
    target: Target,
    store: Option<Arc<dyn Store>>,
    /// After a failure: how soon to try again.
    backoff: Backoff,
    due: Instant,
    /// The witness servers, and what each holds of this store's log.
    witnesses: Witnesses,
}

impl Tracked {
    fn new(target: Target, interval: Duration, witnesses: &[WitnessServer]) -> Self {
        Tracked {
            target,
            store: None,
            backoff: Backoff::new(FIRST_RETRY.min(interval), interval),
            due: Instant::now(),
            witnesses: Witnesses::new(witnesses.to_vec()),
        }
    }
}

async fn checkpoint_loop(
    mut stores: Vec<Tracked>,
    keys: Keys,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> Vec<(String, ChainHead)> {
    loop {
        let next = stores.iter().map(|s| s.due).min();
        let pause = next.map_or(interval, |due| {
            due.saturating_duration_since(Instant::now())
        });
        let stopping = retry::sleep_or_stop(pause, &mut stop).await;
        let mut last = Vec::new();
        for tracked in &mut stores {
            if stopping || tracked.due <= Instant::now() {
                if let Ok(Some(head)) = round(tracked, &keys, stopping, interval).await {
                    last.push((redact_url(tracked.target.location()), head));
                }
            }
        }
        if stopping {
            return last;
        }
    }
}

/// Signs `tracked`'s head (when `only_if_moved`, only if it moved), logs
/// what happened and sets when it is due next; the head signed, if any.
async fn round(
    tracked: &mut Tracked,
    keys: &Keys,
    only_if_moved: bool,
    interval: Duration,
) -> Result<Option<ChainHead>, CheckpointError> {
    let location = redact_url(tracked.target.location());
    let outcome = tokio::time::timeout(ROUND_TIMEOUT, sign(tracked, keys, only_if_moved)).await;
    let result = outcome.unwrap_or(Err(CheckpointError::Timeout));
    // Outside the round's timeout: the checkpoint is stored whatever the
    // witnesses do, and each submission has its own timeout.
    if let (Ok(Some(checkpoint)), Some(store)) = (&result, tracked.store.clone()) {
        tracked
            .witnesses
            .submit(store.as_ref(), checkpoint, &location)
            .await;
    }
    let result = result.map(|signed| {
        signed.map(|checkpoint| ChainHead {
            seq: checkpoint.seq,
            hash: checkpoint.hash,
        })
    });
    let pause = match &result {
        Ok(signed) => {
            let failures = tracked.backoff.succeeded();
            if failures > 0 {
                tracing::warn!(store = %location, failures, "Checkpoints are signed again.");
            }
            // The hash goes to the log too: a copy kept off the store's
            // host is a record of the head that a store admin cannot edit.
            if let Some(ChainHead { seq, hash }) = signed {
                tracing::info!(store = %location, seq, hash = %hash, "Signed a checkpoint.");
            }
            interval
        }
        Err(error) if !error.is_retryable() => {
            tracing::error!(store = %location, error = %retry::error_chain(error), "Refusing to sign a checkpoint: the chain does not agree with the checkpoints signed before, or with the witness. Run `pgtrail verify`.");
            interval
        }
        Err(error) => {
            // Reconnect next time: the handle may be what is broken.
            tracked.store = None;
            let pause = tracked.backoff.failed();
            if only_if_moved {
                tracing::error!(store = %location, error = %retry::error_chain(error), "Cannot sign the last checkpoint before stopping: the newest events are not covered by a signature until the next `pgtrail run` or `pgtrail checkpoint`.");
            } else {
                retry::log_failure(
                    &format!("Signing a checkpoint of {location}"),
                    "the newest events are not covered by a signature until it works; capture goes on",
                    error,
                    tracked.backoff.failures(),
                    pause,
                );
            }
            pause
        }
    };
    tracked.due = Instant::now() + pause;
    result
}

/// Opens the store if needed, checks its chain and signs its head; the new
/// checkpoint, if one was signed.
async fn sign(
    tracked: &mut Tracked,
    keys: &Keys,
    only_if_moved: bool,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let store = match &tracked.store {
        Some(store) => store.clone(),
        None => {
            let Some(store) = open(&tracked.target).await? else {
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
        Signed::New(checkpoint) => Ok(Some(checkpoint)),
    }
}

/// Opens a target's store; `None` while it does not exist yet (nothing to
/// sign, and creating it is the writer's job).
async fn open(target: &Target) -> Result<Option<Arc<dyn Store>>, CheckpointError> {
    match target {
        Target::Url(url) => {
            if crate::store::missing_sqlite_file(url).is_some() {
                return Ok(None);
            }
            Ok(Some(crate::store::open(url).await?))
        }
        Target::InDatabase(db) => {
            let client = pgtrail_triggers::connect(db)
                .await
                .map_err(CheckpointError::Install)?;
            let installed = pgtrail_triggers::install::installed_version(&client)
                .await
                .map_err(CheckpointError::Install)?;
            if installed.is_none() {
                return Ok(None);
            }
            drop(client);
            Ok(Some(pgtrail_store::open_in_database(db).await?))
        }
    }
}
