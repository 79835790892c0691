//! What an operator asks about a replication slot: is a consumer connected,
//! how far has it confirmed, how far behind is it.
//!
//! Read from `pg_replication_slots` joined with `pg_stat_replication` on the
//! consumer's walsender pid, on an ordinary connection, so it works whether
//! or not a consumer runs. Lag in bytes is measured to the WAL *insert*
//! position (as the consumer's own lag line does), so commits still in WAL
//! buffers count. Lag in seconds is what the server knows from the
//! consumer's replies (`replay_lag`); when no consumer is connected the
//! server knows nothing, and the caller may estimate it from the store.

use tokio_postgres::Client;

use crate::setup::catalog_error;
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
