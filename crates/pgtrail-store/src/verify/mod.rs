//! Proving the chain intact: every event's hash recomputes, every `prev_hash`
//! links to the event before it, `seq` has no gaps, and every checkpoint
//! matches the chain and carries a valid signature.

use ed25519_dalek::VerifyingKey;
use pgtrail_core::GENESIS_HASH;
use serde::Serialize;

use crate::checkpoint::TrustedKey;
use crate::{CheckpointKind, Result, Store};

mod checkpoints;
mod events;

use checkpoints::check_checkpoint;
use events::check_link;

/// How many events are read per round trip.
const PAGE: usize = 10_000;

/// What sort of tampering a problem points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The event's content no longer matches its hash.
    Modified,
    /// Events are missing from the chain.
    Removed,
    /// An event that was never appended is in the chain.
    Inserted,
    /// Events are out of chain order.
    Reordered,
    /// A checkpoint does not match the chain, or its signature fails.
    Checkpoint,
    /// The store disagrees with the witness.
    Witness,
    /// Too many events, or all of them, are not covered by a signature.
    Unsigned,
}

/// The first thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What it points to.
    pub kind: ProblemKind,
    /// The chain position where it was found.
    pub seq: i64,
    /// A sentence for the operator.
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events whose hash and link were checked.
    pub events_checked: u64,
    /// The chain's last `seq` (or the pruned boundary, when empty).
    pub head_seq: i64,
    /// Checkpoints found.
    pub checkpoints: usize,
    /// Of those, how many had a signature that verified.
    pub checkpoints_signed: usize,
    /// Problems: the first chain problem, then any checkpoint problems.
    pub problems: Vec<Problem>,
    /// The newest checkpoint whose signature verified (with keys), or that
    /// carries a signature (without).
    pub newest_signed_seq: Option<i64>,
    /// Events after it.
    pub unsigned_events: i64,
    /// Checkpoints of this store found in the witness, when one was given.
    pub witnessed: Option<usize>,
    /// Retention removed the events up to here under a prune checkpoint
    /// whose signature was not checked (no key): their removal is not
    /// proven. With a key such a checkpoint is a problem instead.
    pub unverified_prefix: Option<i64>,
}

/// What [`verify_with`] checks besides the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Every checkpoint must be signed by one of these, and at least one
    /// must be; none: signatures are not checked.
    pub keys: Vec<TrustedKey>,
    /// A witness file every checkpoint of this store in it must match.
    pub witness: Option<std::path::PathBuf>,
    /// Fail when more events than this follow the newest signed checkpoint.
    pub max_unsigned: Option<u64>,
}

impl VerifyReport {
    /// True when nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Walks the whole chain of `store` and its checkpoints. With `public_key`,
/// every checkpoint must carry a valid signature by that key.
pub async fn verify(store: &dyn Store, public_key: Option<&VerifyingKey>) -> Result<VerifyReport> {
    let trusted: Vec<VerifyingKey> = public_key.into_iter().cloned().collect();
    verify_with_keys(store, &trusted).await
}

/// Like [`verify`], trusting several keys: every checkpoint must carry a
/// valid signature by one of `trusted` (a key and the ones it replaced, so a
/// store signed across a key rotation verifies). No keys: signatures are not
/// checked.
pub async fn verify_with_keys(store: &dyn Store, trusted: &[VerifyingKey]) -> Result<VerifyReport> {
    let options = VerifyOptions {
        keys: trusted.iter().cloned().map(TrustedKey::current).collect(),
        ..VerifyOptions::default()
    };
    verify_with(store, &options).await
}

/// Walks the whole chain of `store`, its checkpoints and the Merkle tree
/// they sign, and the options' witness and limits.
pub async fn verify_with(store: &dyn Store, options: &VerifyOptions) -> Result<VerifyReport> {
    let checkpoints = store.checkpoints().await?;
    let origin = store
        .store_id()
        .await?
        .map(|id| crate::checkpoint::origin(&id));
    let witness = match &options.witness {
        Some(path) => Some(crate::witness::read(path)?),
        None => None,
    };
    let mut report = VerifyReport {
        checkpoints: checkpoints.len(),
        ..VerifyReport::default()
    };

    // Retention removes a prefix; a prune checkpoint just before the oldest
    // stored event says where the remaining chain starts, which hash it
    // links to and the tree's frontier there. Events still stored are
    // always checked: a forged prune checkpoint cannot make verify skip any.
    let first = store.scan(0, 1).await?.first().and_then(|e| e.seq);
    let start = first.filter(|f| *f > 1).and_then(|f| {
        checkpoints
            .iter()
            .rev()
            .find(|c| c.kind == CheckpointKind::Prune && c.seq == f - 1)
    });
    let tree = checkpoints::Tree::start(start, origin.as_deref(), &options.keys, &mut report);
    let mut tree = tree;
    let (mut expected_seq, mut prev_hash) = match start {
        Some(c) => (c.seq + 1, c.hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    report.head_seq = expected_seq - 1;
    tree.want(&checkpoints, witness.as_ref().map(|w| w.notes.as_slice()));

    // Hashes of checkpointed positions, filled in as the walk passes them.
    let mut seen_at_checkpoints: std::collections::HashMap<i64, String> = checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Head && c.seq >= expected_seq)
        .map(|c| (c.seq, String::new()))
        .collect();
    // A short memory of recent hashes tells a reordering from a modification.
    let mut recent: std::collections::VecDeque<(i64, String)> = std::collections::VecDeque::new();

    let mut chain_problem: Option<Problem> = None;
    let mut after = expected_seq - 1;
    'walk: loop {
        let page = store.scan(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq.unwrap_or(after);
        for event in page {
            let seq = event.seq.unwrap_or_default();
            report.events_checked += 1;
            report.head_seq = seq;
            let stored_hash = event.hash.clone().unwrap_or_default();
            let stored_prev = event.prev_hash.clone().unwrap_or_default();
            if chain_problem.is_none() {
                chain_problem = check_link(
                    &event,
                    seq,
                    expected_seq,
                    &prev_hash,
                    &stored_prev,
                    &stored_hash,
                    &recent,
                );
            }
            if let Some(slot) = seen_at_checkpoints.get_mut(&seq) {
                *slot = stored_hash.clone();
            }
            if chain_problem.is_none() {
                tree.push(seq, &stored_hash);
            }
            expected_seq = seq + 1;
            prev_hash = stored_hash.clone();
            recent.push_back((seq, stored_hash));
            if recent.len() > 4096 {
                recent.pop_front();
            }
            if chain_problem.is_some() && seen_at_checkpoints.values().all(|h| !h.is_empty()) {
                // The first chain problem is what matters; keep walking only to
                // compare checkpoints, and stop when all are compared.
                break 'walk;
            }
        }
    }
    report.problems.extend(chain_problem);

    let trusted = &options.keys;
    for checkpoint in &checkpoints {
        if let Some(problem) = check_checkpoint(
            checkpoint,
            &seen_at_checkpoints,
            report.head_seq,
            trusted,
            &tree,
            origin.as_deref(),
        ) {
            report.problems.push(problem);
        } else if checkpoint.is_signed() && !trusted.is_empty() {
            report.checkpoints_signed += 1;
        }
    }
    checkpoints::check_coverage(&checkpoints, options, &mut report);
    if let Some(witness) = &witness {
        checkpoints::check_witness(
            witness,
            &checkpoints,
            &tree,
            origin.as_deref(),
            options,
            &mut report,
        );
    }
    Ok(report)
}
