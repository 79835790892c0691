//! Who and where: session settings (SET LOCAL on a pooled connection,
//! configurable names), role, client, process and transaction.

use pgtrail_core::config::IdentityConfig;
use pgtrail_core::filter::TableName;
use pgtrail_triggers::{InstallOptions, TrackOptions};
use serde_json::json;

use crate::support::{connect, Db};

#[tokio::test]
async fn set_local_on_one_pooled_connection_attributes_each_transaction() {
    let db = Db::installed("set_local").await;
    db.sql("create table orders (id int primary key, total numeric)")
        .await;
    let orders = TableName::parse("orders").expect("name");
    pgtrail_triggers::track(&db.client, &orders, &TrackOptions::default())
        .await
        .expect("track");

    // One connection, as a pool hands it to two requests in turn.
    let pooled = connect(&format!("{}?application_name=shop", db.url)).await;
    pooled
        .batch_execute(
            "begin;
             set local pgtrail.\"user\" = 'alice@example.com';
             set local pgtrail.context = '{\"request_id\": \"r-1\", \"endpoint\": \"POST /orders\"}';
             insert into orders values (1, 10);
             commit;
             begin;
             set local app.\"current_user\" = 'bob@example.com';
             update orders set total = 12 where id = 1;
             commit;
             delete from orders where id = 1;",
        )
        .await
        .expect("writes");
    let pid: i32 = pooled
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);

    let events = db.row_events("orders").await;
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].app_user.as_deref(), Some("alice@example.com"));
    assert_eq!(
        events[0].context.as_ref().expect("context")["request_id"],
        json!("r-1")
    );
    assert_eq!(
        events[1].app_user.as_deref(),
        Some("bob@example.com"),
        "app.current_user is accepted too"
    );
    assert!(
        events[1].context.is_none(),
        "the first transaction's context ended with it"
    );
    assert_eq!(
        events[2].app_user, None,
        "no user outside the SET LOCAL transactions"
    );
    for e in &events {
        assert_eq!(e.db_user.as_deref(), Some("postgres"));
        assert_eq!(e.application_name.as_deref(), Some("shop"));
        assert_eq!(e.client_addr.as_deref(), Some("127.0.0.1"));
        assert!(e.client_port.is_some_and(|p| p > 0));
        assert_eq!(e.backend_pid, Some(pid));
    }
    let xids: Vec<_> = events.iter().map(|e| e.xid.expect("xid")).collect();
    assert!(xids[0] < xids[1] && xids[1] < xids[2], "{xids:?}");
}

#[tokio::test]
async fn setting_names_come_from_configuration() {
    let db = Db::installed("names").await;
    let options = InstallOptions {
        identity: IdentityConfig {
            user_settings: vec!["myapp.user_email".into()],
            context_setting: "myapp.ctx".into(),
            ..IdentityConfig::default()
        },
        target_version: None,
    };
    pgtrail_triggers::install(&db.url, &options)
        .await
        .expect("reinstall with other names");
    db.sql("create table notes (id int primary key, body text)")
        .await;
    let notes = TableName::parse("notes").expect("name");
    pgtrail_triggers::track(&db.client, &notes, &TrackOptions::default())
        .await
        .expect("track");
    db.sql(
        "begin; set local myapp.user_email = 'carol@example.com'; set local myapp.ctx = '{\"tenant\": 7}';
         set local pgtrail.\"user\" = 'ignored@example.com';
         insert into notes values (1, 'hi'); commit;",
    )
    .await;
    let events = db.row_events("notes").await;
    assert_eq!(events[0].app_user.as_deref(), Some("carol@example.com"));
    assert_eq!(
        events[0].context.as_ref().expect("context")["tenant"],
        json!(7)
    );
}

#[tokio::test]
async fn a_role_switch_is_recorded_beside_the_session_user() {
    let db = Db::installed("set_role").await;
    db.sql("create table t (id int primary key); create role auditor_test; grant all on t to auditor_test;").await;
    let t = TableName::parse("t").expect("name");
    pgtrail_triggers::track(&db.client, &t, &TrackOptions::default())
        .await
        .expect("track");
    db.sql("begin; set local role auditor_test; insert into t values (1); commit;")
        .await;
    let events = db.row_events("t").await;
    assert_eq!(events[0].db_user.as_deref(), Some("postgres"));
    assert_eq!(
        events[0].context.as_ref().expect("context")["current_user"],
        json!("auditor_test")
    );
}

