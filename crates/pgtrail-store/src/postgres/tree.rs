//! The Merkle tree's kept interior nodes (`pgtrail.tree_nodes`, migration
//! 9) and subtree hashes read from them (see `crate::tree`): each round of
//! the resolver is one round trip, its node ranges and its leaf ranges
//! sent as arrays in two pipelined queries.

use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Transaction};

use crate::merkle::{Frontier, Hash, Subtree};
use crate::tree::{fill_start, Filler, Read, Resolver, Step, TreeNode};
use crate::{Result, StoreError};

/// The hashes of `trees`, in order, read in one snapshot.
pub(super) async fn subtree_hashes(
    tx: &Transaction<'_>,
    trees: &[Subtree],
    location: &str,
) -> Result<Vec<Hash>> {
    let db = |e| StoreError::backend(location, "reading the Merkle tree", e);
    // `query_typed`: one round trip a query, where `query` prepares first.
    let row = tx
        .query_typed(
            "select (select seq from pgtrail.chain_head), (select min(seq) from pgtrail.events), \
             to_regclass('pgtrail.tree_nodes') is not null",
            &[],
        )
        .await
        .map_err(db)?
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Invalid("the chain's size could not be read".into()))?;
    let size: Option<i64> = row.try_get(0).map_err(db)?;
    let first: Option<i64> = row.try_get(1).map_err(db)?;
    let has_nodes: bool = row.try_get(2).map_err(db)?;
    let size = size.and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
    let first_leaf = first
        .and_then(|f| u64::try_from(f - 1).ok())
        .unwrap_or(size);
    let mut resolver = Resolver::new(trees, size, first_leaf)?;
    loop {
        let (reads, pruned) = match resolver.step()? {
            Step::Done(hashes) => return Ok(hashes),
            Step::Fetch { reads, pruned } => (reads, pruned),
        };
        let (mut heights, mut node_first, mut node_last) = (Vec::new(), Vec::new(), Vec::new());
        let (mut leaf_first, mut leaf_last) = (Vec::new(), Vec::new());
        for read in &reads {
            match *read {
                Read::Nodes {
                    height,
                    first,
                    last,
                } => {
                    heights.push(height as i32);
                    node_first.push(as_i64(first));
                    node_last.push(as_i64(last));
                }
                Read::Leaves { first, last } => {
                    leaf_first.push(as_i64(first + 1));
                    leaf_last.push(as_i64(last + 1));
                }
            }
        }
        let nodes = async {
            if heights.is_empty() || !has_nodes {
                return Ok(Vec::new());
            }
            tx.query_typed(
                "select n.height, n.idx, n.hash from pgtrail.tree_nodes n \
                 join unnest($1::int[], $2::bigint[], $3::bigint[]) as r(height, lo, hi) \
                 on n.height = r.height and n.idx between r.lo and r.hi",
                &[
                    (&heights, Type::INT4_ARRAY),
                    (&node_first, Type::INT8_ARRAY),
                    (&node_last, Type::INT8_ARRAY),
                ],
            )
            .await
        };
        let leaves = async {
            if leaf_first.is_empty() {
                return Ok(Vec::new());
            }
            tx.query_typed(
                "select e.seq, e.hash from unnest($1::bigint[], $2::bigint[]) as r(lo, hi) \
                 join pgtrail.events e on e.seq between r.lo and r.hi",
                &[
                    (&leaf_first, Type::INT8_ARRAY),
                    (&leaf_last, Type::INT8_ARRAY),
                ],
            )
            .await
        };
        let frontier = async {
            if pruned {
                newest_prune_frontier(tx).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (nodes, leaves, frontier) = tokio::try_join!(nodes, leaves, frontier).map_err(db)?;
        if let Some(frontier) = frontier {
            resolver.set_pruned(frontier);
        }
        let mut rows = Vec::with_capacity(nodes.len() + leaves.len());
        for row in nodes {
            let height: i32 = row.try_get(0).map_err(db)?;
            let idx: i64 = row.try_get(1).map_err(db)?;
            let hash: Vec<u8> = row.try_get(2).map_err(db)?;
            if let (Ok(height), Ok(idx), Ok(hash)) = (
                u32::try_from(height),
                u64::try_from(idx),
                Hash::try_from(hash),
            ) {
                rows.push((height, idx, hash));
            }
        }
        for row in leaves {
            let seq: i64 = row.try_get(0).map_err(db)?;
            let hash: String = row.try_get(1).map_err(db)?;
            // A hash that is not 32 bytes of hex is missing: the leaf cannot
            // be made, and the resolver says so.
            if let (Ok(leaf), Some(hash)) =
                (u64::try_from(seq - 1), pgtrail_core::hex::decode_32(&hash))
            {
                rows.push((0, leaf, hash));
            }
        }
        resolver.absorb(&reads, rows);
    }
}

/// Keeps `nodes`, leaving those already kept as they are: one statement.
pub(super) async fn add(
    client: &impl GenericClient,
    nodes: &[(Subtree, Hash)],
) -> std::result::Result<(), tokio_postgres::Error> {
    let heights: Vec<i32> = nodes.iter().map(|(t, _)| t.height as i32).collect();
    let idxs: Vec<i64> = nodes.iter().map(|(t, _)| as_i64(t.index())).collect();
    let hashes: Vec<&[u8]> = nodes.iter().map(|(_, h)| &h[..]).collect();
    client
        .execute(
            "insert into pgtrail.tree_nodes (height, idx, hash) \
             select * from unnest($1::int[], $2::bigint[], $3::bytea[]) \
             on conflict do nothing",
            &[&heights, &idxs, &hashes],
        )
        .await?;
    Ok(())
}

/// Kept nodes after `(height, idx)`, in order, at most `limit`.
pub(super) async fn list(
    client: &impl GenericClient,
    after: (i64, i64),
    limit: usize,
) -> std::result::Result<Vec<TreeNode>, tokio_postgres::Error> {
    let exists = client
        .query_one("select to_regclass('pgtrail.tree_nodes') is not null", &[])
        .await?;
    if !exists.try_get::<_, bool>(0)? {
        return Ok(Vec::new());
    }
    // Heights are small: one beyond an `int` is before or after them all.
    let height = after.0.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    let idx = after.1;
    let rows = client
        .query(
            "select height, idx, hash from pgtrail.tree_nodes where (height, idx) > ($1, $2) \
             order by height, idx limit $3",
            &[&height, &idx, &i64::try_from(limit).unwrap_or(i64::MAX)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(TreeNode {
                height: i64::from(row.try_get::<_, i32>(0)?),
                idx: row.try_get(1)?,
                hash: row.try_get(2)?,
            })
        })
        .collect()
}

/// Rows read and hashed at a time by [`fill`].
const FILL_BATCH: i32 = 10_000;

/// Migration 9's fill, inside its transaction: the kept nodes of the events
/// already stored, in one pass over their hashes through a cursor, from the
/// chain's start or from the prune checkpoint just before the first stored
/// event. It stops, leaving the rest to proofs' fallback, at a gap or a hash
/// that is not 32 bytes of hex (`verify` reports those), or at a store
/// pruned before checkpoints kept a frontier.
pub(super) async fn fill(tx: &Transaction<'_>, location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "filling the Merkle tree's nodes (migration 9)", e);
    let row = tx
        .query_one(
            "select (select min(seq) from pgtrail.events), \
             (select seq from pgtrail.checkpoints where kind = 'prune' and frontier is not null order by id desc limit 1), \
             (select frontier from pgtrail.checkpoints where kind = 'prune' and frontier is not null order by id desc limit 1)",
            &[],
        )
        .await
        .map_err(db)?;
    let first: Option<i64> = row.try_get(0).map_err(db)?;
    let prune_seq: Option<i64> = row.try_get(1).map_err(db)?;
    let prune_frontier: Option<String> = row.try_get(2).map_err(db)?;
    let Some(frontier) = fill_start(first, prune_seq.zip(prune_frontier)) else {
        tracing::warn!(
            store = location,
            "The store was pruned before checkpoints kept the tree: its Merkle nodes are not filled, and proofs read every event under them"
        );
        return Ok(());
    };
    let mut filler = Filler::new(frontier);
    let portal = tx
        .bind("select seq, hash from pgtrail.events order by seq", &[])
        .await
        .map_err(db)?;
    'read: loop {
        let rows = tx.query_portal(&portal, FILL_BATCH).await.map_err(db)?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let seq: i64 = row.try_get(0).map_err(db)?;
            let hash: String = row.try_get(1).map_err(db)?;
            let (Some(hash), true) = (
                pgtrail_core::hex::decode_32(&hash),
                u64::try_from(seq).is_ok_and(|s| s == filler.next_leaf() + 1),
            ) else {
                break 'read;
            };
            filler.push(&hash);
        }
        if filler.nodes.len() >= 1_000 {
            add(tx, &std::mem::take(&mut filler.nodes))
                .await
                .map_err(db)?;
        }
    }
    add(tx, &filler.nodes).await.map_err(db)
}

async fn newest_prune_frontier(
    tx: &Transaction<'_>,
) -> std::result::Result<Option<Frontier>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "select seq, frontier from pgtrail.checkpoints \
             where kind = 'prune' and frontier is not null order by id desc",
            &[],
        )
        .await?;
    // The newest whose frontier reads, as `proof::subtree_from_events`.
    for row in rows {
        let seq: i64 = row.try_get(0)?;
        let text: String = row.try_get(1)?;
        if let Some(frontier) = u64::try_from(seq)
            .ok()
            .and_then(|size| Frontier::decode(size, &text).ok())
        {
            return Ok(Some(frontier));
        }
    }
    Ok(None)
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
