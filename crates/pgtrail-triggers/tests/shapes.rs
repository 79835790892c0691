//! Row images stored as typed rows (migration 4's shapes): the sealed
//! events are the same as when the trigger wrote JSON itself, whatever
//! happened to the table between capture and sealing.

use pgtrail_core::filter::TableName;
use pgtrail_core::Event;
use pgtrail_triggers::{migrations, InstallOptions, TrackOptions};
use serde_json::{json, Value};

use crate::support::Db;

fn name(text: &str) -> TableName {
    TableName::parse(text).expect("table name")
}

async fn track(db: &Db, table: &str) {
    pgtrail_triggers::track(&db.client, &name(table), &TrackOptions::default())
        .await
        .expect("track");
}

async fn count(db: &Db, sql: &str) -> i64 {
    db.client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// The new image of an event, as JSON text (key order as stored).
fn new_text(event: &Event) -> String {
    serde_json::to_string(event.new.as_ref().expect("new image")).expect("json")
}

/// A table with a column of most built-in types and awkward values.
const WIDE_TABLE: &str = "create table wide (
    id bigint primary key, flag boolean, small smallint, whole int, amount numeric(12,2), huge numeric,
    label text, code varchar(5), fixed char(4), uid uuid, doc json, bin_doc jsonb, day date,
    clock time, local_at timestamp, at timestamptz, addr inet, ids int[], words text[], ats timestamptz[],
    nothing text)";

/// The same row values, one id each time.
fn wide_insert(id: i32) -> String {
    format!(
        "insert into wide values ({id}, true, -3, 2147483647, 10.50, 'NaN', \
         E'quote \" backslash \\\\ newline \\n tab \\t unicode \u{e9}\u{1F600}', 'ab', 'xy', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{\"b\": [1, 2.50], \"a\": null}}', '{{\"b\": 1, \"a\": [true]}}', \
         'infinity', '12:34:56.789', '2026-01-02 03:04:05.123456', '2026-01-02 03:04:05.123456+02', \
         '192.168.0.1/24', '{{1,NULL,3}}', '{{\"x y\",\"\"}}', '{{\"2026-03-04 05:06:07+00\"}}', null);
         update wide set amount = 11.00, words = '{{z}}' where id = {id};"
    )
}

