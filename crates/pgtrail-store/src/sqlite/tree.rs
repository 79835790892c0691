//! The Merkle tree's kept interior nodes (`tree_nodes`, version 12) and
//! subtree hashes read from them (see `crate::tree`).

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::merkle::{Frontier, Hash, Subtree};
use crate::tree::{fill_start, Filler, Read, Resolver, Step, TreeNode};
use crate::{Result, StoreError};

/// The hashes of `trees`, in order, read in one snapshot.
pub fn subtree_hashes(conn: &Connection, trees: &[Subtree], location: &str) -> Result<Vec<Hash>> {
    let db = |e| StoreError::backend(location, "reading the Merkle tree", e);
    let tx = conn.unchecked_transaction().map_err(db)?;
    let size: i64 = tx
        .query_row("select seq from chain_head", [], |r| r.get(0))
        .optional()
        .map_err(db)?
        .unwrap_or(0);
    let first: Option<i64> = tx
        .query_row("select min(seq) from events", [], |r| r.get(0))
        .map_err(db)?;
    let size = u64::try_from(size).unwrap_or(0);
    let first_leaf = first
        .and_then(|f| u64::try_from(f - 1).ok())
        .unwrap_or(size);
    let has_nodes = has_table(&tx, location)?;
    let mut resolver = Resolver::new(trees, size, first_leaf)?;
    loop {
        let (reads, pruned) = match resolver.step()? {
            Step::Done(hashes) => return Ok(hashes),
            Step::Fetch { reads, pruned } => (reads, pruned),
        };
        if pruned {
            resolver.set_pruned(newest_prune_frontier(&tx, location)?);
        }
        let mut rows = Vec::new();
        for read in &reads {
            match *read {
                Read::Nodes {
                    height,
                    first,
                    last,
                } if has_nodes => {
                    let mut statement = tx
                        .prepare_cached(
                            "select idx, hash from tree_nodes where height = ?1 and idx between ?2 and ?3",
                        )
                        .map_err(db)?;
                    let found = statement
                        .query_map(params![height, as_i64(first), as_i64(last)], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .map_err(db)?;
                    for row in found {
                        let (idx, hash) = row.map_err(db)?;
                        if let (Ok(idx), Ok(hash)) = (u64::try_from(idx), Hash::try_from(hash)) {
                            rows.push((height, idx, hash));
                        }
                    }
                }
                Read::Nodes { .. } => {}
                Read::Leaves { first, last } => {
                    let mut statement = tx
                        .prepare_cached("select seq, hash from events where seq between ?1 and ?2")
                        .map_err(db)?;
                    let found = statement
                        .query_map(params![as_i64(first + 1), as_i64(last + 1)], |r| {
                            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                        })
                        .map_err(db)?;
                    for row in found {
                        let (seq, hash) = row.map_err(db)?;
                        // A hash that is not 32 bytes is missing: the leaf
                        // cannot be made, and the resolver says so.
                        if let (Ok(leaf), Ok(hash)) = (u64::try_from(seq - 1), Hash::try_from(hash))
                        {
                            rows.push((0, leaf, hash));
                        }
                    }
                }
            }
        }
        resolver.absorb(&reads, rows);
    }
}

/// Keeps `nodes`, leaving those already kept as they are, in one
/// transaction (fsync'd on commit).
pub fn add(conn: &mut Connection, nodes: &[(Subtree, Hash)], location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "keeping the Merkle tree's nodes", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    insert(&tx, nodes, location)?;
    tx.commit().map_err(db)
}

fn insert(conn: &Connection, nodes: &[(Subtree, Hash)], location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "keeping the Merkle tree's nodes", e);
    let mut statement = conn
        .prepare_cached("insert or ignore into tree_nodes (height, idx, hash) values (?1, ?2, ?3)")
        .map_err(db)?;
    for (tree, hash) in nodes {
        statement
            .execute(params![tree.height, as_i64(tree.index()), &hash[..]])
            .map_err(db)?;
    }
    Ok(())
}

/// Kept nodes after `(height, idx)`, in order, at most `limit`.
pub fn list(
    conn: &Connection,
    after: (i64, i64),
    limit: usize,
    location: &str,
) -> Result<Vec<TreeNode>> {
    if !has_table(conn, location)? {
        return Ok(Vec::new());
    }
    let db = |e| StoreError::backend(location, "reading the Merkle tree's nodes", e);
    let mut statement = conn
        .prepare_cached(
            "select height, idx, hash from tree_nodes where (height, idx) > (?1, ?2) \
             order by height, idx limit ?3",
        )
        .map_err(db)?;
    let rows = statement
        .query_map(
            params![after.0, after.1, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok(TreeNode {
                    height: r.get(0)?,
                    idx: r.get(1)?,
                    hash: r.get(2)?,
                })
            },
        )
        .map_err(db)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
}

/// Fills the kept nodes of the events already stored (migration 12, in its
/// transaction): one pass over the events' hashes, from the chain's start
/// or from the prune checkpoint just before the first stored event. It
/// stops, leaving the rest to proofs' fallback, at a gap or a hash that is
/// not 32 bytes (`verify` reports those), or at a store pruned before
/// checkpoints kept a frontier.
pub fn fill(conn: &Connection, location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "filling the Merkle tree's nodes", e);
    let first: Option<i64> = conn
        .query_row("select min(seq) from events", [], |r| r.get(0))
        .map_err(db)?;
    let prune: Option<(i64, String)> = conn
        .query_row(
            "select seq, frontier from checkpoints where kind = 'prune' and frontier is not null \
             order by id desc limit 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(db)?;
    let Some(frontier) = fill_start(first, prune) else {
        tracing::warn!(
            location,
            "The store was pruned before checkpoints kept the tree: its Merkle nodes are not filled, and proofs read every event under them"
        );
        return Ok(());
    };
    let mut filler = Filler::new(frontier);
    let mut statement = conn
        .prepare("select seq, hash from events order by seq")
        .map_err(db)?;
    let mut rows = statement.query([]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let hash: Vec<u8> = row.get(1).map_err(db)?;
        let (Ok(hash), true) = (
            Hash::try_from(hash),
            u64::try_from(seq).is_ok_and(|s| s == filler.next_leaf() + 1),
        ) else {
            break;
        };
        filler.push(&hash);
        if filler.nodes.len() >= 10_000 {
            insert(conn, &std::mem::take(&mut filler.nodes), location)?;
        }
    }
    insert(conn, &filler.nodes, location)
}

fn newest_prune_frontier(conn: &Connection, location: &str) -> Result<Option<Frontier>> {
    let db = |e| StoreError::backend(location, "reading the prune checkpoints", e);
    let mut statement = conn
        .prepare_cached(
            "select seq, frontier from checkpoints where kind = 'prune' and frontier is not null \
             order by id desc",
        )
        .map_err(db)?;
    let mut rows = statement.query([]).map_err(db)?;
    // The newest whose frontier reads, as `proof::subtree_from_events`.
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let text: String = row.get(1).map_err(db)?;
        if let Some(frontier) = u64::try_from(seq)
            .ok()
            .and_then(|size| Frontier::decode(size, &text).ok())
        {
            return Ok(Some(frontier));
        }
    }
    Ok(None)
}

/// Whether the store has the table (a store opened for verify is read at
/// the schema it has, perhaps older than version 12).
fn has_table(conn: &Connection, location: &str) -> Result<bool> {
    super::schema::has_table(conn, "tree_nodes")
        .map_err(|e| StoreError::backend(location, "looking for the Merkle tree's nodes", e))
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
