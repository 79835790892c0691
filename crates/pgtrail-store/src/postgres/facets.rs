//! Facet counts by the hour (`pgtrail.facet_hours`, schema version 11), as
//! SQLite keeps them (`crate::facet_hours`): the search page's "who did
//! what over the last 7 days" reads a few hundred rows an hour instead of
//! every event of the week.
//!
//! Derived, never a second source of truth: the append adds its events to
//! their hours in the chain lock's transaction (the trigger sealer too, as
//! `pgtrail_admin`, which is granted `insert, update` on it), a prune
//! recounts the hours it touched from the events left, and `verify`
//! counts every event it walks and compares.

use pgtrail_core::search::{Facets, FACET_BOUND};
use pgtrail_core::{Event, Filter};
use tokio_postgres::{GenericClient, Transaction};

use super::query;
use crate::facet_hours::{self, Counts, HOUR_US};
use crate::Mismatch;

/// `(hour, facet, value)` of each event matching the condition appended
/// after it (`and …`), one row per facet value: one pass over the events.
/// The migration that creates the summary fills it with the same SQL.
macro_rules! facet_rows {
    () => {
        "select floor(extract(epoch from e.captured_at) / 3600)::bigint as hour, f.facet, f.value \
         from pgtrail.events e cross join lateral (values \
             ('user', coalesce(e.app_user, e.db_user)), \
             ('table', case when e.schema_name is null then e.table_name \
                 else e.schema_name || '.' || e.table_name end), \
             ('operation', translate(e.operation, 'abcdefghijklmnopqrstuvwxyz', \
                 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')), \
             ('source', e.source), \
             ('outcome', case when e.failed then 'failed' else 'ok' end) \
         ) as f(facet, value) where f.value is not null"
    };
}
pub(super) use facet_rows;

/// `facet_hours` recounted from every event, in SQL anyone with the
/// store's credentials can run: the summary adds no trust (a careful
/// attacker who deletes events recounts it; the chain and the checkpoints
/// catch the deletion). The attack tests run it as such an attacker would.
pub const RECOUNT_FACETS: &str = concat!(
    "delete from pgtrail.facet_hours; \
     insert into pgtrail.facet_hours (hour, facet, value, count) \
     select hour, facet, value, count(*) from (",
    facet_rows!(),
    ") r group by 1, 2, 3;"
);

/// The summary's rows of the events matching `condition`, grouped.
fn grouped(condition: &str) -> String {
    format!(
        "select hour, facet, value, count(*) from ({} and {condition}) r group by 1, 2, 3",
        facet_rows!()
    )
}

/// The facet counts of `events` (as stored), by the hour.
pub(super) fn counts_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Counts {
    let mut counts = Counts::new();
    for event in events {
        facet_hours::add_event(&mut counts, event);
    }
    counts
}

