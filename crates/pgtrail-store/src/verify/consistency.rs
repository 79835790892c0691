//! The log only grew: each signed head checkpoint extends the one before it
//! (a consistency proof from the store, checked against both signed roots),
//! and the store extends the checkpoint this verifier remembers from its
//! last run (`state`). A checkpoint smaller than one before it is a
//! rollback; a proof that fails means the tree under the old root is not
//! the beginning of the new one: a fork, the log rewritten and re-signed.
//!
//! [`ConsistencyProof`] is the proof as `pgtrail consistency` hands it out:
//! the body of C2SP tlog-witness's `add-checkpoint` request (a line
//! `old <size>`, one base64 hash a line, an empty line, the new signed note).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::checkpoint::NoteCheckpoint;
use crate::merkle::{self, Frontier, Hash, Subtree};
use crate::{proof, Checkpoint, CheckpointKind, Result, Store};

use super::state::Remembered;
use super::{Problem, ProblemKind};

/// A consistency proof as handed out: from `old` entries to the new
/// checkpoint's, with the new checkpoint's note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The old tree size.
    pub old: u64,
    /// The proof's hashes, in order.
    pub hashes: Vec<Hash>,
    /// The new checkpoint's signed note.
    pub note: String,
}

impl ConsistencyProof {
    /// The text form: `old N`, a base64 hash a line, an empty line, the note.
    pub fn to_text(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for hash in &self.hashes {
            out.push_str(&BASE64.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.note);
        out
    }

    /// Reads [`ConsistencyProof::to_text`]'s form.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (head, note) = text
            .split_once("\n\n")
            .ok_or("no empty line before the checkpoint")?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or("the first line is not 'old <size>'")?;
        let hashes = lines
            .enumerate()
            .map(|(i, line)| {
                BASE64
                    .decode(line)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| format!("line {} is not a base64 32-byte hash", i + 2))
            })
            .collect::<Result<Vec<Hash>, String>>()?;
        Ok(ConsistencyProof {
            old,
            hashes,
            note: note.to_string(),
        })
    }

    /// Checks the proof `text` (its text form) against the old checkpoint's
    /// note `old_text` and `keys`, with no store: both notes are of one log
    /// and signed by a key, the proof starts at the old checkpoint's size,
    /// and leads from its root to the new one's. The two checkpoints, read.
    pub fn check(
        text: &str,
        old_text: &str,
        keys: &[ed25519_dalek::VerifyingKey],
    ) -> Result<(NoteCheckpoint, NoteCheckpoint), String> {
        let proof =
            ConsistencyProof::parse(text).map_err(|e| format!("not a consistency proof: {e}"))?;
        let new = NoteCheckpoint::parse(&proof.note)
            .map_err(|e| format!("the proof's checkpoint does not parse: {e}"))?;
        let old = NoteCheckpoint::parse(old_text)
            .map_err(|e| format!("the old checkpoint does not parse: {e}"))?;
        let signed = |n: &NoteCheckpoint| keys.iter().any(|k| n.note.verify(&n.tree.origin, k));
        if !signed(&old) {
            return Err("the old checkpoint is not signed by the given key".into());
        }
        if !signed(&new) {
            return Err("the new checkpoint is not signed by the given key: it was altered, or made by someone else".into());
        }
        if old.tree.origin != new.tree.origin {
            return Err(format!(
                "the checkpoints are of two logs ('{}' and '{}')",
                old.tree.origin, new.tree.origin
            ));
        }
        if proof.old != old.tree.size {
            return Err(format!(
                "the proof starts at {} entries, but the old checkpoint has {}",
                proof.old, old.tree.size
            ));
        }
        merkle::verify_consistency(
            old.tree.size,
            new.tree.size,
            &old.tree.root,
            &new.tree.root,
            &proof.hashes,
        )
        .map_err(|e| {
            format!(
                "the checkpoint at {} entries ({}) does not extend the one at {} ({}): {}",
                new.tree.size,
                when(&new),
                old.tree.size,
                when(&old),
                e.0
            )
        })?;
        Ok((old, new))
    }
}

fn when(note: &NoteCheckpoint) -> String {
    pgtrail_core::time::format_micros(&note.created_at)
}

/// The store's head checkpoints that are this log's signed notes, oldest
/// first (the order the store recorded them).
fn heads<'a>(checkpoints: &'a [Checkpoint], origin: Option<&str>) -> Vec<NoteCheckpoint> {
    checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Head)
        .filter_map(|c: &'a Checkpoint| c.parsed_note()?.ok())
        .filter(|n| Some(n.tree.origin.as_str()) == origin)
        .collect()
}

