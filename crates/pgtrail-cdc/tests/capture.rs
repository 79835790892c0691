//! End to end: writes in Postgres become events in a SQLite store, with
//! values, keys, actors and DDL as a user would read them.

use std::collections::HashSet;

use pgtrail_cdc::{catalog, setup};
use pgtrail_core::filter::TableName;
use pgtrail_core::Kind;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn row_changes_arrive_with_values_keys_and_actor() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_basic",
        "create type mood as enum ('happy', 'sad');
         create domain positive as int check (value > 0);
         create table accounts (
             id int primary key, owner text, balance numeric(38,10), tags text[], doc jsonb,
             seen timestamptz, happy mood, qty positive, raw bytea, uid uuid, span int4range, ratio float8);
         create table pairs (a int, b text, note text, primary key (a, b));
         create table loose (x int, y text);",
    )
    .await?;
    let report = db.setup(&db.setup_options()).await?;
    assert!(report.slot_created);
    assert_eq!(report.identity_full_for_keyless, ["public.loose"]);
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());

    db.client
        .batch_execute(
            "begin;
             set local pgtrail.\"user\" = 'alice';
             set local pgtrail.context = '{\"request_id\": \"r-1\"}';
             insert into accounts values (1, 'ann', 12345678901234567890.0123456789, '{a,\"b c\",NULL}',
                 '{\"k\": [1, 2.50]}', '2024-02-29 13:45:00.123456+02', 'happy', 7, '\\x00ff',
                 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)', 0.1);
             commit;
             update accounts set balance = 1.5, owner = null where id = 1;
             insert into pairs values (1, 'x', 'first');
             delete from pairs where a = 1 and b = 'x';
             insert into loose values (1, 'y');
             update loose set y = 'z';",
        )
        .await?;
    let events = wait_for_events(store.as_ref(), 6).await;
    running.stop().await?;
    assert_eq!(events.len(), 6, "{events:#?}");

    let insert = &events[0];
    assert_eq!(
        (insert.table.as_deref(), insert.operation.as_deref()),
        (Some("accounts"), Some("INSERT"))
    );
    assert_eq!(insert.app_user.as_deref(), Some("alice"));
    assert_eq!(insert.db_user.as_deref(), Some("postgres"));
    assert_eq!(
        insert.context.as_ref().expect("context")["request_id"],
        "r-1"
    );
    assert!(insert.backend_pid.is_some());
    assert_eq!(serde_json::to_value(&insert.pk)?, json!({"id": "1"}));
    let mut new = serde_json::to_value(insert.new.as_ref().expect("new image"))?;
    // jsonb and numeric keep the number's text exactly (2.50, not 2.5).
    assert_eq!(serde_json::to_string(&new["doc"])?, r#"{"k":[1,2.50]}"#);
    assert_eq!(
        serde_json::to_string(&new["balance"])?,
        "12345678901234567890.0123456789"
    );
    new["doc"] = json!("checked");
    new["balance"] = json!("checked");
    assert_eq!(
        new,
        json!({
            "id": 1, "owner": "ann", "balance": "checked",
            "tags": ["a", "b c", null], "doc": "checked",
            "seen": "2024-02-29T11:45:00.123456+00:00", "happy": "happy", "qty": 7,
            "raw": "\\x00ff", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "span": "[1,5)", "ratio": 0.1
        })
    );
    assert!(insert.xid.is_some() && insert.lsn.is_some() && insert.committed_at.is_some());
    assert_eq!(insert.tx_seq, Some(0));

    let update = &events[1];
    assert_eq!(update.operation.as_deref(), Some("UPDATE"));
    assert_eq!(
        update.app_user, None,
        "SET LOCAL ended with its transaction"
    );
    assert_eq!(
        update.new.as_ref().expect("new")["owner"],
        serde_json::Value::Null
    );
    assert_eq!(
        serde_json::to_string(&update.new.as_ref().expect("new")["balance"])?,
        "1.5000000000"
    );

    let (pair_insert, pair_delete) = (&events[2], &events[3]);
    assert_eq!(
        serde_json::to_value(&pair_insert.pk)?,
        json!({"a": "1", "b": "x"})
    );
    assert_eq!(
        serde_json::to_value(&pair_delete.pk)?,
        json!({"a": "1", "b": "x"})
    );
    assert_eq!(pair_delete.operation.as_deref(), Some("DELETE"));

    let loose_update = &events[5];
    assert_eq!(loose_update.pk, None, "a table without a key has no pk");
    assert_eq!(loose_update.old.as_ref().expect("full old image")["y"], "y");
    assert_eq!(loose_update.changed, ["y"]);
    Ok(())
}

