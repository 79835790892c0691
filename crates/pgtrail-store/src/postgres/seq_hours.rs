//! The `seq` range of each capture hour (`pgtrail.seq_hours`, schema
//! version 13), as SQLite keeps it (`crate::seq_hours`): a search with a
//! time window walks only the stretch of the chain its hours hold, so a
//! walk newest first stops where the window starts instead of reading on
//! to the start of the chain.
//!
//! Derived, never a second source of truth: the append widens its events'
//! hours in the chain lock's transaction (the trigger sealer too, as
//! `pgtrail_admin`, granted `insert, update` on it), a prune recomputes the
//! hours it touched from the events left, and `verify` recomputes every
//! hour it walks and compares. A narrowed range hides events from windowed
//! searches: `verify` names the hour.

use pgtrail_core::Filter;
use tokio_postgres::{GenericClient, Transaction};

use super::facets::{compared_from, redo_pruned_hours};
use crate::facet_hours::HOUR_US;
pub(super) use crate::seq_hours::Window;
use crate::seq_hours::{compare, Ranges};
use crate::{Mismatch, StoredEvent};

/// `(hour, first_seq, last_seq)` of the events matching the condition
/// given (a literal), one row per capture hour. The migration that creates
/// the table fills it with the same SQL.
macro_rules! seq_hour_rows {
    ($condition:literal) => {
        concat!(
            "select floor(extract(epoch from captured_at) / 3600)::bigint as hour, \
             min(seq), max(seq) from pgtrail.events where ",
            $condition,
            " group by 1"
        )
    };
}
pub(super) use seq_hour_rows;

/// `seq_hours` recomputed from every event, in SQL anyone with the store's
/// credentials can run: like `RECOUNT_FACETS`, the table adds no trust (a
/// careful attacker who deletes events recomputes it; the chain and the
/// checkpoints catch the deletion). The attack tests run it as such an
/// attacker would.
pub const RECOUNT_SEQ_HOURS: &str = concat!(
    "delete from pgtrail.seq_hours; \
     insert into pgtrail.seq_hours (hour, first_seq, last_seq) ",
    seq_hour_rows!("true"),
    ";"
);

/// The stretch of the chain holding every event of `filter`'s time window.
pub(super) async fn window(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<Window, tokio_postgres::Error> {
    let (first_hour, last_hour) = match Window::hours_to_read(filter) {
        Ok(hours) => hours,
        Err(answer) => return Ok(answer),
    };
    let row = client
        .query_one(
            "select min(first_seq), max(last_seq) from pgtrail.seq_hours \
             where hour >= $1 and hour <= $2",
            &[&first_hour, &last_hour],
        )
        .await?;
    Ok(Window::from_bounds(row.try_get(0)?, row.try_get(1)?))
}

/// The ranges of the events of `page`, as `seq_hours` should hold them.
pub(super) fn ranges_of(page: &[StoredEvent]) -> Ranges {
    let mut ranges = Ranges::default();
    for stored in page {
        if let Ok(event) = &stored.event {
            ranges.add(stored.seq, event.captured_at.timestamp_micros());
        }
    }
    ranges
}

/// Whether appends keep `seq_hours`: always, except in `bench/store`,
/// which builds with the `bench-internals` feature to price it (a store
/// written without it fails verify, as it should).
#[cfg(feature = "bench-internals")]
static KEEPING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For `bench/store` only: appends of this process keep `seq_hours` or not
/// (the name SQLite's hook has).
#[cfg(feature = "bench-internals")]
pub fn keep_seq_hours_for_bench(on: bool) {
    KEEPING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Widens the hours of `ranges` (a batch just sealed), inside the
/// appender's transaction: one statement for the batch.
pub(super) async fn write(
    tx: &Transaction<'_>,
    ranges: &Ranges,
) -> Result<(), tokio_postgres::Error> {
    #[cfg(feature = "bench-internals")]
    if !KEEPING.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    if ranges.0.is_empty() {
        return Ok(());
    }
    let mut hours = Vec::with_capacity(ranges.0.len());
    let mut firsts = Vec::with_capacity(ranges.0.len());
    let mut lasts = Vec::with_capacity(ranges.0.len());
    for (hour, (first, last)) in &ranges.0 {
        hours.push(*hour);
        firsts.push(*first);
        lasts.push(*last);
    }
    tx.execute(
        "insert into pgtrail.seq_hours as s (hour, first_seq, last_seq) \
         select * from unnest($1::bigint[], $2::bigint[], $3::bigint[]) \
         on conflict (hour) do update set \
             first_seq = least(s.first_seq, excluded.first_seq), \
             last_seq = greatest(s.last_seq, excluded.last_seq)",
        &[&hours, &firsts, &lasts],
    )
    .await?;
    Ok(())
}

/// After a prune (the events already deleted, in the prune's
/// transaction): recomputes, from the events left, every hour up to
/// `newest`, the capture time of the newest pruned event.
pub(super) async fn after_prune(
    tx: &Transaction<'_>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), tokio_postgres::Error> {
    let insert = concat!(
        "insert into pgtrail.seq_hours (hour, first_seq, last_seq) ",
        seq_hour_rows!("captured_at < $1")
    );
    redo_pruned_hours(tx, newest, "pgtrail.seq_hours", insert).await
}

/// Compares the table with `expected`, the ranges of the events `verify`
/// walked (`first..=last`), in one snapshot, as `facets::check` does:
/// events appended after the walk widen what is expected; when the walk
/// resumed after stored events, only the hours of the walk's events are
/// compared, with the earlier events in them read from their columns.
pub(super) async fn check(
    tx: &Transaction<'_>,
    first: i64,
    last: i64,
    mut expected: Ranges,
) -> Result<Vec<(i64, Mismatch)>, tokio_postgres::Error> {
    let add = |expected: &mut Ranges, rows: Vec<tokio_postgres::Row>| {
        for row in rows {
            let mut one = Ranges::default();
            one.0
                .insert(row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?));
            expected.extend(one);
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    add(
        &mut expected,
        tx.query(seq_hour_rows!("seq > $1"), &[&last]).await?,
    )?;
    let least = expected.0.keys().next().copied();
    let Some(from_hour) = compared_from(tx, first, least).await? else {
        return Ok(Vec::new());
    };
    if from_hour != i64::MIN {
        let from = chrono::DateTime::from_timestamp_micros(from_hour.saturating_mul(HOUR_US));
        add(
            &mut expected,
            tx.query(
                seq_hour_rows!("seq < $1 and captured_at >= $2"),
                &[&first, &from],
            )
            .await?,
        )?;
    }
    let rows = tx
        .query(
            "select hour, first_seq, last_seq from pgtrail.seq_hours where hour >= $1",
            &[&from_hour],
        )
        .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        stored.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?));
    }
    Ok(compare(stored, expected, last))
}
