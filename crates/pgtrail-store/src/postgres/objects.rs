//! The relations each statement touched, in chain order
//! (`pgtrail.events_objects`, schema version 15): `(name, seq)`, one row
//! per name of the statement's `objects` as `--table` looks them up
//! (`pgtrail_core::filter::object_index_names`: the bare and the qualified
//! name, each quoted).
//!
//! Why a table and not the GIN index over an array column it replaces: a
//! GIN index has no order, so `table:t` gathered every statement that ever
//! touched `t` and sorted them to return the newest page. The primary key
//! `(name, seq)` is one walk newest first that stops at the page, like the
//! keyed walks of the events' own columns. Bare and qualified names are
//! both rows (not `(table, schema)` as SQLite keeps them) because Postgres
//! cannot walk a bare name across schemas in `seq` order.
//!
//! Derived, never a second source of truth: the append writes its
//! statements' rows in the chain lock's transaction (the trigger sealer
//! too, as `pgtrail_admin`, granted `insert`), a prune deletes the rows of
//! the events it removes, and `verify` compares every row with the events
//! it walked. A row removed hides a statement from `table:`; one added
//! shows it where it never was: `verify` names the event.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};

use futures_util::TryStreamExt;
use tokio_postgres::Transaction;

use super::event_row::object_names;
use crate::{Mismatch, StoredEvent};

/// The names of `(seq, event)` pairs' statements, as two parallel arrays
/// for one `insert … select from unnest`.
#[derive(Default)]
pub(super) struct Rows {
    names: Vec<String>,
    seqs: Vec<i64>,
}

impl Rows {
    /// Adds the names of `event`, sealed at `seq` (none for an event that
    /// is not a statement or touched nothing).
    pub(super) fn add(&mut self, seq: i64, event: &pgtrail_core::Event) {
        for name in object_names(event).unwrap_or_default() {
            self.names.push(name);
            self.seqs.push(seq);
        }
    }
}

/// Writes `rows` (a batch just sealed), inside the appender's transaction:
/// one statement for the batch.
pub(super) async fn write(tx: &Transaction<'_>, rows: &Rows) -> Result<(), tokio_postgres::Error> {
    if rows.seqs.is_empty() {
        return Ok(());
    }
    tx.execute(
        "insert into pgtrail.events_objects (name, seq) \
         select * from unnest($1::text[], $2::bigint[])",
        &[&rows.names, &rows.seqs],
    )
    .await?;
    Ok(())
}

/// Migration 15's fill, inside its transaction: the names of every stored
/// statement, from the `objects` of its body (the hashed bytes, not the
/// `object_names` column the migration drops, which anyone who could
/// write the table could have edited). Reads through one cursor; only
/// bodies that name objects are parsed. A body that does not decode gets
/// no names: verify reports such an event anyway.
pub(super) async fn fill(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    let portal = tx
        .bind(
            "select seq, body from pgtrail.events \
             where kind = 'statement' and strpos(body, '\"objects\":') > 0",
            &[],
        )
        .await?;
    loop {
        let page = tx.query_portal(&portal, FILL_BATCH).await?;
        if page.is_empty() {
            return Ok(());
        }
        let mut rows = Rows::default();
        for row in &page {
            let body: &str = row.try_get(1)?;
            if let Ok(event) = serde_json::from_str::<pgtrail_core::Event>(body) {
                rows.add(row.try_get(0)?, &event);
            }
        }
        write(tx, &rows).await?;
    }
}

/// Statements read and indexed at a time by [`fill`].
const FILL_BATCH: i32 = 10_000;

/// After a prune, in its transaction: the rows of the removed events go
/// too (one pass over the table, which has no index by `seq` alone: a
/// prune is rare, every append would pay for such an index).
pub(super) async fn after_prune(
    tx: &Transaction<'_>,
    through: i64,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "delete from pgtrail.events_objects where seq <= $1",
        &[&through],
    )
    .await?;
    Ok(())
}

/// One row's digest: keyed by the verifying process, so no one who writes
/// the table can make another set of names sum to the expected one.
fn digest(key: &RandomState, name: &str) -> u64 {
    key.hash_one(name)
}

/// `(seq, digest of its names)` of each statement of `page` that touched a
/// relation: what `events_objects` should hold for it.
pub(super) fn expected(page: &[StoredEvent], key: &RandomState) -> Vec<(i64, u64)> {
    page.iter()
        .filter_map(|stored| {
            let names = object_names(stored.event.as_ref().ok()?)?;
            let sum = names
                .iter()
                .fold(0u64, |sum, name| sum.wrapping_add(digest(key, name)));
            Some((stored.seq, sum))
        })
        .collect()
}

/// Compares `events_objects` with what the walk of events `first..=last`
/// expected, in one snapshot: one mismatch per event whose names differ,
/// and per event named that is not in the chain (below its start, or
/// above its head). Rows of events appended after the walk are left to the
/// next verify; so are those before `first` when the walk resumed after
/// stored events (incremental verify). One pass over the table, streamed;
/// the findings are unsorted.
pub(super) async fn check(
    tx: &Transaction<'_>,
    first: i64,
    last: i64,
    mut expected: Vec<(i64, u64)>,
    key: &RandomState,
) -> Result<Vec<(i64, Mismatch)>, tokio_postgres::Error> {
    let head: i64 = tx
        .query_one("select seq from pgtrail.chain_head", &[])
        .await?
        .try_get(0)?;
    let resumed = super::facets::walk_resumed(tx, first).await?;
    // Streamed: at 10M events the table holds millions of rows, which
    // `query` would hold in memory at once.
    let rows = tx
        .query_raw(
            "select name, seq from pgtrail.events_objects",
            std::iter::empty::<i64>(),
        )
        .await?;
    let mut rows = std::pin::pin!(rows);
    let mut stored: HashMap<i64, u64> = HashMap::new();
    let mut outside = BTreeSet::new();
    while let Some(row) = rows.try_next().await? {
        let seq: i64 = row.try_get(1)?;
        if (first..=last).contains(&seq) {
            let slot = stored.entry(seq).or_default();
            *slot = slot.wrapping_add(digest(key, row.try_get(0)?));
        } else if seq > head || (seq < first && !resumed) {
            outside.insert(seq);
        }
    }
    let mismatch = |found: String, expected: &str| Mismatch {
        column: "events_objects".into(),
        found,
        expected: expected.into(),
    };
    let mut mismatches: Vec<(i64, Mismatch)> = outside
        .into_iter()
        .map(|seq| {
            (
                seq,
                mismatch(
                    format!("names indexed for event {seq}"),
                    "no such event in the chain",
                ),
            )
        })
        .collect();
    expected.retain(|(seq, _)| (first..=last).contains(seq));
    for (seq, want) in expected {
        let have = stored.remove(&seq);
        if have != Some(want) {
            let found = if have.is_none() {
                "no names"
            } else {
                "other names"
            };
            mismatches.push((
                seq,
                mismatch(found.into(), "the relations the statement touched"),
            ));
        }
    }
    for seq in stored.into_keys() {
        mismatches.push((
            seq,
            mismatch(
                "names indexed".into(),
                "none (the event touched no relation)",
            ),
        ));
    }
    // Sorted by the caller, with the other summaries' findings.
    Ok(mismatches)
}
