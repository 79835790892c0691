//! One suite, every backend: the behaviours readers and capture paths rely on.
//!
//! Each test body is an `async fn(&dyn Store)`; the `conformance!` macro at
//! the bottom instantiates all of them once per backend, so SQLite and
//! Postgres are held to exactly the same assertions.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::{canonical::event_hash, Event, Filter, Kind, RowRef, Source, GENESIS_HASH};
use pgtrail_store::row::{self, AsOf};
use pgtrail_store::{retention, verify, Checkpoint, CheckpointKind, KeyPair, Store};
use serde_json::{json, Value};

/// A store plus whatever must outlive it (temp dir, cluster).
pub struct Harness {
    pub store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

pub async fn sqlite() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("trail.db"))
        .await
        .expect("open sqlite store");
    Harness {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

pub async fn postgres() -> Harness {
    let cluster = pgtrail_testkit::Cluster::start().expect("start cluster");
    let url = cluster
        .create_database("conformance")
        .await
        .expect("create database");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open postgres store");
    Harness {
        store: Arc::new(store),
        _guard: Box::new(cluster),
    }
}

fn t(day: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 10, minute, 0)
        .single()
        .expect("valid time")
}

fn obj(v: Value) -> Option<serde_json::Map<String, Value>> {
    v.as_object().cloned()
}

/// A row change on `schema.table`, key `id`.
fn change(
    at: DateTime<Utc>,
    table: &str,
    id: i64,
    op: &str,
    user: &str,
    old: Value,
    new: Value,
) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
    let (schema, table) = table.split_once('.').expect("qualified table");
    e.schema = Some(schema.into());
    e.table = Some(table.into());
    e.operation = Some(op.into());
    e.app_user = Some(user.into());
    e.db_user = Some("app".into());
    e.pk = obj(json!({ "id": id.to_string() }));
    e.old = obj(old);
    e.new = obj(new);
    e
}

fn statement(at: DateTime<Utc>, sql: &str, db_user: &str, sqlstate: Option<&str>) -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Statement, at);
    e.sql = Some(sql.into());
    e.db_user = Some(db_user.into());
    e.operation = sql.split_whitespace().next().map(str::to_uppercase);
    e.sqlstate = sqlstate.map(Into::into);
    if sqlstate.is_some() {
        e.error = Some("relation \"nope\" does not exist".into());
    }
    e
}

/// A small story over two tables, a DDL, statements, a failure.
fn story() -> Vec<Event> {
    let mut ddl = Event::at(Source::Trigger, Kind::Ddl, t(1, 0));
    ddl.operation = Some("CREATE TABLE".into());
    ddl.schema = Some("public".into());
    ddl.table = Some("users".into());
    ddl.sql = Some("create table public.users (id int primary key, name text, email text)".into());
    ddl.db_user = Some("postgres".into());
    vec![
        ddl,
        change(
            t(1, 1),
            "public.users",
            1,
            "INSERT",
            "alice@example.com",
            Value::Null,
            json!({"id": 1, "name": "bob", "email": "b@x"}),
        ),
        change(
            t(1, 2),
            "public.users",
            2,
            "INSERT",
            "alice@example.com",
            Value::Null,
            json!({"id": 2, "name": "eve", "email": "e@x"}),
        ),
        change(
            t(2, 0),
            "public.users",
            1,
            "UPDATE",
            "carol@example.com",
            json!({"id": 1, "name": "bob", "email": "b@x"}),
            json!({"id": 1, "name": "robert", "email": "b@x"}),
        ),
        change(
            t(2, 5),
            "billing.users",
            1,
            "INSERT",
            "dave@example.com",
            Value::Null,
            json!({"id": 1, "plan": "pro"}),
        ),
        statement(
            t(3, 0),
            "SELECT name FROM public.users WHERE user_id = 1",
            "reporting",
            None,
        ),
        statement(t(3, 1), "select * from nope", "reporting", Some("42P01")),
        change(
            t(4, 0),
            "public.users",
            2,
            "DELETE",
            "carol@example.com",
            json!({"id": 2, "name": "eve", "email": "e@x"}),
            Value::Null,
        ),
    ]
}

