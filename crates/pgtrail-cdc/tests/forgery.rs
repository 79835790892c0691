//! An application role tries to forge or hide who made its changes on the
//! logical-replication path: each attack fails, or is recorded as what it is.

use pgtrail_cdc::assemble::ACTOR_MISSING;
use pgtrail_cdc::consumer::MESSAGE_EMITTERS;
use pgtrail_core::event::Channel;
use pgtrail_core::{Event, Kind};

use crate::common::*;

/// A tracked table the application may write, one it owns, and the app role.
const SCHEMA: &str = "create role app login;
    create table t (id int primary key, v text);
    grant select, insert, update, delete on t to app;
    grant create on schema public to app;
    set role app;
    create table owned (id int primary key);
    reset role;";

fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|code| code.code())
}

fn alarm(events: &[Event], what: &str) -> Option<Event> {
    events
        .iter()
        .find(|e| e.kind == Kind::Alarm && e.operation.as_deref() == Some(what))
        .cloned()
}

#[tokio::test]
async fn an_application_role_cannot_emit_pgtrail_messages_or_call_pgtrail_functions(
) -> anyhow::Result<()> {
    let db = TestDb::new("cdc_forge_msg", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    let app = db.session_as("app").await?;
    let forged_actor = r#"["boss","boss","10.9.9.9","1","web","1",null,null,"ceo@example.com"]"#;
    let forged_ddl = r#"{"command_tag":"DROP TABLE","objects":["public.evidence"],"sql":"drop table evidence","actor":["boss","none",null,null,"","1",null,null]}"#;
    for attack in [
        // A forged actor for the statement that follows.
        format!("select pg_logical_emit_message(true, 'pgtrail', '{forged_actor}')"),
        format!("select pg_logical_emit_message(true, 'pgtrail', '{forged_actor}'::bytea)"),
        // A DDL event that never happened.
        format!("select pg_logical_emit_message(true, 'pgtrail.ddl', '{forged_ddl}')"),
        // pgtrail's own functions.
        "select pgtrail_cdc.statement_comment('/*user=''boss''*/')".into(),
        "select pgtrail_cdc.context()".into(),
        // Attaching the context function to a table of its own (a temp table).
        "create temp table mine (id int); create trigger x before insert on mine \
         for each statement execute function pgtrail_cdc.context()"
            .into(),
        // Turning off every trigger for its session.
        "set session_replication_role = replica".into(),
    ] {
        let error = app
            .batch_execute(&format!(
                "begin; {attack}; insert into t values (1, 'x'); commit"
            ))
            .await
            .expect_err(&attack);
        assert_eq!(sqlstate(&error), Some("42501"), "{attack}: {error:?}");
        app.batch_execute("rollback").await?;
    }
    // What applications may call: set_context, which only sets the claim.
    app.batch_execute(
        "begin; select pgtrail_cdc.set_context('alice@example.com', '{\"request_id\": \"r1\"}');
         insert into t values (1, 'a'); commit;",
    )
    .await?;
    db.client
        .batch_execute("create table later (id int)")
        .await?;
    let events = wait_for_events(store.as_ref(), 2).await;
    running.stop().await?;
    assert_eq!(events.len(), 2, "{events:#?}");
    let row = &events[0];
    assert_eq!(
        (row.db_user.as_deref(), row.app_user.as_deref()),
        (Some("app"), Some("alice@example.com"))
    );
    let provenance = row.provenance.clone().expect("provenance");
    assert_eq!(
        provenance.vouched,
        ["backend_pid", "client_addr", "client_port", "db_user"]
    );
    assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
    assert_eq!(provenance.channels("context"), [Channel::Setting]);
    let ddl = &events[1];
    assert_eq!(
        (ddl.kind, ddl.db_user.as_deref(), ddl.command_tag.as_deref()),
        (Kind::Ddl, Some("postgres"), Some("CREATE TABLE"))
    );
    assert!(ddl
        .provenance
        .as_ref()
        .is_some_and(|p| p.vouched.contains(&"db_user".into())));
    Ok(())
}

#[tokio::test]
async fn the_old_sent_marker_hides_nothing_and_every_statement_carries_its_actor(
) -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_forge_marker",
        &format!("{SCHEMA} create role clerk; grant clerk to app; grant all on t to clerk;"),
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    let app = db.session_as("app").await?;
    // The marker the trigger of earlier versions compared with: set to the
    // exact actor array, it made the trigger believe the actor was sent.
    let row = app
        .query_one(
            "select to_json(array[session_user::text, current_user::text, host(inet_client_addr()), \
             inet_client_port()::text, current_setting('application_name'), pg_backend_pid()::text, \
             null, null, null, null])::text",
            &[],
        )
        .await?;
    let marker: String = row.get(0);
    // A search_path that puts the application's own functions first: the
    // context function names everything by schema, so it never calls them.
    app.batch_execute(
        "create function public.host(inet) returns text language sql as $$ select 'forged' $$;
         create function public.pg_backend_pid() returns int language sql as $$ select -1 $$;
         create function public.to_json(anyelement) returns json language sql
           as $$ select '[\"boss\",\"none\",null,null,\"\",\"1\",null,null]'::json $$;
         set search_path = public, pg_catalog;",
    )
    .await?;
    app.batch_execute(&format!(
        "begin;
         select set_config('pgtrail.cdc_sent', '{marker}', true);
         insert into t values (1, 'a');
         set local role clerk;
         select set_config('pgtrail.cdc_sent', 'anything', true);
         update t set v = 'b';
         commit;"
    ))
    .await?;
    let rows = wait_for_row_changes(store.as_ref(), 2).await;
    running.stop().await?;
    let events = all_events(store.as_ref()).await;
    assert!(alarm(&events, ACTOR_MISSING).is_none(), "{events:#?}");
    assert_eq!(rows.len(), 2);
    for event in &rows {
        assert_eq!(event.db_user.as_deref(), Some("app"), "{event:?}");
        assert!(event.backend_pid.is_some_and(|pid| pid > 0), "{event:?}");
        assert_eq!(event.client_addr.as_deref(), Some("127.0.0.1"), "{event:?}");
    }
    let role = |e: &Event| {
        e.context
            .as_ref()
            .and_then(|c| c.get("current_user"))
            .cloned()
    };
    assert_eq!(role(&rows[0]), None);
    assert_eq!(
        role(&rows[1]),
        Some(serde_json::json!("clerk")),
        "SET ROLE is seen"
    );
    Ok(())
}

