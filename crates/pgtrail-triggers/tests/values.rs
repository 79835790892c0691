//! One bad value never stops capture: an application role writes jsonb as
//! deep as Postgres accepts, the serde marker key, NUL through `\u0000` in
//! a json column and through `%00` in a sqlcommenter value, and a repeated
//! key in a json column. Each row is sealed (exactly, or as a quarantine
//! event where the Postgres store cannot hold it), later rows are sealed,
//! nothing stays pending, and `verify` passes.

use pgtrail_core::filter::TableName;
use pgtrail_core::{json, quarantine, Event, Kind};
use pgtrail_triggers::TrackOptions;
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::support::Db;

/// jsonb text nested `levels` deep: objects and arrays alternating.
fn nested(levels: usize) -> String {
    let mut text = String::new();
    for level in 0..levels {
        text.push_str(if level % 2 == 0 { "{\"k\":" } else { "[" });
    }
    text.push_str("1.50");
    for level in (0..levels).rev() {
        text.push(if level % 2 == 0 { '}' } else { ']' });
    }
    text
}

/// The deepest jsonb this server accepts (with its settings), by bisection.
async fn deepest_jsonb(client: &Client) -> usize {
    let (mut accepted, mut refused) = (100, 100_000);
    while refused - accepted > 1 {
        let levels = (accepted + refused) / 2;
        let ok = client
            .query_one("select $1::text::jsonb is not null", &[&nested(levels)])
            .await
            .is_ok();
        if ok {
            accepted = levels;
        } else {
            refused = levels;
        }
    }
    accepted
}

