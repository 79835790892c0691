//! Facet counts by the hour (`facet_hours`, schema version 9): how many
//! events of each hour have each user, table, operation, source and
//! outcome. The search page asks "who did what over the last 7 days" on
//! every visit; counting that from the events reads every event of the
//! week, while the summary reads a few hundred rows an hour.
//!
//! The summary is derived, never a second source of truth: the append that
//! inserts an event adds it to its hour in the same transaction, a prune
//! recounts the hours it touched from the events left, and `verify` counts
//! every event it walks and compares. Only a filter of time alone is
//! answered from it ([`answers`]); the partial hours at the window's edges
//! are counted from the events.

use pgtrail_core::search::Facets;
use pgtrail_core::Filter;
use rusqlite::{params, Connection};

use super::encode::Columns;
use crate::{Mismatch, Result, StoreError};

/// `(facet, value, count)` rows and whether they counted every match.
pub type Counted = (Vec<(String, String, u64)>, bool);

pub use crate::facet_hours::{answers, hour, Counts, HOUR_US};

/// Adds one event's facet values to `counts` (`sign` -1 takes it away):
/// what `Facets::of_event` counts, from the columns the store writes.
pub fn add(counts: &mut Counts, row: &Columns<'_>, sign: i64) {
    let hour = hour(row.captured_at);
    let mut put = |facet: &'static str, value: String| {
        *counts.entry((hour, facet, value)).or_default() += sign;
    };
    if let Some(actor) = row.app_user.or(row.db_user) {
        put("user", actor.to_string());
    }
    if let Some(table) = row.table {
        put(
            "table",
            match row.schema {
                Some(schema) => format!("{schema}.{table}"),
                None => table.to_string(),
            },
        );
    }
    if let Some(op) = &row.operation {
        put("operation", op.to_ascii_uppercase());
    }
    put("source", row.source.to_string());
    put(
        "outcome",
        if row.failed { "failed" } else { "ok" }.to_string(),
    );
}

const UPSERT: &str = "insert into facet_hours (hour, facet, value, count) values (?1, ?2, ?3, ?4) \
     on conflict (hour, facet, value) do update set count = count + excluded.count";

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

/// Adds `counts` to the summary, inside the caller's transaction.
pub fn write(conn: &Connection, counts: &Counts, location: &str) -> Result<()> {
    #[cfg(feature = "bench-internals")]
    if !COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut upsert = conn
        .prepare_cached(UPSERT)
        .map_err(|e| StoreError::backend(location, "preparing the facet count update", e))?;
    for ((hour, facet, value), count) in counts {
        if *count != 0 {
            upsert
                .execute(params![hour, facet, value, count])
                .map_err(|e| StoreError::backend(location, "counting facets by the hour", e))?;
        }
    }
    Ok(())
}

/// The facet rows of the events matching `where_sql` (over `events`), one
/// `(hour, facet, value)` each, ready to group: a union of the five facets.
/// Migration 9 fills the summary with the same SQL (`schema::V9`).
pub fn facet_rows(where_sql: &str) -> String {
    let hour =
        "(captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000";
    format!(
        "select {hour} as hour, 'user' as facet, coalesce(app_user, db_user) as value \
             from events where {where_sql} and coalesce(app_user, db_user) is not null \
         union all select {hour}, 'table', \
             case when schema_name is null then table_name else schema_name || '.' || table_name end \
             from events where {where_sql} and table_name is not null \
         union all select {hour}, 'operation', upper(operation) \
             from events where {where_sql} and operation is not null \
         union all select {hour}, 'source', source from events where {where_sql} \
         union all select {hour}, 'outcome', case when failed then 'failed' else 'ok' end \
             from events where {where_sql}"
    )
}

/// After a prune of `seq <= through`: recounts, from the events left,
/// every hour up to the newest one a pruned event was in (events are
/// pruned by `seq`, and a later `seq` may hold an earlier time). Called in
/// the prune's transaction, before the events are deleted.
pub fn before_prune(conn: &Connection, through: i64, location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "recounting facets after a prune", e);
    let newest: Option<i64> = conn
        .query_row(
            "select max(captured_at) from events where seq <= ?1",
            [through],
            |r| r.get(0),
        )
        .map_err(db)?;
    let Some(newest) = newest else {
        return Ok(());
    };
    let last_hour = hour(newest);
    conn.execute("delete from facet_hours where hour <= ?1", [last_hour])
        .map_err(db)?;
    let below = (last_hour + 1).saturating_mul(HOUR_US);
    let sql = format!(
        "insert into facet_hours (hour, facet, value, count) \
         select hour, facet, value, count(*) from ({}) group by hour, facet, value",
        facet_rows("captured_at < ?1 and seq > ?2")
    );
    conn.execute(&sql, params![below, through]).map_err(db)?;
    Ok(())
}

