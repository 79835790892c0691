//! `pgtrail ddl`: schema changes grouped by transaction, the way a reviewer
//! reads a migration.

use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Kind};
use serde::Serialize;

/// The DDL commands of one transaction.
#[derive(Debug, Clone, Serialize)]
pub struct DdlTransaction {
    /// Its transaction id, when known.
    pub xid: Option<i64>,
    /// When it committed, else when its first command ran.
    pub at: DateTime<Utc>,
    /// Who ran it (application user, else role).
    pub actor: Option<String>,
    /// The commands, in order.
    pub events: Vec<Event>,
}

/// Groups DDL events (given in chain order, oldest first) by transaction;
/// other events are skipped. Events without an xid each form their own group.
pub fn group_by_transaction(events: Vec<Event>) -> Vec<DdlTransaction> {
    let mut groups: Vec<DdlTransaction> = Vec::new();
    for event in events.into_iter().filter(|e| e.kind == Kind::Ddl) {
        if let Some(last) = groups.last_mut() {
            if event.xid.is_some() && last.xid == event.xid {
                last.events.push(event);
                continue;
            }
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
    use pgtrail_core::Source;

    fn ddl(xid: i64, tag: &str) -> Event {
        let mut e = Event::new(Source::Trigger, Kind::Ddl);
        e.xid = Some(xid);
        e.operation = Some(tag.into());
        e
    }

    #[test]
    fn consecutive_commands_of_one_transaction_form_one_group() {
        let mut row = Event::new(Source::Trigger, Kind::RowChange);
        row.xid = Some(1);
        let groups = group_by_transaction(vec![
            ddl(1, "CREATE TABLE"),
            row,
            ddl(1, "CREATE INDEX"),
            ddl(2, "DROP TABLE"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].events.len(), 2);
        assert_eq!(groups[1].xid, Some(2));
    }
}
