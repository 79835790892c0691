//! The RFC 6962 Merkle tree over the chain: leaf `i` is the hash of the
//! event with `seq = i + 1` (its 32 bytes, not the hex).
//!
//! Only the small part of RFC 6962 that checkpoints need lives here: the
//! leaf and node hashes and a [`Frontier`], the compact range of a tree's
//! left edge (one hash per set bit of its size, so at most 64). Pushing
//! leaves into a frontier gives the root at every size while walking the
//! chain once; a frontier kept in a checkpoint lets the tree continue after
//! retention removed the leaves before it.
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
        let mut node = leaf;
        let mut size = self.size;
        // Like adding one to a binary counter: each carry merges two
        // perfect subtrees of the same height.
        while size & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit has its subtree");
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.nodes.push(node);
        self.size += 1;
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