/// Each head checkpoint against the one recorded before it: not smaller
/// (else a rollback), and extending it (a consistency proof from the store
/// between the two sizes, checked against both signed roots; else a fork).
/// Pairs reaching before `first` (retention removed the leaves a proof
/// needs, or an earlier run checked them) or past `head_seq` (reported by
/// the checkpoint checks) are left to those checks.
///
/// A pair whose two roots the walk recomputed from the chain, and found
/// signed, needs no proof: both are trees of one run of leaves, so one
/// extends the other by construction. Only the others cost a proof (a
/// store of months of checkpoints would otherwise make one per pair).
pub(super) async fn check_consecutive(
    store: &dyn Store,
    checkpoints: &[Checkpoint],
    origin: Option<&str>,
    first: i64,
    head_seq: i64,
    walked: &super::checkpoints::Tree,
) -> Result<Vec<Problem>> {
    let heads = heads(checkpoints, origin);
    let mut problems = Vec::new();
    for pair in heads.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let (old_size, new_size) = (old.tree.size, new.tree.size);
        if new_size < old_size {
            problems.push(Problem {
                kind: ProblemKind::Rollback,
                seq: new.seq(),
                detail: format!(
                    "the checkpoint at event {new_size} ({}) is smaller than the one before it at event {old_size} ({}): the log was rolled back",
                    when(new),
                    when(old)
                ),
            });
            continue;
        }
        if old.seq() < first || new.seq() > head_seq {
            continue;
        }
        if walked.computed(old_size, &old.tree.root) && walked.computed(new_size, &new.tree.root) {
            continue;
        }
        // A proof the store cannot give (leaves retention removed that no
        // kept node or prune frontier stands for) proves nothing either
        // way: the walk's roots and the checkpoint checks still hold.
        match checked(store, old_size, new_size, &old.tree.root, &new.tree.root).await {
            Checked::Holds | Checked::Unavailable(_) => {}
            Checked::NodeWrong => problems.push(node_wrong(old_size, new_size)),
            Checked::Fails(reason) => problems.push(Problem {
                kind: ProblemKind::Fork,
                seq: new.seq(),
                detail: format!(
                    "the checkpoint at event {new_size} ({}) does not extend the one at event {old_size} ({}): {reason}",
                    when(new),
                    when(old)
                ),
            }),
        }
    }
    Ok(problems)
}

/// The store against the checkpoint this verifier remembers: its newest
/// head checkpoint and its chain must not be smaller (else a rollback), and
/// a consistency proof from the remembered size to the newest checkpoint
/// must hold against the remembered root (else a fork).
pub(super) async fn check_remembered(
    store: &dyn Store,
    remembered: &Remembered,
    checkpoints: &[Checkpoint],
    origin: Option<&str>,
    chain_end: i64,
) -> Result<Option<Problem>> {
    let size = remembered.size();
    let seq = i64::try_from(size).unwrap_or(i64::MAX);
    let problem = |kind, seq, detail| Ok(Some(Problem { kind, seq, detail }));
    let then = remembered.when();
    if Some(remembered.state.origin.as_str()) != origin {
        return problem(
            ProblemKind::Fork,
            seq,
            format!(
                "the verifier state remembers the log '{}', but this store is '{}': the store was replaced, or this is another store's state file",
                remembered.state.origin,
                origin.unwrap_or("a store without an id")
            ),
        );
    }
    let Some(newest) = heads(checkpoints, origin).pop() else {
        return problem(
            ProblemKind::Rollback,
            seq,
            format!("the store has no signed head checkpoint, but this verifier saw one at event {size} ({then}): its checkpoints were deleted, or an older copy of the store was put back (rollback)"),
        );
    };
    if newest.tree.size < size {
        return problem(
            ProblemKind::Rollback,
            newest.seq(),
            format!(
                "the store's newest checkpoint is at event {} ({}), but this verifier saw one at event {size} ({then}): an older copy of the store was put back (rollback)",
                newest.tree.size,
                when(&newest)
            ),
        );
    }
    if chain_end < seq {
        return problem(
            ProblemKind::Rollback,
            chain_end,
            format!(
                "the chain ends at event {chain_end}, but this verifier saw a checkpoint at event {size} ({then}): events were removed, or an older copy of the store was put back (rollback)"
            ),
        );
    }
    match checked(store, size, newest.tree.size, remembered.root(), &newest.tree.root).await {
        Checked::Holds => Ok(None),
        Checked::NodeWrong => Ok(Some(node_wrong(size, newest.tree.size))),
        Checked::Fails(reason) | Checked::Unavailable(reason) => problem(
            ProblemKind::Fork,
            newest.seq(),
            format!(
                "the store's checkpoint at event {} ({}) does not extend the checkpoint at event {size} this verifier saw ({then}): {reason} (a fork: the log was rewritten and signed again)",
                newest.tree.size,
                when(&newest)
            ),
        ),
    }
}

