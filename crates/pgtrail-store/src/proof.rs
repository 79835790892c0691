//! Inclusion and consistency proofs, read from a store.
//!
//! `merkle` says which ranges of leaves a proof is made of and checks
//! proofs; this module finds those ranges' hashes in a store through
//! [`Store::subtree_hashes`], asking for every subtree of a proof at once so
//! a store answers in a few range reads. Leaf `i` is the event `seq = i + 1`;
//! a checkpoint of size `n` covers the events `1..=n`.

use crate::merkle::{self, event_leaf, Frontier, Hash, Subtree};
use crate::{CheckpointKind, Result, Store, StoreError};

/// The inclusion proof of the event `seq = index + 1` in the tree of the
/// first `size` events (a checkpoint's size), nearest the leaf first.
pub async fn inclusion<S: Store + ?Sized>(store: &S, index: u64, size: u64) -> Result<Vec<Hash>> {
    let ranges = merkle::inclusion_ranges(index, size).map_err(invalid)?;
    range_hashes(store, &ranges).await
}

/// The consistency proof from the tree of the first `old` events to the
/// tree of the first `new` (RFC 6962's `PROOF(old, D[new])`).
pub async fn consistency<S: Store + ?Sized>(store: &S, old: u64, new: u64) -> Result<Vec<Hash>> {
    let ranges = merkle::consistency_ranges(old, new).map_err(invalid)?;
    range_hashes(store, &ranges).await
}

/// The hash of each range of leaves (`start .. end`), in order.
pub async fn range_hashes<S: Store + ?Sized>(
    store: &S,
    ranges: &[(u64, u64)],
) -> Result<Vec<Hash>> {
    let covers: Vec<Vec<Subtree>> = ranges
        .iter()
        .map(|(start, end)| Subtree::cover(*start, *end))
        .collect();
    let all: Vec<Subtree> = covers.iter().flatten().copied().collect();
    let hashes = store.subtree_hashes(&all).await?;
    if hashes.len() != all.len() {
        return Err(StoreError::Invalid(format!(
            "the store returned {} subtree hashes for {} subtrees",
            hashes.len(),
            all.len()
        )));
    }
    let mut rest = hashes.as_slice();
    let mut out = Vec::with_capacity(ranges.len());
    for cover in &covers {
        let (these, after) = rest.split_at(cover.len());
        out.push(merkle::fold(these));
        rest = after;
    }
    Ok(out)
}

/// [`consistency`] from the events' hashes alone, never the kept nodes:
/// what `verify` falls back to when a proof from the nodes fails, to tell
/// a wrong node (a damaged cache) from a log that does not extend.
pub async fn consistency_from_events<S: Store + ?Sized>(
    store: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>> {
    let ranges = merkle::consistency_ranges(old, new).map_err(invalid)?;
    let mut out = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        let mut hashes = Vec::new();
        for tree in Subtree::cover(start, end) {
            hashes.push(subtree_from_events(store, tree).await?);
        }
        out.push(merkle::fold(&hashes));
    }
    Ok(out)
}

/// The frontier at `size` from the events' hashes alone (see
/// [`consistency_from_events`]).
pub async fn frontier_from_events<S: Store + ?Sized>(store: &S, size: u64) -> Result<Frontier> {
    let mut hashes = Vec::new();
    for tree in Subtree::cover(0, size) {
        hashes.push(subtree_from_events(store, tree).await?);
    }
    Frontier::from_subtrees(size, hashes).map_err(invalid)
}

/// A subtree's hash from the events' stored hashes, or, where retention
/// removed them, from the newest prune checkpoint's frontier (its subtrees
/// are the only ones of the removed part a proof of a kept event needs).
/// Reads every leaf: the slow path, for stores that keep no nodes and for
/// checking the nodes they keep.
pub async fn subtree_from_events<S: Store + ?Sized>(store: &S, tree: Subtree) -> Result<Hash> {
    let start = i64::try_from(tree.start).map_err(|_| too_large(tree))?;
    let len = usize::try_from(tree.len()).map_err(|_| too_large(tree))?;
    let events = store.scan(start, len).await?;
    let first = events.first().and_then(|e| e.seq);
    if first != Some(start + 1) {
        if first.is_some_and(|f| f > start + 1) {
            return subtree_from_prune_frontier(store, tree).await;
        }
        return Err(StoreError::Invalid(format!(
            "the tree has no leaf {} (event {}): it is past the chain's end",
            tree.start,
            start + 1
        )));
    }
    let mut frontier = Frontier::new();
    for (offset, event) in events.iter().enumerate() {
        let expected = start + 1 + offset as i64;
        if event.seq != Some(expected) {
            return Err(StoreError::Invalid(format!(
                "event {expected} is missing from the chain"
            )));
        }
        let hash = event.hash.as_deref().unwrap_or_default();
        let leaf = event_leaf(hash)
            .ok_or_else(|| StoreError::Invalid(format!("event {expected} has no valid hash")))?;
        frontier.push(leaf);
    }
    if frontier.size() != tree.len() {
        return Err(StoreError::Invalid(format!(
            "the tree has no leaf {} (event {}): it is past the chain's end",
            tree.start + frontier.size(),
            tree.start + frontier.size() + 1
        )));
    }
    Ok(frontier.root())
}

async fn subtree_from_prune_frontier<S: Store + ?Sized>(store: &S, tree: Subtree) -> Result<Hash> {
    let checkpoints = store.checkpoints().await?;
    let frontier = checkpoints
        .iter()
        .rev()
        .filter(|c| c.kind == CheckpointKind::Prune)
        .find_map(|c| {
            let size = u64::try_from(c.seq).ok()?;
            Frontier::decode(size, c.frontier.as_deref()?).ok()
        });
    frontier
        .and_then(|f| {
            f.subtrees()
                .into_iter()
                .find(|(t, _)| *t == tree)
                .map(|(_, hash)| hash)
        })
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "events {} to {} were removed by retention and no prune checkpoint keeps their hash",
                tree.start + 1,
                tree.end()
            ))
        })
}

fn too_large(tree: Subtree) -> StoreError {
    StoreError::Invalid(format!(
        "the subtree at leaf {} of height {} is beyond any store",
        tree.start, tree.height
    ))
}

fn invalid(e: merkle::ProofError) -> StoreError {
    StoreError::Invalid(e.0)
}