async fn all(store: &dyn Store) -> Vec<Event> {
    store.scan(0, 1_000_000).await.expect("scan")
}

fn ops(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e.seq.unwrap_or(-1),
                e.operation.clone().unwrap_or_default()
            )
        })
        .collect()
}

pub async fn append_assigns_gap_free_seq_and_chains(store: &dyn Store) {
    assert_eq!(
        store.head().await.expect("head"),
        None,
        "a new store is empty"
    );
    let events = story();
    let receipt = store.append(&events[..3]).await.expect("append");
    assert_eq!(receipt.first_seq, Some(1));
    let receipt = store.append(&events[3..]).await.expect("append");
    assert_eq!(receipt.first_seq, Some(4));

    let stored = all(store).await;
    assert_eq!(stored.len(), events.len());
    let mut prev = GENESIS_HASH.to_string();
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(e.seq, Some(i as i64 + 1), "gap-free seq");
        assert_eq!(
            e.prev_hash.as_deref(),
            Some(prev.as_str()),
            "linked to the previous event"
        );
        assert_eq!(
            Some(event_hash(e)),
            e.hash,
            "hash recomputes from what is stored"
        );
        prev = e.hash.clone().expect("sealed");
    }
    let head = store.head().await.expect("head").expect("not empty");
    assert_eq!((head.seq, head.hash), (events.len() as i64, prev));
    assert_eq!(receipt.head.map(|h| h.seq), Some(events.len() as i64));
}

pub async fn append_ignores_incoming_seal_and_is_idempotent(store: &dyn Store) {
    let mut forged = story().remove(1);
    forged.seq = Some(99);
    forged.prev_hash = Some("f".repeat(64));
    forged.hash = Some("e".repeat(64));
    store.append(&[forged.clone()]).await.expect("append");
    let stored = all(store).await;
    assert_eq!(stored[0].seq, Some(1), "the store assigns seq");
    assert_eq!(
        stored[0].prev_hash.as_deref(),
        Some(GENESIS_HASH),
        "the store links"
    );

    // A retried batch (same ids) adds nothing; a mixed batch adds only the new one.
    store.append(&[forged.clone()]).await.expect("re-append");
    let fresh = story().remove(2);
    store
        .append(&[forged, fresh.clone()])
        .await
        .expect("mixed append");
    let stored = all(store).await;
    assert_eq!(stored.len(), 2, "duplicates skipped: {:?}", ops(&stored));
    assert_eq!(stored[1].id, fresh.id);
    assert_eq!(store.append(&[]).await.expect("empty").first_seq, None);
}

