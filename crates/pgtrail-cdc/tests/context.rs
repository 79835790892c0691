//! Who made each change: the context trigger's actor follows every switch
//! inside a transaction, and re-running the setup upgrades an installed
//! trigger function.

use pgtrail_core::{Event, Kind};

use crate::common::*;

fn context_field<'a>(event: &'a Event, key: &str) -> Option<&'a serde_json::Value> {
    event.context.as_ref().and_then(|c| c.get(key))
}

#[tokio::test]
async fn the_actor_follows_set_local_roles_and_savepoints_within_a_transaction(
) -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_actor",
        "create table t (id int primary key, v text);
         create role clerk;
         grant all on t to clerk;",
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute(
            "begin;
             set local pgtrail.\"user\" = 'alice';
             insert into t values (1, 'a');
             insert into t values (2, 'a');
             set local pgtrail.\"user\" = 'bob';
             update t set v = 'b' where id = 1;
             set local role clerk;
             update t set v = 'c' where id = 2;
             reset role;
             savepoint s;
             set local pgtrail.\"user\" = 'mallory';
             insert into t values (3, 'rolled back');
             rollback to savepoint s;
             insert into t values (4, 'd');
             set local pgtrail.context = '{\"step\": 5}';
             set local application_name = 'renamed';
             delete from t where id = 4;
             set local session authorization clerk;
             update t set v = 'e' where id = 1;
             commit;
             begin;
             select pgtrail_cdc.set_context(E'd\\x1f\"q\"\\\\ é', '{\"a\": 1}');
             insert into t values (5, 'odd name');
             commit;
             begin;
             set local app.\"current_user\" = 'carol';
             insert into t values (6, 'second user setting');
             commit;",
        )
        .await?;
    let rows = wait_for_row_changes(store.as_ref(), 9).await;
    running.stop().await?;
    let ids: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|e| (e.operation.clone().unwrap_or_default(), e.app_user.clone()))
        .collect();
    let expected = [
        ("INSERT", Some("alice")),
        ("INSERT", Some("alice")),
        ("UPDATE", Some("bob")),
        ("UPDATE", Some("bob")),
        ("INSERT", Some("bob")),
        ("DELETE", Some("bob")),
        ("UPDATE", Some("bob")),
        ("INSERT", Some("d\u{1f}\"q\"\\ é")),
        ("INSERT", Some("carol")),
    ];
    let expected: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|(op, user)| (op.to_string(), user.map(String::from)))
        .collect();
    assert_eq!(
        ids, expected,
        "operation and app user of each change, in order"
    );
    assert!(rows.iter().all(|e| e.kind == Kind::RowChange));

    // SET ROLE shows as the current user; RESET ROLE ends it.
    assert_eq!(context_field(&rows[2], "current_user"), None);
    assert_eq!(
        context_field(&rows[3], "current_user").and_then(|v| v.as_str()),
        Some("clerk")
    );
    assert_eq!(context_field(&rows[4], "current_user"), None);
    // The change of the rolled-back savepoint is gone, and so is its user.
    assert!(rows
        .iter()
        .all(|e| e.app_user.as_deref() != Some("mallory")));
    // A context and application_name set mid-transaction reach the next statement.
    assert_eq!(context_field(&rows[4], "step"), None);
    assert_eq!(
        context_field(&rows[5], "step").and_then(|v| v.as_i64()),
        Some(5)
    );
    assert_eq!(rows[4].application_name, None);
    assert_eq!(rows[5].application_name.as_deref(), Some("renamed"));
    // SET SESSION AUTHORIZATION changes the session user itself.
    assert_eq!(rows[5].db_user.as_deref(), Some("postgres"));
    assert_eq!(rows[6].db_user.as_deref(), Some("clerk"));
    // pgtrail_cdc.set_context with a context object.
    assert_eq!(
        context_field(&rows[7], "a").and_then(|v| v.as_i64()),
        Some(1)
    );
    for event in &rows {
        assert!(event.backend_pid.is_some(), "{event:?}");
    }
    Ok(())
}

/// What versions before schema `pgtrail_cdc` installed: the context
/// function in schema `pgtrail` (here in its older JSON-object form),
/// running as the writer, with USAGE on the schema and EXECUTE on
/// `pg_logical_emit_message` for PUBLIC.
const OLD_INSTALL: &str = "create schema pgtrail;
grant usage on schema pgtrail to public;
grant execute on function pg_logical_emit_message(boolean, text, text) to public;
create or replace function pgtrail.cdc_context() returns trigger
language plpgsql as $fn$
begin
  perform pg_catalog.pg_logical_emit_message(true, 'pgtrail', pg_catalog.json_build_object(
    'app_user', nullif(current_setting('pgtrail.user', true), ''),
    'db_user', session_user::text, 'current_user', current_user::text,
    'backend_pid', pg_catalog.pg_backend_pid())::text);
  return null;