#[tokio::test]
async fn alter_table_mid_transaction_and_ddl_events() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_alter", "create table t (id int primary key, a text);").await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute(
            "begin;
             insert into t values (1, 'before');
             alter table t add column b numeric(10,2) default 0, drop column a;
             insert into t values (2, 3.25);
             update t set b = 9.99 where id = 1;
             commit;",
        )
        .await?;
    let events = wait_for_events(store.as_ref(), 4).await;
    running.stop().await?;
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.kind.to_string(), e.operation.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        summary,
        [
            ("row_change".into(), "INSERT".into()),
            ("ddl".into(), "ALTER TABLE".into()),
            ("row_change".into(), "INSERT".into()),
            ("row_change".into(), "UPDATE".into()),
        ]
    );
    assert_eq!(
        serde_json::to_value(&events[0].new)?,
        json!({"id": 1, "a": "before"})
    );
    assert_eq!(events[1].objects, ["public.t"]);
    assert!(events[1]
        .sql
        .as_deref()
        .is_some_and(|s| s.contains("add column b")));
    assert_eq!(events[1].db_user.as_deref(), Some("postgres"));
    assert_eq!(
        serde_json::to_string(&events[2].new)?,
        r#"{"b":3.25,"id":2}"#
    );
    assert_eq!(
        serde_json::to_string(&events[3].new)?,
        r#"{"b":9.99,"id":1}"#
    );
    let txs: HashSet<_> = events.iter().map(|e| e.xid).collect();
    assert_eq!(txs.len(), 1, "one transaction");
    Ok(())
}

#[tokio::test]
async fn unchanged_toast_is_filled_from_the_store_or_listed_as_partial() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_toast",
        "create table docs (id int primary key, n int, body text);
         alter table docs alter column body set storage external;
         create table full_docs (id int primary key, n int, body text);
         alter table full_docs alter column body set storage external;
         insert into docs values (1, 0, repeat('a', 20000));",
    )
    .await?;
    let mut options = db.setup_options();
    options.selection.tables = vec![TableName::parse("docs")?];
    db.setup(&options).await?;
    let mut full = db.setup_options();
    full.slot = format!("{}_full", db.slot);
    full.publication = format!("{}_full", db.publication);
    full.selection.tables = vec![TableName::parse("full_docs")?];
    full.replica_identity_full = true;
    db.setup(&full).await?;

    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute(
            "update docs set n = 1 where id = 1;          -- row existed before capture: not in the store
             insert into docs values (2, 0, repeat('b', 20000));
             update docs set n = 1 where id = 2;          -- the store has the insert",
        )
        .await?;
    // The second setup's DDL is in the trail too (DDL is captured database-wide): skip it.
    let events = wait_for_row_changes(store.as_ref(), 3).await;
    running.stop().await?;
    assert_eq!(events.len(), 3);
    let before_capture = &events[0];
    assert_eq!(
        before_capture.partial,
        ["body"],
        "never a fake NULL: {before_capture:?}"
    );
    assert!(!before_capture
        .new
        .as_ref()
        .expect("new")
        .contains_key("body"));
    let filled = &events[2];
    assert!(filled.partial.is_empty(), "{filled:?}");
    assert_eq!(
        filled.new.as_ref().expect("new")["body"]
            .as_str()
            .map(str::len),
        Some(20000)
    );

    // With REPLICA IDENTITY FULL the old image fills it, and `changed` is exact.
    let full_store = pgtrail_store::open(&format!(
        "sqlite:{}",
        db.dir.path().join("full.db").display()
    ))
    .await?;
    let mut capture = db.capture_options();
    capture.slot = full.slot.clone();
    capture.publication = full.publication.clone();
    let running = Running::start(&db, full_store.clone(), capture);
    db.client
        .batch_execute(
            "insert into full_docs values (1, 0, repeat('c', 20000));
             update full_docs set n = 5 where id = 1;",
        )
        .await?;
    let events = wait_for_row_changes(full_store.as_ref(), 2).await;
    running.stop().await?;
    let update = &events[1];
    assert!(update.partial.is_empty());
    assert_eq!(
        update.new.as_ref().expect("new")["body"]
            .as_str()
            .map(str::len),
        Some(20000)
    );
    assert_eq!(update.changed, ["n"]);
    assert_eq!(update.old.as_ref().expect("old")["n"], 0);
    Ok(())
}

