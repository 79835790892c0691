//! Clear errors for a database that is not ready for capture.

use std::time::Duration;

use pgtrail_cdc::catalog::{self, TableSelection};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::slot;
use pgtrail_core::filter::TableName;
use pgtrail_testkit::{Cluster, ClusterOptions};
use tokio::sync::watch;

use crate::common::*;

async fn run_once(
    db: &TestDb,
    options: pgtrail_cdc::consumer::ReplicationOptions,
) -> pgtrail_pipeline::PipelineError {
    let (_shutdown, rx) = watch::channel(false);
    let store = db.store().await;
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        pgtrail_pipeline::cdc::run(&db.connect_options(), &options, store, rx, None),
    )
    .await
    .expect("fails fast instead of hanging");
    result.expect_err("capture must refuse to start")
}

#[tokio::test]
async fn missing_slot_or_publication_table_name_the_fix() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_err_setup",
        "create table a (id int primary key); create table b (id int primary key);",
    )
    .await?;
    let text = run_once(&db, db.capture_options()).await.to_string();
    assert!(
        text.contains("slot 'pgtrail_cdc_err_setup' does not exist") && text.contains("--setup"),
        "{text}"
    );

    let mut options = db.setup_options();
    options.selection = TableSelection {
        tables: vec![TableName::parse("a")?],
        schemas: vec![],
    };
    db.setup(&options).await?;
    let mut capture = db.capture_options();
    capture.selection.tables = vec![TableName::parse("a")?, TableName::parse("public.b")?];
    let text = run_once(&db, capture).await.to_string();
    assert!(
        text.contains("lacks table(s) public.b") && text.contains("--setup"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_slot_in_use_is_reported_as_such() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_err_busy", "create table a (id int primary key);").await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let first = Running::start(&db, store, db.capture_options());
    // Wait until the first consumer holds the slot.
    for _ in 0..100 {
        if slot::slot_lag(&db.client, &db.slot)
            .await?
            .is_some_and(|l| l.active)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = run_once(&db, db.capture_options()).await.to_string();
    assert!(
        text.contains("is in use") && text.contains("another consumer"),
        "{text}"
    );
    first.stop().await?;
    Ok(())
}

#[tokio::test]
async fn missing_replication_privilege_names_the_grant() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_err_role",
        "create role plain login; create table a (id int primary key);",
    )
    .await?;
    let url = db.url.replacen("postgres@", "plain@", 1);
    let client = ConnectOptions::parse(&url)?.connect_sql().await?;
    let text = catalog::check_ready(&client)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        text.contains("lacks the REPLICATION privilege")
            && text.contains("ALTER ROLE \"plain\" WITH REPLICATION"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn wal_level_not_logical_names_the_fix() -> anyhow::Result<()> {
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start_with(ClusterOptions {
            settings: vec![("wal_level".into(), "replica".into())],
            ..ClusterOptions::default()
        })
    })
    .await??;
    let client = ConnectOptions::parse(&cluster.url("postgres"))?
        .connect_sql()
        .await?;
    let text = catalog::check_ready(&client)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        text.contains("wal_level is 'replica'")
            && text.contains("ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );
    drop(client);
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(())
}