#[tokio::test]
async fn images_stored_as_rows_seal_exactly_as_the_json_the_trigger_used_to_write() {
    let db = Db::empty("shapes_upgrade").await;
    let v3 = InstallOptions {
        target_version: Some(3),
        ..InstallOptions::default()
    };
    pgtrail_triggers::install(&db.url, &v3)
        .await
        .expect("install v3");
    db.sql(WIDE_TABLE).await;
    track(&db, "wide").await;
    // Written by migration 3's trigger (JSON in the trigger), not sealed
    // before the upgrade.
    db.sql(&wide_insert(1)).await;
    assert_eq!(
        count(&db, "select count(*) from pgtrail.inbox where kind = 'r'").await,
        2
    );

    let report = pgtrail_triggers::install(&db.url, &InstallOptions::default())
        .await
        .expect("upgrade");
    assert_eq!(report.to_version, migrations::latest_version());
    assert_eq!(
        count(&db, "select count(*) from pgtrail.shapes where current").await,
        1,
        "the table now has a shape"
    );
    db.sql(&wide_insert(2)).await;
    assert_eq!(
        count(&db, "select count(*) from pgtrail.inbox where kind = 'r'").await,
        2,
        "new rows go to the shape's table"
    );

    let events = db.row_events("wide").await;
    assert_eq!(events.len(), 4, "nothing lost across the upgrade");
    let (before, after) = events.split_at(2);
    let renumbered = |event: &Event| new_text(event).replacen(r#""id":2"#, r#""id":1"#, 1);
    assert_eq!(new_text(&before[0]), renumbered(&after[0]));
    assert_eq!(before[1].old, after[1].old);
    assert_eq!(before[1].new, after[1].new);
    assert_eq!(after[1].changed, ["amount", "words"]);
    assert_eq!(
        after[0].pk,
        Some(json!({"id": "2"}).as_object().cloned().expect("object"))
    );
    let new = after[0].new.as_ref().expect("new image");
    assert_eq!(new["at"], json!("2026-01-02T01:04:05.123456+00:00"));
    assert_eq!(new["huge"].to_string(), "\"NaN\"");
    assert_eq!(new["amount"].to_string(), "10.50");
    assert_eq!(new["ids"], json!([1, null, 3]));
    assert_eq!(new["nothing"], Value::Null);
    assert_eq!(
        count(&db, "select count(*) from pgtrail.pending").await,
        0,
        "sealed rows are gone from every inbox table"
    );
}

#[tokio::test]
async fn a_row_is_sealed_with_the_columns_it_had_when_captured_whatever_alter_table_did_since() {
    let db = Db::installed("shapes_alter").await;
    db.sql("create table items (id int primary key, name text, qty int, price numeric(6,2))")
        .await;
    track(&db, "items").await;
    // Each write is followed by a change to the table before anything is
    // sealed; the last writes happen in the same transaction as the DDL.
    db.sql(
        "insert into items values (1, 'pen', 3, 1.50);
         alter table items add column note text;
         insert into items values (2, 'ink', 4, 2.25, 'blue');
         alter table items drop column qty;
         insert into items values (3, 'pad', 9.99, 'lined');
         alter table items rename column name to title;
         insert into items values (4, 'cap', 0.10, null);
         begin;
         alter table items alter column price type text;
         insert into items values (5, 'box', '7.00', 'x');
         alter table items rename to goods;
         insert into goods values (6, 'bag', '1', 'y');
         commit;",
    )
    .await;
    let sealed = db.sealed_events().await;
    let ddl: Vec<_> = sealed
        .iter()
        .filter(|e| e.kind == pgtrail_core::Kind::Ddl)
        .filter_map(|e| e.command_tag.as_deref())
        .collect();
    assert!(
        ddl.iter()
            .all(|tag| ["CREATE TABLE", "CREATE INDEX", "ALTER TABLE"].contains(tag))
            && ddl.len() >= 7,
        "the application's DDL, not the shapes pgtrail made for it: {ddl:?}"
    );
    let events: Vec<_> = sealed
        .into_iter()
        .filter(|e| e.kind == pgtrail_core::Kind::RowChange)
        .collect();
    let images: Vec<_> = events.iter().map(new_text).collect();
    assert_eq!(
        images,
        [
            r#"{"id":1,"name":"pen","price":1.50,"qty":3}"#,
            r#"{"id":2,"name":"ink","note":"blue","price":2.25,"qty":4}"#,
            r#"{"id":3,"name":"pad","note":"lined","price":9.99}"#,
            r#"{"id":4,"note":null,"price":0.10,"title":"cap"}"#,
            r#"{"id":5,"note":"x","price":"7.00","title":"box"}"#,
            r#"{"id":6,"note":"y","price":"1","title":"bag"}"#,
        ]
    );
    let tables: Vec<_> = events.iter().map(|e| e.table.as_deref()).collect();
    assert_eq!(
        tables,
        [
            Some("items"),
            Some("items"),
            Some("items"),
            Some("items"),
            Some("items"),
            Some("goods")
        ]
    );
    // Shapes no longer written to are dropped once sealed (at the next
    // change of the table).
    db.sql("alter table goods add column extra int").await;
    assert_eq!(count(&db, "select count(*) from pgtrail.shapes").await, 1);
    assert_eq!(
        count(
            &db,
            "select count(*) from pg_class where relnamespace = 'pgtrail'::regnamespace and relkind = 'r' and relname like 'inbox\\_%'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn timestamps_with_zone_keep_the_writers_offset() {
    let db = Db::installed("shapes_zone").await;
    db.sql("create table visits (id int primary key, at timestamptz, ats timestamptz[])")
        .await;
    track(&db, "visits").await;
    db.sql(
        "set timezone = 'Asia/Kolkata';
         insert into visits values (1, '2026-01-02 03:04:05+00', '{\"2026-01-02 03:04:05+00\"}');
         set timezone = 'America/New_York';
         insert into visits values (2, '2026-01-02 03:04:05+00', null);
         reset timezone;",
    )
    .await;
    let events = db.row_events("visits").await;
    let at: Vec<_> = events
        .iter()
        .map(|e| e.new.as_ref().expect("new")["at"].clone())
        .collect();
    assert_eq!(
        at,
        [
            json!("2026-01-02T08:34:05+05:30"),
            json!("2026-01-01T22:04:05-05:00")
        ]
    );
    assert_eq!(
        events[0].new.as_ref().expect("new")["ats"],
        json!(["2026-01-02T08:34:05+05:30"])
    );
}

#[tokio::test]
async fn tables_a_shape_cannot_serve_exactly_keep_json_images() {
    let db = Db::installed("shapes_fallback").await;
    db.sql(
        "create type mood as enum ('ok', 'meh');
         create table feelings (id int primary key, mood mood);
         create table floats (id int primary key, x float8);",
    )
    .await;
    track(&db, "feelings").await;
    track(&db, "floats").await;
    db.sql(
        "insert into feelings values (1, 'ok');
         set extra_float_digits = 0;
         insert into floats values (1, 0.1 + 0.2);",
    )
    .await;
    assert_eq!(count(&db, "select count(*) from pgtrail.shapes").await, 0);
    assert_eq!(
        count(&db, "select count(*) from pgtrail.inbox where kind = 'r'").await,
        2
    );
    let events = db.sealed_events().await;
    let new: Vec<_> = events
        .iter()
        .filter(|e| e.kind == pgtrail_core::Kind::RowChange)
        .map(new_text)
        .collect();
    assert_eq!(new, [r#"{"id":1,"mood":"ok"}"#, r#"{"id":1,"x":0.3}"#]);
}

#[tokio::test]
async fn a_table_changed_in_replica_mode_still_gets_its_new_shape() {
    // Tools that apply DDL as replicas (pglogical's replicate_ddl_command,
    // some migration runners) set session_replication_role = replica, which
    // silences ordinary event triggers: the shape must follow anyway, or
    // later writes would be stored under the old column names.
    let db = Db::installed("shapes_replica").await;
    db.sql("create table items (id int primary key, a text, b text)")
        .await;
    track(&db, "items").await;
    db.sql(
        "set session_replication_role = replica;
         alter table items drop column a;
         alter table items add column c text;
         reset session_replication_role;
         insert into items values (1, 'bee', 'sea');",
    )
    .await;
    let events: Vec<_> = db.row_events("items").await;
    let images: Vec<_> = events.iter().map(new_text).collect();
    assert_eq!(images, [r#"{"b":"bee","c":"sea","id":1}"#]);
}
