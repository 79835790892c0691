//! Schema changes captured by logical replication carry what
//! `pgtrail_store::ddl` groups on (the transaction's xid and commit time),
//! so `pgtrail ddl` shows them by transaction as it does trigger capture's.

use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind};
use pgtrail_store::ddl::group_by_transaction;

use crate::common::*;

/// The DDL events in the store once a `DROP TABLE` arrived (or 30 s passed).
async fn ddl_until_drop(store: &dyn pgtrail_store::Store) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ddl: Vec<Event> = all_events(store)
            .await
            .into_iter()
            .filter(|e| e.kind == Kind::Ddl)
            .collect();
        let dropped = ddl
            .iter()
            .any(|e| e.operation.as_deref() == Some("DROP TABLE"));
        if dropped || Instant::now() > deadline {
            return ddl;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ddl_is_grouped_by_transaction_as_trigger_capture_is() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_ddl_groups", "create table t (id int primary key);").await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute(
            "begin;
             set local pgtrail.\"user\" = 'dba@example.com';
             create table invoices (id int primary key, amount numeric);
             create index invoices_amount on invoices (amount);
             commit;",
        )
        .await?;
    // Separate simple queries: separate transactions.
    db.client
        .batch_execute("alter table invoices add column note text")
        .await?;
    db.client.batch_execute("drop table invoices").await?;
    let events = ddl_until_drop(store.as_ref()).await;
    running.stop().await?;

    assert!(
        events
            .iter()
            .all(|e| e.xid.is_some() && e.committed_at.is_some()),
        "every DDL event says its transaction: {events:#?}"
    );
    let groups = group_by_transaction(events);
    let tags: Vec<Vec<&str>> = groups
        .iter()
        .map(|g| {
            g.events
                .iter()
                .map(|e| e.operation.as_deref().unwrap_or("?"))
                .collect()
        })
        .collect();
    assert_eq!(groups.len(), 3, "{tags:?}");
    assert_eq!(tags[0].first(), Some(&"CREATE TABLE"), "{tags:?}");
    assert!(
        tags[0].iter().filter(|t| **t == "CREATE INDEX").count() >= 1,
        "{tags:?}"
    );
    assert!(tags[1].iter().all(|t| *t == "ALTER TABLE"), "{tags:?}");
    assert!(tags[2].contains(&"DROP TABLE"), "{tags:?}");
    assert_eq!(groups[0].actor.as_deref(), Some("dba@example.com"));
    assert_ne!(groups[0].xid, groups[1].xid);
    Ok(())
}
