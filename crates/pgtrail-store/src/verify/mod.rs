//! Proving the chain intact: every event is stored as it was hashed and its
//! hash recomputes, every `prev_hash` links to the event before it, `seq`
//! has no gaps, every copy of an event's fields that readers use (filter
//! columns, index keys, the full-text index) agrees with the event,
//! `chain_head` is the last event, and every checkpoint matches the chain and
//! carries a valid signature. Verify only reads: open the store with
//! [`crate::open_for_verify`] so that nothing can write either.

use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::VerifyingKey;
use pgtrail_core::GENESIS_HASH;
use serde::Serialize;

use crate::checkpoint::TrustedKey;
use crate::{CheckpointKind, Result, Store};

mod checkpoints;
pub mod consistency;
mod events;
pub mod state;
mod tree_nodes;

use checkpoints::check_checkpoint;
use events::{check_copies, check_event};

/// How many events are read per round trip.
const PAGE: usize = 10_000;
/// Problems with stored copies reported at most (then one that counts the rest).
const MAX_COPY_PROBLEMS: usize = 20;

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
    /// A stored copy of an event's fields that readers use (a filter column,
    /// an index key, the full-text index) disagrees with the event.
    Index,
    /// `chain_head` is not the last event of the chain.
    Head,
    /// A kept node of the Merkle tree is not the hash of the events under it.
    TreeNode,
    /// The log is smaller than a checkpoint before it, or than the one this
    /// verifier saw: an older copy of the store was put back.
    Rollback,
    /// A checkpoint does not extend the one before it, or the one this
    /// verifier saw: the log was rewritten and signed again.
    Fork,
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
    /// The walk resumed after this event, the size of the checkpoint the
    /// verifier remembered (incremental verify): the events up to it were
    /// checked by an earlier run, and are not read again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_after: Option<i64>,
    /// The size of the checkpoint the verifier remembered, which the store
    /// was shown to extend (absent when nothing was remembered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remembered_size: Option<i64>,
    /// The note of the newest head checkpoint the walk reached: what the
    /// verifier remembers when nothing was found wrong.
    #[serde(skip)]
    pub newest_note: Option<String>,
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
    /// The checkpoint this verifier saw sound on its last run: the store
    /// must extend it, and only the events after it are walked.
    pub remembered: Option<state::Remembered>,
    /// Walk every event even when a remembered checkpoint would let the
    /// walk resume after it (the store must still extend it).
    pub full: bool,
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
    verify_with_progress(store, options, &AtomicU64::new(0)).await
}

