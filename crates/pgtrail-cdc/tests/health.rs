//! `health::check`: what leaves logical-replication capture incomplete,
//! tried on a real cluster by doing it: a table removed from the
//! publication, the publication narrowed, the slot pushed past
//! `max_slot_wal_keep_size`, the slot dropped.

use pgtrail_cdc::catalog::TableSelection;
use pgtrail_cdc::health;
use pgtrail_core::alarm;
use pgtrail_core::filter::TableName;

use crate::common::TestDb;

fn codes(found: &health::Health) -> Vec<&str> {
    let mut codes: Vec<&str> = found.alarms.iter().map(|a| a.code.as_str()).collect();
    codes.sort_unstable();
    codes
}

#[tokio::test]
async fn each_cut_of_the_slot_or_publication_is_an_alarm() -> anyhow::Result<()> {
    let db = TestDb::with_settings(
        "health",
        "create table t (id int primary key, v text); create table u (id int primary key);",
        &[("max_slot_wal_keep_size", "1MB")],
    )
    .await?;
    let mut options = db.setup_options();
    options.actor = false;
    options.selection = TableSelection {
        tables: vec![TableName::parse("t")?, TableName::parse("u")?],
        schemas: Vec::new(),
    };
    db.setup(&options).await?;

    let whole = health::check(&db.client, &db.slot, &db.publication, &[]).await?;
    assert!(whole.alarms.is_empty(), "{whole:?}");
    let expected = whole.published.clone();
    assert_eq!(expected.len(), 2, "{whole:?}");

    // The table's owner removes it from the publication, then narrows it.
    db.client
        .batch_execute(&format!(
            "alter publication {0} drop table u; alter publication {0} set (publish = 'insert, update')",
            db.publication
        ))
        .await?;
    let cut = health::check(&db.client, &db.slot, &db.publication, &expected).await?;
    assert_eq!(
        codes(&cut),
        vec![alarm::PUBLICATION_INCOMPLETE, alarm::TABLE_NOT_PUBLISHED],
        "{cut:?}"
    );
    let left = cut
        .alarms
        .iter()
        .find(|a| a.code == alarm::TABLE_NOT_PUBLISHED)
        .expect("table alarm");
    assert_eq!(left.table.as_deref(), Some("u"));
    assert!(cut
        .alarms
        .iter()
        .any(|a| a.message.contains("delete, truncate")));
    // A dropped table is no alarm: it left with its DDL on record.
    db.client.batch_execute("drop table u").await?;
    let dropped = health::check(&db.client, &db.slot, &db.publication, &expected).await?;
    assert_eq!(codes(&dropped), vec![alarm::PUBLICATION_INCOMPLETE]);

    // Nobody consumes while WAL grows past max_slot_wal_keep_size (1MB):
    // the server gives up the WAL the slot needs.
    db.client
        .batch_execute(
            "insert into t select i, repeat('x', 200) from generate_series(1, 20000) i;
             select pg_switch_wal(); checkpoint;
             insert into t select i, repeat('x', 200) from generate_series(20001, 40000) i;
             select pg_switch_wal(); checkpoint;",
        )
        .await?;
    let lost = health::check(&db.client, &db.slot, &db.publication, &[]).await?;
    assert_eq!(
        codes(&lost),
        vec![alarm::PUBLICATION_INCOMPLETE, alarm::SLOT_INVALIDATED],
        "{lost:?}"
    );

    db.client
        .execute("select pg_drop_replication_slot($1)", &[&db.slot])
        .await?;
    db.client
        .batch_execute(&format!("drop publication {}", db.publication))
        .await?;
    let gone = health::check(&db.client, &db.slot, &db.publication, &[]).await?;
    assert_eq!(
        codes(&gone),
        vec![alarm::PUBLICATION_INCOMPLETE, alarm::SLOT_DROPPED],
        "{gone:?}"
    );
    Ok(())
}
