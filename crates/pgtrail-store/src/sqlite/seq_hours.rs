//! The `seq` range of each capture hour (`seq_hours`, schema version 16;
//! the contract is `crate::seq_hours`): appends widen the hours of their
//! batch in the same transaction, searches read a window's `seq` bounds
//! from it before walking ([`window`]), a prune recomputes the hours it
//! touched, and `verify` recomputes every hour from the events walked.

use pgtrail_core::Filter;
use rusqlite::{params, Connection};

use crate::facet_hours::HOUR_US;
use crate::seq_hours::Ranges;
pub use crate::seq_hours::Window;
use crate::{Mismatch, Result, StoreError};

/// The hour of `captured_at` in SQL, as `facet_hours::hour` (Rust's
/// `div_euclid`) counts it, before 1970 too. Migration 16 fills the table
/// with the same expression (`schema::V16`).
const HOUR: &str = "case when captured_at >= 0 then captured_at / 3600000000 \
     else (captured_at + 1) / 3600000000 - 1 end";

const UPSERT: &str = "insert into seq_hours (hour, first_seq, last_seq) values (?1, ?2, ?3) \
     on conflict (hour) do update set first_seq = min(first_seq, excluded.first_seq), \
     last_seq = max(last_seq, excluded.last_seq)";

/// `seq_hours` rebuilt from every event (migration 16's fill), in SQL
/// anyone with the file can run: the summary adds no trust (a careful
/// attacker who deletes events rebuilds it; the chain and the checkpoints
/// catch the deletion). The attack tests run it as such an attacker would.
pub const RECOUNT_SEQ_HOURS: &str = "delete from seq_hours;
insert into seq_hours (hour, first_seq, last_seq)
select case when captured_at >= 0 then captured_at / 3600000000
            else (captured_at + 1) / 3600000000 - 1 end as h,
       min(seq), max(seq)
from events group by h;";

