//! The Merkle tree's interior nodes a store keeps, and how a subtree's
//! hash is found from them (`sqlite::tree`, `postgres::tree` do the reads).
//!
//! A store keeps the nodes of height 8, 16, 24, ... ([`NODE_HEIGHT_STEP`]):
//! one per 256 events. A subtree of height `h` is then the kept node itself
//! (`h` a multiple of 8), or the at most 128 kept nodes of height
//! `8 * floor(h / 8)` under it (or, for `h < 8`, the events' hashes), read as
//! one range and folded. Where something is missing (a store upgraded
//! before its nodes were filled, a node deleted, leaves removed by
//! retention) the subtree is split in halves and each found the same way;
//! a subtree wholly inside the prefix retention removed comes from the
//! newest prune checkpoint's frontier. The answers are those of
//! `proof::subtree_from_events`, which reads every leaf.
//!
//! [`Resolver`] does the planning with no I/O: each round it says which
//! ranges to read, the backend reads them (SQLite: one prepared statement a
//! range; Postgres: every range in one round trip) and hands the rows back.
//! A kept node is only a cache: `verify` checks each one against the tree it
//! recomputes, and a wrong node makes a proof fail to verify, never forge one.

use std::collections::{HashMap, HashSet};

use crate::merkle::{leaf_hash, node_hash, Frontier, Hash, Subtree, NODE_HEIGHT_STEP};
use crate::{Result, StoreError};

/// A kept node as stored, for `verify` (which reports a malformed one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    /// Its height: a multiple of [`NODE_HEIGHT_STEP`] when well-formed.
    pub height: i64,
    /// Its index among the subtrees of its height (`start >> height`).
    pub idx: i64,
    /// Its hash: 32 bytes when well-formed.
    pub hash: Vec<u8>,
}

impl TreeNode {
    /// The subtree it claims to be the hash of, when its height and index
    /// make one.
    pub fn subtree(&self) -> Option<Subtree> {
        let height = u32::try_from(self.height).ok()?;
        let idx = u64::try_from(self.idx).ok()?;
        if height == 0 || height % NODE_HEIGHT_STEP != 0 || height >= 63 {
            return None;
        }
        let start = idx.checked_shl(height).filter(|s| s >> height == idx)?;
        start.checked_add(1u64 << height)?;
        Some(Subtree { start, height })
    }
}

/// One range read: kept nodes of one height, or events' hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Read {
    /// Kept nodes of `height`, indexes `first..=last`.
    Nodes { height: u32, first: u64, last: u64 },
    /// The hashes of the events of leaves `first..=last` (`seq = leaf + 1`).
    Leaves { first: u64, last: u64 },
}

impl Read {
    fn height(&self) -> u32 {
        match self {
            Read::Nodes { height, .. } => *height,
            Read::Leaves { .. } => 0,
        }
    }

    fn range(&self) -> (u64, u64) {
        match self {
            Read::Nodes { first, last, .. } | Read::Leaves { first, last } => (*first, *last),
        }
    }
}

/// What the backend must do next.
#[derive(Debug)]
pub(crate) enum Step {
    /// Read these ranges (and, with `pruned`, the newest prune checkpoint's
    /// frontier) and [`Resolver::absorb`] the rows.
    Fetch { reads: Vec<Read>, pruned: bool },
    /// The hashes asked for, in order.
    Done(Vec<Hash>),
}

/// Finds the hashes of subtrees from kept nodes and leaves, round by round.
pub(crate) struct Resolver {
    wanted: Vec<Subtree>,
    /// The first leaf still stored: those before it were removed by retention.
    first_leaf: u64,
    /// `None` until read; then the newest prune checkpoint's frontier, if any.
    pruned: Option<Option<Frontier>>,
    /// What was read: kept nodes by (height, index), leaves at height 0.
    found: HashMap<(u32, u64), Hash>,
    /// Read and not there.
    absent: HashSet<(u32, u64)>,
    known: HashMap<Subtree, Hash>,
}