#[tokio::test]
async fn changes_without_an_actor_are_recorded_with_an_alarm() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_forge_disable", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    let app = db.session_as("app").await?;
    // The table's owner may disable (or drop) the context trigger. One
    // query per transaction (a query string of several is one transaction).
    for statement in [
        "alter table owned disable trigger pgtrail_cdc_context",
        "insert into owned values (1)",
        "insert into owned values (2)",
        "begin; insert into owned values (3); insert into t values (9, 'with actor'); commit",
        "alter table owned enable trigger pgtrail_cdc_context",
        "insert into owned values (4)",
    ] {
        app.batch_execute(statement).await?;
    }
    let rows = wait_for_row_changes(store.as_ref(), 5).await;
    running.stop().await?;
    let events = all_events(store.as_ref()).await;
    let alarms: Vec<&Event> = events.iter().filter(|e| e.kind == Kind::Alarm).collect();
    assert_eq!(
        alarms.len(),
        3,
        "one per transaction without an actor: {events:#?}"
    );
    for alarm in &alarms {
        assert_eq!(alarm.operation.as_deref(), Some(ACTOR_MISSING));
        assert_eq!(alarm.table.as_deref(), Some("owned"));
        let next = events
            .iter()
            .find(|e| e.seq == alarm.seq.map(|s| s + 1))
            .expect("the change follows its alarm");
        assert_eq!((next.xid, next.db_user.clone()), (alarm.xid, None));
    }
    let actors: Vec<Option<&str>> = rows.iter().map(|e| e.db_user.as_deref()).collect();
    // Row 3 and 9 share a transaction: the change before any actor is
    // unknown; the statement on t sent its own.
    assert_eq!(actors, [None, None, None, Some("app"), Some("app")]);
    Ok(())
}

#[tokio::test]
async fn a_role_granted_message_emission_is_an_alarm_at_every_start() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_forge_grant", SCHEMA).await?;
    db.setup(&db.setup_options()).await?;
    db.client
        .batch_execute(
            "grant execute on function pg_logical_emit_message(boolean, text, text) to app",
        )
        .await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());
    let events = wait_for_events(store.as_ref(), 1).await;
    running.stop().await?;
    let alarm = alarm(&events, MESSAGE_EMITTERS).expect("an alarm at start");
    assert_eq!(
        alarm.context.as_ref().and_then(|c| c.get("roles")),
        Some(&serde_json::json!(["app"]))
    );
    // Setting up again takes it back only from PUBLIC, and says who still may.
    let report = db.setup(&db.setup_options()).await?;
    assert_eq!(report.message_emitters, ["app"]);
    Ok(())
}

#[tokio::test]
async fn a_setup_that_cannot_revoke_changes_nothing() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_forge_nonsuper",
        "create role capturer login replication; create table c (id int primary key);
         alter table c owner to capturer;",
    )
    .await?;
    db.client
        .batch_execute(&format!(
            "grant create on database \"{}\" to capturer",
            db.url.rsplit('/').next().expect("database in the URL")
        ))
        .await?;
    let capturer = db.session_as("capturer").await?;
    let facts = pgtrail_cdc::catalog::check_ready(&capturer).await?;
    let mut options = db.setup_options();
    options.selection.tables = vec![pgtrail_core::filter::TableName::parse("c")?];
    let error = pgtrail_cdc::setup::prepare(&capturer, &facts, &options)
        .await
        .expect_err("a non-superuser cannot install the actor functions");
    assert!(error.to_string().contains("actor"), "{error}");
    let row = db
        .client
        .query_one(
            "select to_regnamespace('pgtrail_cdc') is null, \
             has_function_privilege('public', 'pg_logical_emit_message(boolean,text,text)', 'execute'), \
             (select count(*) from pg_trigger where tgname = 'pgtrail_cdc_context')",
            &[],
        )
        .await?;
    assert!(row.get::<_, bool>(0), "no schema pgtrail_cdc: {error}");
    assert!(row.get::<_, bool>(1), "PUBLIC's EXECUTE untouched");
    assert_eq!(row.get::<_, i64>(2), 0, "no trigger left behind");
    Ok(())
}