#[tokio::test]
async fn each_change_is_attributed_to_the_identity_in_effect_when_it_was_made() {
    let db = Db::installed("mid_transaction").await;
    db.sql("create table notes (id int primary key, body text)")
        .await;
    let notes = TableName::parse("notes").expect("name");
    pgtrail_triggers::track(&db.client, &notes, &TrackOptions::default())
        .await
        .expect("track");
    // A user switched mid-transaction with set_config(…, true), and a
    // savepoint whose switch and change are rolled back.
    db.sql(
        "begin;
         select set_config('pgtrail.user', 'alice@example.com', true);
         insert into notes values (1, 'by alice');
         select set_config('pgtrail.user', 'bob@example.com', true);
         select set_config('pgtrail.context', '{\"step\": 2}', true);
         update notes set body = 'by bob' where id = 1;
         savepoint s;
         set local pgtrail.\"user\" = 'mallory@example.com';
         insert into notes values (2, 'undone');
         rollback to s;
         insert into notes values (3, 'bob again');
         commit;",
    )
    .await;
    let events = db.row_events("notes").await;
    let who: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.app_user.as_deref(),
                e.pk.as_ref().map(|pk| pk["id"].clone()),
            )
        })
        .collect();
    assert_eq!(
        who,
        [
            (Some("alice@example.com"), Some(json!("1"))),
            (Some("bob@example.com"), Some(json!("1"))),
            (Some("bob@example.com"), Some(json!("3"))),
        ]
    );
    assert!(events[0].context.is_none());
    assert_eq!(
        events[1].context.as_ref().expect("context")["step"],
        json!(2)
    );
    let xids: Vec<_> = events.iter().map(|e| e.xid).collect();
    assert!(xids.windows(2).all(|w| w[0] == w[1]), "one transaction");
}

#[tokio::test]
async fn a_sqlcommenter_comment_names_the_user_where_no_setting_did() {
    let db = Db::installed("sqlcommenter").await;
    db.sql("create table plans (id int primary key, tier text)")
        .await;
    let plans = TableName::parse("plans").expect("name");
    let with_sql = TrackOptions {
        capture_sql: true,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &plans, &with_sql)
        .await
        .expect("track");
    // One statement per query, as ORMs send them: the server's statement
    // text is the whole query string.
    for statement in [
        "insert into plans values (1, 'free') /*request_id='r-7',user='dana%40example.com'*/",
        "begin",
        "set local pgtrail.\"user\" = 'erin@example.com'",
        "update plans set tier = 'pro' where id = 1 /*request_id='r-8',user='spoofed'*/",
        "commit",
        "alter table plans add column note text /*user='migrator'*/",
        "delete from plans /* an ordinary comment, user='nobody' */",
    ] {
        db.sql(statement).await;
    }

    let rows = db.row_events("plans").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].app_user.as_deref(), Some("dana@example.com"));
    assert_eq!(
        rows[0].context.as_ref().expect("context")["request_id"],
        json!("r-7")
    );
    assert_eq!(
        rows[1].app_user.as_deref(),
        Some("erin@example.com"),
        "the session setting wins over the comment"
    );
    assert_eq!(
        rows[1].context.as_ref().expect("context")["request_id"],
        json!("r-8")
    );
    assert_eq!(rows[2].app_user, None, "an ordinary comment is not read");
    // Each claim says how it came; the session fields are the server's.
    let channels = |e: &pgtrail_core::Event, field: &str| {
        e.provenance
            .as_ref()
            .map(|p| p.channels(field).to_vec())
            .unwrap_or_default()
    };
    use pgtrail_core::event::Channel;
    assert_eq!(channels(&rows[0], "app_user"), [Channel::Comment]);
    assert_eq!(channels(&rows[0], "context"), [Channel::Comment]);
    assert_eq!(channels(&rows[1], "app_user"), [Channel::Setting]);
    assert_eq!(channels(&rows[1], "context"), [Channel::Comment]);
    assert_eq!(channels(&rows[2], "app_user"), []);
    for row in &rows {
        let vouched = &row.provenance.as_ref().expect("provenance").vouched;
        assert!(vouched.contains(&"db_user".to_string()), "{row:?}");
        assert!(vouched.contains(&"backend_pid".to_string()), "{row:?}");
    }

    let ddl: Vec<_> = db
        .sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == pgtrail_core::Kind::Ddl)
        .collect();
    assert!(
        ddl.iter()
            .any(|e| e.app_user.as_deref() == Some("migrator")),
        "DDL events carry the statement, so its comment: {ddl:?}"
    );
}

#[tokio::test]
async fn the_sqlcommenter_user_keys_come_from_configuration() {
    let db = Db::installed("sqlcommenter_keys").await;
    let options = InstallOptions {
        identity: IdentityConfig {
            comment_user_keys: vec!["actor".into()],
            ..IdentityConfig::default()
        },
        target_version: None,
    };
    pgtrail_triggers::install(&db.url, &options)
        .await
        .expect("reinstall with other keys");
    db.sql("create table t (id int primary key)").await;
    let t = TableName::parse("t").expect("name");
    let with_sql = TrackOptions {
        capture_sql: true,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &t, &with_sql)
        .await
        .expect("track");
    db.sql("insert into t values (1) /*actor='frank',user='not-this-one'*/")
        .await;
    let events = db.row_events("t").await;
    assert_eq!(events[0].app_user.as_deref(), Some("frank"));
}
