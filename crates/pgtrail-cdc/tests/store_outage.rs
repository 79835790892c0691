//! The store goes away: capture waits, retries, never confirms what it has
//! not stored, and catches up when the store is back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Filter, RowRef};
use pgtrail_store::{AppendReceipt, ChainHead, Checkpoint, PruneOutcome, Store, StoreError};

use crate::common::*;

/// A real SQLite store whose appends fail while `down` is set.
struct FlakyStore {
    inner: Arc<dyn Store>,
    down: AtomicBool,
    refused: AtomicU64,
}

#[async_trait]
impl Store for FlakyStore {
    async fn append(&self, events: &[Event]) -> pgtrail_store::Result<AppendReceipt> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Open {
                location: "flaky".into(),
                reason: "store is down for the test".into(),
                source: None,
            });
        }
        self.inner.append(events).await
    }
    async fn query(&self, filter: &Filter) -> pgtrail_store::Result<Vec<Event>> {
        self.inner.query(filter).await
    }
    async fn row_events(&self, row: &RowRef) -> pgtrail_store::Result<Vec<Event>> {
        self.inner.row_events(row).await
    }
    async fn scan(&self, after: i64, limit: usize) -> pgtrail_store::Result<Vec<Event>> {
        self.inner.scan(after, limit).await
    }
    async fn scan_stored(
        &self,
        after: i64,
        limit: usize,
    ) -> pgtrail_store::Result<Vec<pgtrail_store::StoredEvent>> {
        self.inner.scan_stored(after, limit).await
    }
    async fn expected_indexes(
        &self,
        page: &[pgtrail_store::StoredEvent],
    ) -> pgtrail_store::Result<pgtrail_store::ExpectedIndexes> {
        self.inner.expected_indexes(page).await
    }
    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: pgtrail_store::ExpectedIndexes,
    ) -> pgtrail_store::Result<Vec<(i64, pgtrail_store::Mismatch)>> {
        self.inner.check_indexes(first, last, expected).await
    }
    async fn head(&self) -> pgtrail_store::Result<Option<ChainHead>> {
        self.inner.head().await
    }
    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> pgtrail_store::Result<()> {
        self.inner.add_checkpoint(checkpoint).await
    }
    async fn checkpoints(&self) -> pgtrail_store::Result<Vec<Checkpoint>> {
        self.inner.checkpoints().await
    }
    async fn prune(&self, through: i64) -> pgtrail_store::Result<PruneOutcome> {
        self.inner.prune(through).await
    }
    async fn prepare_until(&self, until: DateTime<Utc>) -> pgtrail_store::Result<Vec<String>> {
        self.inner.prepare_until(until).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}

#[tokio::test]
async fn a_store_outage_holds_the_slot_and_then_catches_up() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_outage", "create table t (id int primary key);").await?;
    db.setup(&db.setup_options()).await?;
    let flaky = Arc::new(FlakyStore {
        inner: db.store().await,
        down: AtomicBool::new(false),
        refused: AtomicU64::new(0),
    });
    let running = Running::start(&db, flaky.clone(), db.capture_options());
    db.client
        .batch_execute("insert into t select generate_series(1, 10)")
        .await?;
    wait_for_events(flaky.as_ref(), 10).await;
    flaky.down.store(true, Ordering::SeqCst);
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
        if flaky.refused.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        flaky.refused.load(Ordering::SeqCst) >= 2,
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

    flaky.down.store(false, Ordering::SeqCst);
    let events = wait_for_events(flaky.as_ref(), 20).await;
    running.stop().await?;
    assert_eq!(
        events.len(),
        20,
        "every change arrived once the store was back"
    );
    Ok(())
}
