//! Install, upgrade, uninstall, and the errors people meet first: missing
//! privileges, a lost connection mid-install, unknown tables and columns.

use std::time::Duration;

use pgtrail_core::filter::TableName;
use pgtrail_store::verify;
use pgtrail_triggers::{migrations, Error, InstallOptions, MaskMode, TrackOptions};
use serde_json::json;

use crate::support::{obj, Db};

fn name(text: &str) -> TableName {
    TableName::parse(text).expect("table name")
}

async fn exists(db: &Db, relation: &str) -> bool {
    db.client
        .query_one("select to_regclass($1) is not null", &[&relation])
        .await
        .expect("lookup")
        .get(0)
}

#[tokio::test]
async fn installing_twice_changes_nothing_and_an_older_install_is_upgraded_in_place() {
    let db = Db::empty("upgrade").await;
    let v1 = InstallOptions {
        target_version: Some(1),
        ..InstallOptions::default()
    };
    let report = pgtrail_triggers::install(&db.url, &v1)
        .await
        .expect("install v1");
    assert_eq!((report.from_version, report.to_version), (0, 1));
    db.sql("create table t (id int primary key, v text)").await;
    pgtrail_triggers::track(&db.client, &name("t"), &TrackOptions::default())
        .await
        .expect("track on v1");
    db.sql("insert into t values (1, 'before upgrade')").await;

    let report = pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("upgrade");
    assert_eq!(
        (report.from_version, report.to_version),
        (1, migrations::latest_version())
    );
    assert_eq!(
        report.regenerated, 1,
        "the tracked table's capture is rewritten"
    );
    let again = pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("again");
    assert!(again.applied.is_empty(), "{again:?}");

    db.sql("insert into t values (2, 'after upgrade')").await;
    assert_eq!(
        db.row_events("t").await.len(),
        2,
        "nothing lost across the upgrade"
    );
}