pub async fn values_round_trip_exactly(store: &dyn Store) {
    let mut e = Event::at(
        Source::Cdc,
        Kind::RowChange,
        Utc.timestamp_micros(1_774_000_000_123_456)
            .single()
            .expect("time"),
    );
    let raw = r#"{
        "id": 7, "amount": "12345678901234567890.0000000001", "ratio": 0.10, "big": 123456789012345678901234567890,
        "tags": ["a", "b,c", null], "doc": {"z": 1, "a": [1.50, {"k": "v"}]}, "note": "naïve — 東京 \"quoted\" \\ back",
        "empty": "", "nothing": null, "flag": true, "at": "2026-03-01 10:00:00.5+01"
    }"#;
    e.new = serde_json::from_str(raw).expect("json");
    e.old = obj(json!({"id": 7}));
    e.pk = obj(json!({"id": "7", "region": "eu"}));
    e.schema = Some("Weird Schema".into());
    e.table = Some("t.1".into());
    e.operation = Some("UPDATE".into());
    e.changed = vec!["amount".into(), "doc".into()];
    e.partial = vec!["blob".into()];
    e.db_user = Some("app".into());
    e.app_user = Some("o'brien@example.com".into());
    e.client_addr = Some("10.1.2.3".into());
    e.client_port = Some(54321);
    e.application_name = Some("billing-api".into());
    e.backend_pid = Some(4242);
    e.session_id = Some("64f1.2a".into());
    e.context = obj(json!({"request_id": "r-1", "tenant": 42, "nested": {"b": [true, null]}}));
    e.database = Some("shop".into());
    e.objects = vec!["public.a".into(), "public.b".into()];
    e.sql = Some("update t set amount = $1".into());
    e.params = Some(vec![json!("1.00"), Value::Null, json!(3)]);
    e.command_tag = Some("UPDATE 1".into());
    e.rows = Some(1);
    e.duration_us = Some(1234);
    e.xid = Some(9_000_000_000);
    e.lsn = Some("16/B374D848".into());
    e.committed_at = Some(
        Utc.timestamp_micros(1_774_000_000_999_999)
            .single()
            .expect("time"),
    );
    e.tx_seq = Some(3);
    store.append(&[e.clone()]).await.expect("append");

    let stored = all(store).await.remove(0);
    assert_eq!(
        stored.clone().unsealed(),
        e,
        "every field comes back as it was appended"
    );
    let text = serde_json::to_string(&stored.new).expect("json");
    assert!(
        text.contains("\"ratio\":0.10") && text.contains("1.50"),
        "number text kept exactly: {text}"
    );
    assert!(
        text.contains("123456789012345678901234567890"),
        "big numbers are not floats: {text}"
    );
    assert_eq!(Some(event_hash(&stored)), stored.hash);
}

