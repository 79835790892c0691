//! The RFC 6962 Merkle tree over the chain: leaf `i` is the hash of the
//! event with `seq = i + 1` (its 32 bytes, not the hex).
//!
//! The part of RFC 6962 (and RFC 9162, its successor) that checkpoints and
//! proofs need lives here, with no I/O: the leaf and node hashes; a
//! [`Frontier`], the compact range of a tree's left edge (one hash per set
//! bit of its size, so at most 64), whose pushes give the root at every size
//! while walking the chain once and, kept in a checkpoint, let the tree
//! continue after retention removed the leaves before it; and inclusion and
//! consistency proofs. A proof is a list of hashes of ranges of leaves;
//! [`inclusion_ranges`] and [`consistency_ranges`] say which ranges, each
//! range splits into aligned perfect [`Subtree`]s ([`Subtree::cover`]),
//! and the store finds those (`crate::proof`), from interior nodes it keeps
//! or from the events' hashes. Verifying needs only the hashes.
//!
//! Written here rather than taken from `ct-merkle`: that crate keeps every
//! leaf in memory and exposes no frontier to store and resume from, which is
//! what retention needs. The code is checked against the published RFC 6962
//! test vectors below.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 || data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The leaf hash of an event, from its stored hash (hex); `None` when the
/// stored hash is not 32 bytes of hex.
pub fn event_leaf(event_hash_hex: &str) -> Option<Hash> {
    let bytes = pgtrail_core::hex::decode_32(event_hash_hex)?;
    Some(leaf_hash(&bytes))
}

/// Stores keep the interior nodes of height 8, 16, 24, ...: one node per
/// 256 events (32 bytes each, ~1/256 of the hashes), and any subtree a
/// proof needs is then at most 255 nodes or leaves of the height below it,
/// read as one range.
pub const NODE_HEIGHT_STEP: u32 = 8;

/// An aligned perfect subtree: the leaves `start .. start + 2^height`, where
/// `start` is a multiple of `2^height`. Leaf `i` is the event `seq = i + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subtree {
    /// Its first leaf.
    pub start: u64,
    /// Its height: it has `2^height` leaves.
    pub height: u32,
}

impl Subtree {
    /// Leaves in it.
    pub fn len(&self) -> u64 {
        1u64 << self.height
    }

    /// Never empty: a perfect subtree has at least one leaf.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// One past its last leaf.
    pub fn end(&self) -> u64 {
        self.start + self.len()
    }

    /// Its index among the subtrees of its height (`start >> height`).
    pub fn index(&self) -> u64 {
        self.start >> self.height
    }

    /// The perfect subtrees whose hashes make up RFC 6962's MTH of the
    /// leaves `start .. end`, largest first, as the RFC splits a range: the
    /// largest power of two smaller than its size on the left, the rest on
    /// the right. Every range of a proof ([`inclusion_ranges`],
    /// [`consistency_ranges`]) splits into aligned subtrees; [`fold`] puts
    /// their hashes back together.
    pub fn cover(start: u64, end: u64) -> Vec<Subtree> {
        let mut out = Vec::new();
        let mut start = start;
        while start < end {
            let n = end - start;
            let height = if n.is_power_of_two() {
                n.trailing_zeros()
            } else {
                // The largest power of two below n.
                63 - n.leading_zeros()
            };
            out.push(Subtree { start, height });
            start += 1u64 << height;
        }
        out
    }
}

/// The hash of a range from the hashes of its [`Subtree::cover`], in that
/// order: the last one, then each before it on its left.
pub fn fold(hashes: &[Hash]) -> Hash {
    let mut nodes = hashes.iter().rev();
    let Some(last) = nodes.next() else {
        return Sha256::digest([]).into();
    };
    nodes.fold(*last, |right, left| node_hash(left, &right))
}

/// Why a proof does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProofError(pub String);

fn largest_power_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The ranges of leaves (`start .. end`) whose hashes form the inclusion
/// proof of leaf `index` in the tree of `size` leaves: RFC 6962's
/// `PATH(index, D[size])`, nearest the leaf first.
pub fn inclusion_ranges(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let mut out = Vec::new();
    let (mut start, mut end) = (0, size);
    // Walk down from the root, remembering the sibling at each level.
    while end - start > 1 {
        let k = largest_power_below(end - start);
        if index < start + k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
        }
    }
    out.reverse();
    Ok(out)
}

