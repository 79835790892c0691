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

use std::collections::HashMap;

use pgtrail_core::search::Facets;
use pgtrail_core::Filter;
use rusqlite::{params, Connection};

use super::encode::Columns;
use crate::{Mismatch, Result, StoreError};

/// `(facet, value, count)` rows and whether they counted every match.
pub type Counted = (Vec<(String, String, u64)>, bool);

/// Microseconds in an hour: the summary's grain.
pub const HOUR_US: i64 = 3_600_000_000;

/// `(hour, facet, value)` → events, as the summary holds them.
pub type Counts = HashMap<(i64, &'static str, String), i64>;

/// The hour an event captured at `captured_at` (µs) is counted in.
pub fn hour(captured_at: i64) -> i64 {
    captured_at.div_euclid(HOUR_US)
}

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

/// Whether the summary can answer `filter`: nothing but a time window.
pub fn answers(filter: &Filter) -> bool {
    let window_only = Filter {
        since: filter.since,
        until: filter.until,
        limit: filter.limit,
        ..Filter::default()
    };
    *filter == window_only
}

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
    let since = filter.since.map(|t| t.timestamp_micros());
    let until = filter.until.map(|t| t.timestamp_micros());
    // Whole hours: from the first hour starting at or after `since` to the
    // last one ending at or before `until`.
    let first_hour = since.map_or(i64::MIN, |s| {
        s.div_euclid(HOUR_US) + i64::from(s.rem_euclid(HOUR_US) != 0)
    });
    let end_hour = until.map_or(i64::MAX, |u| u.div_euclid(HOUR_US));
    let mut totals: HashMap<(String, String), u64> = HashMap::new();
    let mut complete = true;
    if first_hour < end_hour {
        let mut statement = tx
            .prepare_cached(
                "select facet, value, sum(count) from facet_hours \
                 where hour >= ?1 and hour < ?2 group by facet, value",
            )
            .map_err(db)?;
        let mut rows = statement.query(params![first_hour, end_hour]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let n: i64 = row.get(2).map_err(db)?;
            *totals
                .entry((row.get(0).map_err(db)?, row.get(1).map_err(db)?))
                .or_default() += u64::try_from(n).unwrap_or(0);
        }
        // The edges: before the first whole hour, and from the end of the
        // last one.
        let to_time =
            |hour: i64| chrono::DateTime::from_timestamp_micros(hour.saturating_mul(HOUR_US));
        let mut edges = Vec::new();
        if let Some(since) = filter.since {
            edges.push(Filter {
                since: Some(since),
                until: to_time(first_hour),
                ..Filter::default()
            });
        }
        if let Some(until) = filter.until {
            edges.push(Filter {
                since: to_time(end_hour),
                until: Some(until),
                ..Filter::default()
            });
        }
        for edge_filter in edges {
            if edge_filter.since == edge_filter.until {
                continue;
            }
            let (counts, whole) = edge(&tx, &edge_filter)?;
            complete &= whole;
            for (facet, value, n) in counts {
                *totals.entry((facet, value)).or_default() += n;
            }
        }
    } else {
        // Within one hour: the events themselves.
        let (counts, whole) = edge(&tx, filter)?;
        complete &= whole;
        for (facet, value, n) in counts {
            *totals.entry((facet, value)).or_default() += n;
        }
    }
    tx.finish().map_err(db)?;
    let counted = totals
        .iter()
        .filter(|((facet, _), _)| facet == "source")
        .map(|(_, n)| n)
        .sum();
    Ok(Facets::from_counts(
        totals.into_iter().map(|((f, v), n)| (f, v, n)),
        counted,
        complete,
        top,
    ))
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
    let has_summary: bool = conn
        .query_row(
            "select count(*) > 0 from sqlite_schema where type = 'table' and name = 'facet_hours'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    if !has_summary {
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
            let Some(facet) = static_facet(&facet) else {
                continue;
            };
            *expected
                .entry((row.get(0).map_err(db)?, facet, row.get(2).map_err(db)?))
                .or_default() += row.get::<_, i64>(3).map_err(db)?;
        }
    }
    // Events stored before the walk's first (an incremental walk): their
    // rows in the walk's hours, as the summary counted them.
    let resumed: bool = tx
        .query_row(
            "select exists (select 1 from events where seq < ?1)",
            [first],
            |r| r.get(0),
        )
        .map_err(db)?;
    let from_hour = if resumed {
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
            let Some(facet) = static_facet(&facet) else {
                continue;
            };
            *expected
                .entry((row.get(0).map_err(db)?, facet, row.get(2).map_err(db)?))
                .or_default() += row.get::<_, i64>(3).map_err(db)?;
        }
    }
    let mut mismatches = Vec::new();
    {
        let mut stored = tx
            .prepare("select hour, facet, value, count from facet_hours where hour >= ?1")
            .map_err(db)?;
        let mut rows = stored.query([from_hour.unwrap_or(i64::MIN)]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let hour: i64 = row.get(0).map_err(db)?;
            let facet: String = row.get(1).map_err(db)?;
            let value: String = row.get(2).map_err(db)?;
            let count: i64 = row.get(3).map_err(db)?;
            let want = static_facet(&facet)
                .and_then(|f| expected.remove(&(hour, f, value.clone())))
                .unwrap_or(0);
            if want != count {
                mismatches.push(mismatch(last, hour, &facet, &value, count, want));
            }
        }
    }
    for ((hour, facet, value), want) in expected {
        if want != 0 {
            mismatches.push(mismatch(last, hour, facet, &value, 0, want));
        }
    }
    tx.finish().map_err(db)?;
    Ok(mismatches)
}

fn static_facet(facet: &str) -> Option<&'static str> {
    pgtrail_core::search::FACET_NAMES
        .into_iter()
        .find(|f| *f == facet)
}

fn mismatch(
    last: i64,
    hour: i64,
    facet: &str,
    value: &str,
    found: i64,
    expected: i64,
) -> (i64, Mismatch) {
    let at = chrono::DateTime::from_timestamp_micros(hour.saturating_mul(HOUR_US)).map_or_else(
        || hour.to_string(),
        |t| pgtrail_core::time::format_micros(&t),
    );
    (
        last,
        Mismatch {
            column: format!("facet_hours ({facet} '{value}' in the hour from {at})"),
            found: found.to_string(),
            expected: expected.to_string(),
        },
    )
}