pub async fn query_filters_match_on_every_field(store: &dyn Store) {
    store.append(&story()).await.expect("append");
    let q = |f: Filter| async move { store.query(&f).await.expect("query") };
    let table = |s: &str| Some(TableName::parse(s).expect("table"));

    let newest = q(Filter::default()).await;
    assert_eq!(newest.len(), 8);
    assert!(
        newest.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first: {:?}",
        ops(&newest)
    );

    assert_eq!(
        q(Filter {
            table: table("public.users"),
            ..Default::default()
        })
        .await
        .len(),
        5,
        "ddl + 4 row changes on public.users"
    );
    assert_eq!(
        q(Filter {
            table: table("users"),
            ..Default::default()
        })
        .await
        .len(),
        6,
        "unqualified matches every schema"
    );
    assert_eq!(
        q(Filter {
            table: table("billing.users"),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    let row1 = q(Filter {
        table: table("public.users"),
        pk: Some(PkFilter::parse("id=1").expect("pk")),
        ..Default::default()
    })
    .await;
    assert_eq!(ops(&row1), ["4:UPDATE", "2:INSERT"]);

    assert_eq!(
        q(Filter {
            user: Some("carol@example.com".into()),
            ..Default::default()
        })
        .await
        .len(),
        2,
        "app user"
    );
    assert_eq!(
        q(Filter {
            user: Some("reporting".into()),
            ..Default::default()
        })
        .await
        .len(),
        2,
        "db user"
    );
    assert_eq!(
        q(Filter {
            user: Some("nobody".into()),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        q(Filter {
            operation: Some("insert".into()),
            ..Default::default()
        })
        .await
        .len(),
        3,
        "case-insensitive op"
    );
    assert_eq!(
        q(Filter {
            operation: Some("create table".into()),
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        q(Filter {
            kind: Some(Kind::Statement),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        q(Filter {
            source: Some(Source::Proxy),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        q(Filter {
            kind: Some(Kind::Snapshot),
            ..Default::default()
        })
        .await
        .len(),
        0
    );

    let day2 = q(Filter {
        since: Some(t(2, 0)),
        until: Some(t(3, 0)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        ops(&day2),
        ["5:INSERT", "4:UPDATE"],
        "since inclusive, until exclusive"
    );

    let failed = q(Filter {
        failed: true,
        ..Default::default()
    })
    .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].sqlstate.as_deref(), Some("42P01"));

    let limited = q(Filter {
        limit: Some(3),
        ..Default::default()
    })
    .await;
    assert_eq!(
        limited.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [Some(8), Some(7), Some(6)]
    );

    let combined = q(Filter {
        table: table("users"),
        user: Some("alice@example.com".into()),
        operation: Some("INSERT".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(combined.len(), 2);
}

pub async fn search_finds_words_and_never_errors(store: &dyn Store) {
    store.append(&story()).await.expect("append");
    let search = |s: &str| {
        let s = s.to_string();
        async move {
            let f = Filter {
                search: Some(s.clone()),
                ..Default::default()
            };
            store
                .query(&f)
                .await
                .unwrap_or_else(|e| panic!("search {s:?} failed: {e}"))
        }
    };
    assert_eq!(
        search("users").await.len(),
        2,
        "the DDL and the SELECT mention users"
    );
    assert_eq!(search("USERS name").await.len(), 2, "all words, any case");
    assert_eq!(search("nope").await.len(), 1);
    assert_eq!(
        search("user_id").await.len(),
        1,
        "underscores are part of words"
    );
    assert_eq!(search("public.users").await.len(), 2);
    assert_eq!(
        search("users nope").await.len(),
        0,
        "every word must appear"
    );
    for hostile in [
        r#"" OR * ("#,
        "users)) OR 1=1 --",
        "NEAR(users nope)",
        "'; drop table x; --",
        "\\",
        "*",
        "\u{0}",
        "",
    ] {
        search(hostile).await;
    }
}

pub async fn row_events_feed_history_as_of_and_blame(store: &dyn Store) {
    let mut events = story();
    let mut truncate = Event::at(Source::Trigger, Kind::RowChange, t(5, 0));
    truncate.schema = Some("public".into());
    truncate.table = Some("users".into());
    truncate.operation = Some("TRUNCATE".into());
    events.push(truncate);
    store.append(&events).await.expect("append");

    let row = RowRef {
        table: TableName::parse("public.users").expect("t"),
        pk: PkFilter::parse("id=1").expect("pk"),
    };
    let evs = store.row_events(&row).await.expect("row events");
    assert_eq!(
        ops(&evs),
        ["2:INSERT", "4:UPDATE", "9:TRUNCATE"],
        "the row's events and its table's truncates, oldest first"
    );

    let history = row::history(&evs);
    assert_eq!(history[1].changes.len(), 1);
    assert_eq!(history[1].changes[0].column, "name");

    match row::as_of(&evs, t(3, 0)) {
        AsOf::Existing { values, last } => {
            assert_eq!(values.get("name"), Some(&json!("robert")));
            assert_eq!(last.app_user.as_deref(), Some("carol@example.com"));
        }
        other => panic!("expected the row on day 3, got {other:?}"),
    }
    assert!(
        matches!(row::as_of(&evs, t(6, 0)), AsOf::Deleted { .. }),
        "truncated on day 5"
    );
    assert!(matches!(
        row::as_of(&evs, t(1, 0)),
        AsOf::NotYetExisting { .. }
    ));

    let before_truncate: Vec<Event> = evs
        .into_iter()
        .filter(|e| e.operation.as_deref() != Some("TRUNCATE"))
        .collect();
    let blame = row::blame(&before_truncate).expect("row exists");
    let by = |c: &str| {
        blame
            .iter()
            .find(|l| l.column == c)
            .and_then(|l| l.event.app_user.clone())
    };
    assert_eq!(by("name").as_deref(), Some("carol@example.com"));
    assert_eq!(by("email").as_deref(), Some("alice@example.com"));

    let other_schema = RowRef {
        table: TableName::parse("billing.users").expect("t"),
        pk: PkFilter::parse("id=1").expect("pk"),
    };
    assert_eq!(
        store
            .row_events(&other_schema)
            .await
            .expect("row events")
            .len(),
        1,
        "schemas are kept apart"
    );
}

pub async fn verify_passes_and_checks_signed_checkpoints(store: &dyn Store) {
    let report = verify(store, None).await.expect("verify empty");
    assert!(report.ok() && report.events_checked == 0);

    store.append(&story()).await.expect("append");
    let key = KeyPair::generate().expect("key");
    let head = store.head().await.expect("head").expect("head");
    store
        .add_checkpoint(
            &Checkpoint::new(CheckpointKind::Head, head.seq, head.hash.clone(), head.seq)
                .signed(&key),
        )
        .await
        .expect("checkpoint");
    store.append(&story()).await.expect("append more");

    let checkpoints = store.checkpoints().await.expect("checkpoints");
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(
        checkpoints[0].verify_signature(&key.verifying_key()),
        Ok(true),
        "stored checkpoint keeps its signature"
    );

    let report = verify(store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(
        (
            report.events_checked,
            report.head_seq,
            report.checkpoints_signed
        ),
        (16, 16, 1)
    );

    let stranger = KeyPair::generate().expect("key");
    let report = verify(store, Some(&stranger.verifying_key()))
        .await
        .expect("verify");
    let kinds: Vec<_> = report.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            pgtrail_store::ProblemKind::Checkpoint,
            pgtrail_store::ProblemKind::Unsigned
        ],
        "a checkpoint signed by another key is flagged, and no checkpoint is the key's"
    );
}

pub async fn retention_removes_a_prefix_and_verify_still_passes(store: &dyn Store) {
    let now = Utc::now();
    let mut events = Vec::new();
    for (i, days_ago) in [100, 90, 80, 10, 5, 1].into_iter().enumerate() {
        events.push(change(
            now - Duration::days(days_ago),
            "public.users",
            i as i64,
            "INSERT",
            "alice",
            Value::Null,
            json!({"id": i}),
        ));
    }
    store.append(&events).await.expect("append");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = KeyPair::generate().expect("key");
    let outcome = retention::apply(
        store,
        Duration::days(30),
        now,
        Some(dir.path()),
        Some(&key),
        &[],
        None,
    )
    .await
    .expect("retention");
    assert_eq!((outcome.removed, outcome.through_seq), (3, Some(3)));

    let left = all(store).await;
    assert_eq!(
        left.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [Some(4), Some(5), Some(6)]
    );
    let report = verify(store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    assert!(
        report.ok(),
        "chain provable after retention: {:?}",
        report.problems
    );
    assert_eq!(report.events_checked, 3);

    let archive = outcome.archive.expect("archived");
    let checksum =
        std::fs::read_to_string(format!("{}.sha256", archive.display())).expect("checksum file");
    assert!(checksum.starts_with(|c: char| c.is_ascii_hexdigit()));
    let decoder =
        flate2::read::GzDecoder::new(std::fs::File::open(&archive).expect("open archive"));
    let lines = std::io::BufRead::lines(std::io::BufReader::new(decoder)).count();
    assert_eq!(lines, 3, "archive holds what was removed");

    // Appending continues the chain from the remaining head.
    store
        .append(&story())
        .await
        .expect("append after retention");
    assert!(verify(store, None).await.expect("verify").ok());
    // A second run with nothing old enough removes nothing.
    let again = retention::apply(store, Duration::days(30), now, None, None, &[], None)
        .await
        .expect("retention");
    assert_eq!(again.removed, 0);
}

/// A proxy statement of session `session`'s transaction `tx` on backend
/// `pid`, started at `at` and lasting `micros`.
fn proxy_stmt(
    at: DateTime<Utc>,
    micros: i64,
    sql: &str,
    pid: i32,
    session: &str,
    tx: (u64, u64, DateTime<Utc>),
) -> Event {
    let mut e = statement(at, sql, "app", None);
    e.backend_pid = Some(pid);
    e.session_id = Some(session.into());
    e.duration_us = Some(micros);
    if sql.contains("users") {
        e.objects = vec!["public.users".into()];
        e.schema = Some("public".into());
        e.table = Some("users".into());
    }
    e.context = obj(json!({
        "tx": tx.0,
        "tx_statement": tx.1,
        "tx_started_at": pgtrail_core::time::format_micros(&tx.2),
    }));
    e
}

fn trigger_change(at: DateTime<Utc>, table: &str, op: &str, pid: i32, xid: i64) -> Event {
    let mut e = change(at, table, 1, op, "ann", json!({}), json!({"id": "1"}));
    e.backend_pid = Some(pid);
    e.xid = Some(xid);
    e
}

/// The link (`pgtrail_store::link`) on events as the paths write them:
/// a statement and its transaction's rows found from either side, a pid
/// reused, a write around the proxy, a claimed link.
pub async fn link_finds_statements_and_their_row_changes(store: &dyn Store) {
    use pgtrail_store::link::{self, TxId};
    let ms = Duration::milliseconds;
    let us = Duration::microseconds;
    let t0 = t(2, 0);
    let pid = 4242;
    // Session s-1: an autocommit INSERT, then a block that updates.
    let tx1 = (1, 0, t0);
    let tx2 = |n| (2, n, t0 + ms(10));
    let mut cdc = Event::at(Source::Cdc, Kind::RowChange, t0 + ms(30));
    cdc.schema = Some("billing".into());
    cdc.table = Some("ledger".into());
    cdc.operation = Some("INSERT".into());
    cdc.xid = Some(1002);
    cdc.committed_at = Some(t0 + ms(14) + us(200));
    // An application's claim of the block's transaction, on a row it
    // wrote from another backend.
    let mut forged = trigger_change(t0 + ms(40), "public.users", "DELETE", 9999, 1005);
    forged.context = obj(json!({"tx": 2, "tx_started_at": "2026-03-02T10:00:00.010000Z"}));
    let events = vec![
        proxy_stmt(t0, 2000, "INSERT INTO users VALUES (1)", pid, "s-1", tx1),
        trigger_change(t0 + ms(1), "public.users", "INSERT", pid, 1001),
        proxy_stmt(t0 + ms(10), 300, "BEGIN", pid, "s-1", tx2(0)),
        proxy_stmt(
            t0 + ms(11),
            1000,
            "UPDATE users SET a = 1",
            pid,
            "s-1",
            tx2(1),
        ),
        // The UPDATE's trigger also writes another table.
        trigger_change(t0 + ms(11) + us(100), "public.users", "UPDATE", pid, 1002),
        trigger_change(t0 + ms(11) + us(100), "public.log", "INSERT", pid, 1002),
        proxy_stmt(t0 + ms(13), 300, "SELECT 1", pid, "s-1", tx2(2)),
        proxy_stmt(t0 + ms(14), 300, "COMMIT", pid, "s-1", tx2(3)),
        cdc,
        // The pid reused by a later session.
        proxy_stmt(
            t0 + ms(1000),
            900,
            "INSERT INTO users VALUES (2)",
            pid,
            "s-2",
            (1, 0, t0 + ms(1000)),
        ),
        trigger_change(t0 + ms(1000) + us(300), "public.users", "INSERT", pid, 1003),
        // A write no statement of the proxy made (a direct connection).
        trigger_change(t0 + ms(5000), "public.users", "DELETE", pid, 1004),
        forged,
    ];
    store.append(&events).await.expect("append");
    let skew = Duration::zero();
    let sqls = |tx: &link::Transaction| -> Vec<String> {
        tx.statements.iter().filter_map(|s| s.sql.clone()).collect()
    };

    let tx = link::transaction(&[store], &TxId::Xid(1002), skew)
        .await
        .expect("link")
        .expect("found");
    assert_eq!(
        sqls(&tx),
        ["BEGIN", "UPDATE users SET a = 1", "SELECT 1", "COMMIT"]
    );
    assert_eq!(tx.xids, [1002]);
    assert_eq!(tx.backend_pid, Some(pid));
    let tables: Vec<_> = tx.changes.iter().filter_map(|c| c.table.clone()).collect();
    assert_eq!(
        tables,
        ["users", "log", "ledger"],
        "trigger rows and the cdc row"
    );
    let made: Vec<_> = tx
        .made_by
        .iter()
        .map(|m| m.and_then(|i| tx.statements[i].sql.clone()))
        .collect();
    let update = Some("UPDATE users SET a = 1".to_string());
    assert_eq!(made, [update.clone(), update.clone(), None]);

    // The proxy's id of the same transaction finds the same.
    let id: TxId = format!("{pid}@2026-03-02T10:00:00.010Z")
        .parse()
        .expect("id");
    let by_proxy = link::transaction(&[store], &id, skew)
        .await
        .expect("link")
        .expect("found");
    assert_eq!(sqls(&by_proxy), sqls(&tx));
    assert_eq!(by_proxy.xids, [1002]);
    assert_eq!(by_proxy.changes.len(), 3);
    assert_eq!(
        link::proxy_tx(&by_proxy.statements[0]).map(|t| t.0),
        Some(id)
    );

    // The pid reused: the later session's own statement only.
    let reused = link::transaction(&[store], &TxId::Xid(1003), skew)
        .await
        .expect("link")
        .expect("found");
    assert_eq!(sqls(&reused), ["INSERT INTO users VALUES (2)"]);

    // A write around the proxy, and a claimed link: no statement.
    for xid in [1004, 1005] {
        let alone = link::transaction(&[store], &TxId::Xid(xid), skew)
            .await
            .expect("link")
            .expect("found");
        assert!(alone.statements.is_empty(), "{xid}: {:?}", sqls(&alone));
    }
    assert!(link::transaction(&[store], &TxId::Xid(77), skew)
        .await
        .expect("link")
        .is_none());

    // History's view: beside each change, its statement.
    let changes: Vec<Event> = all(store)
        .await
        .into_iter()
        .filter(|e| e.source == Source::Trigger)
        .collect();
    let beside: Vec<_> = link::statements_for(&[store], &changes, skew)
        .await
        .expect("link")
        .iter()
        .map(|s| s.as_ref().and_then(|s| s.sql.clone()))
        .collect();
    let insert = |n| Some(format!("INSERT INTO users VALUES ({n})"));
    assert_eq!(
        beside,
        [insert(1), update.clone(), update, insert(2), None, None]
    );
}

pub async fn concurrent_appends_keep_one_linear_chain(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..10 {
                let events: Vec<Event> = (0..25)
                    .map(|i| {
                        change(
                            Utc::now(),
                            "public.load",
                            writer * 10_000 + batch * 100 + i,
                            "INSERT",
                            "w",
                            Value::Null,
                            json!({}),
                        )
                    })
                    .collect();
                store.append(&events).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let stored = all(&*store).await;
    assert_eq!(stored.len(), 1000);
    assert!(stored
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == Some(i as i64 + 1)));
    assert!(verify(&*store, None).await.expect("verify").ok());
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn append_assigns_gap_free_seq_and_chains() {
                let h = super::$backend().await;
                super::append_assigns_gap_free_seq_and_chains(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn append_ignores_incoming_seal_and_is_idempotent() {
                let h = super::$backend().await;
                super::append_ignores_incoming_seal_and_is_idempotent(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn values_round_trip_exactly() {
                let h = super::$backend().await;
                super::values_round_trip_exactly(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn query_filters_match_on_every_field() {
                let h = super::$backend().await;
                super::query_filters_match_on_every_field(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn search_finds_words_and_never_errors() {
                let h = super::$backend().await;
                super::search_finds_words_and_never_errors(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn row_events_feed_history_as_of_and_blame() {
                let h = super::$backend().await;
                super::row_events_feed_history_as_of_and_blame(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn verify_passes_and_checks_signed_checkpoints() {
                let h = super::$backend().await;
                super::verify_passes_and_checks_signed_checkpoints(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_removes_a_prefix_and_verify_still_passes() {
                let h = super::$backend().await;
                super::retention_removes_a_prefix_and_verify_still_passes(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn link_finds_statements_and_their_row_changes() {
                let h = super::$backend().await;
                super::link_finds_statements_and_their_row_changes(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_appends_keep_one_linear_chain() {
                let h = super::$backend().await;
                super::concurrent_appends_keep_one_linear_chain(h.store.clone()).await;
            }
        }
    };
}

conformance!(sqlite);
conformance!(postgres);
