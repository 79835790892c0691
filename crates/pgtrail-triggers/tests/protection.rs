//! Protection: application roles write their tables but cannot touch the
//! trail; a guard refuses what a mistaken GRANT would allow; a superuser's
//! edits are caught by verify; capture functions run with a fixed search_path.

use pgtrail_core::filter::TableName;
use pgtrail_store::{verify, ProblemKind};
use pgtrail_triggers::TrackOptions;

use crate::support::Db;

async fn app_setup(db: &Db) {
    db.sql(
        "create role app login; create table orders (id int primary key, total numeric);
         grant select, insert, update, delete on orders to app;",
    )
    .await;
    let orders = TableName::parse("orders").expect("name");
    pgtrail_triggers::track(&db.client, &orders, &TrackOptions::default())
        .await
        .expect("track");
}

#[tokio::test]
async fn an_application_role_writes_its_tables_but_cannot_touch_the_trail() {
    let db = Db::installed("app_role").await;
    app_setup(&db).await;
    let app = db.session_as("app").await;
    app.batch_execute("insert into orders values (1, 10); update orders set total = 11")
        .await
        .expect("the application's writes succeed");
    db.seal().await;
    for attack in [
        "update pgtrail.events set app_user = 'nobody'",
        "delete from pgtrail.events",
        "truncate pgtrail.events",
        "delete from pgtrail.inbox",
        "truncate pgtrail.inbox",
        "insert into pgtrail.inbox (kind, operation) values ('r', 'INSERT')",
        "update pgtrail.chain_head set seq = 0",
        "select * from pgtrail.capture_settings",
        "select pgtrail.untrack('orders')",
    ] {
        let err = app.batch_execute(attack).await.expect_err(attack);
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("42501"),
            "{attack}: {err:?}"
        );
    }
    assert_eq!(db.row_events("orders").await.len(), 2);
}

#[tokio::test]
async fn the_guard_refuses_changes_even_after_a_mistaken_grant() {
    let db = Db::installed("guard").await;
    app_setup(&db).await;
    db.sql("insert into orders values (1, 10)").await;
    db.seal().await;
    db.sql(
        "grant usage on schema pgtrail to app; grant all on all tables in schema pgtrail to app;",
    )
    .await;
    let app = db.session_as("app").await;
    for attack in [
        "update pgtrail.events set app_user = 'nobody'",
        "delete from pgtrail.events",
        "truncate pgtrail.events",
        "update pgtrail.inbox set app_user = 'nobody'",
        "truncate pgtrail.inbox",
    ] {
        let err = app.batch_execute(attack).await.expect_err(attack);
        let db_error = err.as_db_error().expect("a database error");
        assert!(
            db_error.message().contains("append-only"),
            "{attack}: {db_error:?}"
        );
    }
}

#[tokio::test]
async fn verify_flags_a_superuser_who_edits_or_deletes_sealed_rows() {
    let db = Db::installed("superuser_edit").await;
    app_setup(&db).await;
    db.sql("insert into orders select i, i from generate_series(1, 5) i")
        .await;
    db.seal().await;
    let store = db.store().await;
    assert!(verify(&store, None).await.expect("verify").ok());

    db.sql("update pgtrail.events set app_user = 'mallory' where seq = (select max(seq) - 1 from pgtrail.events)")
        .await;
    let report = verify(&store, None).await.expect("verify");
    assert_eq!(
        report.problems.first().map(|p| p.kind),
        Some(ProblemKind::Modified),
        "{report:?}"
    );

    let db2 = Db::installed("superuser_delete").await;
    app_setup(&db2).await;
    db2.sql("insert into orders select i, i from generate_series(1, 5) i")
        .await;
    db2.seal().await;
    db2.sql("delete from pgtrail.events where seq = (select max(seq) - 2 from pgtrail.events)")
        .await;
    let report = verify(&db2.store().await, None).await.expect("verify");
    assert!(!report.ok(), "a deleted row is flagged: {report:?}");
}

#[tokio::test]
async fn capture_functions_are_security_definer_with_a_fixed_search_path() {
    let db = Db::installed("secdef").await;
    app_setup(&db).await;
    let rows = db
        .client
        .query(
            "select p.proname::text, p.prosecdef, coalesce(array_to_string(p.proconfig, ','), '') \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where n.nspname = 'pgtrail' and (p.proname like 'capture%' or p.proname in ('track', 'untrack'))",
            &[],
        )
        .await
        .expect("functions");
    assert!(rows.len() >= 5, "{rows:?}");
    for row in rows {
        let (name, definer, config): (String, bool, String) = (row.get(0), row.get(1), row.get(2));
        assert!(definer, "{name} is SECURITY DEFINER");
        assert_eq!(config, "search_path=pg_catalog, pg_temp", "{name}");
    }
    // A hostile object earlier on the application's search_path changes nothing.
    db.sql(
        "create schema evil; create function evil.to_jsonb(anyelement) returns jsonb language sql as $$ select '{}'::jsonb $$;
         grant usage on schema evil to app; alter role app set search_path = evil, public;",
    )
    .await;
    let app = db.session_as("app").await;
    app.batch_execute("insert into orders values (9, 99)")
        .await
        .expect("insert");
    let events = db.row_events("orders").await;
    assert_eq!(
        events[0].new.as_ref().expect("new")["total"],
        serde_json::json!(99)
    );
}
