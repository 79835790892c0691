//! No way into the trail but pgtrail's, and alarms when capture is cut
//! (sql/v5_no_way_in.sql, src/health.rs). Each test is an attack by an
//! application role (`app`, owning its table, as many do) or by a login
//! in `pgtrail_admin` (`admin`), and what it comes to now: refused, or an
//! `alarm` event in the chain and a condition `health::check` reports.

use pgtrail_core::filter::TableName;
use pgtrail_core::{Event, Kind};
use pgtrail_triggers::{health, InstallOptions, TrackOptions};
use tokio_postgres::Client;

use crate::support::Db;

/// `orders`, owned by the application role `app` and tracked; `admin`, a
/// login in pgtrail_admin. Schema pgtrail usable by PUBLIC, as logical
/// replication's `--setup --context` made it.
async fn setup(name: &str) -> Db {
    let db = Db::installed(name).await;
    db.sql(
        "create role app login; create role admin login in role pgtrail_admin;
         grant create on schema public to app;
         grant usage on schema pgtrail to public;",
    )
    .await;
    let app = db.session_as("app").await;
    app.batch_execute("create table orders (id int primary key, total numeric)")
        .await
        .expect("app creates its table");
    track(&db, "orders").await;
    db
}

async fn track(db: &Db, table: &str) {
    let table = TableName::parse(table).expect("name");
    pgtrail_triggers::track(&db.client, &table, &TrackOptions::default())
        .await
        .expect("track");
}

fn sqlstate(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|c| c.code())
}

async fn alarms(db: &Db) -> Vec<Event> {
    db.sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::Alarm)
        .collect()
}