/// `facet_hours` recounted from every event, in SQL anyone with the file
/// can run: the summary adds no trust (a careful attacker who deletes
/// events recounts it; the chain and the checkpoints catch the deletion).
/// The attack tests run it as such an attacker would.
pub const RECOUNT_FACETS: &str = "delete from facet_hours;
insert into facet_hours (hour, facet, value, count)
select captured_at / 3600000000, facet, value, count(*) from (
    select captured_at, 'user' as facet, coalesce(app_user, db_user) as value from events
        where coalesce(app_user, db_user) is not null
    union all select captured_at, 'table', case when schema_name is null then table_name
        else schema_name || '.' || table_name end from events where table_name is not null
    union all select captured_at, 'operation', upper(operation) from events where operation is not null
    union all select captured_at, 'source', source from events
    union all select captured_at, 'outcome', case when failed then 'failed' else 'ok' end from events
) group by 1, 2, 3;";

/// The facets of a time window: whole hours from the summary, the partial
/// hours at its edges counted from the events by `edge` (bounded), read in one transaction so both halves see the same events.
pub fn window(
    conn: &Connection,
    filter: &Filter,
    top: usize,
    edge: impl Fn(&Connection, &Filter) -> Result<Counted>,
    location: &str,
) -> Result<Facets> {
    let db = |e| StoreError::backend(location, "counting facets by the hour", e);
    let tx = conn.unchecked_transaction().map_err(db)?;
    let split = crate::facet_hours::split(filter);
    let mut counts: Counted = (Vec::new(), true);
    if let Some((first_hour, end_hour)) = split.hours {
        let mut statement = tx
            .prepare_cached(
                "select facet, value, sum(count) from facet_hours \
                 where hour >= ?1 and hour < ?2 group by facet, value",
            )
            .map_err(db)?;
        let mut rows = statement.query(params![first_hour, end_hour]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let n: i64 = row.get(2).map_err(db)?;
            counts.0.push((
                row.get(0).map_err(db)?,
                row.get(1).map_err(db)?,
                u64::try_from(n).unwrap_or(0),
            ));
        }
    }
    for edge_filter in split.edges {
        let (edge_counts, whole) = edge(&tx, &edge_filter)?;
        counts.1 &= whole;
        counts.0.extend(edge_counts);
    }
    tx.finish().map_err(db)?;
    Ok(crate::facet_hours::total(counts.0, counts.1, top))
}

/// Compares the summary with `expected`, the counts of the events `verify`
/// walked (`first..=last`): events appended after the walk are taken out
/// of what is stored first, so an append beside verify is no mismatch.
/// When the walk resumed after stored events (incremental verify), only
/// the hours the walk's events fall in are compared, with the earlier
/// events in those hours counted from their columns.
pub fn check(
    conn: &Connection,
    first: i64,
    last: i64,
    mut expected: Counts,
    location: &str,
) -> Result<Vec<(i64, Mismatch)>> {
    let db = |e| StoreError::backend(location, "reading the facet counts", e);
    if !super::schema::has_table(conn, "facet_hours").map_err(db)? {
        return Ok(Vec::new());
    }
    let tx = conn.unchecked_transaction().map_err(db)?;
    // Events sealed after the walk, as the summary counted them: added to
    // what the walk expects.
    {
        let mut newer = tx
            .prepare_cached(&format!(
                "select hour, facet, value, count(*) from ({}) group by hour, facet, value",
                facet_rows("seq > ?1")
            ))
            .map_err(db)?;
        let mut rows = newer.query([last]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let facet: String = row.get(1).map_err(db)?;
            let Some(facet) = crate::facet_hours::static_facet(&facet) else {
                continue;
            };
            *expected
                .entry((row.get(0).map_err(db)?, facet, row.get(2).map_err(db)?))
                .or_default() += row.get::<_, i64>(3).map_err(db)?;
        }
    }
    // Events stored before the walk's first (an incremental walk): their
    // rows in the walk's hours, as the summary counted them.
    let from_hour = if super::stored::walk_resumed(&tx, first).map_err(db)? {
        match expected.keys().map(|(hour, _, _)| *hour).min() {
            Some(hour) => Some(hour),
            // No event walked: no hour to compare.
            None => return Ok(Vec::new()),
        }
    } else {
        None
    };
    if let Some(from_hour) = from_hour {
        let mut older = tx
            .prepare_cached(&format!(
                "select hour, facet, value, count(*) from ({}) group by hour, facet, value",
                facet_rows("seq < ?1 and captured_at >= ?2")
            ))
            .map_err(db)?;
        let mut rows = older
            .query(params![first, from_hour.saturating_mul(HOUR_US)])
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let facet: String = row.get(1).map_err(db)?;
            let Some(facet) = crate::facet_hours::static_facet(&facet) else {
                continue;
            };
            *expected
                .entry((row.get(0).map_err(db)?, facet, row.get(2).map_err(db)?))
                .or_default() += row.get::<_, i64>(3).map_err(db)?;
        }
    }
    let mut stored = Vec::new();
    {
        let mut statement = tx
            .prepare("select hour, facet, value, count from facet_hours where hour >= ?1")
            .map_err(db)?;
        let mut rows = statement
            .query([from_hour.unwrap_or(i64::MIN)])
            .map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            stored.push((
                row.get(0).map_err(db)?,
                row.get(1).map_err(db)?,
                row.get(2).map_err(db)?,
                row.get(3).map_err(db)?,
            ));
        }
    }
    let mismatches = crate::facet_hours::compare(stored, expected, last);
    tx.finish().map_err(db)?;
    Ok(mismatches)
}