fn doc(event: &Event, column: &str) -> Value {
    event
        .new
        .as_ref()
        .and_then(|new| new.get(column))
        .map(json::clone)
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn no_value_stops_trigger_capture() {
    let db = Db::installed("values").await;
    db.sql(
        "create table docs (id int primary key, doc jsonb, raw json);
         create role app login;
         grant select, insert, update on docs to app;",
    )
    .await;
    let docs = TableName::parse("docs").expect("name");
    let with_sql = TrackOptions {
        capture_sql: true,
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &docs, &with_sql)
        .await
        .expect("track");
    let deepest = deepest_jsonb(&db.client).await;
    assert!(deepest > 5_000, "Postgres accepts {deepest} levels");

    let app = db.session_as("app").await;
    let insert = "insert into docs (id, doc, raw) values ($1, $2::text::jsonb, $3::text::json)";
    let marker = r#"{"$serde_json::private::Number": "42"}"#;
    let rows: [(i32, Option<String>, Option<&str>); 5] = [
        (1, Some(nested(deepest)), None),
        (2, Some(nested(5_000)), None),
        (3, Some(marker.to_string()), Some(marker)),
        (4, None, Some(r#"{"a": "x\u0000y", "a": 1}"#)),
        (5, Some("{}".into()), Some("[]")),
    ];
    for (id, doc, raw) in &rows {
        app.execute(insert, &[id, doc, raw])
            .await
            .expect("the application writes");
    }
    // NUL through a sqlcommenter value: a text column of the Postgres store
    // cannot hold it.
    app.batch_execute("update docs set raw = '1' where id = 5 /*user='mal%00lory'*/")
        .await
        .expect("update");
    app.batch_execute("insert into docs (id) values (6)")
        .await
        .expect("a later row");

    let report = db.drain().await;
    assert!(report.events >= 7, "{report:?}");
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.pending", &[])
        .await
        .expect("pending")
        .get(0);
    assert_eq!(pending, 0, "nothing stays pending");

    let events = db.sealed_events().await;
    let row = |id: i32, operation: &str| -> &Event {
        events
            .iter()
            .find(|e| {
                e.operation.as_deref() == Some(operation)
                    && e.pk.as_ref().and_then(|pk| pk.get("id")) == Some(&json!(id.to_string()))
                    || e.kind == Kind::Quarantine
                        && e.operation.as_deref() == Some(operation)
                        && quarantined(e).pk.as_ref().and_then(|pk| pk.get("id"))
                            == Some(&json!(id.to_string()))
            })
            .unwrap_or_else(|| panic!("row {id} {operation} was sealed: {events:#?}"))
    };

    // As deep as Postgres accepts: past what the Postgres store keeps
    // (10,000 levels), a quarantine event holding every byte.
    let deep = row(1, "INSERT");
    let stored: String = db
        .client
        .query_one("select doc::text from docs where id = 1", &[])
        .await
        .expect("doc")
        .get(0);
    let expected = json::parse(&stored).expect("jsonb text");
    if deepest + 1 > 10_000 {
        assert_eq!(deep.kind, Kind::Quarantine);
        let reason = deep.context.as_ref().expect("context")["reason"].clone();
        assert!(
            reason.as_str().is_some_and(|r| r.contains("nested")),
            "{reason}"
        );
        assert!(json::eq(&doc(&quarantined(deep), "doc"), &expected));
    } else {
        assert!(json::eq(&doc(deep, "doc"), &expected));
    }
    json::drop_deep(expected);

    // 5,000 levels: kept exactly.
    let five = row(2, "INSERT");
    assert_eq!(five.kind, Kind::RowChange);
    let expected = json::parse(&nested(5_000)).expect("json");
    assert!(json::eq(&doc(five, "doc"), &expected));
    json::drop_deep(expected);

    // The marker key is an ordinary key, in jsonb and json.
    let marked = row(3, "INSERT");
    let object = json!({"$serde_json::private::Number": "42"});
    assert_eq!(doc(marked, "doc"), object);
    assert_eq!(doc(marked, "raw"), object);

    // NUL in a json value is kept; of a repeated key the last value is
    // kept and the earlier one recorded.
    let nul = row(4, "INSERT");
    assert_eq!(nul.kind, Kind::RowChange);
    assert_eq!(doc(nul, "raw"), json!({"a": 1}));
    assert_eq!(
        nul.context.as_ref().expect("context")["pgtrail_duplicate_keys"],
        json!({"new": [{"path": "/raw/a", "dropped": "x\u{0}y"}]})
    );

    // NUL in the sqlcommenter user: a quarantine event keeps every byte.
    let commented = row(5, "UPDATE");
    assert_eq!(commented.kind, Kind::Quarantine);
    let original = quarantined(commented);
    assert_eq!(original.app_user.as_deref(), Some("mal\0lory"));
    assert_eq!(
        commented.context.as_ref().expect("context")["source_position"],
        json!(format!("xid {}, row 0", original.xid.expect("xid")))
    );

    // Capture went on.
    let later = row(6, "INSERT");
    assert_eq!(later.kind, Kind::RowChange);

    let store = db.store().await;
    let verified = pgtrail_store::verify(&store, None)
        .await
        .expect("verify runs");
    assert!(verified.ok(), "{verified:?}");
}

/// The event a quarantine event stands for.
fn quarantined(event: &Event) -> Event {
    let raw = quarantine::raw(event).expect("raw bytes");
    serde_json::from_slice(&raw).expect("the original event")
}

/// Someone who can write the inbox (its owner, a superuser) puts in a row
/// the triggers never write: it becomes a quarantine event holding the
/// row's text, and sealing goes on with the later rows.
#[tokio::test]
async fn an_inbox_row_that_is_not_an_event_is_quarantined() {
    let db = Db::installed("bad_inbox").await;
    db.sql("create table t (id int primary key, v text)").await;
    let t = TableName::parse("t").expect("name");
    pgtrail_triggers::track(&db.client, &t, &TrackOptions::default())
        .await
        .expect("track");
    db.sql(
        "insert into pgtrail.inbox (kind, operation, schema_name, table_name, pk, new) \
         values ('r', 'INSERT', 'public', 't', '42', '{\"id\": 1}')",
    )
    .await;
    db.sql("insert into t values (2, 'b')").await;

    let events = db.sealed_events().await;
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.pending", &[])
        .await
        .expect("pending")
        .get(0);
    assert_eq!(pending, 0, "nothing stays pending");
    let rows: Vec<&Event> = events
        .iter()
        .filter(|e| e.table.as_deref() == Some("t") && e.kind != Kind::Ddl)
        .collect();
    assert_eq!(rows.len(), 2, "{events:#?}");
    assert_eq!(rows[0].kind, Kind::Quarantine);
    let reason = &rows[0].context.as_ref().expect("context")["reason"];
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.starts_with("inbox row: ") && r.contains("pk")),
        "{reason}"
    );
    assert_eq!(doc(&quarantined(rows[0]), "pk"), json!("42"));
    assert_eq!(rows[1].kind, Kind::RowChange);
    let store = db.store().await;
    let verified = pgtrail_store::verify(&store, None)
        .await
        .expect("verify runs");
    assert!(verified.ok(), "{verified:?}");
}