/// The ranges whose hashes form the consistency proof from the tree of
/// `old` leaves to the tree of `new`: RFC 6962's `PROOF(old, D[new])`.
/// Empty when `old` is 0 or equals `new`.
pub fn consistency_ranges(old: u64, new: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if old > new {
        return Err(ProofError(format!(
            "a tree of {old} leaves cannot grow into one of {new}"
        )));
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    // SUBPROOF(old, D[start..end], whole), walked down from the root.
    let (mut start, mut end, mut whole) = (0, new, true);
    loop {
        if old == end {
            if !whole {
                out.push((start, end));
            }
            break;
        }
        let k = largest_power_below(end - start);
        if old <= start + k {
            out.push((start + k, end));
            end = start + k;
        } else {
            out.push((start, start + k));
            start += k;
            whole = false;
        }
    }
    out.reverse();
    Ok(out)
}

/// Checks that `proof` shows the leaf hash `leaf` at `index` in the tree of
/// `size` leaves whose root is `root` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError(format!(
            "leaf {index} is not in a tree of {size} leaves"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut hash = *leaf;
    for sibling in proof {
        if snode == 0 {
            return Err(ProofError(format!(
                "the proof has {} hashes, more than a tree of {size} leaves needs",
                proof.len()
            )));
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError(format!(
            "the proof has {} hashes, fewer than leaf {index} of a tree of {size} leaves needs",
            proof.len()
        )));
    }
    if &hash != root {
        return Err(ProofError(
            "the proof does not lead to the tree's root: the leaf or a hash of the proof was altered"
                .into(),
        ));
    }
    Ok(())
}

/// Checks that `proof` shows the tree of `old` leaves with root `old_root`
/// is the beginning of the tree of `new` leaves with root `new_root`: the
/// log only grew (RFC 9162, 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError(format!(
            "the log shrank from {old} entries to {new}: a rollback"
        )));
    }
    if old == new || old == 0 {
        if !proof.is_empty() {
            return Err(ProofError(format!(
                "a proof from {old} entries to {new} has no hashes"
            )));
        }
        if old == 0 {
            return Ok(());
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError(format!(
                "two different roots for the same {old} entries: the log forked"
            )))
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError("the proof is empty".into()));
    };
    let (mut fnode, mut snode) = (old - 1, new - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut old_hash, mut new_hash) = (*first, *first);
    for c in rest {
        if snode == 0 {
            return Err(ProofError(format!(
                "the proof has {} hashes, more than {old} to {new} entries needs",
                proof.len()
            )));
        }
        if fnode & 1 == 1 || fnode == snode {
            old_hash = node_hash(c, &old_hash);
            new_hash = node_hash(c, &new_hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError(format!(
            "the proof has {} hashes, fewer than {old} to {new} entries needs",
            proof.len()
        )));
    }
    if &old_hash != old_root {
        return Err(ProofError(format!(
            "the first {old} entries of the new log are not the old log's: the log forked or was rewritten"
        )));
    }
    if &new_hash != new_root {
        return Err(ProofError(
            "the proof does not lead to the new root: a hash of the proof or a root was altered"
                .into(),
        ));
    }
    Ok(())
}