/// [`verify_with`], counting the events checked so far in `checked` as it
/// walks (for a caller showing progress, such as the HTTP server).
pub async fn verify_with_progress(
    store: &dyn Store,
    options: &VerifyOptions,
    checked: &AtomicU64,
) -> Result<VerifyReport> {
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
    let mut tree = checkpoints::Tree::start(start, origin.as_deref(), &options.keys, &mut report);
    let (mut expected_seq, mut prev_hash) = match start {
        Some(c) => (c.seq + 1, c.hash.clone()),
        None => (1, GENESIS_HASH.to_string()),
    };
    let first = expected_seq - 1;

    // The checkpoint remembered from the last run: the store must extend
    // it; then the walk resumes after it unless asked for a full one.
    let mut memory_problems = Vec::new();
    if let Some(remembered) = &options.remembered {
        let chain_end = store.head().await?.map_or(0, |h| h.seq);
        let size = i64::try_from(remembered.size()).unwrap_or(i64::MAX);
        report.remembered_size = Some(size);
        if let Some(problem) = consistency::check_remembered(
            store,
            remembered,
            &checkpoints,
            origin.as_deref(),
            chain_end,
        )
        .await?
        {
            memory_problems.push(problem);
        } else if !options.full && size > first {
            match consistency::resume(store, remembered).await? {
                Ok(frontier) => {
                    tree = checkpoints::Tree::resumed(frontier);
                    expected_seq = size + 1;
                    prev_hash = remembered.checkpoint.head_hash.clone();
                    report.resumed_after = Some(size);
                }
                Err(problem) => memory_problems.push(problem),
            }
        }
    }
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

    // Read before and after the walk: an append running beside verify moves
    // it forward, never back, and never away from the chain.
    let head_before = store.head().await?;
    let start_seq = expected_seq;
    let mut head_hash_seen: Option<String> = None;

    let mut chain_problem: Option<Problem> = None;
    let mut copy_problems: Vec<Problem> = Vec::new();
    let mut copy_problems_left_out = 0usize;
    let mut walked_all = true;
    let mut expected_indexes = crate::ExpectedIndexes::default();
    let mut after = expected_seq - 1;
    let mut page = store.scan_stored(after, PAGE).await?;
    while let Some(last) = page.last() {
        after = last.seq.max(after);
        // The next page is read, and this one's index entries worked out,
        // while this one is checked: on SQLite both run on threads of their
        // own, so reading and checking overlap. The pages are the same as
        // read one after the other.
        let check = async {
            for stored in &page {
                let seq = stored.seq;
                report.events_checked += 1;
                checked.store(report.events_checked, Ordering::Relaxed);
                report.head_seq = seq;
                let stored_hash = stored
                    .event
                    .as_ref()
                    .ok()
                    .and_then(|e| e.hash.clone())
                    .unwrap_or_default();
                if chain_problem.is_none() {
                    chain_problem = check_event(stored, expected_seq, &prev_hash, &recent);
                }
                for problem in check_copies(stored) {
                    if copy_problems.len() < MAX_COPY_PROBLEMS {
                        copy_problems.push(problem);
                    } else {
                        copy_problems_left_out += 1;
                    }
                }
                if let Some(slot) = seen_at_checkpoints.get_mut(&seq) {
                    *slot = stored_hash.clone();
                }
                if chain_problem.is_none() {
                    tree.push(seq, &stored_hash);
                }
                if head_before.as_ref().is_some_and(|h| h.seq == seq) {
                    head_hash_seen = Some(stored_hash.clone());
                }
                expected_seq = seq + 1;
                prev_hash = stored_hash.clone();
                recent.push_back((seq, stored_hash));
                if recent.len() > 4096 {
                    recent.pop_front();
                }
                if chain_problem.is_some() && seen_at_checkpoints.values().all(|h| !h.is_empty()) {
                    // The first chain problem is what matters; keep walking
                    // only to compare checkpoints, and stop when all are
                    // compared.
                    return false;
                }
            }
            true
        };
        let (next, expected, go_on) = tokio::join!(
            store.scan_stored(after, PAGE),
            store.expected_indexes(&page),
            check
        );
        if !go_on {
            walked_all = false;
            break;
        }
        expected_indexes.extend(expected?);
        page = next?;
    }
    let chain_ok = chain_problem.is_none();
    report.problems.extend(chain_problem);

    if walked_all {
        let index_mismatches = store
            .check_indexes(start_seq, report.head_seq, expected_indexes)
            .await?;
        // Read after the index check: an append that index rows beyond the
        // walk came from has moved the head by now.
        let head_after = store.head().await?;
        let last = (report.head_seq, prev_hash.as_str());
        report.problems.extend(check_head(
            head_before.as_ref(),
            head_hash_seen.as_deref(),
            head_after.as_ref(),
            last,
        ));
        // Rows beyond the walk are another append's, when one ran meanwhile.
        let appended_since = head_after.as_ref().is_some_and(|h| h.seq > report.head_seq);
        for (seq, mismatch) in index_mismatches {
            if appended_since && seq > report.head_seq {
                continue;
            }
            let stored = crate::StoredEvent {
                seq,
                event: Err(String::new()),
                body: None,
                mismatches: vec![mismatch],
            };
            for problem in check_copies(&stored) {
                if copy_problems.len() < MAX_COPY_PROBLEMS {
                    copy_problems.push(problem);
                } else {
                    copy_problems_left_out += 1;
                }
            }
        }
    }
    if copy_problems_left_out > 0 {
        copy_problems.push(Problem {
            kind: ProblemKind::Index,
            seq: copy_problems.last().map_or(0, |p| p.seq),
            detail: format!(
                "and {copy_problems_left_out} more stored values that disagree with their events"
            ),
        });
    }
    report.problems.extend(copy_problems);
    tree_nodes::check(&tree, store, walked_all && chain_ok, &mut report).await?;
    report.problems.extend(memory_problems);

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
    report.problems.extend(
        consistency::check_consecutive(
            store,
            &checkpoints,
            origin.as_deref(),
            first.max(report.resumed_after.unwrap_or(0)),
            report.head_seq,
            &tree,
        )
        .await?,
    );
    report.newest_note = checkpoints
        .iter()
        .rev()
        .filter(|c| c.kind == CheckpointKind::Head && c.seq <= report.head_seq)
        .find_map(|c| c.note.clone());
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

/// `chain_head` read before the walk (`before`, with the hash the walk found
/// at its position) and after it (`after`), against the `last` event walked
/// (or the pruned boundary when no event is left).
fn check_head(
    before: Option<&crate::ChainHead>,
    hash_at_before: Option<&str>,
    after: Option<&crate::ChainHead>,
    last: (i64, &str),
) -> Option<Problem> {
    let (last_seq, last_hash) = last;
    let problem = |seq, detail| {
        Some(Problem {
            kind: ProblemKind::Head,
            seq,
            detail,
        })
    };
    let Some(before) = before else {
        if last_seq > 0 {
            return problem(
                last_seq,
                format!("chain_head is empty but the chain goes up to event {last_seq}: chain_head was removed"),
            );
        }
        return None;
    };
    if before.seq > last_seq {
        return problem(
            before.seq,
            format!(
                "chain_head is at event {} but the chain ends at event {last_seq}: events after it were removed, or chain_head was moved",
                before.seq
            ),
        );
    }
    let hash_at = if before.seq == last_seq {
        Some(last_hash)
    } else {
        hash_at_before
    };
    if hash_at != Some(before.hash.as_str()) {
        return problem(
            before.seq,
            format!(
                "chain_head names event {} with hash {}, but that event's hash is {}: chain_head was moved, or the event rewritten",
                before.seq,
                before.hash,
                hash_at.unwrap_or("(no such event)")
            ),
        );
    }
    // Appends during the walk move the head forward; a head still behind
    // the last event walked did not come from an append.
    if let Some(after) = after {
        if after.seq < last_seq {
            return problem(
                after.seq,
                format!(
                    "chain_head is at event {} but the chain goes on to event {last_seq}: events were added behind the store's back, or chain_head was moved back",
                    after.seq
                ),
            );
        }
    }
    None
}