impl Resolver {
    /// For the subtrees `trees` of a chain of `size` events whose first
    /// stored event is leaf `first_leaf` (`size` when none is stored).
    pub(crate) fn new(trees: &[Subtree], size: u64, first_leaf: u64) -> Result<Self> {
        if let Some(past) = trees.iter().find(|t| t.end() > size) {
            let leaf = past.start.max(size);
            return Err(StoreError::Invalid(format!(
                "the tree has no leaf {leaf} (event {}): it is past the chain's end",
                leaf + 1
            )));
        }
        Ok(Resolver {
            wanted: trees.to_vec(),
            first_leaf,
            pruned: None,
            found: HashMap::new(),
            absent: HashSet::new(),
            known: HashMap::new(),
        })
    }

    /// The next round: what to read, or the answer.
    pub(crate) fn step(&mut self) -> Result<Step> {
        let mut reads = Vec::new();
        let mut pruned = false;
        let mut out = Vec::with_capacity(self.wanted.len());
        for tree in self.wanted.clone() {
            if let Some(hash) = self.attempt(tree, &mut reads, &mut pruned)? {
                out.push(hash);
            }
        }
        if out.len() == self.wanted.len() {
            return Ok(Step::Done(out));
        }
        reads.sort();
        reads.dedup();
        if reads.is_empty() && !pruned {
            return Err(StoreError::Invalid(
                "the tree's nodes could not be found and nothing is left to read".into(),
            ));
        }
        Ok(Step::Fetch { reads, pruned })
    }

    /// The rows of `reads`: `(height, index, hash)`, where a height-0 row is
    /// an event's stored hash (leaf `index`), hashed here into its leaf.
    pub(crate) fn absorb(&mut self, reads: &[Read], rows: Vec<(u32, u64, Hash)>) {
        for (height, idx, hash) in rows {
            let hash = if height == 0 { leaf_hash(&hash) } else { hash };
            self.found.insert((height, idx), hash);
        }
        for read in reads {
            let height = read.height();
            let (first, last) = read.range();
            for idx in first..=last {
                if !self.found.contains_key(&(height, idx)) {
                    self.absent.insert((height, idx));
                }
            }
        }
    }

    /// The newest prune checkpoint's frontier (`None`: there is none).
    pub(crate) fn set_pruned(&mut self, frontier: Option<Frontier>) {
        self.pruned = Some(frontier);
    }

    /// The subtree's hash if what was read so far gives it; else the reads
    /// it needs are added to `reads`.
    fn attempt(
        &mut self,
        tree: Subtree,
        reads: &mut Vec<Read>,
        pruned: &mut bool,
    ) -> Result<Option<Hash>> {
        if let Some(hash) = self.known.get(&tree) {
            return Ok(Some(*hash));
        }
        let removed = tree.end() <= self.first_leaf;
        if removed {
            // The prune checkpoint's frontier first: it is what the signed
            // prune checkpoint vouches for, and `verify` cannot check kept
            // nodes whose events are gone.
            match &self.pruned {
                None => {
                    *pruned = true;
                    return Ok(None);
                }
                Some(frontier) => {
                    let hash = frontier.as_ref().and_then(|f| {
                        f.subtrees()
                            .into_iter()
                            .find(|(t, _)| *t == tree)
                            .map(|(_, h)| h)
                    });
                    if let Some(hash) = hash {
                        self.known.insert(tree, hash);
                        return Ok(Some(hash));
                    }
                }
            }
        }
        let base = tree.height / NODE_HEIGHT_STEP * NODE_HEIGHT_STEP;
        let first = tree.start >> base;
        let last = first + (1u64 << (tree.height - base)) - 1;
        let mut hashes = Vec::with_capacity((last - first + 1) as usize);
        let (mut unread, mut missing) = (false, false);
        for idx in first..=last {
            match self.found.get(&(base, idx)) {
                Some(hash) => hashes.push(*hash),
                None if self.absent.contains(&(base, idx)) => missing = true,
                None => unread = true,
            }
        }
        if !unread && !missing {
            let hash = fold_perfect(hashes);
            self.known.insert(tree, hash);
            return Ok(Some(hash));
        }
        if unread {
            reads.push(if base == 0 {
                Read::Leaves { first, last }
            } else {
                Read::Nodes {
                    height: base,
                    first,
                    last,
                }
            });
            return Ok(None);
        }
        if removed {
            return Err(StoreError::Invalid(format!(
                "events {} to {} were removed by retention and no prune checkpoint keeps their hash",
                tree.start + 1,
                tree.end()
            )));
        }
        if tree.height == 0 {
            return Err(StoreError::Invalid(format!(
                "event {} is missing from the chain or has no valid hash",
                tree.start + 1
            )));
        }
        // Split in halves; each is found the same way.
        let half = tree.height - 1;
        let left = Subtree {
            start: tree.start,
            height: half,
        };
        let right = Subtree {
            start: tree.start + (1u64 << half),
            height: half,
        };
        let left = self.attempt(left, reads, pruned)?;
        let right = self.attempt(right, reads, pruned)?;
        match (left, right) {
            (Some(l), Some(r)) => {
                let hash = node_hash(&l, &r);
                self.known.insert(tree, hash);
                Ok(Some(hash))
            }
            _ => Ok(None),
        }
    }
}

