//! Proving the chain intact: every event's hash recomputes, every `prev_hash`
//! links to the event before it, `seq` has no gaps, and every checkpoint
//! matches the chain and carries a valid signature.

use ed25519_dalek::VerifyingKey;
use pgtrail_core::GENESIS_HASH;
use serde::Serialize;

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
    let checkpoints = store.checkpoints().await?;
    let mut report = VerifyReport {
        checkpoints: checkpoints.len(),
        ..VerifyReport::default()
    };

    // Retention removes a prefix; the newest prune checkpoint says where the
    // remaining chain starts and which hash it must link to.
    let start = checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Prune)
        .max_by_key(|c| c.seq);
    let (mut expected_seq, mut prev_hash) = match start {
        Some(c) => (c.seq + 1, c.hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    report.head_seq = expected_seq - 1;

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

    for checkpoint in &checkpoints {
        if let Some(problem) =
            check_checkpoint(checkpoint, &seen_at_checkpoints, report.head_seq, trusted)
        {
            report.problems.push(problem);
        } else if checkpoint.signature.is_some() && !trusted.is_empty() {
            report.checkpoints_signed += 1;
        }
    }
    Ok(report)
}
