//! Is logical-replication capture whole? The conditions `pgtrail status
//! --check` fails on and `pgtrail run` records as alarms (once per onset):
//! the slot dropped, invalidated or close to `max_slot_wal_keep_size`; the
//! publication missing or not publishing every kind of change; a table
//! that was published and is no longer.
//!
//! None of these fires an event trigger (`pg_drop_replication_slot` is a
//! function call; a slot is invalidated by the server's checkpointer), so they are
//! noticed by looking, on an ordinary connection.

use pgtrail_core::alarm::{self, Alarm};
use tokio_postgres::Client;

use crate::catalog::catalog_error;
use crate::CdcError;

/// A slot with less than this share of `max_slot_wal_keep_size` left is
/// near the limit.
const NEAR_LIMIT_SHARE: i64 = 5;

/// What one look found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Every condition that leaves capture incomplete now.
    pub alarms: Vec<Alarm>,
    /// The tables the publication publishes now, `(schema, table)`: the
    /// caller's `expected` for the next look.
    pub published: Vec<(String, String)>,
}

/// Looks at `slot` and `publication` in the connected database. Tables in
/// `expected` (what the publication published before) that it no longer
/// publishes are alarms.
pub async fn check(
    client: &Client,
    slot: &str,
    publication: &str,
    expected: &[(String, String)],
) -> Result<Health, CdcError> {
    let mut alarms = Vec::new();
    let found = client
        .query_opt(
            "select s.wal_status, s.safe_wal_size, \
                    case when current_setting('max_slot_wal_keep_size') = '-1' then -1 \
                         else pg_size_bytes(current_setting('max_slot_wal_keep_size')) end, \
                    coalesce((to_jsonb(s) ->> 'conflicting')::boolean, false), \
                    to_jsonb(s) ->> 'invalidation_reason' \
             from pg_replication_slots s \
             where s.slot_name = $1 and s.database = current_database()",
            &[&slot],
        )
        .await
        .map_err(catalog_error("reading the replication slot"))?;
    match found {
        None => alarms.push(Alarm::new(
            alarm::SLOT_DROPPED,
            format!(
                "replication slot '{slot}' does not exist: \
                 changes made since it was dropped are not captured"
            ),
        )),
        Some(row) => {
            let state = SlotState {
                wal_status: row.get(0),
                safe_wal_size: row.get(1),
                keep_size: row.get(2),
                conflicting: row.get(3),
                invalidation_reason: row.get(4),
            };
            alarms.extend(slot_alarm(slot, state));
        }
    }

    let publishes = client
        .query_opt(
            "select pubinsert, pubupdate, pubdelete, pubtruncate from pg_publication where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("reading the publication"))?;
    match publishes {
        None => alarms.push(Alarm::new(
            alarm::PUBLICATION_INCOMPLETE,
            format!("publication '{publication}' does not exist: no change is captured"),
        )),
        Some(row) => {
            let missing: Vec<&str> = ["insert", "update", "delete", "truncate"]
                .iter()
                .enumerate()
                .filter(|(i, _)| !row.get::<_, bool>(*i))
                .map(|(_, what)| *what)
                .collect();
            if !missing.is_empty() {
                alarms.push(Alarm::new(
            alarm::PUBLICATION_INCOMPLETE,
            format!(
                        "publication '{publication}' does not publish {}: those changes are not captured",
                        missing.join(", ")
                    ),
                ));
            }
        }
    }
    let published: Vec<(String, String)> = client
        .query(
            "select schemaname::text, tablename::text from pg_publication_tables where pubname = $1 order by 1, 2",
            &[&publication],
        )
        .await
        .map_err(catalog_error("reading the publication's tables"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    for (schema, table) in expected.iter().filter(|t| !published.contains(t)) {
        let exists: bool = client
            .query_one(
                "select pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text)) is not null",
                &[schema, table],
            )
            .await
            .map_err(catalog_error("looking up a table"))?
            .get(0);
        // A dropped table left the publication with its DDL on record.
        if exists {
            alarms.push(Alarm::on_table(
                alarm::TABLE_NOT_PUBLISHED,
                schema,
                table,
                format!(
                    "table {schema}.{table} left publication '{publication}': its changes are not captured"
                ),
            ));
        }
    }
    Ok(Health { alarms, published })
}

/// What `pg_replication_slots` says of a slot's WAL.
#[derive(Debug, Clone, Default)]
struct SlotState {
    wal_status: Option<String>,
    safe_wal_size: Option<i64>,
    /// `max_slot_wal_keep_size` in bytes; -1: unlimited.
    keep_size: i64,
    /// PostgreSQL 16: invalidated by a conflict on a standby.
    conflicting: bool,
    /// PostgreSQL 17: why it was invalidated.
    invalidation_reason: Option<String>,
}

/// The alarm a slot in `state` calls for, if any.
fn slot_alarm(slot: &str, state: SlotState) -> Option<Alarm> {
    let status = state.wal_status.as_deref();
    if status == Some("lost") || state.conflicting || state.invalidation_reason.is_some() {
        let reason = state
            .invalidation_reason
            .unwrap_or_else(|| "wal_status lost".into());
        return Some(Alarm::new(
            alarm::SLOT_INVALIDATED,
            format!(
                "replication slot '{slot}' was invalidated ({reason}): WAL it needed is gone and \
                 changes were skipped; recreate it (replicate --drop, then --setup --baseline)"
            ),
        ));
    }
    let near = state.keep_size > 0
        && state
            .safe_wal_size
            .is_some_and(|left| left < state.keep_size / NEAR_LIMIT_SHARE);
    if status == Some("unreserved") || near {
        let left = state
            .safe_wal_size
            .map_or_else(|| "nothing".into(), |left| format!("{left} bytes"));
        return Some(Alarm::new(
            alarm::SLOT_NEAR_LIMIT,
            format!(
                "replication slot '{slot}' is close to max_slot_wal_keep_size ({left} left of {} bytes): \
                 the server will drop WAL it needs unless the consumer catches up",
                state.keep_size
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(state: SlotState) -> Option<String> {
        slot_alarm("s", state).map(|a| a.code)
    }

    #[test]
    fn a_slot_is_near_its_limit_with_less_than_a_fifth_left_or_unreserved() {
        let mb = 1024 * 1024;
        let reserved = |left| SlotState {
            wal_status: Some("reserved".into()),
            safe_wal_size: Some(left),
            keep_size: 100 * mb,
            ..SlotState::default()
        };
        assert_eq!(code(reserved(50 * mb)), None);
        assert_eq!(
            code(reserved(19 * mb)).as_deref(),
            Some(alarm::SLOT_NEAR_LIMIT)
        );
        let unlimited = SlotState {
            wal_status: Some("extended".into()),
            keep_size: -1,
            ..SlotState::default()
        };
        assert_eq!(code(unlimited), None);
        let unreserved = SlotState {
            wal_status: Some("unreserved".into()),
            keep_size: 100 * mb,
            ..SlotState::default()
        };
        assert_eq!(code(unreserved).as_deref(), Some(alarm::SLOT_NEAR_LIMIT));
    }

    #[test]
    fn a_lost_or_conflicting_slot_is_invalidated() {
        let lost = SlotState {
            wal_status: Some("lost".into()),
            ..SlotState::default()
        };
        assert_eq!(code(lost).as_deref(), Some(alarm::SLOT_INVALIDATED));
        let conflict = SlotState {
            conflicting: true,
            ..SlotState::default()
        };
        assert_eq!(code(conflict).as_deref(), Some(alarm::SLOT_INVALIDATED));
    }
}
