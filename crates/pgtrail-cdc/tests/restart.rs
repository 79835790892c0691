//! Nothing lost, nothing twice: stopping and restarting the consumer, and
//! replaying transactions the store already holds.

use std::collections::HashSet;

use crate::common::*;

const SCHEMA: &str = "create table items (id int primary key, body text);";

async fn insert_batch(
    db: &TestDb,
    from: i32,
    transactions: i32,
    rows_each: i32,
) -> anyhow::Result<()> {
    for t in 0..transactions {
        let start = from + t * rows_each;
        db.client
            .execute(
                "insert into items select g, 'row ' || g from generate_series($1::int, $2::int) g",
                &[&start, &(start + rows_each - 1)],
            )
            .await?;
    }
    Ok(())
}

fn assert_each_row_once(events: &[pgtrail_core::Event], expected: usize) {
    let ids: HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "no event stored twice");
    let keys: HashSet<String> = events
        .iter()
        .map(|e| {
            e.pk.as_ref().expect("pk")["id"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect();
    assert_eq!(keys.len(), expected, "every inserted row exactly once");
    assert_eq!(events.len(), expected);
}

#[tokio::test]
async fn a_restart_resumes_where_the_store_left_off() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_restart", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;

    let running = Running::start(&db, store.clone(), db.capture_options());
    insert_batch(&db, 1, 10, 10).await?;
    let mut progress = running.progress.clone();
    progress.wait_for(|p| p.events >= 100).await?;
    running.stop().await?;

    // Written while no consumer runs: the slot keeps it.
    insert_batch(&db, 101, 5, 10).await?;
    let running = Running::start(&db, store.clone(), db.capture_options());
    let events = wait_for_events(store.as_ref(), 150).await;
    running.stop().await?;
    assert_each_row_once(&events, 150);
    Ok(())
}

#[tokio::test]
async fn replaying_stored_transactions_adds_nothing() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_replay", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    // A second slot at the same position: it will replay everything the first delivers.
    let replay_slot = format!("{}_replay", db.slot);
    db.client
        .execute(
            "select pg_copy_logical_replication_slot($1, $2)",
            &[&db.slot, &replay_slot],
        )
        .await?;
    let store = db.store().await;

    let running = Running::start(&db, store.clone(), db.capture_options());
    insert_batch(&db, 1, 20, 5).await?;
    wait_for_events(store.as_ref(), 100).await;
    running.stop().await?;

    let mut options = db.capture_options();
    options.slot = replay_slot;
    let running = Running::start(&db, store.clone(), options);
    insert_batch(&db, 101, 2, 5).await?;
    let mut progress = running.progress.clone();
    progress.wait_for(|p| p.events >= 110).await?;
    running.stop().await?;
    let events = all_events(store.as_ref()).await;
    assert_each_row_once(&events, 110);
    Ok(())
}

#[tokio::test]
async fn a_lost_replication_connection_is_reestablished() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_reconnect", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    insert_batch(&db, 1, 2, 10).await?;
    wait_for_events(store.as_ref(), 20).await;

    let terminated: bool = db
        .client
        .query_one(
            "select pg_terminate_backend(active_pid) from pg_replication_slots where slot_name = $1",
            &[&db.slot],
        )
        .await?
        .get(0);
    assert!(terminated, "the walsender was running");
    insert_batch(&db, 21, 2, 10).await?;
    let events = wait_for_events(store.as_ref(), 40).await;
    assert!(!running.task.is_finished(), "capture kept running");
    running.stop().await?;
    assert_each_row_once(&events, 40);
    Ok(())
}