/// Whether appends count facets: always, except in `bench/store`, which
/// builds with the `bench-internals` feature to price them (a store written
/// without them fails verify, as it should).
#[cfg(feature = "bench-internals")]
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// For `bench/store` only: appends of this process count facets or not.
#[cfg(feature = "bench-internals")]
pub fn count_for_bench(on: bool) {
    COUNTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Adds `counts` to the summary, inside the appender's transaction: one
/// statement for the batch.
pub(super) async fn write(
    tx: &Transaction<'_>,
    counts: &Counts,
) -> Result<(), tokio_postgres::Error> {
    #[cfg(feature = "bench-internals")]
    if !COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    if counts.is_empty() {
        return Ok(());
    }
    let mut hours = Vec::with_capacity(counts.len());
    let mut facets = Vec::with_capacity(counts.len());
    let mut values = Vec::with_capacity(counts.len());
    let mut ns = Vec::with_capacity(counts.len());
    for ((hour, facet, value), n) in counts {
        hours.push(*hour);
        facets.push(*facet);
        values.push(value.as_str());
        ns.push(*n);
    }
    tx.execute(
        "insert into pgtrail.facet_hours as s (hour, facet, value, count) \
         select * from unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
         on conflict (hour, facet, value) do update set count = s.count + excluded.count",
        &[&hours, &facets, &values, &ns],
    )
    .await?;
    Ok(())
}

/// After a prune of `seq <= through` (the events already deleted, in the
/// prune's transaction): recounts, from the events left, every hour up to
/// `newest`, the capture time of the newest pruned event (a later `seq`
/// may hold an earlier time, so every hour up to it may have lost some).
pub(super) async fn after_prune(
    tx: &Transaction<'_>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), tokio_postgres::Error> {
    let insert = format!(
        "insert into pgtrail.facet_hours (hour, facet, value, count) {}",
        grouped("e.captured_at < $1")
    );
    redo_pruned_hours(tx, newest, "pgtrail.facet_hours", &insert).await
}

/// After a prune, a summary by the hour (`table`, a fixed name) made
/// true again: every hour up to `newest`'s, the capture time of the newest
/// pruned event (none pruned: `None`, nothing to do), deleted and written
/// again by `insert`, which reads the events left captured before `$1`.
pub(super) async fn redo_pruned_hours(
    tx: &Transaction<'_>,
    newest: Option<chrono::DateTime<chrono::Utc>>,
    table: &str,
    insert: &str,
) -> Result<(), tokio_postgres::Error> {
    let Some(newest) = newest else {
        return Ok(());
    };
    let last_hour = facet_hours::hour(newest.timestamp_micros());
    tx.execute(
        &format!("delete from {table} where hour <= $1"),
        &[&last_hour],
    )
    .await?;
    let below = chrono::DateTime::from_timestamp_micros((last_hour + 1).saturating_mul(HOUR_US));
    tx.execute(insert, &[&below]).await?;
    Ok(())
}

/// The facets of a time window (see `facet_hours::answers`): whole hours
/// from the summary, the edges counted from the events, all in one
/// snapshot so both halves see the same events.
pub(super) async fn window(
    tx: &Transaction<'_>,
    filter: &Filter,
    top: usize,
) -> Result<Facets, tokio_postgres::Error> {
    let split = facet_hours::split(filter);
    let mut counts: Vec<(String, String, u64)> = Vec::new();
    let mut complete = true;
    if let Some((first, end)) = split.hours {
        let rows = tx
            .query(
                "select facet, value, sum(count)::bigint from pgtrail.facet_hours \
                 where hour >= $1 and hour < $2 group by facet, value",
                &[&first, &end],
            )
            .await?;
        for row in rows {
            let n: i64 = row.try_get(2)?;
            counts.push((
                row.try_get(0)?,
                row.try_get(1)?,
                u64::try_from(n).unwrap_or(0),
            ));
        }
    }
    for edge in split.edges {
        let (edge_counts, whole) = count_events(tx, &edge).await?;
        complete &= whole;
        counts.extend(edge_counts);
    }
    Ok(facet_hours::total(counts, complete, top))
}

/// `(facet, value, count)` of the newest [`FACET_BOUND`] events `filter`
/// matches, counted from the events, and whether that was all of them.
pub(super) async fn count_events(
    client: &impl GenericClient,
    filter: &Filter,
) -> Result<(Vec<(String, String, u64)>, bool), tokio_postgres::Error> {
    let window = super::seq_hours::window(client, filter).await?;
    let q = query::facets(filter, window);
    let rows = client.query(&q.sql, &q.params()).await?;
    let mut counts = Vec::with_capacity(rows.len());
    for row in &rows {
        let count: i64 = row.try_get(2)?;
        counts.push((
            row.try_get(0)?,
            row.try_get(1)?,
            u64::try_from(count).unwrap_or(0),
        ));
    }
    let complete = facet_hours::counted(&counts) < FACET_BOUND as u64;
    Ok((counts, complete))
}

/// Compares the summary with `expected`, the counts of the events `verify`
/// walked (`first..=last`), in one snapshot: events appended after the
/// walk are added to what is expected, so an append beside verify is no
/// mismatch; when the walk resumed after stored events (incremental
/// verify), only the hours the walk's events fall in are compared, with
/// the earlier events in those hours counted from their columns. A store
/// without the summary (before version 11, read without migrating) has
/// nothing to compare.
pub(super) async fn check(
    tx: &Transaction<'_>,
    first: i64,
    last: i64,
    mut expected: Counts,
) -> Result<Vec<(i64, Mismatch)>, tokio_postgres::Error> {
    let has_summary: bool = tx
        .query_one("select to_regclass('pgtrail.facet_hours') is not null", &[])
        .await?
        .try_get(0)?;
    if !has_summary {
        return Ok(Vec::new());
    }
    let add = |expected: &mut Counts, rows: Vec<tokio_postgres::Row>| {
        for row in rows {
            let facet: String = row.try_get(1)?;
            let Some(facet) = facet_hours::static_facet(&facet) else {
                continue;
            };
            *expected
                .entry((row.try_get(0)?, facet, row.try_get(2)?))
                .or_default() += row.try_get::<_, i64>(3)?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    add(
        &mut expected,
        tx.query(&grouped("e.seq > $1"), &[&last]).await?,
    )?;
    let least = expected.keys().map(|(hour, _, _)| *hour).min();
    let Some(from_hour) = compared_from(tx, first, least).await? else {
        return Ok(Vec::new());
    };
    if from_hour != i64::MIN {
        let from = chrono::DateTime::from_timestamp_micros(from_hour.saturating_mul(HOUR_US));
        add(
            &mut expected,
            tx.query(
                &grouped("e.seq < $1 and e.captured_at >= $2"),
                &[&first, &from],
            )
            .await?,
        )?;
    }
    let rows = tx
        .query(
            "select hour, facet, value, count from pgtrail.facet_hours where hour >= $1",
            &[&from_hour],
        )
        .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        stored.push((
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        ));
    }
    Ok(facet_hours::compare(stored, expected, last))
}

/// The first hour a check of a summary by the hour compares, for a walk of
/// `first..` whose events and those appended after fall in hours from
/// `least` on: every hour (`i64::MIN`) when the walk started at the chain's
/// start, else `least` (the walk resumed after stored events: earlier hours
/// hold events it did not see), or `None` when there is no hour to compare.
pub(super) async fn compared_from(
    tx: &Transaction<'_>,
    first: i64,
    least: Option<i64>,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let resumed = walk_resumed(tx, first).await?;
    Ok(if resumed { least } else { Some(i64::MIN) })
}

/// Whether events before `first` are stored: a verify walk that starts at
/// `first` then resumed after them (incremental verify), and leaves what
/// concerns them to the run that checked them.
pub(super) async fn walk_resumed(
    tx: &Transaction<'_>,
    first: i64,
) -> Result<bool, tokio_postgres::Error> {
    tx.query_one(
        "select exists (select 1 from pgtrail.events where seq < $1)",
        &[&first],
    )
    .await?
    .try_get(0)
}