/// The roots of the perfect subtrees that make up a tree's left edge,
/// largest first: enough to compute its root and to keep appending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub fn new() -> Self {
        Frontier::default()
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (already hashed with [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        self.push_seeing(leaf, |_, _| {});
    }

    /// Appends a leaf and shows `completed` every perfect subtree of height
    /// one or more the leaf completes, lowest first: how the interior nodes
    /// a store keeps for proofs are found while the chain is walked.
    pub fn push_seeing(&mut self, leaf: Hash, mut completed: impl FnMut(Subtree, &Hash)) {
        let mut node = leaf;
        let mut size = self.size;
        let mut height = 0;
        // Like adding one to a binary counter: each carry merges two
        // perfect subtrees of the same height.
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit has its subtree");
            node = node_hash(&left, &node);
            size >>= 1;
            height += 1;
            completed(
                Subtree {
                    start: (self.size + 1) - (1u64 << height),
                    height,
                },
                &node,
            );
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The frontier of the tree of `size` leaves from the hashes of
    /// `Subtree::cover(0, size)` (a store's [`crate::Store::subtree_hashes`]):
    /// how a walk resumes at a size no checkpoint kept a frontier for.
    pub fn from_subtrees(size: u64, hashes: Vec<Hash>) -> Result<Self, ProofError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(ProofError(format!(
                "a tree of {size} leaves has {} frontier hashes, not {}",
                size.count_ones(),
                hashes.len()
            )));
        }
        Ok(Frontier {
            size,
            nodes: hashes,
        })
    }

    /// The perfect subtrees it holds, largest first, with their hashes:
    /// what a proof may use in place of leaves retention removed.
    pub fn subtrees(&self) -> Vec<(Subtree, Hash)> {
        Subtree::cover(0, self.size)
            .into_iter()
            .zip(self.nodes.iter().copied())
            .collect()
    }

    /// The tree's root: RFC 6962's MTH, SHA-256 of nothing for the empty tree.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return Sha256::digest([]).into();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }

    /// Text form for storing: the hashes in hex, space-separated.
    pub fn encode(&self) -> String {
        self.nodes
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Reads [`Frontier::encode`]'s text for a tree of `size` leaves.
    pub fn decode(size: u64, text: &str) -> Result<Self, String> {
        let nodes = text
            .split_whitespace()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .ok_or_else(|| format!("'{h}' is not a 32-byte hash"))
            })
            .collect::<Result<Vec<Hash>, String>>()?;
        if nodes.len() != size.count_ones() as usize {
            return Err(format!(
                "a tree of {size} leaves has {} frontier hashes, not {}",
                size.count_ones(),
                nodes.len()
            ));
        }
        Ok(Frontier { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's MTH as the RFC defines it, recursively.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                // The largest power of two below n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    /// The published RFC 6962 vectors (Certificate Transparency's test data).
    #[test]
    fn roots_match_the_published_vectors() {
        let leaves = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let roots = [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut frontier = Frontier::new();
        assert_eq!(hex::encode(frontier.root()), roots[0]);
        for (leaf, root) in leaves.iter().zip(&roots[1..]) {
            frontier.push(leaf_hash(&hex::decode(leaf).expect("hex")));
            assert_eq!(
                hex::encode(frontier.root()),
                *root,
                "size {}",
                frontier.size()
            );
        }
    }

    /// RFC 6962's PATH(m, D[n]), as the RFC defines it.
    fn reference_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        if m < k {
            let mut p = reference_path(m, &leaves[..k]);
            p.push(reference_root(&leaves[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &leaves[k..]);
            p.push(reference_root(&leaves[..k]));
            p
        }
    }

    /// RFC 6962's SUBPROOF(m, D[n], b).
    fn reference_subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if whole {
                Vec::new()
            } else {
                vec![reference_root(leaves)]
            };
        }
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        if m <= k {
            let mut p = reference_subproof(m, &leaves[..k], whole);
            p.push(reference_root(&leaves[k..]));
            p
        } else {
            let mut p = reference_subproof(m - k, &leaves[k..], false);
            p.push(reference_root(&leaves[..k]));
            p
        }
    }

    /// The hash of a range through its cover, as a store finds it.
    fn range_hash(leaves: &[Hash], (start, end): (u64, u64)) -> Hash {
        let hashes: Vec<Hash> = Subtree::cover(start, end)
            .iter()
            .map(|t| {
                assert_eq!(t.start % t.len(), 0, "{t:?} is aligned");
                reference_root(&leaves[t.start as usize..t.end() as usize])
            })
            .collect();
        fold(&hashes)
    }

    fn leaves(n: u32) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn inclusion_proofs_are_the_rfcs_and_verify_and_a_changed_byte_fails() {
        let all = leaves(40);
        for size in 1..=all.len() {
            let tree = &all[..size];
            let root = reference_root(tree);
            for index in 0..size {
                let ranges = inclusion_ranges(index as u64, size as u64).expect("ranges");
                let proof: Vec<Hash> = ranges.iter().map(|r| range_hash(tree, *r)).collect();
                assert_eq!(proof, reference_path(index, tree), "{index} of {size}");
                let (i, n) = (index as u64, size as u64);
                verify_inclusion(i, n, &tree[index], &proof, &root).expect("verifies");
                let other = (index + 1) % size;
                if other != index {
                    assert!(verify_inclusion(i, n, &tree[other], &proof, &root).is_err());
                    assert!(
                        verify_inclusion(other as u64, n, &tree[index], &proof, &root).is_err()
                    );
                }
                for at in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[at][0] ^= 1;
                    assert!(verify_inclusion(i, n, &tree[index], &bad, &root).is_err());
                }
                let mut long = proof.clone();
                long.push(root);
                assert!(verify_inclusion(i, n, &tree[index], &long, &root).is_err());
                if !proof.is_empty() {
                    let short = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(i, n, &tree[index], short, &root).is_err());
                }
            }
        }
        assert!(inclusion_ranges(3, 3).is_err());
    }

    #[test]
    fn consistency_proofs_are_the_rfcs_and_verify_and_a_fork_or_rollback_fails() {
        let all = leaves(40);
        let mut forked = all.clone();
        forked[5] = leaf_hash(b"rewritten");
        for new in 1..=all.len() {
            let new_root = reference_root(&all[..new]);
            for old in 1..=new {
                let old_root = reference_root(&all[..old]);
                let ranges = consistency_ranges(old as u64, new as u64).expect("ranges");
                let proof: Vec<Hash> = ranges.iter().map(|r| range_hash(&all, *r)).collect();
                let expected = if old == new {
                    Vec::new()
                } else {
                    reference_subproof(old, &all[..new], true)
                };
                assert_eq!(proof, expected, "{old} to {new}");
                let (m, n) = (old as u64, new as u64);
                verify_consistency(m, n, &old_root, &new_root, &proof).expect("verifies");
                if old > 5 {
                    let forked_old = reference_root(&forked[..old]);
                    assert!(verify_consistency(m, n, &forked_old, &new_root, &proof).is_err());
                }
                for at in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[at][31] ^= 1;
                    assert!(verify_consistency(m, n, &old_root, &new_root, &bad).is_err());
                }
                if old < new {
                    assert!(verify_consistency(n, m, &new_root, &old_root, &proof).is_err());
                }
            }
        }
        assert!(consistency_ranges(5, 4).is_err());
    }

    #[test]
    fn pushes_show_every_completed_subtree_and_a_frontier_its_own() {
        let all = leaves(70);
        let mut frontier = Frontier::new();
        let mut seen = Vec::new();
        for leaf in &all {
            frontier.push_seeing(*leaf, |t, h| seen.push((t, *h)));
        }
        let expected: usize = (1..7).map(|h| 70 >> h).sum();
        assert_eq!(seen.len(), expected);
        for (tree, hash) in &seen {
            assert_eq!(tree.start % tree.len(), 0);
            assert_eq!(
                *hash,
                reference_root(&all[tree.start as usize..tree.end() as usize])
            );
        }
        for (tree, hash) in frontier.subtrees() {
            assert_eq!(
                hash,
                reference_root(&all[tree.start as usize..tree.end() as usize])
            );
        }
        assert_eq!(frontier.subtrees().len(), 3, "70 = 64 + 4 + 2");
        let hashes = frontier.subtrees().into_iter().map(|(_, h)| h).collect();
        assert_eq!(
            Frontier::from_subtrees(70, hashes).expect("frontier"),
            frontier
        );
    }

    #[test]
    fn every_size_agrees_with_the_recursive_definition_and_resumes_from_its_text() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(
                frontier.root(),
                reference_root(&leaves[..=i]),
                "size {}",
                i + 1
            );
            let resumed = Frontier::decode(frontier.size(), &frontier.encode()).expect("decode");
            assert_eq!(resumed, frontier);
        }
        assert!(Frontier::decode(5, &Frontier::new().encode()).is_err());
    }
}