/// The root of a perfect tree over `hashes` (a power of two of them).
fn fold_perfect(mut hashes: Vec<Hash>) -> Hash {
    while hashes.len() > 1 {
        hashes = hashes
            .chunks(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
    }
    hashes[0]
}

/// The nodes a walk of leaves from `frontier` completes, every
/// [`NODE_HEIGHT_STEP`] heights: what a store's upgrade fills its kept
/// nodes with (see the migrations).
pub(crate) struct Filler {
    frontier: Frontier,
    /// Nodes completed and not yet taken.
    pub(crate) nodes: Vec<(Subtree, Hash)>,
}

impl Filler {
    /// Resumes at `frontier` (the empty one at the chain's start).
    pub(crate) fn new(frontier: Frontier) -> Self {
        Filler {
            frontier,
            nodes: Vec::new(),
        }
    }

    /// The next leaf's index.
    pub(crate) fn next_leaf(&self) -> u64 {
        self.frontier.size()
    }

    /// Adds the event of the next leaf, by its stored hash.
    pub(crate) fn push(&mut self, event_hash: &Hash) {
        let nodes = &mut self.nodes;
        self.frontier
            .push_seeing(leaf_hash(event_hash), |tree, hash| {
                if tree.height % NODE_HEIGHT_STEP == 0 {
                    nodes.push((tree, *hash));
                }
            });
    }
}

/// The frontier a fill starts from: the empty tree when the chain starts at
/// event 1, else the prune checkpoint's just before the first stored event
/// (`None` when there is none: nodes cannot be filled, proofs fall back).
pub(crate) fn fill_start(first_seq: Option<i64>, prune: Option<(i64, String)>) -> Option<Frontier> {
    match first_seq {
        None | Some(1) => Some(Frontier::new()),
        Some(first) => {
            let (seq, text) = prune.filter(|(seq, _)| *seq == first - 1)?;
            Frontier::decode(u64::try_from(seq).ok()?, &text).ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| crate::merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    /// Answers a resolver from in-memory leaves and nodes.
    fn run(
        resolver: &mut Resolver,
        events: &[Option<Hash>],
        nodes: &HashMap<(u32, u64), Hash>,
        pruned: Option<Frontier>,
    ) -> Result<(Vec<Hash>, usize)> {
        let mut rounds = 0;
        loop {
            match resolver.step()? {
                Step::Done(v) => return Ok((v, rounds)),
                Step::Fetch { reads, pruned: p } => {
                    rounds += 1;
                    if p {
                        resolver.set_pruned(pruned.clone());
                    }
                    let mut rows = Vec::new();
                    for read in &reads {
                        let (first, last) = read.range();
                        for idx in first..=last {
                            match read {
                                Read::Leaves { .. } => {
                                    if let Some(Some(h)) = events.get(idx as usize) {
                                        rows.push((0, idx, *h));
                                    }
                                }
                                Read::Nodes { height, .. } => {
                                    if let Some(h) = nodes.get(&(*height, idx)) {
                                        rows.push((*height, idx, *h));
                                    }
                                }
                            }
                        }
                    }
                    resolver.absorb(&reads, rows);
                }
            }
        }
    }

    fn all_nodes(events: &[Hash]) -> HashMap<(u32, u64), Hash> {
        let mut filler = Filler::new(Frontier::new());
        for e in events {
            filler.push(e);
        }
        filler
            .nodes
            .into_iter()
            .map(|(t, h)| ((t.height, t.index()), h))
            .collect()
    }

    fn reference(events: &[Hash], tree: Subtree) -> Hash {
        let mut f = Frontier::new();
        for e in &events[tree.start as usize..tree.end() as usize] {
            f.push(leaf_hash(e));
        }
        f.root()
    }

    #[test]
    fn subtrees_from_nodes_from_leaves_and_from_halves_agree() {
        let events = leaves(70_000);
        let stored: Vec<Option<Hash>> = events.iter().copied().map(Some).collect();
        let full = all_nodes(&events);
        let mut some = full.clone();
        some.retain(|(h, i), _| (h + *i as u32) % 3 != 0);
        let trees = [
            Subtree {
                start: 0,
                height: 16,
            },
            Subtree {
                start: 65_536,
                height: 11,
            },
            Subtree {
                start: 65_536 + 2048,
                height: 8,
            },
            Subtree {
                start: 69_760,
                height: 7,
            },
            Subtree {
                start: 3,
                height: 0,
            },
            Subtree {
                start: 512,
                height: 9,
            },
        ];
        for nodes in [&full, &some, &HashMap::new()] {
            let mut r = Resolver::new(&trees, 70_000, 0).expect("in the chain");
            let (got, _) = run(&mut r, &stored, nodes, None).expect("found");
            let expected: Vec<Hash> = trees.iter().map(|t| reference(&events, *t)).collect();
            assert_eq!(got, expected);
        }
        assert!(Resolver::new(
            &[Subtree {
                start: 69_632,
                height: 9
            }],
            70_000,
            0
        )
        .is_err());
    }

    #[test]
    fn a_prune_inside_a_block_is_crossed_with_the_frontier() {
        let events = leaves(1_000);
        let cut = 300u64;
        let mut frontier = Frontier::new();
        for e in &events[..cut as usize] {
            frontier.push(leaf_hash(e));
        }
        let stored: Vec<Option<Hash>> = events
            .iter()
            .enumerate()
            .map(|(i, e)| (i as u64 >= cut).then_some(*e))
            .collect();
        let trees = [
            Subtree {
                start: 256,
                height: 7,
            },
            Subtree {
                start: 0,
                height: 8,
            },
            Subtree {
                start: 512,
                height: 8,
            },
        ];
        let mut r = Resolver::new(&trees, 1_000, cut).expect("in the chain");
        let (got, _) =
            run(&mut r, &stored, &HashMap::new(), Some(frontier.clone())).expect("found");
        let expected: Vec<Hash> = trees.iter().map(|t| reference(&events, *t)).collect();
        assert_eq!(got, expected);
        // Inside the removed prefix and not a subtree the frontier holds.
        let mut r = Resolver::new(
            &[Subtree {
                start: 0,
                height: 4,
            }],
            1_000,
            cut,
        )
        .expect("ok");
        assert!(run(&mut r, &stored, &HashMap::new(), Some(frontier)).is_err());
    }

    #[test]
    fn kept_nodes_need_one_round() {
        let events = leaves(5_000);
        let stored: Vec<Option<Hash>> = events.iter().copied().map(Some).collect();
        let trees: Vec<Subtree> = crate::merkle::inclusion_ranges(1234, 5_000)
            .expect("ranges")
            .into_iter()
            .flat_map(|(s, e)| Subtree::cover(s, e))
            .collect();
        let mut r = Resolver::new(&trees, 5_000, 0).expect("ok");
        let (_, rounds) = run(&mut r, &stored, &all_nodes(&events), None).expect("found");
        assert_eq!(rounds, 1);
    }
}
