//! One bad value never stops logical replication capture: an application
//! role writes jsonb as deep as Postgres accepts, the serde marker key, NUL
//! through `\u0000` in a json column and in the context message, and
//! through `%00` in a sqlcommenter value. On both stores every change
//! arrives (exactly, or as a quarantine event where the Postgres store
//! cannot hold it), later changes too, and `verify` passes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_core::{json, quarantine, Event, Kind};
use pgtrail_store::Store;
use serde_json::{json, Value};

use crate::common::*;

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
async fn deepest_jsonb(client: &tokio_postgres::Client) -> usize {
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

/// The event a quarantine event stands for, or the event itself.
fn original(event: &Event) -> Event {
    if event.kind != Kind::Quarantine {
        return event.clone();
    }
    let raw = quarantine::raw(event).expect("raw bytes");
    serde_json::from_slice(&raw).expect("the original event")
}

fn column(event: &Event, name: &str) -> Value {
    event
        .new
        .as_ref()
        .and_then(|new| new.get(name))
        .map(json::clone)
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn no_value_stops_capture_into_sqlite() -> anyhow::Result<()> {
    no_value_stops_capture("cdc_values_sqlite", false).await
}

#[tokio::test]
async fn no_value_stops_capture_into_postgres() -> anyhow::Result<()> {
    no_value_stops_capture("cdc_values_postgres", true).await
}

async fn no_value_stops_capture(test: &str, postgres_store: bool) -> anyhow::Result<()> {
    let db = TestDb::new(
        test,
        "create table docs (id int primary key, doc jsonb, raw json);
         create role app login;
         grant select, insert, update on docs to app;",
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let store: Arc<dyn Store> = if postgres_store {
        db.client.batch_execute("create database trail").await?;
        let (base, _) = db.url.rsplit_once('/').expect("a database in the URL");
        pgtrail_store::open(&format!("{base}/trail")).await?
    } else {
        db.store().await
    };
    let deepest = deepest_jsonb(&db.client).await;
    assert!(deepest > 5_000, "Postgres accepts {deepest} levels");

    let mut options = db.capture_options();
    options.comment_user_keys = vec!["user".into()];
    let running = Running::start(&db, store.clone(), options);

    let (app, connection) = tokio_postgres::connect(
        &db.url.replacen("postgres@", "app@", 1),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let insert = "insert into docs (id, doc, raw) values ($1, $2::text::jsonb, $3::text::json)";
    let marker = r#"{"$serde_json::private::Number": "42"}"#;
    let rows: [(i32, Option<String>, Option<&str>); 5] = [
        (1, Some(nested(deepest)), None),
        (2, Some(nested(5_000)), None),
        (3, Some(marker.to_string()), Some(marker)),
        (4, None, Some(r#"{"n": "x\u0000y"}"#)),
        (5, None, Some(r#"{"a": "x\u0000y", "a": 1}"#)),
    ];
    for (id, doc, raw) in &rows {
        app.execute(insert, &[id, doc, raw]).await?;
    }
    // NUL in the context message, through the context setting.
    app.batch_execute(
        r#"begin;
           set local pgtrail.context = '{"note": "a\u0000b"}';
           insert into docs (id) values (6);
           commit;"#,
    )
    .await?;
    // NUL in a sqlcommenter value.
    app.batch_execute("insert into docs (id) values (7) /*user='mal%00lory'*/")
        .await?;
    app.batch_execute("insert into docs (id) values (8)")
        .await?;

    let deadline = Instant::now() + Duration::from_secs(60);
    let events = loop {
        let events = all_events(store.as_ref()).await;
        let done = events
            .iter()
            .any(|e| column(&original(e), "id") == json!(8));
        if done || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    running.stop().await?;
    let row = |id: i64| -> &Event {
        events
            .iter()
            .find(|e| column(&original(e), "id") == json!(id))
            .unwrap_or_else(|| panic!("row {id} was captured"))
    };

    // As deep as Postgres accepts: SQLite keeps it; the Postgres store keeps
    // JSON up to 10,000 levels, a quarantine event beyond.
    let deep = row(1);
    let expected = json::parse(&nested(deepest))?;
    assert!(json::eq(&column(&original(deep), "doc"), &expected));
    let quarantined = postgres_store && deepest + 1 > 10_000;
    assert_eq!(deep.kind == Kind::Quarantine, quarantined);
    json::drop_deep(expected);

    let five = row(2);
    assert_eq!(five.kind, Kind::RowChange);
    let expected = json::parse(&nested(5_000))?;
    assert!(json::eq(&column(five, "doc"), &expected));
    json::drop_deep(expected);

    // The marker key is an ordinary key, in jsonb and json.
    let marked = row(3);
    let object = json!({"$serde_json::private::Number": "42"});
    assert_eq!(column(marked, "doc"), object);
    assert_eq!(column(marked, "raw"), object);

    // NUL in a json value: kept on both stores.
    let nul = row(4);
    assert_eq!(nul.kind, Kind::RowChange);
    assert_eq!(column(nul, "raw"), json!({"n": "x\u{0}y"}));

    // A json value repeating a key is kept as its text.
    let repeated = row(5);
    assert_eq!(
        column(repeated, "raw"),
        json!(r#"{"a": "x\u0000y", "a": 1}"#)
    );

    // NUL in the context message: kept in the context on both stores.
    let noted = row(6);
    assert_eq!(noted.kind, Kind::RowChange);
    assert_eq!(
        noted.context.as_ref().and_then(|c| c.get("note")),
        Some(&json!("a\u{0}b"))
    );

    // NUL in the sqlcommenter user: SQLite keeps it; a Postgres text column
    // cannot, so a quarantine event holds every byte and its position.
    let commented = row(7);
    assert_eq!(original(commented).app_user.as_deref(), Some("mal\0lory"));
    assert_eq!(commented.kind == Kind::Quarantine, postgres_store);
    if postgres_store {
        let position = &commented.context.as_ref().expect("context")["source_position"];
        assert!(
            position.as_str().is_some_and(|p| p.starts_with("lsn ")),
            "{position}"
        );
    }

    // Capture went on, and the chain verifies.
    assert_eq!(row(8).kind, Kind::RowChange);
    let verified = pgtrail_store::verify(store.as_ref(), None).await?;
    assert!(verified.ok(), "{verified:?}");
    Ok(())
}
