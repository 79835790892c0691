//! Is trigger capture whole? The conditions `pgtrail status --check` fails
//! on and `pgtrail run` records as alarms (once per onset).
//!
//! What an event trigger sees is also raised in the transaction that
//! caused it (sql/v5_no_way_in.sql): a capture trigger dropped, disabled
//! or renamed. What no event trigger sees is only noticed here: an event
//! trigger disabled (`ALTER EVENT TRIGGER` fires none), anything done in
//! `session_replication_role = replica` (event triggers and ordinary
//! triggers are quiet then), and a table of an auto-tracked schema that is
//! not tracked.

use pgtrail_core::alarm::{self, Alarm};
use tokio_postgres::GenericClient;

use crate::{Error, Result};

/// pgtrail's DDL event triggers and whether each must fire in replica mode too.
const EVENT_TRIGGERS: &[(&str, bool)] = &[
    ("pgtrail_ddl", false),
    ("pgtrail_drop", false),
    ("pgtrail_shapes", true),
];

/// Every condition that leaves trigger capture incomplete now; empty when
/// it is whole or not installed.
pub async fn check(client: &impl GenericClient) -> Result<Vec<Alarm>> {
    let Some(version) = crate::migrations::installed_version(client).await? else {
        return Ok(Vec::new());
    };
    let mut alarms = Vec::new();
    if version >= 5 {
        let rows = client
            .query(
                "select t.schema_name, t.table_name, p.code, p.message \
                 from pgtrail.tracked t cross join lateral pgtrail.trigger_problems(t.relid) p \
                 where exists (select 1 from pg_class c where c.oid = t.relid) \
                 order by 1, 2, p.trigger_name",
                &[],
            )
            .await
            .map_err(Error::pg("checking capture triggers"))?;
        alarms.extend(rows.iter().map(|row| {
            Alarm::on_table(
                row.get::<_, &str>(2),
                row.get(0),
                row.get(1),
                row.get::<_, String>(3),
            )
        }));
    }
    for (name, always) in EVENT_TRIGGERS {
        if *name == "pgtrail_shapes" && version < 4 {
            continue;
        }
        let enabled: Option<String> = client
            .query_opt(
                "select evtenabled::text from pg_event_trigger where evtname = $1",
                &[name],
            )
            .await
            .map_err(Error::pg("checking the event triggers"))?
            .map(|row| row.get(0));
        let problem = match enabled.as_deref() {
            None => Some("is missing"),
            Some("D") => Some("is disabled"),
            Some("R") => Some("fires only in replica mode"),
            Some("O") if *always => Some("does not fire in replica mode"),
            _ => None,
        };
        if let Some(problem) = problem {
            alarms.push(Alarm::new(
                alarm::EVENT_TRIGGER_DISABLED,
                format!(
                    "event trigger {name} {problem}: {}",
                    match *name {
                        "pgtrail_shapes" => "rows of a changed table may be sealed under stale column names",
                        "pgtrail_drop" => "dropped objects and capture triggers are not recorded",
                        _ => "schema changes are not recorded and new tables of auto-tracked schemas are not tracked",
                    }
                ),
            ));
        }
    }
    let untracked = client
        .query(
            "select n.nspname::text, c.relname::text \
             from pgtrail.auto_track a \
             join pg_namespace n on n.nspname = a.schema_name \
             join pg_class c on c.relnamespace = n.oid \
             where c.relkind in ('r', 'p') and not c.relispartition \
               and not exists (select 1 from pgtrail.tracked t where t.relid = c.oid) \
             order by 1, 2",
            &[],
        )
        .await
        .map_err(Error::pg("checking auto-tracked schemas"))?;
    alarms.extend(untracked.iter().map(|row| {
        let (schema, table): (&str, &str) = (row.get(0), row.get(1));
        Alarm::on_table(
            alarm::TABLE_NOT_TRACKED,
            schema,
            table,
            format!(
                "table {schema}.{table} is in auto-tracked schema {schema} but is not tracked: its changes are not captured"
            ),
        )
    }));
    Ok(alarms)
}

/// Records `alarm` in the chain: a row in the inbox that the drainer seals
/// like any other (`pgtrail.raise_alarm`, executable by pgtrail_admin).
pub async fn raise(client: &impl GenericClient, alarm: &Alarm) -> Result<()> {
    client
        .execute(
            "select pgtrail.raise_alarm($1, $2, $3, $4)",
            &[&alarm.code, &alarm.schema, &alarm.table, &alarm.message],
        )
        .await
        .map_err(Error::pg("recording an alarm"))?;
    Ok(())
}

/// Alarms raised in the database and not sealed yet, oldest first, with
/// when each was raised.
pub async fn pending_alarms(
    client: &impl GenericClient,
) -> Result<Vec<(Alarm, chrono::DateTime<chrono::Utc>)>> {
    if crate::migrations::installed_version(client)
        .await?
        .is_none()
    {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "select operation, schema_name, table_name, coalesce(detail ->> 'message', ''), captured_at \
             from pgtrail.inbox where kind = 'a' order by id",
            &[],
        )
        .await
        .map_err(Error::pg("reading pending alarms"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let alarm = Alarm {
                code: row.get(0),
                schema: row.get(1),
                table: row.get(2),
                message: row.get(3),
            };
            (alarm, row.get(4))
        })
        .collect())
}