#[tokio::test]
async fn large_streamed_transaction_with_a_rolled_back_savepoint() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_stream",
        "create table big (id int primary key, pad text);",
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    // logical_decoding_work_mem is 64kB at least: this transaction is streamed in chunks.
    db.client
        .batch_execute("alter system set logical_decoding_work_mem = '64kB'")
        .await?;
    db.client.batch_execute("select pg_reload_conf()").await?;
    db.client
        .batch_execute(
            "begin;
             select pgtrail_cdc.set_context('bulk-loader', '{\"job\": 7}');
             insert into big select g, repeat('p', 200) from generate_series(1, 3000) g;
             savepoint s;
             insert into big select g, 'rolled back' from generate_series(3001, 4000) g;
             rollback to savepoint s;
             insert into big select g, 'kept' from generate_series(4001, 4500) g;
             commit;",
        )
        .await?;
    db.client
        .batch_execute("alter system reset logical_decoding_work_mem")
        .await?;
    db.client.batch_execute("select pg_reload_conf()").await?;
    let events = wait_for_events(store.as_ref(), 3500).await;
    running.stop().await?;
    let rows: Vec<_> = events
        .iter()
        .filter(|e| e.kind == Kind::RowChange)
        .collect();
    assert_eq!(
        rows.len(),
        3500,
        "the rolled-back savepoint's rows are not in the trail"
    );
    assert!(rows
        .iter()
        .all(|e| e.app_user.as_deref() == Some("bulk-loader")));
    assert_eq!(rows[0].context.as_ref().expect("context")["job"], 7);
    let seqs: Vec<_> = rows.iter().map(|e| e.tx_seq.expect("tx_seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in transaction order");
    Ok(())
}

#[tokio::test]
async fn baseline_is_consistent_with_the_stream() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_baseline",
        "create table t (id int primary key, v text);
         insert into t select g, 'v' || g from generate_series(1, 100) g;",
    )
    .await?;
    let mut options = db.setup_options();
    options.create_slot = false;
    db.setup(&options).await?;
    let store = db.store().await;
    let tables = catalog::resolve_tables(&db.client, &options.selection).await?;
    let (_stop, stop) = tokio::sync::watch::channel(false);
    let rows = pgtrail_pipeline::cdc::take_baseline(
        &db.connect_options(),
        &db.client,
        &db.slot,
        &tables,
        &pgtrail_cdc::mask::Masking::default(),
        store.clone(),
        stop,
    )
    .await?;
    assert_eq!(rows, 100);
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute("update t set v = 'changed' where id = 1")
        .await?;
    let events = wait_for_events(store.as_ref(), 101).await;
    running.stop().await?;
    assert_eq!(events.len(), 101);
    assert!(events[..100].iter().all(|e| e.kind == Kind::Snapshot));
    assert_eq!(
        serde_json::to_value(&events[0].new)?,
        json!({"id": 1, "v": "v1"})
    );
    assert_eq!(serde_json::to_value(&events[0].pk)?, json!({"id": "1"}));
    assert_eq!(events[100].operation.as_deref(), Some("UPDATE"));
    Ok(())
}

#[tokio::test]
async fn drop_removes_slot_publication_and_triggers() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_drop", "create table t (id int primary key);").await?;
    db.setup(&db.setup_options()).await?;
    let removed = setup::drop_all(&db.client, &db.slot, &db.publication).await?;
    assert_eq!(removed.len(), 4, "{removed:?}");
    let left: i64 = db
        .client
        .query_one(
            "select (select count(*) from pg_replication_slots where slot_name = $1)
                  + (select count(*) from pg_publication where pubname = $2)
                  + (select count(*) from pg_trigger where tgname like 'pgtrail_cdc%')
                  + (select count(*) from pg_event_trigger where evtname like 'pgtrail_cdc%')
                  + (select count(*) from pg_proc where proname like 'cdc\\_%')",
            &[&db.slot, &db.publication],
        )
        .await?
        .get(0);
    assert_eq!(left, 0);
    // Writes still work afterwards, and a second drop finds nothing to do.
    db.client.batch_execute("insert into t values (1)").await?;
    assert!(setup::drop_all(&db.client, &db.slot, &db.publication)
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn a_replication_role_that_is_not_superuser_can_set_up_and_capture() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_role",
        "create role capturer login replication;
         create table owned (id int primary key, v text);
         alter table owned owner to capturer;
         do $$ begin execute format('grant create on database %I to capturer', current_database()); end $$;",
    )
    .await?;
    let url = db.url.replacen("postgres@", "capturer@", 1);
    let connect = pgtrail_cdc::connection::ConnectOptions::parse(&url)?;
    let client = connect.connect_sql().await?;
    let facts = catalog::check_ready(&client).await?;
    assert!(!facts.superuser);
    let mut options = db.setup_options();
    options.actor = false; // event triggers need a superuser
    setup::prepare(&client, &facts, &options).await?;

    let store = db.store().await;
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let (progress_tx, mut progress) =
        tokio::sync::watch::channel(pgtrail_pipeline::cdc::Progress::default());
    let capture = db.capture_options();
    let task = tokio::spawn({
        let store = store.clone();
        async move { pgtrail_pipeline::cdc::run(&connect, &capture, store, rx, Some(progress_tx)).await }
    });
    db.client
        .batch_execute("insert into owned values (1, 'x')")
        .await?;
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        progress.wait_for(|p| p.events >= 1),
    )
    .await??;
    shutdown.send(true)?;
    task.await??;
    let events = all_events(store.as_ref()).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].table.as_deref(), Some("owned"));
    Ok(())
}
