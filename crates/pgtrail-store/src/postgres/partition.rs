//! Monthly partitions of `pgtrail.events`: created ahead, dropped by retention.
//!
//! `pgtrail.events_YYYYMM` holds the events captured in that month (UTC);
//! `pgtrail.events_default` catches any month without its own partition, so
//! an append never fails for lack of one. Creating a month's partition first
//! moves that month's rows out of the default partition (Postgres refuses
//! the new partition otherwise), all in one transaction.
//!
//! Both operations lock the chain head first, like appenders, so they never
//! interleave with an append; they then take Postgres's own locks on the
//! events table (readers wait briefly while a partition is created or dropped).
//! Partition DDL cannot take bound parameters: names and bounds are built
//! from integers only, and names are quoted.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use tokio_postgres::Transaction;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Month {
    year: i32,
    month: u32,
}

impl Month {
    fn of(t: DateTime<Utc>) -> Self {
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    fn next(self) -> Self {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Midnight UTC on the first day of the month.
    fn start(self) -> DateTime<Utc> {
        let date =
            NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a month's first day exists");
        Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight exists"))
    }

    /// `events_YYYYMM`.
    fn partition_name(self) -> String {
        format!("events_{:04}{:02}", self.year, self.month)
    }

    /// Parses a name made by [`Month::partition_name`].
    fn from_partition_name(name: &str) -> Option<Self> {
        let digits = name.strip_prefix("events_")?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = digits[..4].parse().ok()?;
        let month = digits[4..].parse().ok()?;
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    /// The bound as a timestamptz literal (digits only, so safe in DDL).
    fn bound_literal(self) -> String {
        format!("'{:04}-{:02}-01 00:00:00+00'", self.year, self.month)
    }
}

/// Monthly partitions that exist, by month.
async fn monthly_partitions(tx: &Transaction<'_>) -> Result<Vec<Month>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid \
             where i.inhparent = 'pgtrail.events'::regclass",
            &[],
        )
        .await?;
    let mut months: Vec<Month> = rows
        .iter()
        .filter_map(|row| Month::from_partition_name(row.get(0)))
        .collect();
    months.sort();
    Ok(months)
}

async fn lock_chain_head(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.execute("select 1 from pgtrail.chain_head for update", &[])
        .await?;
    Ok(())
}

/// Creates the partitions of every month from now to `until`, and of every
/// earlier month that has rows waiting in the default partition; returns the
/// names of those created.
pub(super) async fn prepare_until(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    lock_chain_head(tx).await?;
    let existing = monthly_partitions(tx).await?;
    let last = Month::of(until);

    let mut wanted: Vec<Month> = tx
        .query(
            "select distinct date_trunc('month', captured_at, 'UTC') from pgtrail.events_default \
             where captured_at < $1",
            &[&last.next().start()],
        )
        .await?
        .iter()
        .map(|row| Month::of(row.get(0)))
        .collect();
    let mut month = Month::of(now);
    while month <= last {
        wanted.push(month);
        month = month.next();
    }
    wanted.sort();
    wanted.dedup();

    let mut created = Vec::new();
    for month in wanted.into_iter().filter(|m| !existing.contains(m)) {
        let waiting = rows_waiting(tx, month).await?;
        create_partition(tx, month, waiting).await?;
        created.push(month.partition_name());
    }
    Ok(created)
}

/// Creates the partitions of the months from now to `until` that have
/// none and no rows waiting in the default partition; returns the names of
/// those created. What a process that appends runs (the store's first
/// append, the trigger drainer): it holds the chain head, so it must stay
/// short whatever the default partition holds. Moving waiting rows (an
/// import of old history, months when partitions could not be made)
/// rewrites every one of them under that lock, minutes at millions of
/// rows, with capture stalled: that is [`prepare_until`]'s, which
/// `pgtrail retention` runs.
pub(super) async fn prepare_ahead(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    lock_chain_head(tx).await?;
    let existing = monthly_partitions(tx).await?;
    let mut created = Vec::new();
    let mut month = Month::of(now);
    while month <= Month::of(until) {
        if !existing.contains(&month) {
            if rows_waiting(tx, month).await? {
                tracing::info!(
                    month = %month.partition_name(),
                    "Events of this month wait in the default partition; `pgtrail retention` moves them into a partition of their own."
                );
            } else {
                create_partition(tx, month, false).await?;
                created.push(month.partition_name());
            }
        }
        month = month.next();
    }
    Ok(created)
}

/// Whether events of `month` are in the default partition.
async fn rows_waiting(tx: &Transaction<'_>, month: Month) -> Result<bool, tokio_postgres::Error> {
    tx.query_one(
        "select exists (select 1 from pgtrail.events_default where captured_at >= $1 and captured_at < $2)",
        &[&month.start(), &month.next().start()],
    )
    .await?
    .try_get(0)
}

/// Creates one month's partition, moving its rows out of the default one
/// when `waiting` (the caller asked [`rows_waiting`]).
async fn create_partition(
    tx: &Transaction<'_>,
    month: Month,
    waiting: bool,
) -> Result<(), tokio_postgres::Error> {
    let (from, to) = (month.start(), month.next().start());
    if waiting {
        tx.batch_execute(
            "create temporary table if not exists pgtrail_moving (like pgtrail.events) on commit drop",
        )
        .await?;
        tx.execute(
            "with moved as (delete from pgtrail.events_default where captured_at >= $1 and captured_at < $2 returning *) \
             insert into pgtrail_moving select * from moved",
            &[&from, &to],
        )
        .await?;
    }
    tx.batch_execute(&format!(
        "create table pgtrail.{} partition of pgtrail.events for values from ({}) to ({})",
        quote_ident(&month.partition_name()),
        month.bound_literal(),
        month.next().bound_literal(),
    ))
    .await?;
    if waiting {
        tx.batch_execute(
            "insert into pgtrail.events select * from pgtrail_moving; truncate pgtrail_moving",
        )
        .await?;
    }
    Ok(())
}

/// What [`prune`] removed.
pub(super) struct Pruned {
    /// Events removed, in dropped partitions and row by row.
    pub removed: u64,
    /// Partitions dropped.
    pub dropped: Vec<String>,
}

/// Removes events with `seq <= through`: drops each monthly partition that
/// holds no later event (and past months' empty ones), then deletes the
/// remaining such rows one by one, and recounts the facet summary's hours
/// they were in, recomputes their `seq` ranges, and removes the index rows
/// of their statements' relations.
pub(super) async fn prune(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    through: i64,
) -> Result<Pruned, tokio_postgres::Error> {
    lock_chain_head(tx).await?;
    // The facet summary's hours the pruned events were counted in.
    let newest_pruned: Option<DateTime<Utc>> = tx
        .query_one(
            "select max(captured_at) from pgtrail.events where seq <= $1",
            &[&through],
        )
        .await?
        .get(0);
    let current = Month::of(now);
    let mut pruned = Pruned {
        removed: 0,
        dropped: Vec::new(),
    };
    for month in monthly_partitions(tx).await? {
        let table = format!("pgtrail.{}", quote_ident(&month.partition_name()));
        let newest: Option<i64> = tx
            .query_one(&format!("select max(seq) from {table}"), &[])
            .await?
            .get(0);
        let droppable = match newest {
            Some(newest) => newest <= through,
            // Empty: drop only months that are over, never those made ahead.
            None => month < current,
        };
        if !droppable {
            continue;
        }
        let count: i64 = tx
            .query_one(&format!("select count(*) from {table}"), &[])
            .await?
            .get(0);
        tx.batch_execute(&format!("drop table {table}")).await?;
        pruned.removed += u64::try_from(count).unwrap_or_default();
        pruned.dropped.push(month.partition_name());
    }
    pruned.removed += tx
        .execute("delete from pgtrail.events where seq <= $1", &[&through])
        .await?;
    super::facets::after_prune(tx, newest_pruned).await?;
    super::seq_hours::after_prune(tx, newest_pruned).await?;
    super::objects::after_prune(tx, through).await?;
    Ok(pruned)
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_name_and_bound_partitions() {
        let december = Month {
            year: 2025,
            month: 12,
        };
        assert_eq!(december.partition_name(), "events_202512");
        assert_eq!(
            december.next(),
            Month {
                year: 2026,
                month: 1
            }
        );
        assert_eq!(december.next().bound_literal(), "'2026-01-01 00:00:00+00'");
        assert_eq!(Month::from_partition_name("events_202512"), Some(december));
        for other in [
            "events_default",
            "events_2025123",
            "events_202513",
            "other_202512",
        ] {
            assert_eq!(Month::from_partition_name(other), None, "{other}");
        }
    }
}