/// Whether appends keep the summary: always, except in `bench/store`,
/// which builds with the `bench-internals` feature to price it (a store
/// written without it fails verify, as it should).
#[cfg(feature = "bench-internals")]
static KEEPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For `bench/store` only: appends of this process keep `seq_hours` or not.
#[cfg(feature = "bench-internals")]
pub fn keep_for_bench(on: bool) {
    KEEPING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Widens the stored hours by a batch's `ranges`, inside the caller's
/// transaction: one statement per hour the batch touched.
pub fn write(conn: &Connection, ranges: &Ranges, location: &str) -> Result<()> {
    #[cfg(feature = "bench-internals")]
    if !KEEPING.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let db = |e| StoreError::backend(location, "recording the seq range of an hour", e);
    let mut upsert = conn.prepare_cached(UPSERT).map_err(db)?;
    for (hour, (first, last)) in &ranges.0 {
        upsert.execute(params![hour, first, last]).map_err(db)?;
    }
    Ok(())
}

/// Whether searches read the summary: always, except in `bench/serve`,
/// which builds with the `bench-internals` feature to compare a window's
/// walks with and without their `seq` range in one process.
#[cfg(feature = "bench-internals")]
static READING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For `bench/serve` only: searches of this process bound their walks by
/// `seq_hours` or not (then they read as schema 15 did).
#[cfg(feature = "bench-internals")]
pub fn read_for_bench(on: bool) {
    READING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// The `seq` bounds of `filter`'s time window: one range read of the
/// window's hours. Read before the search, outside its statement: the
/// events appended since have greater `seq`s than any the bounds hold, so
/// the search sees the window as it was when the bounds were read.
pub fn window(conn: &Connection, filter: &Filter, location: &str) -> Result<Window> {
    #[cfg(feature = "bench-internals")]
    if !READING.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Window::Unbounded);
    }
    let (first_hour, last_hour) = match Window::hours_to_read(filter) {
        Ok(hours) => hours,
        Err(answer) => return Ok(answer),
    };
    let bounds: (Option<i64>, Option<i64>) = conn
        .prepare_cached(
            "select min(first_seq), max(last_seq) from seq_hours where hour between ?1 and ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![first_hour, last_hour], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(|e| StoreError::backend(location, "reading the seq range of a time window", e))?;
    Ok(Window::from_bounds(bounds.0, bounds.1))
}

/// After a prune of `seq <= through` deleted its events (in the prune's
/// transaction): every hour that held a pruned event (its `first_seq` is
/// at most `through`) is recomputed from the events left in it, or
/// removed when none are left. A later `seq` may hold an earlier time, so
/// the hours are found by their range, not by time.
pub fn after_prune(conn: &Connection, through: i64, location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "recomputing the seq ranges after a prune", e);
    let touched = conn
        .prepare("select hour from seq_hours where first_seq <= ?1")
        .and_then(|mut s| {
            s.query_map([through], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db)?;
    let mut delete = conn
        .prepare_cached("delete from seq_hours where hour = ?1")
        .map_err(db)?;
    // The hour's events through the time index: the hour at a prune's
    // edge holds an hour of events at most.
    let mut recompute = conn
        .prepare_cached(
            "insert into seq_hours (hour, first_seq, last_seq) \
             select ?1, min(seq), max(seq) from events \
             where captured_at >= ?2 and captured_at < ?3 having count(*) > 0",
        )
        .map_err(db)?;
    for hour in touched {
        delete.execute([hour]).map_err(db)?;
        let start = hour.saturating_mul(HOUR_US);
        let end = hour.saturating_add(1).saturating_mul(HOUR_US);
        recompute.execute(params![hour, start, end]).map_err(db)?;
    }
    Ok(())
}

/// Compares `seq_hours` with `expected`, the ranges of the events `verify`
/// walked (`first..=last`). Events appended after the walk are added to
/// what is expected, so an append beside verify is no mismatch. When the
/// walk resumed after stored events (incremental verify), only the hours
/// from the walk's earliest on are compared, with the earlier events in
/// them added from their columns.
pub fn check(
    conn: &Connection,
    first: i64,
    last: i64,
    mut expected: Ranges,
    location: &str,
) -> Result<Vec<(i64, Mismatch)>> {
    let db = |e| StoreError::backend(location, "reading the seq ranges of the hours", e);
    // A store verified at an older version (before 16) has no summary:
    // nothing there can mislead a search, and `pgtrail log` builds it.
    if !super::schema::has_table(conn, "seq_hours").map_err(db)? {
        return Ok(Vec::new());
    }
    let tx = conn.unchecked_transaction().map_err(db)?;
    let ranges_of = |sql: &str, values: &[i64]| -> Result<Ranges> {
        let mut statement = tx
            .prepare(&format!(
                "select {HOUR} as h, min(seq), max(seq) from events where {sql} group by h"
            ))
            .map_err(db)?;
        let rows = statement
            .query_map(rusqlite::params_from_iter(values), |r| {
                Ok((r.get::<_, i64>(0)?, (r.get(1)?, r.get(2)?)))
            })
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        Ok(Ranges(rows))
    };
    expected.extend(ranges_of("seq > ?1", &[last])?);
    let from_hour = if super::stored::walk_resumed(&tx, first).map_err(db)? {
        let Some(&from_hour) = expected.0.keys().next() else {
            return Ok(Vec::new()); // no event walked: no hour to compare
        };
        let older = ranges_of(
            "seq < ?1 and captured_at >= ?2",
            &[first, from_hour.saturating_mul(HOUR_US)],
        )?;
        expected.extend(older);
        from_hour
    } else {
        i64::MIN
    };
    let stored = tx
        .prepare("select hour, first_seq, last_seq from seq_hours where hour >= ?1 order by hour")
        .and_then(|mut s| {
            s.query_map([from_hour], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<(i64, i64, i64)>>>()
        })
        .map_err(db)?;
    tx.finish().map_err(db)?;
    Ok(crate::seq_hours::compare(stored, expected, last))
}
