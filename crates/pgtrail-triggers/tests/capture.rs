//! Row changes: what INSERT, UPDATE, DELETE and TRUNCATE record, with types
//! preserved, only changed columns on UPDATE, and nothing for no-op updates.

use pgtrail_core::filter::TableName;
use pgtrail_triggers::{CaptureMode, MaskMode, TrackOptions};
use serde_json::json;

use crate::support::{obj, Db};

fn table(name: &str) -> TableName {
    TableName::parse(name).expect("table name")
}

#[tokio::test]
async fn insert_update_delete_truncate_are_recorded_with_types_preserved() {
    crud(CaptureMode::Row).await;
}

#[tokio::test]
async fn insert_update_delete_truncate_are_recorded_with_types_preserved_in_statement_mode() {
    crud(CaptureMode::Statement).await;
}

async fn crud(mode: CaptureMode) {
    let db = Db::installed("crud").await;
    db.sql(
        "create table accounts (id bigint primary key, name text, balance numeric(12,2), \
         opened timestamptz, tags text[], prefs json, active boolean)",
    )
    .await;
    pgtrail_triggers::track(
        &db.client,
        &table("accounts"),
        &TrackOptions {
            mode,
            ..TrackOptions::default()
        },
    )
    .await
    .expect("track");
    db.sql(
        "insert into accounts values (1, 'Ann', 10.50, '2026-01-02 03:04:05.123456+02', '{a,b}', '{\"x\": [1, 2.50]}', true);
         update accounts set balance = 99999999.99, name = 'Anne' where id = 1;
         update accounts set name = 'Anne' where id = 1;
         delete from accounts where id = 1;
         insert into accounts (id, name) values (2, 'Bo');
         truncate accounts;",
    )
    .await;

    let events = db.row_events("accounts").await;
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e.operation.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(
        ops,
        ["INSERT", "UPDATE", "DELETE", "INSERT", "TRUNCATE"],
        "the no-op UPDATE logs nothing"
    );

    let insert = &events[0];
    assert_eq!(insert.pk, Some(obj(r#"{"id": "1"}"#)));
    let new = insert.new.as_ref().expect("new image");
    assert_eq!(
        serde_json::to_string(&new["balance"]).expect("json"),
        "10.50",
        "numeric keeps its scale"
    );
    assert_eq!(
        new["opened"],
        json!("2026-01-02T01:04:05.123456+00:00"),
        "timestamptz with zone"
    );
    assert_eq!(new["tags"], json!(["a", "b"]));
    assert_eq!(
        serde_json::to_string(&new["prefs"]).expect("json"),
        r#"{"x":[1,2.50]}"#
    );
    assert_eq!(new["active"], json!(true));
    assert_eq!(insert.schema.as_deref(), Some("public"));

    let update = &events[1];
    assert_eq!(update.changed, ["balance", "name"]);
    assert_eq!(
        update.old,
        Some(obj(r#"{"balance": 10.50, "name": "Ann"}"#))
    );
    assert_eq!(
        serde_json::to_string(&update.new).expect("json"),
        r#"{"balance":99999999.99,"name":"Anne"}"#,
        "only changed columns, numbers exact"
    );
    assert_eq!(
        events[2].old.as_ref().expect("old image")["name"],
        json!("Anne")
    );
    assert!(events[4].pk.is_none(), "TRUNCATE concerns the table");
    for e in &events {
        assert!(
            e.xid.is_some() && e.committed_at.is_some() && e.hash.is_some(),
            "{e:?}"
        );
    }
}

#[tokio::test]
async fn ignored_columns_alone_log_nothing_and_composite_keys_have_every_column() {
    ignored_and_composite(CaptureMode::Row).await;
}

#[tokio::test]
async fn ignored_columns_alone_log_nothing_and_composite_keys_have_every_column_in_statement_mode()
{
    ignored_and_composite(CaptureMode::Statement).await;
}

async fn ignored_and_composite(mode: CaptureMode) {
    let db = Db::installed("ignored").await;
    db.sql(
        "create table memberships (org text, member int, role text, updated_at timestamptz, \
         last_login_at timestamptz, primary key (org, member))",
    )
    .await;
    let options = TrackOptions {
        ignore: vec!["updated_at".into(), "last_login_at".into()],
        mode,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &table("public.memberships"), &options)
        .await
        .expect("track");
    db.sql(
        "insert into memberships values ('acme', 7, 'viewer', now(), null);
         update memberships set last_login_at = now(), updated_at = now();
         update memberships set role = 'editor', updated_at = now() + interval '1 minute';",
    )
    .await;
    let events = db.row_events("memberships").await;
    let ops: Vec<&str> = events
        .iter()
        .map(|e| e.operation.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(ops, ["INSERT", "UPDATE"]);
    assert_eq!(events[1].pk, Some(obj(r#"{"org": "acme", "member": "7"}"#)));
    assert!(events[1].changed.contains(&"role".to_string()));
}

#[tokio::test]
async fn a_bulk_update_pairs_every_old_row_with_its_new_row_even_when_keys_change() {
    bulk_pairs(CaptureMode::Row).await;
}

#[tokio::test]
async fn a_bulk_update_pairs_every_old_row_with_its_new_row_even_when_keys_change_in_statement_mode(
) {
    bulk_pairs(CaptureMode::Statement).await;
}

async fn bulk_pairs(mode: CaptureMode) {
    let db = Db::installed("bulk").await;
    db.sql("create table items (id int primary key, qty int)")
        .await;
    pgtrail_triggers::track(
        &db.client,
        &table("items"),
        &TrackOptions {
            mode,
            ..TrackOptions::default()
        },
    )
    .await
    .expect("track");
    db.sql(
        "insert into items select i, i from generate_series(1, 1000) i;
         update items set qty = qty * 2 where id % 2 = 0;
         update items set id = id + 10000 where id <= 3;",
    )
    .await;
    let events = db.row_events("items").await;
    assert_eq!(events.len(), 1000 + 500 + 3);
    for e in &events[1000..1500] {
        let id: i64 = e.pk.as_ref().expect("pk")["id"]
            .as_str()
            .expect("text")
            .parse()
            .expect("number");
        assert_eq!(e.old.as_ref().expect("old")["qty"], json!(id));
        assert_eq!(e.new.as_ref().expect("new")["qty"], json!(id * 2));
    }
    for e in &events[1500..] {
        let old_id = e.old.as_ref().expect("old")["id"].as_i64().expect("id");
        assert_eq!(
            e.new.as_ref().expect("new")["id"],
            json!(old_id + 10000),
            "{e:?}"
        );
        assert_eq!(
            e.pk,
            Some(obj(&format!(r#"{{"id": "{}"}}"#, old_id + 10000)))
        );
    }
}

#[tokio::test]
async fn a_table_without_primary_key_uses_the_full_row_and_says_so() {
    keyless(CaptureMode::Row).await;
}

#[tokio::test]
async fn a_table_without_primary_key_uses_the_full_row_and_says_so_in_statement_mode() {
    keyless(CaptureMode::Statement).await;
}

async fn keyless(mode: CaptureMode) {
    let db = Db::installed("keyless").await;
    db.sql("create table log_lines (at date, line text)").await;
    let tracked = pgtrail_triggers::track(
        &db.client,
        &table("log_lines"),
        &TrackOptions {
            mode,
            ..TrackOptions::default()
        },
    )
    .await
    .expect("track");
    assert!(tracked.key_columns.is_empty());
    db.sql(
        "insert into log_lines values ('2026-01-01', 'hello');
         update log_lines set line = 'bye';",
    )
    .await;
    let events = db.row_events("log_lines").await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].pk,
        Some(obj(r#"{"at": "2026-01-01", "line": "hello"}"#)),
        "the old row identifies it"
    );
    for e in &events {
        assert_eq!(
            e.context.as_ref().expect("context")["pgtrail_identity"],
            json!("full_row")
        );
    }
}

#[tokio::test]
async fn masked_columns_are_hashed_with_a_key_or_redacted() {
    masked(CaptureMode::Row).await;
}

#[tokio::test]
async fn masked_columns_are_hashed_with_a_key_or_redacted_in_statement_mode() {
    masked(CaptureMode::Statement).await;
}

async fn masked(mode: CaptureMode) {
    let db = Db::installed("masked").await;
    db.sql(
        "create table people (id int primary key, email text, ssn text);
         create table cards (id int primary key, number text);",
    )
    .await;
    let hashed = TrackOptions {
        mask: vec!["email".into(), "ssn".into()],
        mode,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &table("people"), &hashed)
        .await
        .expect("track");
    let redacted = TrackOptions {
        mask: vec!["number".into()],
        mask_mode: MaskMode::Redact,
        mode,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &table("cards"), &redacted)
        .await
        .expect("track");
    db.sql(
        "insert into people values (1, 'a@example.com', null), (2, 'a@example.com', '123-45-6789');
         insert into cards values (1, '4111111111111111');",
    )
    .await;
    let people = db.row_events("people").await;
    let first = people[0].new.as_ref().expect("new");
    let second = people[1].new.as_ref().expect("new");
    assert_eq!(first["email"], second["email"], "equal values hash equal");
    let hash = first["email"].as_str().expect("text");
    assert_eq!(hash.len(), 64);
    assert_ne!(hash, "a@example.com");
    assert_ne!(
        hash,
        pgtrail_core::canonical::Hash::from(sha256_hex("a@example.com")),
        "keyed, not a bare hash"
    );
    assert!(first["ssn"].is_null(), "NULL stays NULL");
    let all = serde_json::to_string(&people).expect("json");
    assert!(
        !all.contains("a@example.com") && !all.contains("123-45-6789"),
        "{all}"
    );
    let cards = db.row_events("cards").await;
    assert_eq!(cards[0].new.as_ref().expect("new")["number"], json!("***"));
}

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_partitioned_table_is_recorded_under_its_own_name() {
    let db = Db::installed("partitioned").await;
    db.sql(
        "create table measurements (id int, at date, value numeric, primary key (id, at)) partition by range (at);
         create table measurements_2026 partition of measurements for values from ('2026-01-01') to ('2027-01-01');",
    )
    .await;
    pgtrail_triggers::track(&db.client, &table("measurements"), &TrackOptions::default())
        .await
        .expect("track");
    db.sql(
        "insert into measurements values (1, '2026-03-01', 1.5);
         update measurements set value = 2.5;",
    )
    .await;
    let events = db.row_events("measurements").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1].pk,
        Some(obj(r#"{"id": "1", "at": "2026-03-01"}"#))
    );
}

#[tokio::test]
async fn a_change_made_by_another_tracked_tables_trigger_is_recorded_after_it() {
    let db = Db::installed("nested").await;
    db.sql(
        "create table orders (id int primary key, total numeric);
         create table order_log (id serial primary key, order_id int, note text);
         create function log_order() returns trigger language plpgsql as $$
         begin
             insert into order_log (order_id, note) values (new.id, tg_op);
             return null;
         end $$;
         create trigger zz_log after insert or update on orders for each row execute function log_order();",
    )
    .await;
    for name in ["orders", "order_log"] {
        pgtrail_triggers::track(&db.client, &table(name), &TrackOptions::default())
            .await
            .expect("track");
    }
    db.sql("insert into orders values (1, 5); update orders set total = 6;")
        .await;
    let events: Vec<_> = db
        .sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == pgtrail_core::Kind::RowChange)
        .map(|mut e| {
            (
                e.table.take().unwrap_or_default(),
                e.operation.take().unwrap_or_default(),
            )
        })
        .collect();
    let expected = [
        ("orders", "INSERT"),
        ("order_log", "INSERT"),
        ("orders", "UPDATE"),
        ("order_log", "INSERT"),
    ];
    assert_eq!(
        events,
        expected.map(|(t, o)| (t.to_string(), o.to_string())),
        "pgtrail's trigger fires before zz_log's, both are recorded"
    );
}

#[tokio::test]
async fn keys_of_every_common_type_are_recorded_as_their_text() {
    let db = Db::installed("key_types").await;
    let keys = [
        ("k_int", "integer", "42", "42"),
        ("k_numeric", "numeric(6,2)", "12.50", "12.50"),
        (
            "k_uuid",
            "uuid",
            "'00000000-0000-0000-0000-00000000002a'",
            "00000000-0000-0000-0000-00000000002a",
        ),
        ("k_varchar", "varchar(10)", "'a\"b'", "a\"b"),
        ("k_char", "char(4)", "'ab'", "ab"),
        ("k_date", "date", "'2026-01-02'", "2026-01-02"),
        ("k_bool", "boolean", "true", "true"),
    ];
    for (name, column_type, value, _) in keys {
        db.sql(&format!(
            "create table {name} (k {column_type} primary key, v int);"
        ))
        .await;
        pgtrail_triggers::track(&db.client, &table(name), &TrackOptions::default())
            .await
            .expect("track");
        db.sql(&format!(
            "insert into {name} values ({value}, 1); update {name} set v = 2; delete from {name};"
        ))
        .await;
    }
    for (name, _, _, text) in keys {
        let events = db.row_events(name).await;
        assert_eq!(events.len(), 3, "{name}");
        for e in &events {
            assert_eq!(
                e.pk.as_ref().expect("pk")["k"],
                json!(text),
                "{name}: {e:?}"
            );
        }
    }
}

#[tokio::test]
async fn renaming_a_key_column_keeps_writes_and_events_and_tracking_again_restores_the_key() {
    let db = Db::installed("renamed_key").await;
    db.sql("create table accounts (id int primary key, name text)")
        .await;
    let accounts = table("accounts");
    pgtrail_triggers::track(&db.client, &accounts, &TrackOptions::default())
        .await
        .expect("track");
    db.sql(
        "insert into accounts values (1, 'a');
         alter table accounts rename column id to account_id;
         insert into accounts values (2, 'b');",
    )
    .await;
    pgtrail_triggers::track(&db.client, &accounts, &TrackOptions::default())
        .await
        .expect("track again");
    db.sql("insert into accounts values (3, 'c')").await;
    let events = db.row_events("accounts").await;
    let keys: Vec<_> = events.iter().map(|e| e.pk.clone()).collect();
    assert_eq!(
        keys,
        [
            Some(obj(r#"{"id": "1"}"#)),
            Some(obj(r#"{"account_id": "2", "name": "b"}"#)),
            Some(obj(r#"{"account_id": "3"}"#)),
        ]
    );
    assert_eq!(
        events[1].context.as_ref().expect("context")["pgtrail_identity"],
        json!("full_row"),
        "the event says its key is the whole row"
    );
}
