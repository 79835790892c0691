//! The store goes away: capture waits, retries, never confirms what it has
//! not stored, and catches up when the store is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pgtrail_core::Event;
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::{AppendReceipt, Store, StoreError};

use crate::common::*;

/// Appends of a real SQLite store fail while `down` is set.
struct Outage {
    down: AtomicBool,
    refused: AtomicU64,
}

#[async_trait]
impl AppendHook for Outage {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Open {
                location: "flaky".into(),
                reason: "store is down for the test".into(),
                source: None,
            });
        }
        inner.append(events).await
    }
}

#[tokio::test]
async fn a_store_outage_holds_the_slot_and_then_catches_up() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_outage", "create table t (id int primary key);").await?;
    db.setup(&db.setup_options()).await?;
    let flaky = Arc::new(Hooked::new(
        db.store().await,
        Outage {
            down: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        },
    ));
    let running = Running::start(&db, flaky.clone(), db.capture_options());
    db.client
        .batch_execute("insert into t select generate_series(1, 10)")
        .await?;
    wait_for_events(flaky.as_ref(), 10).await;
    flaky.hook().down.store(true, Ordering::SeqCst);
    // Everything before this position may be confirmed; the insert below commits after it.
    let before_insert: String = db
        .client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    db.client
        .batch_execute("insert into t select generate_series(11, 20)")
        .await?;
    for _ in 0..100 {
        if flaky.hook().refused.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        flaky.hook().refused.load(Ordering::SeqCst) >= 2,
        "capture retried the append"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during_outage: bool = db
        .client
        .query_one(
            "select confirmed_flush_lsn <= $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
            &[&before_insert, &db.slot],
        )
        .await?
        .get(0);
    assert!(
        during_outage,
        "nothing unstored was confirmed while the store was down"
    );
    assert_eq!(all_events(flaky.as_ref()).await.len(), 10);

    flaky.hook().down.store(false, Ordering::SeqCst);
    let events = wait_for_events(flaky.as_ref(), 20).await;
    running.stop().await?;
    assert_eq!(
        events.len(),
        20,
        "every change arrived once the store was back"
    );
    Ok(())
}
