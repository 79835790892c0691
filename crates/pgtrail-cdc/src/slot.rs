//! pgtrail's replication slot: created by `--setup` (last, so it starts
//! after every setup change), checked before streaming, dropped by `--drop`;
//! and what an operator asks about it: is a consumer connected, how far has
//! it confirmed, how far behind is it.
//!
//! Read from `pg_replication_slots` joined with `pg_stat_replication` on the
//! consumer's walsender pid, on an ordinary connection, so it works whether
//! or not a consumer runs. Lag in bytes is measured to the WAL *insert*
//! position (as the consumer's own lag line does), so commits still in WAL
//! buffers count. Lag in seconds is what the server knows from the
//! consumer's replies (`replay_lag`); when no consumer is connected the
//! server knows nothing, and the caller may estimate it from the store.

use tokio_postgres::Client;

use crate::catalog::catalog_error;
use crate::CdcError;

/// One logical slot of the connected database.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotStatus {
    /// The slot's name.
    pub name: String,
    /// The output plugin (`pgoutput` for pgtrail's slots).
    pub plugin: String,
    /// Whether a consumer is streaming from it.
    pub active: bool,
    /// The walsender process serving that consumer.
    pub active_pid: Option<i32>,
    /// The position the consumer confirmed as stored (`X/X`).
    pub confirmed_flush: Option<String>,
    /// WAL bytes between the insert position and the confirmed one.
    pub lag_bytes: i64,
    /// The server's measure of the connected consumer's delay
    /// (`pg_stat_replication.replay_lag`): `None` when no consumer is
    /// connected, the role may not see it, or the consumer is caught up.
    pub replay_lag_seconds: Option<f64>,
    /// Whether the server still keeps the WAL the slot needs
    /// (`reserved`, `extended`, `unreserved`, `lost`).
    pub wal_status: Option<String>,
}

const SLOT_STATUS: &str = "\
select s.slot_name::text, s.plugin::text, s.active, s.active_pid, s.confirmed_flush_lsn::text, \
       coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn), 0)::int8, \
       extract(epoch from r.replay_lag)::float8, s.wal_status \
from pg_replication_slots s \
left join pg_stat_replication r on r.pid = s.active_pid \
where s.slot_type = 'logical' and s.database = current_database() and s.slot_name = any($1) \
order by s.slot_name";

/// The named logical slots of the connected database that exist, by name.
pub async fn slot_status(client: &Client, names: &[String]) -> Result<Vec<SlotStatus>, CdcError> {
    let rows = client
        .query(SLOT_STATUS, &[&names])
        .await
        .map_err(catalog_error("reading replication slots"))?;
    rows.iter()
        .map(|r| {
            Ok(SlotStatus {
                name: r.try_get(0)?,
                plugin: r.try_get(1)?,
                active: r.try_get(2)?,
                active_pid: r.try_get(3)?,
                confirmed_flush: r.try_get(4)?,
                lag_bytes: r.try_get(5)?,
                replay_lag_seconds: r.try_get(6)?,
                wal_status: r.try_get(7)?,
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(catalog_error("reading replication slots"))
}

/// Checks that `slot` exists in this database, decodes with pgoutput and
/// has no consumer streaming from it.
pub async fn check_usable(client: &Client, slot: &str) -> Result<(), CdcError> {
    let row = client
        .query_opt(
            "select plugin::text, active, active_pid from pg_replication_slots where slot_name = $1 and database = current_database()",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?;
    let Some(row) = row else {
        return Err(CdcError::NotReady {
            problem: format!("replication slot '{slot}' does not exist in this database"),
            hint: "run pgtrail replicate with --setup once to create the slot and publication"
                .into(),
        });
    };
    let plugin: Option<String> = row.get(0);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(CdcError::NotReady {
            problem: format!("slot '{slot}' uses plugin {plugin:?}, pgtrail needs pgoutput"),
            hint: "pick another --slot name, or drop that slot".into(),
        });
    }
    let active: bool = row.get(1);
    if active {
        let pid: Option<i32> = row.get(2);
        return Err(slot_in_use(slot, pid));
    }
    Ok(())
}

/// The error for a slot another process is streaming from.
pub fn slot_in_use(slot: &str, pid: Option<i32>) -> CdcError {
    CdcError::SlotInUse {
        slot: slot.to_string(),
        pid,
    }
}

/// Whether a slot of that name exists (slot names are the cluster's).
pub async fn slot_exists(client: &Client, slot: &str) -> Result<bool, CdcError> {
    Ok(client
        .query_opt(
            "select 1 from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?
        .is_some())
}

/// Creates `slot` with pgoutput unless it exists; returns whether it did.
pub async fn create_if_missing(client: &Client, slot: &str) -> Result<bool, CdcError> {
    if slot_exists(client, slot).await? {
        return Ok(false);
    }
    client
        .execute(
            "select pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(catalog_error(format!("creating replication slot '{slot}'")))?;
    Ok(true)
}

/// Drops `slot` if it exists and no consumer streams from it; returns
/// whether it did.
pub async fn drop(client: &Client, slot: &str) -> Result<bool, CdcError> {
    let Some(row) = client
        .query_opt(
            "select active_pid from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?
    else {
        return Ok(false);
    };
    let pid: Option<i32> = row.get(0);
    if pid.is_some() {
        return Err(slot_in_use(slot, pid));
    }
    client
        .execute("select pg_drop_replication_slot($1)", &[&slot])
        .await
        .map_err(catalog_error(format!("dropping slot '{slot}'")))?;
    Ok(true)
}

/// How far a slot's confirmed position is behind the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLag {
    /// Bytes of WAL between the current position and the confirmed one.
    pub bytes: i64,
    /// Whether a consumer is connected.
    pub active: bool,
}

/// The lag of `slot`, or `None` if it does not exist.
pub async fn slot_lag(client: &Client, slot: &str) -> Result<Option<SlotLag>, CdcError> {
    let row = client
        .query_opt(
            "select coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::int8, active \
             from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("reading slot lag"))?;
    Ok(row.map(|r| SlotLag {
        bytes: r.get(0),
        active: r.get(1),
    }))
}