end
$fn$;
create function pgtrail.cdc_emit(prefix text, invoker text, extra jsonb) returns void
language sql as $fn$ select $fn$;
grant execute on function pgtrail.cdc_emit(text, text, jsonb) to public;
create function pgtrail.set_context(app_user text, context jsonb default null) returns void
language sql as $fn$ select $fn$;
create or replace trigger pgtrail_cdc_context before insert or update or delete or truncate on t
  for each statement execute function pgtrail.cdc_context();";

#[tokio::test]
async fn setup_again_upgrades_an_install_in_schema_pgtrail() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_ctx_upgrade",
        "create table t (id int primary key); create role app login; grant all on t to app;",
    )
    .await?;
    let mut first = db.setup_options();
    first.actor = false;
    db.setup(&first).await?;
    db.client.batch_execute(OLD_INSTALL).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    db.client
        .batch_execute(
            "begin; set local pgtrail.\"user\" = 'old'; insert into t values (1); commit;",
        )
        .await?;

    // Twice: re-running the setup is idempotent.
    db.setup(&db.setup_options()).await?;
    db.setup(&db.setup_options()).await?;
    let row = db
        .client
        .query_one(
            "select t.tgfoid::regprocedure::text, \
             (select count(*) from pg_trigger where tgname = 'pgtrail_cdc_context'), \
             (select count(*) from pg_proc where pronamespace = 'pgtrail'::regnamespace), \
             has_schema_privilege('app', 'pgtrail', 'usage'), \
             has_function_privilege('app', 'pg_logical_emit_message(boolean,text,text)', 'execute'), \
             has_function_privilege('app', 'pg_logical_emit_message(boolean,text,bytea)', 'execute') \
             from pg_trigger t where t.tgname = 'pgtrail_cdc_context'",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "pgtrail_cdc.context()");
    assert_eq!(
        row.get::<_, i64>(1),
        1,
        "one context trigger on the one table"
    );
    assert_eq!(row.get::<_, i64>(2), 0, "the old functions are gone");
    assert!(
        !row.get::<_, bool>(3),
        "PUBLIC's USAGE on schema pgtrail is revoked"
    );
    assert!(!row.get::<_, bool>(4), "PUBLIC's EXECUTE is revoked");
    assert!(!row.get::<_, bool>(5), "the bytea form too");

    let app = db.session_as("app").await?;
    app.batch_execute(
        "begin; set local pgtrail.\"user\" = 'new'; insert into t values (2); commit;",
    )
    .await?;
    let rows = wait_for_row_changes(store.as_ref(), 2).await;
    running.stop().await?;
    let users: Vec<(Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|e| (e.app_user.as_deref(), e.db_user.as_deref()))
        .collect();
    assert_eq!(
        users,
        [(Some("old"), Some("postgres")), (Some("new"), Some("app"))],
        "both payload forms are read"
    );
    Ok(())
}

#[tokio::test]
async fn a_sqlcommenter_comment_names_the_user_where_no_setting_did() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_sqlcommenter",
        "create table t (id int primary key, v text);",
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let mut options = db.capture_options();
    options.comment_user_keys = vec!["actor".into(), "user".into()];
    let running = Running::start(&db, store.clone(), options);
    // One statement per query, as ORMs send them: the comment belongs to
    // the query string the server received.
    for statement in [
        "insert into t values (1, 'a') /*request_id='r1',user='dana%40example.com'*/",
        "begin",
        "set local pgtrail.\"user\" = 'erin'",
        "update t set v = 'b' where id = 1 /*request_id='r2',user='spoofed'*/",
        "commit",
        "insert into t values (2, 'x') /* a plain comment, user='nobody' */",
        "insert into t values (3, 'y') /*actor='frank',user='second-choice'*/;",
        "/* user='lead' */ delete from t where id = 1",
        "alter table t add column w text /*user='migrator'*/",
    ] {
        db.client.batch_execute(statement).await?;
    }
    let events = wait_for_events(store.as_ref(), 6).await;
    running.stop().await?;

    let rows: Vec<_> = events
        .iter()
        .filter(|e| e.kind == Kind::RowChange)
        .collect();
    let users: Vec<Option<&str>> = rows.iter().map(|e| e.app_user.as_deref()).collect();
    assert_eq!(
        users,
        [
            Some("dana@example.com"),
            Some("erin"), // the session setting wins over the comment
            None,         // a plain comment is not read
            Some("frank"),
            Some("lead"), // a leading comment
        ]
    );
    assert_eq!(
        context_field(rows[0], "request_id"),
        Some(&serde_json::json!("r1"))
    );
    assert_eq!(
        context_field(rows[1], "request_id"),
        Some(&serde_json::json!("r2"))
    );
    let ddl = events
        .iter()
        .find(|e| e.kind == Kind::Ddl)
        .expect("the ALTER TABLE");
    assert_eq!(ddl.app_user.as_deref(), Some("migrator"));
    Ok(())
}
