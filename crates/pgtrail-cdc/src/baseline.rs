//! The baseline: the rows of the captured tables as they were when the slot
//! was created, stored as `snapshot` events so every row's history starts
//! complete.
//!
//! Consistency comes from the slot: `CREATE_REPLICATION_SLOT … (SNAPSHOT
//! 'export')` returns a snapshot that sees exactly the transactions
//! committed before the slot's start. The rows are read in a REPEATABLE READ
//! transaction that imports it, so the baseline plus the stream is every
//! state of every row, with no gap and no overlap. The replication
//! connection must stay idle while the snapshot is in use.
//!
//! The rows go to the pipeline's queue in batches whose position is the
//! number of rows handed over so far; the baseline is taken once the
//! pipeline acknowledged the last.

use pgtrail_core::event::JsonObject;
use pgtrail_core::handover::{Acknowledged, Batch};
use pgtrail_core::{Event, Kind, Source};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::catalog::{self, catalog_error, Table};
use crate::connection::{quote_literal, ConnectOptions, ReplicationConnection};
use crate::mask::Masking;
use crate::slot;
use crate::value::{to_json, TypeRegistry};
use crate::CdcError;

/// Events per batch handed over while taking the baseline.
const BATCH: usize = 5_000;

/// Creates `slot` with an exported snapshot and hands every row of
/// `tables` as of that snapshot to `batches`. Returns the number of rows
/// once `acknowledged` says all are stored; fails if the pipeline stops
/// before (its own error says why).
pub async fn create_slot_with_baseline(
    connect: &ConnectOptions,
    client: &Client,
    slot: &str,
    tables: &[Table],
    masking: &Masking,
    batches: mpsc::Sender<Batch<u64>>,
    mut acknowledged: watch::Receiver<Acknowledged<u64>>,
) -> Result<u64, CdcError> {
    if slot::slot_exists(client, slot).await? {
        return Err(CdcError::NotReady {
            problem: format!(
                "slot '{slot}' exists already, so a baseline consistent with it cannot be taken"
            ),
            hint: "run pgtrail replicate --drop first, then --setup --baseline".into(),
        });
    }
    // Before the slot exists: a missing key must not leave a slot behind.
    let masking = crate::mask::keyed(client, masking).await?;
    let mut conn = ReplicationConnection::connect(connect).await?;
    let system = conn.identify_system().await?;
    let snapshot = conn
        .create_slot(slot, true)
        .await?
        .ok_or_else(|| CdcError::Unexpected {
            action: "creating the slot".into(),
            detail: "no snapshot name returned".into(),
        })?;
    let mut types = TypeRegistry::builtin();
    types.load(&catalog::load_types(client).await?);
    client
        .batch_execute(&format!(
            "begin isolation level repeatable read read only; set transaction snapshot {}",
            quote_literal(&snapshot)
        ))
        .await
        .map_err(catalog_error("importing the slot's snapshot"))?;
    let mut total = 0;
    let result = async {
        for table in tables {
            total += copy_table(
                client,
                table,
                &types,
                &masking,
                &system.dbname,
                &batches,
                total,
            )
            .await?;
        }
        Ok::<_, CdcError>(())
    }
    .await;
    let _ = client.batch_execute("commit").await;
    conn.close().await;
    result?;
    drop(batches);
    if acknowledged
        .wait_for(|a| a.position >= total)
        .await
        .is_err()
    {
        return Err(pipeline_stopped());
    }
    Ok(total)
}

fn pipeline_stopped() -> CdcError {
    CdcError::Unexpected {
        action: "storing the baseline".into(),
        detail: "the pipeline stopped before storing every row".into(),
    }
}

async fn copy_table(
    client: &Client,
    table: &Table,
    types: &TypeRegistry,
    masking: &Masking,
    database: &str,
    batches: &mpsc::Sender<Batch<u64>>,
    before: u64,
) -> Result<u64, CdcError> {
    let quoted = table.quoted();
    let oid: i64 = client
        .query_one("select $1::text::regclass::oid::int8", &[&quoted])
        .await
        .map_err(catalog_error("looking up a table"))?
        .try_get(0)
        .map_err(catalog_error("looking up a table"))?;
    let columns: Vec<(String, u32)> = client
        .query(
            "select attname::text, atttypid::int8 from pg_attribute \
             where attrelid = $1::int8::oid and attnum > 0 and not attisdropped order by attnum",
            &[&oid],
        )
        .await
        .map_err(catalog_error("reading a table's columns"))?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                u32::try_from(r.try_get::<_, i64>(1)?).unwrap_or(0),
            ))
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(catalog_error("reading a table's columns"))?;
    let key = catalog::primary_key(client, u32::try_from(oid).unwrap_or(0)).await?;
    let messages = client
        .simple_query(&format!("select * from {quoted}"))
        .await
        .map_err(catalog_error("reading a table for the baseline"))?;
    let mut batch = Vec::new();
    let mut count = 0;
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let mut image = JsonObject::new();
        let mut pk = JsonObject::new();
        for (i, (name, type_oid)) in columns.iter().enumerate() {
            let text = row.get(i);
            let value = text.map_or(Value::Null, |t| to_json(types.kind(*type_oid), t));
            if let (Some(key), Some(t)) = (&key, text) {
                if key.contains(name) {
                    pk.insert(name.clone(), Value::String(t.to_string()));
                }
            }
            image.insert(name.clone(), value);
        }
        masking.apply(&table.schema, &table.name, &mut image);
        masking.apply(&table.schema, &table.name, &mut pk);
        let mut event = Event::new(Source::Cdc, Kind::Snapshot);
        event.database = Some(database.to_string());
        event.schema = Some(table.schema.clone());
        event.table = Some(table.name.clone());
        event.pk = (!pk.is_empty()).then_some(pk);
        event.new = Some(image);
        batch.push(event);
        count += 1;
        if batch.len() >= BATCH {
            hand_over(batches, std::mem::take(&mut batch), before + count).await?;
        }
    }
    if !batch.is_empty() {
        hand_over(batches, batch, before + count).await?;
    }
    Ok(count)
}

/// Queues `events`, which end the baseline's `rows`th row.
async fn hand_over(
    batches: &mpsc::Sender<Batch<u64>>,
    events: Vec<Event>,
    rows: u64,
) -> Result<(), CdcError> {
    let batch = Batch {
        events,
        end: rows,
        last_commit: None,
    };
    batches.send(batch).await.map_err(|_| pipeline_stopped())
}
