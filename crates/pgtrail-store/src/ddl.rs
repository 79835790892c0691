//! Schema changes grouped by transaction, the way a reviewer reads a
//! migration: what `pgtrail ddl` shows, from either capture path.
//!
//! Both paths give a `ddl` event what grouping needs: the transaction's
//! `xid` (trigger capture: the 64-bit `xid8` of the inbox row;
//! logical replication: the transaction's 32-bit xid from the WAL) and its
//! `committed_at` (the same for every event of a transaction; trigger
//! capture leaves it unset without `track_commit_timestamp`). A store can
//! hold both paths and several databases, and a large transaction captured
//! by logical replication is stored in several appends, between which
//! another writer may append: so a transaction is known by its source,
//! database, xid and commit time together, not by being next to its other
//! commands in the chain.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Kind, Source};
use serde::Serialize;

/// The DDL commands of one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct DdlTransaction {
    /// Its transaction id, when known.
    pub xid: Option<i64>,
    /// When it committed, else when its first command ran.
    pub at: DateTime<Utc>,
    /// Who ran it (application user, else role), as its first command says.
    pub actor: Option<String>,
    /// The commands, in order.
    pub events: Vec<Event>,
}

/// What tells one transaction from another: an xid alone repeats across
/// databases and clusters, and a 32-bit xid wraps around.
type TransactionKey = (Source, Option<String>, i64, Option<DateTime<Utc>>);

/// Groups DDL events (given in chain order, oldest first) by transaction,
/// in the order each transaction's first command appears; other events are
/// skipped. Events without an xid each form their own group.
pub fn group_by_transaction(events: Vec<Event>) -> Vec<DdlTransaction> {
    let mut groups: Vec<DdlTransaction> = Vec::new();
    let mut index: HashMap<TransactionKey, usize> = HashMap::new();
    for event in events.into_iter().filter(|e| e.kind == Kind::Ddl) {
        let key = event.xid.map(|xid| {
            (
                event.source,
                event.database.clone(),
                xid,
                event.committed_at,
            )
        });
        if let Some(&at) = key.as_ref().and_then(|k| index.get(k)) {
            groups[at].events.push(event);
            continue;
        }
        if let Some(key) = key {
            index.insert(key, groups.len());
        }
        groups.push(DdlTransaction {
            xid: event.xid,
            at: event.committed_at.unwrap_or(event.captured_at),
            actor: event.actor().map(str::to_string),
            events: vec![event],
        });
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, second)
            .single()
            .expect("valid time")
    }

    fn ddl(source: Source, xid: i64, tag: &str) -> Event {
        let mut e = Event::at(source, Kind::Ddl, at(0));
        e.database = Some("shop".into());
        e.xid = Some(xid);
        e.committed_at = Some(at(u32::try_from(xid % 60).unwrap_or(0)));
        e.operation = Some(tag.into());
        e
    }

    fn tags(groups: &[DdlTransaction]) -> Vec<Vec<&str>> {
        groups
            .iter()
            .map(|g| {
                g.events
                    .iter()
                    .map(|e| e.operation.as_deref().unwrap_or("?"))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_commands_of_one_transaction_form_one_group_and_other_kinds_are_skipped() {
        let mut row = Event::new(Source::Trigger, Kind::RowChange);
        row.xid = Some(1);
        let groups = group_by_transaction(vec![
            ddl(Source::Trigger, 1, "CREATE TABLE"),
            row,
            ddl(Source::Trigger, 1, "CREATE INDEX"),
            ddl(Source::Trigger, 2, "DROP TABLE"),
        ]);
        assert_eq!(
            tags(&groups),
            [vec!["CREATE TABLE", "CREATE INDEX"], vec!["DROP TABLE"]]
        );
        assert_eq!(groups[1].xid, Some(2));
        assert_eq!(groups[0].at, at(1), "the commit time");
    }

    #[test]
    fn a_transaction_split_by_another_writers_append_stays_one_group() {
        // Logical replication stores a large transaction in several appends;
        // trigger capture's sealer may append between them.
        let groups = group_by_transaction(vec![
            ddl(Source::Cdc, 7, "CREATE TABLE"),
            ddl(Source::Trigger, 9, "ALTER TABLE"),
            ddl(Source::Cdc, 7, "CREATE INDEX"),
        ]);
        assert_eq!(
            tags(&groups),
            [vec!["CREATE TABLE", "CREATE INDEX"], vec!["ALTER TABLE"]]
        );
    }

    #[test]
    fn the_same_xid_from_another_path_database_or_commit_is_another_transaction() {
        let mut other_db = ddl(Source::Cdc, 7, "DROP INDEX");
        other_db.database = Some("billing".into());
        let mut wrapped = ddl(Source::Cdc, 7, "DROP TABLE");
        wrapped.committed_at = Some(at(59));
        let groups = group_by_transaction(vec![
            ddl(Source::Cdc, 7, "CREATE TABLE"),
            ddl(Source::Trigger, 7, "ALTER TABLE"),
            other_db,
            wrapped,
        ]);
        assert_eq!(groups.len(), 4, "{:?}", tags(&groups));
    }

    #[test]
    fn without_an_xid_each_command_stands_alone_and_dates_from_its_capture() {
        let mut a = Event::at(Source::Trigger, Kind::Ddl, at(5));
        a.app_user = Some("dba@example.com".into());
        a.db_user = Some("postgres".into());
        let mut b = Event::at(Source::Trigger, Kind::Ddl, at(6));
        b.db_user = Some("postgres".into());
        let groups = group_by_transaction(vec![a, b]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].at, at(5));
        assert_eq!(groups[0].actor.as_deref(), Some("dba@example.com"));
        assert_eq!(groups[1].actor.as_deref(), Some("postgres"));
    }
}
