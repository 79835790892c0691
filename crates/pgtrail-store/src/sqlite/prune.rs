//! Removing a prefix of the chain (retention), full-text rows included.
//!
//! The caller has archived the events and recorded a prune checkpoint first;
//! `chain_head` is left alone, so the chain continues from where it was even
//! when every event is removed.

use rusqlite::{Connection, TransactionBehavior};

use crate::{PruneOutcome, Result, StoreError};

/// Deletes events with `seq <= through` and their full-text rows, atomically.
pub fn prune(conn: &mut Connection, through: i64, location: &str) -> Result<PruneOutcome> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("locking the store to prune it"))?;
    super::facets::before_prune(&tx, through, location)?;
    let removed = tx
        .execute("delete from events where seq <= ?1", [through])
        .map_err(db("removing pruned events"))?;
    tx.execute("delete from events_fts where rowid <= ?1", [through])
        .map_err(db("removing pruned events from the full-text index"))?;
    tx.execute("delete from events_objects where seq <= ?1", [through])
        .map_err(db("removing pruned events from the object index"))?;
    super::seq_hours::after_prune(&tx, through, location)?;
    tx.commit().map_err(db("committing the prune"))?;
    Ok(PruneOutcome {
        removed: removed as u64,
        dropped_partitions: Vec::new(),
    })
}