#[tokio::test]
async fn rows_captured_before_an_upgrade_are_sealed_after_it_with_the_same_keys_and_identity() {
    let db = Db::empty("upgrade_pending").await;
    let v2 = InstallOptions {
        target_version: Some(2),
        ..InstallOptions::default()
    };
    pgtrail_triggers::install(&db.url, &v2)
        .await
        .expect("install v2");
    db.sql(
        "create table accounts (id bigint primary key, balance numeric(12,2));
         create table readings (at date, value int);
         create table shifts (day date, n int, note text, primary key (day, n));
         create table people (id int primary key, email text);",
    )
    .await;
    for table in ["accounts", "readings", "shifts"] {
        pgtrail_triggers::track(&db.client, &name(table), &TrackOptions::default())
            .await
            .expect("track");
    }
    let masked = TrackOptions {
        mask: vec!["email".into(), "id".into()],
        mask_mode: MaskMode::Redact,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &name("people"), &masked)
        .await
        .expect("track people");
    // The same writes before and after the upgrade, on different rows.
    let writes = |user: &str, id: i32| {
        format!(
            "begin;
             set local pgtrail.\"user\" = '{user}';
             insert into accounts values ({id}, 10.50);
             update accounts set balance = 11.00 where id = {id};
             insert into readings values ('2026-01-0{id}', {id});
             update readings set value = value + 1 where at = '2026-01-0{id}';
             insert into shifts values ('2026-02-0{id}', {id}, 'a');
             delete from shifts where n = {id};
             insert into people values ({id}, 'p{id}@example.com');
             delete from accounts where id = {id};
             commit;"
        )
    };
    db.sql(&writes("before@example.com", 1)).await;
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.inbox where kind = 'r'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 8, "captured by v2 triggers, not sealed yet");

    let report = pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("upgrade");
    assert_eq!(
        (report.from_version, report.to_version, report.regenerated),
        (2, migrations::latest_version(), 4)
    );
    db.sql(&writes("after@example.com", 2)).await;

    let events: Vec<_> = db
        .sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == pgtrail_core::Kind::RowChange)
        .collect();
    assert_eq!(events.len(), 16, "nothing lost across the upgrade");
    let (before, after) = events.split_at(8);
    for (b, a) in before.iter().zip(after) {
        assert_eq!(b.table, a.table);
        assert_eq!(b.operation, a.operation);
        assert_eq!(b.changed, a.changed, "{b:?} / {a:?}");
        assert_eq!(b.app_user.as_deref(), Some("before@example.com"));
        assert_eq!(a.app_user.as_deref(), Some("after@example.com"));
        assert_eq!(
            b.context, a.context,
            "no role or context noted on either side"
        );
        let b_keys: Vec<_> = b.pk.iter().flat_map(|pk| pk.keys()).collect();
        let a_keys: Vec<_> = a.pk.iter().flat_map(|pk| pk.keys()).collect();
        assert_eq!(b_keys, a_keys, "{b:?} / {a:?}");
    }
    assert_eq!(before[1].pk, Some(obj(r#"{"id": "1"}"#)));
    assert_eq!(after[1].pk, Some(obj(r#"{"id": "2"}"#)));
    assert_eq!(after[1].new, Some(obj(r#"{"balance": 11.00}"#)));
    assert_eq!(
        after[3].pk,
        Some(obj(r#"{"at": "2026-01-02", "value": "2"}"#)),
        "a keyless UPDATE is keyed by the old row"
    );
    assert_eq!(after[5].pk, Some(obj(r#"{"day": "2026-02-02", "n": "2"}"#)));
    assert_eq!(
        after[6].pk,
        Some(obj(r#"{"id": "***"}"#)),
        "a masked key stays masked"
    );
    assert_eq!(after[6].new.as_ref().expect("new")["email"], json!("***"));
    assert_eq!(
        after[7].old.as_ref().expect("old")["balance"].to_string(),
        "11.00",
        "a DELETE keeps the whole old row, numbers exact"
    );
    let report = verify(&db.store().await, None).await.expect("verify");
    assert!(report.ok(), "{report:?}");
}

#[tokio::test]
async fn a_role_without_privileges_is_told_what_is_missing_and_nothing_is_created() {
    let db = Db::empty("weak_role").await;
    db.sql("create role weak login").await;
    let url = db.url.replacen("postgres@", "weak@", 1);
    let err = pgtrail_triggers::install(&url, &InstallOptions::default())
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(matches!(err, Error::MissingPrivileges { .. }), "{err:?}");
    assert!(
        text.contains("weak") && text.contains("event triggers") && text.contains("CREATEROLE"),
        "{text}"
    );
    assert!(!exists(&db, "pgtrail.events").await);
}

#[tokio::test]
async fn a_connection_lost_mid_install_leaves_nothing_behind() {
    let db = Db::empty("lost_connection").await;
    // The store exists; the trigger migrations will block on a lock we hold.
    pgtrail_store::postgres::PostgresStore::connect(&db.url)
        .await
        .expect("store");
    let blocker = db.session().await;
    blocker
        .batch_execute("begin; lock table pgtrail.events in access exclusive mode")
        .await
        .expect("lock");
    let url = db.url.clone();
    let install =
        tokio::spawn(
            async move { pgtrail_triggers::install(&url, &InstallOptions::default()).await },
        );

    let mut waiting = None;
    for _ in 0..200 {
        let row = db
            .client
            .query_opt(
                "select pid from pg_stat_activity where wait_event_type = 'Lock' and pid <> pg_backend_pid() \
                 and query like '%pgtrail%'",
                &[],
            )
            .await
            .expect("activity");
        if let Some(row) = row {
            waiting = Some(row.get::<_, i32>(0));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = waiting.expect("the install waits on the lock, halfway through");
    db.sql(&format!("select pg_terminate_backend({pid})")).await;
    let result = install.await.expect("join");
    assert!(result.is_err(), "{result:?}");
    blocker.batch_execute("rollback").await.expect("unlock");

    for relation in [
        "pgtrail.inbox",
        "pgtrail.tracked",
        "pgtrail.trigger_migrations",
    ] {
        assert!(!exists(&db, relation).await, "{relation} was rolled back");
    }
    let event_triggers: i64 = db
        .client
        .query_one(
            "select count(*) from pg_event_trigger where evtname like 'pgtrail%'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(event_triggers, 0);
    // And a later install succeeds.
    pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("retry");
}

#[tokio::test]
async fn bad_tables_and_columns_get_clear_errors() {
    let db = Db::installed("bad_input").await;
    db.sql("create table t (id int primary key, email text); create view v as select * from t;")
        .await;
    let err = pgtrail_triggers::track(&db.client, &name("nope"), &TrackOptions::default())
        .await
        .expect_err("no table");
    assert!(matches!(err, Error::NoSuchTable { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"));

    let options = TrackOptions {
        mask: vec!["emial".into()],
        ..TrackOptions::default()
    };
    let err = pgtrail_triggers::track(&db.client, &name("t"), &options)
        .await
        .expect_err("no column");
    assert!(err.to_string().contains("emial"), "{err}");

    let err = pgtrail_triggers::track(&db.client, &name("v"), &TrackOptions::default())
        .await
        .expect_err("a view");
    assert!(err.to_string().contains("not a table"), "{err}");

    let err = pgtrail_triggers::track(&db.client, &name("pgtrail.inbox"), &TrackOptions::default())
        .await
        .expect_err("pgtrail's own table");
    assert!(err.to_string().contains("own table"), "{err}");

    let plain = Db::empty("not_installed").await;
    let err = pgtrail_triggers::track(&plain.client, &name("t"), &TrackOptions::default())
        .await
        .expect_err("not installed");
    assert!(matches!(err, Error::NotInstalled), "{err:?}");
}

#[tokio::test]
async fn uninstall_seals_and_keeps_the_trail_unless_asked_to_drop_it() {
    let db = Db::installed("uninstall").await;
    db.sql("create table t (id int primary key)").await;
    pgtrail_triggers::track(&db.client, &name("t"), &TrackOptions::default())
        .await
        .expect("track");
    db.sql("insert into t values (1)").await;
    pgtrail_triggers::uninstall(&db.url, false)
        .await
        .expect("uninstall");
    let triggers: i64 = db
        .client
        .query_one(
            "select count(*) from pg_trigger where tgrelid = 't'::regclass",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(triggers, 0);
    db.sql("insert into t values (2); create table after_uninstall (id int)")
        .await;
    let events = db.store().await;
    let sealed = pgtrail_store::Store::scan(&events, 0, 1000)
        .await
        .expect("scan");
    let inserts: Vec<_> = sealed
        .iter()
        .filter(|e| e.table.as_deref() == Some("t") && e.operation.as_deref() == Some("INSERT"))
        .collect();
    assert_eq!(
        inserts.len(),
        1,
        "the pending insert was sealed, the later one not captured"
    );
    assert!(sealed
        .iter()
        .all(|e| e.table.as_deref() != Some("after_uninstall")));

    pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("reinstall");
    pgtrail_triggers::uninstall(&db.url, true)
        .await
        .expect("uninstall --drop-data");
    assert!(!exists(&db, "pgtrail.events").await);
}

#[tokio::test]
async fn status_counts_events_per_table() {
    let db = Db::installed("status").await;
    db.sql("create table a (id int primary key); create table b (x int)")
        .await;
    pgtrail_triggers::track(&db.client, &name("a"), &TrackOptions::default())
        .await
        .expect("track a");
    pgtrail_triggers::track(&db.client, &name("b"), &TrackOptions::default())
        .await
        .expect("track b");
    db.sql("insert into a select generate_series(1, 3); insert into b values (1)")
        .await;
    db.drain().await;
    db.sql("insert into a values (4)").await;
    let status = pgtrail_triggers::status(&db.client).await.expect("status");
    assert_eq!(status.tables.len(), 2);
    let a = &status.tables[0];
    assert_eq!((a.tracked.table.as_str(), a.events, a.pending), ("a", 3, 1));
    assert!(a.last_event_at.is_some());
    assert!(status.tables[1].capture.contains("full row"));
    assert!(status.commit_timestamps);
}