fn codes(alarms: &[Event]) -> Vec<(&str, &str)> {
    alarms
        .iter()
        .map(|e| {
            (
                e.operation.as_deref().unwrap_or_default(),
                e.table.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

async fn one_i64(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

#[tokio::test]
async fn no_pgtrail_function_of_this_path_is_executable_by_public() {
    let db = setup("no_public_exec").await;
    let executable = db
        .client
        .query(
            "select p.oid::regprocedure::text from pg_proc p \
             where p.pronamespace = 'pgtrail'::regnamespace and p.proname not like 'cdc\\_%' \
               and has_function_privilege('app', p.oid, 'execute') order by 1",
            &[],
        )
        .await
        .expect("functions");
    let names: Vec<String> = executable.iter().map(|r| r.get(0)).collect();
    assert!(
        names.is_empty(),
        "executable by an application role: {names:?}"
    );

    // Triggers fire without EXECUTE: the application's writes are captured.
    let app = db.session_as("app").await;
    app.batch_execute("insert into orders values (1, 10); update orders set total = 11")
        .await
        .expect("the application's writes succeed");
    assert_eq!(db.row_events("orders").await.len(), 2);
}

#[tokio::test]
async fn a_capture_function_cannot_be_attached_to_a_temp_table_or_called() {
    let db = setup("attach_capture").await;
    let oid: u32 = db
        .client
        .query_one("select 'orders'::regclass::oid", &[])
        .await
        .expect("oid")
        .get(0);
    for role in ["app", "admin"] {
        let session = db.session_as(role).await;
        session
            .batch_execute("create temp table orders (id int primary key, total numeric)")
            .await
            .expect("a temp table");
        for attack in [
            format!(
                "create trigger inject after insert on pg_temp.orders for each row \
                 execute function pgtrail.capture_{oid}()"
            ),
            format!("select pgtrail.capture_{oid}()"),
            "select pgtrail.install_capture('orders'::regclass::oid)".into(),
            "select pgtrail.write_capture('orders'::regclass::oid)".into(),
            "select pgtrail.begin_own_work()".into(),
            "select pgtrail.reinstall_captures()".into(),
        ] {
            let err = session.batch_execute(&attack).await.expect_err(&attack);
            assert_eq!(sqlstate(&err), Some("42501"), "{role}: {attack}: {err:?}");
        }
    }
    // Only pgtrail_admin may raise an alarm (the run's watch does), and
    // only as itself.
    let app = db.session_as("app").await;
    let err = app
        .batch_execute("select pgtrail.raise_alarm('x', null, null, 'y')")
        .await
        .expect_err("app raises an alarm");
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");
    assert_eq!(
        one_i64(
            &db.client,
            "select count(*) from pgtrail.pending where kind <> 'd'"
        )
        .await,
        0,
        "nothing injected"
    );
}

#[tokio::test]
async fn pending_rows_are_deleted_only_once_sealed() {
    let db = setup("pending_delete").await;
    let app = db.session_as("app").await;
    app.batch_execute("insert into orders values (1, 10), (2, 20)")
        .await
        .expect("writes");
    let xid = one_i64(
        &db.client,
        "select max(xid::text::bigint) from pgtrail.pending",
    )
    .await;

    let admin = db.session_as("admin").await;
    for attack in [
        "delete from pgtrail.inbox".to_string(),
        "delete from pgtrail.inbox_1".to_string(),
        "truncate pgtrail.inbox".to_string(),
        "truncate pgtrail.inbox_1".to_string(),
        format!("select pgtrail.delete_sealed(array[{xid}]::bigint[], 0)"),
        "update pgtrail.inbox_1 set operation = 'DELETE'".to_string(),
    ] {
        let err = admin.batch_execute(&attack).await.expect_err(&attack);
        assert_eq!(sqlstate(&err), Some("42501"), "{attack}: {err:?}");
    }
    assert_eq!(
        one_i64(
            &db.client,
            "select count(*) from pgtrail.pending where kind = 'r'"
        )
        .await,
        2
    );

    // pgtrail_admin seals: append, then delete_sealed, in one transaction.
    let mut drainer = db.session_as("admin").await;
    let report = pgtrail_triggers::drain_all(&mut drainer)
        .await
        .expect("pgtrail_admin seals");
    assert!(report.events >= 2, "{report:?}");
    assert_eq!(
        one_i64(&db.client, "select count(*) from pgtrail.pending").await,
        0
    );
    assert!(alarms(&db).await.is_empty());
}

#[tokio::test]
async fn the_owner_deleting_pending_rows_leaves_an_alarm_that_cannot_be_deleted_quietly() {
    let db = setup("pending_owner").await;
    db.sql("insert into orders values (1, 10)").await;
    db.sql("delete from pgtrail.inbox_1").await;
    db.sql("insert into orders values (2, 20)").await;
    db.sql("truncate pgtrail.inbox_1").await;
    // Deleting the alarm rows themselves leaves another.
    db.sql("delete from pgtrail.inbox where kind = 'a'").await;
    let found = alarms(&db).await;
    assert_eq!(
        codes(&found),
        vec![("pending_rows_deleted", "inbox")],
        "{found:?}"
    );
    let message = found[0].context.as_ref().expect("context")["alarm"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(message.contains("before they were sealed"), "{message}");
    assert_eq!(found[0].db_user.as_deref(), Some("postgres"));
}

#[tokio::test]
async fn the_shape_refresh_cannot_be_switched_off_from_a_session() {
    let db = setup("shape_switch").await;
    let app = db.session_as("app").await;
    app.batch_execute(
        "set pgtrail.refreshing_shapes = on;
         alter table orders rename column total to amount;
         insert into orders values (1, 10);",
    )
    .await
    .expect("the application's DDL and write");
    let events = db.row_events("orders").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let new = events[0].new.as_ref().expect("new");
    assert!(
        new.contains_key("amount") && !new.contains_key("total"),
        "sealed under the column's name at the time: {new:?}"
    );
}

#[tokio::test]
async fn dropping_or_disabling_a_capture_trigger_raises_an_alarm() {
    let db = setup("trigger_alarms").await;
    let app = db.session_as("app").await;
    assert!(health::check(&db.client).await.expect("check").is_empty());
    app.batch_execute(
        "alter table orders disable trigger pgtrail_capture_delete;
         alter table orders enable replica trigger pgtrail_capture_truncate;
         drop trigger pgtrail_capture_insert on orders;
         alter trigger pgtrail_capture_update on orders rename to quiet;",
    )
    .await
    .expect("the table's owner may");
    let found = alarms(&db).await;
    let mut got = codes(&found);
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got,
        vec![
            ("capture_trigger_disabled", "orders"),
            ("capture_trigger_dropped", "orders"),
        ],
        "{found:?}"
    );
    assert!(found.iter().all(|e| e.db_user.as_deref() == Some("app")));
    let messages: Vec<String> = found
        .iter()
        .map(|e| e.context.as_ref().expect("context")["alarm"].to_string())
        .collect();
    for trigger in [
        "pgtrail_capture_delete",
        "pgtrail_capture_truncate",
        "pgtrail_capture_insert",
        "pgtrail_capture_update",
    ] {
        assert!(
            messages.iter().any(|m| m.contains(trigger)),
            "{trigger}: {messages:?}"
        );
    }
    let now = health::check(&db.client).await.expect("check");
    assert_eq!(now.len(), 4, "{now:?}");

    // Tracking again restores capture; the conditions clear.
    track(&db, "orders").await;
    assert!(health::check(&db.client).await.expect("check").is_empty());
    // Untracking is no alarm (it is logged as DDL).
    pgtrail_triggers::untrack(&db.client, &TableName::parse("orders").expect("name"))
        .await
        .expect("untrack");
    let before = alarms(&db).await.len();
    assert_eq!(before, found.len(), "untrack raised nothing");
    assert!(health::check(&db.client).await.expect("check").is_empty());
}

#[tokio::test]
async fn what_no_event_trigger_sees_is_found_by_the_check() {
    let db = setup("unseen").await;
    db.sql(
        "create schema shop; grant all on schema shop to app;
         alter event trigger pgtrail_ddl disable;
         alter event trigger pgtrail_shapes enable;",
    )
    .await;
    let untracked = TrackOptions::default();
    pgtrail_triggers::track_schema(&db.client, "shop", &untracked, true)
        .await
        .expect("auto-track shop");
    // With pgtrail_ddl off, a new table of the auto-tracked schema is not tracked.
    let app = db.session_as("app").await;
    app.batch_execute("create table shop.carts (id int primary key)")
        .await
        .expect("create");
    // A superuser in replica mode: no event trigger fires.
    db.sql(
        "begin; set local session_replication_role = replica;
         alter table orders disable trigger pgtrail_capture_insert; commit;",
    )
    .await;
    let mut found: Vec<(String, Option<String>)> = health::check(&db.client)
        .await
        .expect("check")
        .into_iter()
        .map(|a| (a.code, a.table))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("capture_trigger_disabled".into(), Some("orders".into())),
            ("event_trigger_disabled".into(), None),
            ("event_trigger_disabled".into(), None),
            ("table_not_tracked".into(), Some("carts".into())),
        ]
    );
    // Raised by the run's watch (as pgtrail_admin), it is sealed as an alarm event.
    let admin = db.session_as("admin").await;
    for alarm in health::check(&admin).await.expect("check as admin") {
        health::raise(&admin, &alarm).await.expect("raise");
    }
    let recorded = alarms(&db).await;
    assert_eq!(recorded.len(), 4, "{recorded:?}");
    assert!(recorded
        .iter()
        .all(|e| e.db_user.as_deref() == Some("admin")));
}

#[tokio::test]
async fn an_upgrade_from_4_with_rows_pending_seals_them_and_closes_the_holes() {
    let db = Db::empty("upgrade_v5").await;
    let v4 = InstallOptions {
        target_version: Some(4),
        ..InstallOptions::default()
    };
    pgtrail_triggers::install(&db.url, &v4)
        .await
        .expect("install v4");
    db.sql("create role app login; create table orders (id int primary key, total numeric); grant all on orders to app;")
        .await;
    track(&db, "orders").await;
    db.sql("insert into orders values (1, 10); update orders set total = 11")
        .await;
    let exec: bool = db
        .client
        .query_one(
            "select has_function_privilege('app', 'pgtrail.capture_' || 'orders'::regclass::oid || '()', 'execute')",
            &[],
        )
        .await
        .expect("privilege")
        .get(0);
    assert!(exec, "v4 left capture functions executable by PUBLIC");

    let report = pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("upgrade");
    assert_eq!((report.from_version, report.to_version), (4, 5));
    db.sql("insert into orders values (2, 20)").await;
    let events = db.row_events("orders").await;
    assert_eq!(
        events.len(),
        3,
        "nothing lost across the upgrade: {events:?}"
    );
    let exec: bool = db
        .client
        .query_one(
            "select has_function_privilege('app', 'pgtrail.capture_' || 'orders'::regclass::oid || '()', 'execute')",
            &[],
        )
        .await
        .expect("privilege")
        .get(0);
    assert!(!exec);
    assert!(alarms(&db).await.is_empty());
    let report = pgtrail_store::verify(&db.store().await, None)
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
}

/// A login in pgtrail_reader searches by client address (`ip:`, `--ip`),
/// which calls the store's `pgtrail.client_inet`, and by words of SQL
/// text (`pgtrail.sql_words`): the install's revoke of every function from
/// PUBLIC must not take those away from readers, and an application role
/// still gets nothing.
#[tokio::test]
async fn a_reader_searches_by_client_address_and_an_application_cannot() {
    let db = setup("reader_ip").await;
    db.sql("create role auditor login in role pgtrail_reader")
        .await;
    let reader = db.session_as("auditor").await;
    let row = reader
        .query_one(
            "select count(*) from pgtrail.events \
             where pgtrail.client_inet(body::json ->> 'client_addr') <<= '10.0.0.0/8'::inet",
            &[],
        )
        .await
        .expect("a reader searches by address");
    let _: i64 = row.get(0);
    // And by the words of the SQL (store schema 16): the DDL that made
    // `orders` is found, once sealed.
    let mut drainer = db.session_as("admin").await;
    pgtrail_triggers::drain_all(&mut drainer)
        .await
        .expect("pgtrail_admin seals");
    let row = reader
        .query_one(
            "select count(*) from pgtrail.events where sql is not null \
             and pgtrail.sql_words(sql) @@ pgtrail.sql_words_query('create ORDERS')",
            &[],
        )
        .await
        .expect("a reader searches SQL text");
    assert!(row.get::<_, i64>(0) >= 1);
    let app = db.session_as("app").await;
    for call in [
        "select pgtrail.client_inet('10.0.0.1')",
        "select pgtrail.sql_words('select 1')",
        "select pgtrail.sql_words_query('orders')",
    ] {
        let err = app
            .query_one(call, &[])
            .await
            .expect_err("an application role has no reader's rights");
        assert_eq!(sqlstate(&err), Some("42501"), "{call}: {err:?}");
    }
}

/// The facet summary (`pgtrail.facet_hours`, store schema 11): a reader
/// reads it, the sealer (`pgtrail_admin`) adds its batches to it, and an
/// application role can neither read who did what nor edit the counts.
#[tokio::test]
async fn the_facet_summary_is_read_by_readers_kept_by_the_sealer_and_closed_to_applications() {
    let db = setup("facet_summary").await;
    let app = db.session_as("app").await;
    app.batch_execute("insert into orders values (1, 10), (2, 20)")
        .await
        .expect("writes");
    let mut drainer = db.session_as("admin").await;
    pgtrail_triggers::drain_all(&mut drainer)
        .await
        .expect("pgtrail_admin seals, counting facets");
    let counted = one_i64(
        &db.client,
        "select coalesce(sum(count), 0)::bigint from pgtrail.facet_hours \
         where facet = 'table' and value = 'public.orders'",
    )
    .await;
    // The two row changes and the DDL that made the table.
    let events = one_i64(
        &db.client,
        "select count(*) from pgtrail.events \
         where schema_name = 'public' and table_name = 'orders'",
    )
    .await;
    assert!(events >= 2, "{events}");
    assert_eq!(counted, events);

    db.sql("create role auditor login in role pgtrail_reader")
        .await;
    let reader = db.session_as("auditor").await;
    let row = reader
        .query_one("select count(*) from pgtrail.facet_hours", &[])
        .await
        .expect("a reader reads the summary");
    assert!(row.get::<_, i64>(0) > 0);
    let err = reader
        .batch_execute("update pgtrail.facet_hours set count = 0")
        .await
        .expect_err("a reader edits nothing");
    assert_eq!(sqlstate(&err), Some("42501"), "{err:?}");

    for attack in [
        "select count(*) from pgtrail.facet_hours",
        "update pgtrail.facet_hours set count = 0",
        "insert into pgtrail.facet_hours values (1, 'user', 'mallory', 1)",
        "delete from pgtrail.facet_hours",
    ] {
        let err = app.batch_execute(attack).await.expect_err(attack);
        assert_eq!(sqlstate(&err), Some("42501"), "{attack}: {err:?}");
    }
}

/// The index of the relations statements touched
/// (`pgtrail.events_objects`, store schema 15), which `table:` walks: a
/// reader reads it; the sealer (`pgtrail_admin`) may add a batch's names,
/// never remove or rename one (which would hide a statement from
/// `table:`); an application role can do nothing with it.
#[tokio::test]
async fn the_statements_relations_are_read_by_readers_added_to_by_the_sealer_and_closed_to_applications(
) {
    let db = setup("events_objects").await;
    db.sql(
        r#"insert into pgtrail.events_objects (name, seq) values ('"orders"', 1);
           create role auditor login in role pgtrail_reader;"#,
    )
    .await;
    let reader = db.session_as("auditor").await;
    let seen = reader
        .query_one("select count(*) from pgtrail.events_objects", &[])
        .await
        .expect("a reader reads the index");
    assert_eq!(seen.get::<_, i64>(0), 1);
    let admin = db.session_as("admin").await;
    admin
        .batch_execute("begin; insert into pgtrail.events_objects values ('\"x\"', 2); rollback")
        .await
        .expect("the sealer adds names");
    let app = db.session_as("app").await;
    for (who, client, attacks) in [
        (
            "reader",
            &reader,
            vec![
                "insert into pgtrail.events_objects values ('\"x\"', 2)",
                "update pgtrail.events_objects set name = '\"x\"'",
                "delete from pgtrail.events_objects",
            ],
        ),
        (
            "sealer",
            &admin,
            vec![
                "update pgtrail.events_objects set name = '\"x\"'",
                "delete from pgtrail.events_objects",
                "truncate pgtrail.events_objects",
            ],
        ),
        (
            "application",
            &app,
            vec![
                "select count(*) from pgtrail.events_objects",
                "insert into pgtrail.events_objects values ('\"x\"', 2)",
                "delete from pgtrail.events_objects",
            ],
        ),
    ] {
        for attack in attacks {
            let err = client
                .batch_execute(attack)
                .await
                .expect_err(&format!("{who}: {attack}"));
            assert_eq!(sqlstate(&err), Some("42501"), "{who}: {attack}: {err:?}");
        }
    }
    let left = one_i64(&db.client, "select count(*) from pgtrail.events_objects").await;
    assert_eq!(left, 1, "nothing was removed");
}
