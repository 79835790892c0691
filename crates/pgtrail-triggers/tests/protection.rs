//! Protection: application roles write their tables but cannot touch the
//! trail; a guard refuses what a mistaken GRANT would allow; a superuser's
//! edits are caught by verify; capture functions run with a fixed search_path.

use pgtrail_core::filter::TableName;
use pgtrail_store::{verify, ProblemKind};
use pgtrail_triggers::{CaptureMode, TrackOptions};
use serde_json::json;

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
    db.drain().await;
    for attack in [
        "update pgtrail.events set app_user = 'nobody'",
        "delete from pgtrail.events",
        "truncate pgtrail.events",
        "delete from pgtrail.inbox",
        "truncate pgtrail.inbox",
        "insert into pgtrail.inbox (kind, operation) values ('r', 'INSERT')",
        // The shape table orders' rows go to (see sql/v4_shaped_row_capture.sql).
        "delete from pgtrail.inbox_1",
        "truncate pgtrail.inbox_1",
        "insert into pgtrail.inbox_1 (operation) values ('INSERT')",
        "select * from pgtrail.pending",
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
    db.drain().await;
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
        "update pgtrail.inbox_1 set app_user = 'nobody'",
        "truncate pgtrail.inbox_1",
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
    db.drain().await;
    let store = db.store().await;
    assert!(verify(&store, None).await.expect("verify").ok());

    db.sql("update pgtrail.events set body = replace(body::text, '\"table\":\"orders\"', '\"table\":\"invoices\"')::json \
            where seq = (select max(seq) - 1 from pgtrail.events)")
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
    db2.drain().await;
    db2.sql("delete from pgtrail.events where seq = (select max(seq) - 2 from pgtrail.events)")
        .await;
    let report = verify(&db2.store().await, None).await.expect("verify");
    assert!(!report.ok(), "a deleted row is flagged: {report:?}");
}

#[tokio::test]
async fn capture_functions_are_security_definer_and_a_hostile_search_path_changes_nothing() {
    let db = Db::installed("secdef").await;
    app_setup(&db).await;
    db.sql("create table batches (id int primary key, n int); grant all on batches to app;")
        .await;
    let batches = TableName::parse("batches").expect("name");
    let statement = TrackOptions {
        mode: CaptureMode::Statement,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &batches, &statement)
        .await
        .expect("track");
    let rows = db
        .client
        .query(
            "select p.proname::text, p.prosecdef, coalesce(array_to_string(p.proconfig, ','), ''), \
                    exists (select 1 from pg_trigger t where t.tgfoid = p.oid and t.tgrelid = 'orders'::regclass) \
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where n.nspname = 'pgtrail' and (p.proname like 'capture%' or p.proname in ('track', 'untrack'))",
            &[],
        )
        .await
        .expect("functions");
    assert!(rows.len() >= 6, "{rows:?}");
    for row in rows {
        let (name, definer, config, row_mode): (String, bool, String, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        assert!(definer, "{name} is SECURITY DEFINER");
        if row_mode {
            // Per-call settings cost more than the trigger's INSERT; every
            // name in a row-mode body is schema-qualified instead.
            assert_eq!(config, "", "{name}");
        } else {
            assert!(
                config.starts_with("search_path=pg_catalog, pg_temp"),
                "{name}: {config}"
            );
        }
    }

    // The application puts look-alikes of what the triggers call ahead of
    // pg_catalog on its search path; were any called (as the definer!),
    // it would leave a row in evil.calls and a wrong value in the trail.
    db.sql("create schema evil authorization app").await;
    let app = db.session_as("app").await;
    app.batch_execute(
        "create table evil.calls (what text);
         create function evil.note(what text) returns void language sql as $$ insert into evil.calls values (what) $$;
         create function evil.row_to_json(r record) returns json language plpgsql as
             $$ begin perform evil.note('row_to_json'); return '{}'; end $$;
         create function evil.to_jsonb(anyelement) returns jsonb language plpgsql as
             $$ begin perform evil.note('to_jsonb'); return '{}'; end $$;
         create function evil.current_setting(text, boolean) returns text language plpgsql as
             $$ begin perform evil.note('current_setting'); return 'mallory'; end $$;
         create function evil.current_setting(text) returns text language plpgsql as
             $$ begin perform evil.note('current_setting'); return 'mallory'; end $$;
         create function evil.inet_client_addr() returns inet language plpgsql as
             $$ begin perform evil.note('inet_client_addr'); return '10.6.6.6'; end $$;
         create function evil.texteq(a text, b text) returns boolean language plpgsql as
             $$ begin perform evil.note('='); return false; end $$;
         create operator evil.= (leftarg = text, rightarg = text, function = evil.texteq);
         create operator evil.<> (leftarg = text, rightarg = text, function = evil.texteq);
         create function evil.same(a anyelement, b anyelement) returns boolean language plpgsql as
             $$ begin perform evil.note('*='); return true; end $$;
         create operator evil.*= (leftarg = anyelement, rightarg = anyelement, function = evil.same);
         set search_path = evil, pg_catalog, public;
         begin;
         set local pgtrail.\"user\" = 'alice@example.com';
         insert into orders values (9, 99);
         update orders set total = 100 where id = 9;
         insert into batches values (1, 1);
         commit;",
    )
    .await
    .expect("the application's writes succeed");
    let calls: i64 = db
        .client
        .query_one("select count(*) from evil.calls", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(calls, 0, "no look-alike was called");
    let orders = db.row_events("orders").await;
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(orders[0].new.as_ref().expect("new")["total"], json!(99));
    assert_eq!(orders[1].new.as_ref().expect("new")["total"], json!(100));
    for e in &orders {
        assert_eq!(
            e.pk,
            Some(json!({"id": "9"}).as_object().cloned().expect("object"))
        );
        assert_eq!(e.app_user.as_deref(), Some("alice@example.com"));
        assert_eq!(e.client_addr.as_deref(), Some("127.0.0.1"));
    }
    assert_eq!(db.row_events("batches").await.len(), 1);
}
