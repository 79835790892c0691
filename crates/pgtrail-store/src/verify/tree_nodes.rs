//! Checks the Merkle tree's kept interior nodes (`crate::tree`) against the
//! tree the walk recomputes: a node is only a cache for proofs, so a wrong
//! one cannot forge a proof (the proof would not reach the signed root),
//! but it makes proofs of the events under it fail, and it is tampering.
//!
//! A missing node is not a problem: a store upgraded before its nodes were
//! filled, or one never checkpointed, has none, and proofs then read the
//! events' hashes instead (slower, same answer). Nodes over events that
//! retention removed cannot be checked (their leaves are gone); proofs of
//! the events kept use the prune checkpoint's frontier there, not them.

use super::checkpoints::Tree;
use super::{Problem, ProblemKind, VerifyReport};
use crate::{Result, Store};

/// Nodes read per round trip.
const PAGE: usize = 10_000;
/// Node problems reported at most (then one that counts the rest).
const MAX_PROBLEMS: usize = 20;

/// Reads every kept node and reports those that are not the nodes `computed`
/// completed in the walk. `walked_all`: the walk reached the chain's end,
/// so a node past the walk is past the chain.
pub(super) async fn check(
    computed: &Tree,
    store: &dyn Store,
    walked_all: bool,
    report: &mut VerifyReport,
) -> Result<()> {
    let Some((start, walked)) = computed.walked() else {
        return Ok(());
    };
    // Nodes kept by a checkpoint made while verify walked may cover
    // events appended since: past the walk, not past the chain.
    let head = store.head().await?.map_or(0, |h| h.seq);
    let end = walked.max(u64::try_from(head).unwrap_or(0));
    let mut problems = Vec::new();
    let mut left_out = 0usize;
    let mut after = (i64::MIN, i64::MIN);
    loop {
        let page = store.tree_nodes(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = (last.height, last.idx);
        for node in &page {
            let problem = match node.subtree() {
                    None => Some((
                        0,
                        format!(
                            "the store keeps a Merkle tree node at height {}, index {}, which is no node of the tree it keeps (heights 8, 16, 24, ...): it was inserted",
                            node.height, node.idx
                        ),
                    )),
                    Some(tree) => {
                        let (first, last) = (tree.start + 1, tree.end());
                        let seq = i64::try_from(last).unwrap_or(i64::MAX);
                        match computed.node(tree.height, tree.index()) {
                            Some(hash) if node.hash.as_slice() == hash.as_slice() => None,
                            Some(_) => Some((
                                seq,
                                format!(
                                    "the kept Merkle tree node at height {}, index {} (over events {first} to {last}) is not the hash of those events: it was altered, and proofs of those events made with it fail to verify",
                                    node.height, node.idx
                                ),
                            )),
                            None if tree.end() <= start => None,
                            None if walked_all && tree.end() > end => Some((
                                seq,
                                format!(
                                    "the kept Merkle tree node at height {}, index {} covers events {first} to {last}, past the chain's end (event {end}): it was inserted",
                                    node.height, node.idx
                                ),
                            )),
                            // Beyond a walk stopped at a chain problem.
                            None => None,
                        }
                    }
                };
            if let Some((seq, detail)) = problem {
                if problems.len() < MAX_PROBLEMS {
                    problems.push(Problem {
                        kind: ProblemKind::TreeNode,
                        seq,
                        detail,
                    });
                } else {
                    left_out += 1;
                }
            }
        }
    }
    if left_out > 0 {
        problems.push(Problem {
            kind: ProblemKind::TreeNode,
            seq: problems.last().map_or(0, |p| p.seq),
            detail: format!("and {left_out} more kept Merkle tree nodes that are not the tree's"),
        });
    }
    report.problems.extend(problems);
    Ok(())
}