/// The tree where an incremental walk resumes: the frontier at the
/// remembered size from the store's subtree hashes, which must give the
/// remembered root.
pub(super) async fn resume(
    store: &dyn Store,
    remembered: &Remembered,
) -> Result<std::result::Result<Frontier, Problem>> {
    let size = remembered.size();
    let fork = |reason: String| {
        Problem {
        kind: ProblemKind::Fork,
        seq: i64::try_from(size).unwrap_or(i64::MAX),
        detail: format!(
            "the store's tree of the first {size} events is not the one this verifier saw ({}): {reason}",
            remembered.when()
        ),
    }
    };
    let from_nodes = match store.subtree_hashes(&Subtree::cover(0, size)).await {
        Ok(hashes) => Frontier::from_subtrees(size, hashes).ok(),
        Err(_) => None,
    };
    if let Some(frontier) = from_nodes.filter(|f| f.root() == *remembered.root()) {
        return Ok(Ok(frontier));
    }
    // The kept nodes do not give it: the events' hashes tell a damaged
    // node (reported by the caller's check as such) from a rewritten log.
    match proof::frontier_from_events(store, size).await {
        Ok(frontier) if frontier.root() == *remembered.root() => Ok(Ok(frontier)),
        Ok(_) => Ok(Err(fork(
            "its root differs (an event before it was rewritten)".into(),
        ))),
        Err(e) => Ok(Err(fork(format!("the store cannot give it: {e}")))),
    }
}

/// What a consistency proof from the store showed.
enum Checked {
    Holds,
    /// The proof from the kept nodes failed and the one from the events'
    /// hashes holds: a kept node is wrong, the log is not.
    NodeWrong,
    /// Neither holds: the log does not extend.
    Fails(String),
    /// The store cannot give a proof (leaves retention removed).
    Unavailable(String),
}

/// The proof from `old` to `new` from the store (its kept nodes), checked
/// against both roots; when it fails, again from the events' hashes alone.
async fn checked(
    store: &dyn Store,
    old: u64,
    new: u64,
    old_root: &merkle::Hash,
    new_root: &merkle::Hash,
) -> Checked {
    let check = |hashes: &[merkle::Hash]| {
        merkle::verify_consistency(old, new, old_root, new_root, hashes).map_err(|e| e.0)
    };
    // `Some(reason)`: the nodes gave a proof, and it failed.
    let failed = match proof::consistency(store, old, new).await {
        Ok(hashes) => match check(&hashes) {
            Ok(()) => return Checked::Holds,
            Err(reason) => Some(reason),
        },
        Err(_) => None,
    };
    match (
        proof::consistency_from_events(store, old, new).await,
        failed,
    ) {
        (Ok(hashes), failed) => match check(&hashes) {
            Ok(()) if failed.is_some() => Checked::NodeWrong,
            Ok(()) => Checked::Holds,
            Err(reason) => Checked::Fails(reason),
        },
        (Err(_), Some(reason)) => Checked::Fails(reason),
        (Err(e), None) => Checked::Unavailable(format!("the store cannot give the proof: {e}")),
    }
}

fn node_wrong(old: u64, new: u64) -> Problem {
    Problem {
        kind: ProblemKind::TreeNode,
        seq: i64::try_from(new).unwrap_or(i64::MAX),
        detail: format!(
            "the consistency proof from event {old} to event {new} made from the kept Merkle tree nodes fails, and the same proof from the events' hashes holds: a kept node was altered (the log itself extends)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_round_trips_and_refuses_what_is_not_it() {
        let proof = ConsistencyProof {
            old: 10,
            hashes: vec![[1; 32], [2; 32]],
            note: "o\n15\nAAAA\n\n\u{2014} o sig\n".into(),
        };
        let text = proof.to_text();
        assert!(text.starts_with("old 10\nAQEB"), "{text}");
        assert_eq!(ConsistencyProof::parse(&text), Ok(proof.clone()));
        let none = ConsistencyProof {
            hashes: vec![],
            ..proof
        };
        assert_eq!(ConsistencyProof::parse(&none.to_text()), Ok(none));
        assert!(ConsistencyProof::parse("old x\n\nnote").is_err());
        assert!(ConsistencyProof::parse("old 1\nnot-base64\n\nnote").is_err());
        assert!(ConsistencyProof::parse("old 1\nAQEB\n").is_err());
    }
}
