//! Schema changes: every DDL command as a `ddl` event, grouped by
//! transaction; new tables in an auto-tracked schema are tracked.

use pgtrail_core::Kind;
use pgtrail_store::ddl::group_by_transaction;
use pgtrail_triggers::TrackOptions;

use crate::support::Db;

#[tokio::test]
async fn ddl_is_recorded_with_who_and_grouped_by_transaction() {
    let db = Db::installed("ddl").await;
    db.sql(
        "begin;
         set local pgtrail.\"user\" = 'dba@example.com';
         create table invoices (id int primary key, amount numeric);
         create index invoices_amount on invoices (amount);
         commit;",
    )
    .await;
    // Separate simple queries: separate transactions.
    db.sql("alter table invoices add column note text").await;
    db.sql("drop table invoices").await;
    let events: Vec<_> = db
        .sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::Ddl)
        .collect();
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
    assert_eq!(
        tags,
        vec![
            vec!["CREATE TABLE", "CREATE INDEX", "CREATE INDEX"],
            vec!["ALTER TABLE"],
            vec!["DROP TABLE"]
        ],
        "{groups:#?}"
    );
    assert_eq!(groups[0].actor.as_deref(), Some("dba@example.com"));
    let create = &groups[0].events[0];
    assert_eq!(create.objects, ["public.invoices"]);
    assert!(create
        .sql
        .as_deref()
        .is_some_and(|s| s.contains("create table invoices")));
    assert_eq!(create.db_user.as_deref(), Some("postgres"));
    assert!(groups[2].events[0].objects == ["public.invoices"]);
}

#[tokio::test]
async fn new_tables_in_an_auto_tracked_schema_are_tracked_and_dropped_ones_forgotten() {
    let db = Db::installed("auto_track").await;
    db.sql("create schema shop; create table shop.existing (id int primary key)")
        .await;
    let options = TrackOptions {
        ignore: vec!["updated_at".into()],
        ..TrackOptions::default()
    };
    let tracked = pgtrail_triggers::track_schema(&db.client, "shop", &options, true)
        .await
        .expect("track schema");
    assert_eq!(tracked.len(), 1);
    db.sql(
        "create table shop.products (id int primary key, name text, updated_at timestamptz);
         insert into shop.products values (1, 'pen', now());
         update shop.products set updated_at = now();
         insert into shop.existing values (1);",
    )
    .await;
    let events = db.sealed_events().await;
    let products: Vec<_> = events
        .iter()
        .filter(|e| e.kind == Kind::RowChange && e.table.as_deref() == Some("products"))
        .collect();
    assert_eq!(
        products.len(),
        1,
        "the insert; the updated_at-only update is ignored"
    );
    let status = pgtrail_triggers::status(&db.client).await.expect("status");
    assert_eq!(status.auto_schemas, ["shop"]);
    assert!(status
        .tables
        .iter()
        .any(|t| t.tracked.table == "products" && t.tracked.auto));

    db.sql("drop table shop.products").await;
    let status = pgtrail_triggers::status(&db.client).await.expect("status");
    assert!(status.tables.iter().all(|t| t.tracked.table != "products"));
}
