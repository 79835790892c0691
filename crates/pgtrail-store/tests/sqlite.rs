//! What only the SQLite store has: a file on disk that someone can edit with
//! `sqlite3`. Tampering goes straight through rusqlite, the way an attacker
//! with file access would; `verify` must name what was done and where.
//! Also: refusing files that are not ours, schema versions, several stores
//! on one file, a full disk, and an ignored throughput benchmark.

use std::path::PathBuf;

use pgtrail_core::canonical::{seal, CanonicalBody};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::{Event, Filter, Kind, RowRef, Source, GENESIS_HASH};
use pgtrail_store::sqlite::{SqliteOptions, SqliteStore, APPLICATION_ID, SCHEMA_VERSION};
use pgtrail_store::{verify, Checkpoint, CheckpointKind, KeyPair, ProblemKind, Store, StoreError};
use rusqlite::{params, Connection};
use serde_json::json;

/// A temp dir with a store file in it, removed on drop.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("trail.db")
    }

    async fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path()).await.expect("open store")
    }

    /// A raw connection to the file, as an attacker (or `sqlite3`) would have.
    fn raw(&self) -> Connection {
        Connection::open(self.path()).expect("open raw")
    }
}

/// A statement event of about 400 bytes of JSON, numbered `n`.
fn event(n: i64) -> Event {
    let mut e = Event::new(Source::Proxy, Kind::Statement);
    e.db_user = Some("app".into());
    e.app_user = Some(format!("user{}@example.com", n % 50));
    e.session_id = Some(format!("s-{}", n % 97));
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e.operation = Some("UPDATE".into());
    e.pk = json!({ "id": n.to_string() }).as_object().cloned();
    e.sql = Some(format!(
        "UPDATE public.orders SET status = $1, updated_at = now() WHERE id = {n} AND tenant_id = $2"
    ));
    e.params = Some(vec![json!("shipped"), json!(42)]);
    e.command_tag = Some("UPDATE 1".into());
    e.rows = Some(1);
    e.duration_us = Some(250 + n % 1000);
    e
}

fn events(from: i64, count: i64) -> Vec<Event> {
    (from..from + count).map(event).collect()
}

/// Rewrites event `seq` in the file: the canonical body and the hash
/// recomputed by `seal`, as a careful attacker would, linking it to
/// `prev_hash`, and `chain_head` moved along when it names `seq`.
fn reseal(raw: &Connection, mut event: Event, seq: i64, prev_hash: &str) {
    seal(&mut event, seq, prev_hash);
    let body = CanonicalBody::of(&event).as_str().to_string();
    let hash = hex::decode(event.hash.as_deref().expect("sealed")).expect("hex");
    let prev = hex::decode(prev_hash).expect("hex");
    raw.execute(
        "update events set body = ?2, hash = ?3, prev_hash = ?4 where seq = ?1",
        params![seq, body, hash, prev],
    )
    .expect("reseal");
    raw.execute(
        "update chain_head set hash = ?2 where seq = ?1",
        params![seq, hash],
    )
    .expect("move chain_head");
}

/// The newest migration the file records as applied.
fn recorded_version(raw: &Connection) -> i64 {
    raw.query_row("select max(version) from pgtrail_migrations", [], |r| {
        r.get(0)
    })
    .expect("version")
}

async fn stored(store: &SqliteStore) -> Vec<Event> {
    store.scan(0, usize::MAX).await.expect("scan")
}

async fn first_problem(store: &SqliteStore) -> (ProblemKind, i64) {
    let report = verify(store, None).await.expect("verify");
    let problem = report.problems.first().expect("tampering is detected");
    (problem.kind, problem.seq)
}

#[tokio::test]
async fn an_untouched_store_verifies_and_survives_reopening() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    drop(store);
    let store = scratch.open().await;
    let receipt = store
        .append(&events(10, 5))
        .await
        .expect("append after reopen");
    assert_eq!(receipt.first_seq, Some(11));
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 15);

    // The file is plain SQLite: the marks and the JSON are readable from SQL.
    let raw = scratch.raw();
    let marks: (i32, i64) = raw
        .query_row(
            "select * from pragma_application_id, pragma_user_version",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("pragmas");
    assert_eq!(marks, (APPLICATION_ID, SCHEMA_VERSION));
    let (sql, hash): (String, String) = raw
        .query_row(
            "select sql, hash from events_readable where seq = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("readable view");
    assert!(sql.contains("WHERE id = 2 "), "{sql}");
    assert_eq!(Some(hash), stored(&store).await[2].hash);
    let mode: String = raw
        .query_row("pragma journal_mode", [], |r| r.get(0))
        .expect("mode");
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn the_store_file_and_its_wal_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 3)).await.expect("append");
    let path = scratch.path();
    let mut checked = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        // -wal and -shm exist while the store is open.
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        checked += 1;
    }
    assert_eq!(checked, 3);
}

#[tokio::test]
async fn retention_refuses_a_window_outside_the_calendar() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 3)).await.expect("append");
    let keep = chrono::Duration::try_seconds(i64::MAX / 1000).expect("largest duration");
    let error =
        pgtrail_store::retention::apply(&store, keep, chrono::Utc::now(), None, None, &[], None)
            .await
            .expect_err("out of range");
    assert!(
        matches!(
            error,
            pgtrail_store::signing::SignError::Store(StoreError::Invalid(ref m))
                if m.contains("outside the calendar")
        ),
        "{error}"
    );
    assert_eq!(stored(&store).await.len(), 3, "nothing removed");
}

#[tokio::test]
async fn a_modified_body_is_reported_at_its_seq() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    scratch
        .raw()
        .execute(
            "update events set body = json_set(body, '$.app_user', 'mallory') where seq = 4",
            [],
        )
        .expect("tamper");
    assert_eq!(first_problem(&store).await, (ProblemKind::Modified, 4));
}

#[tokio::test]
async fn a_deleted_event_is_reported_as_removed() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    scratch
        .raw()
        .execute("delete from events where seq = 6", [])
        .expect("tamper");
    assert_eq!(first_problem(&store).await, (ProblemKind::Removed, 6));
}

/// Makes room at `seq` by moving every later event up by one.
fn renumber_from(raw: &Connection, seq: i64) {
    // Two steps, so no row ever collides with another's seq.
    raw.execute("update events set seq = -seq - 1 where seq >= ?1", [seq])
        .expect("renumber");
    raw.execute("update events set seq = -seq where seq < 0", [])
        .expect("renumber");
}

#[tokio::test]
async fn an_inserted_event_is_reported() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    let chain = stored(&store).await;
    let raw = scratch.raw();
    renumber_from(&raw, 5);

    // A forged event sealed on its own (it cannot know the chain): it does not link.
    let mut forged = event(1000);
    seal(&mut forged, 5, GENESIS_HASH);
    raw.execute(
        "insert into events (seq, id, captured_at, source, kind, failed, body, prev_hash, hash) \
         values (5, ?1, ?2, 'proxy', 'statement', 0, ?3, ?4, ?5)",
        params![
            forged.id.as_bytes().to_vec(),
            forged.captured_at.timestamp_micros(),
            CanonicalBody::of(&forged).as_str(),
            hex::decode(GENESIS_HASH).expect("hex"),
            hex::decode(forged.hash.as_deref().expect("sealed")).expect("hex"),
        ],
    )
    .expect("insert forged");
    assert_eq!(first_problem(&store).await, (ProblemKind::Inserted, 5));

    // Linking it properly to event 4 only moves the evidence one step on: the
    // renumbered event 6 was hashed as event 5.
    let forged = stored(&store).await.remove(4).unsealed();
    reseal(&raw, forged, 5, chain[3].hash.as_deref().expect("sealed"));
    assert_eq!(first_problem(&store).await, (ProblemKind::Modified, 6));
}

#[tokio::test]
async fn swapped_events_are_reported() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    let chain = stored(&store).await;
    let raw = scratch.raw();

    // Swapping two rows' positions: each was hashed with its own seq.
    raw.execute("update events set seq = -1 where seq = 3", [])
        .expect("swap");
    raw.execute("update events set seq = 3 where seq = 4", [])
        .expect("swap");
    raw.execute("update events set seq = 4 where seq = -1", [])
        .expect("swap");
    assert_eq!(first_problem(&store).await, (ProblemKind::Modified, 3));

    // An attacker who re-seals both at their new places: the second still
    // links to event 2, which verify recognises as a reordering.
    let hash_2 = chain[1].hash.clone().expect("sealed");
    reseal(&raw, chain[3].clone().unsealed(), 3, &hash_2);
    reseal(&raw, chain[2].clone().unsealed(), 4, &hash_2);
    assert_eq!(first_problem(&store).await, (ProblemKind::Reordered, 4));
}

#[tokio::test]
async fn a_signed_head_checkpoint_catches_a_rewritten_tail() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    let key = KeyPair::generate().expect("key");
    let head = store.head().await.expect("head").expect("not empty");
    let checkpoint =
        Checkpoint::new(CheckpointKind::Head, head.seq, head.hash, head.seq).signed(&key);
    store.add_checkpoint(&checkpoint).await.expect("checkpoint");
    assert!(verify(&store, Some(&key.verifying_key()))
        .await
        .expect("verify")
        .ok());

    // Rewrite the last event and its hash: the chain alone looks fine...
    let chain = stored(&store).await;
    let mut last = chain[9].clone().unsealed();
    last.app_user = Some("mallory".into());
    reseal(
        &scratch.raw(),
        last,
        10,
        chain[8].hash.as_deref().expect("sealed"),
    );
    let report = verify(&store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    // ...but the signed checkpoint no longer matches (and the user columns
    // the attacker left alone no longer match the event either).
    assert!(
        report
            .problems
            .iter()
            .any(|p| (p.kind, p.seq) == (ProblemKind::Checkpoint, 10)),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn files_that_are_not_pgtrail_stores_are_refused_and_left_alone() {
    let scratch = Scratch::new();

    let text = scratch.dir.path().join("notes.txt");
    std::fs::write(&text, "these are my notes, not a database\n".repeat(100)).expect("write");
    let before = std::fs::read(&text).expect("read");
    let err = SqliteStore::open(&text).await.expect_err("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&text).expect("read"), before, "untouched");

    let other = scratch.dir.path().join("other.db");
    {
        let conn = Connection::open(&other).expect("create");
        conn.execute_batch("create table invoices (id integer primary key, total text); insert into invoices values (1, '9.99');")
            .expect("fill");
    }
    let before = std::fs::read(&other).expect("read");
    let err = SqliteStore::open(&other).await.expect_err("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    assert_eq!(std::fs::read(&other).expect("read"), before, "untouched");
    assert!(
        !scratch.dir.path().join("other.db-wal").exists(),
        "not switched to WAL"
    );

    let tagged = scratch.dir.path().join("tagged.db");
    Connection::open(&tagged)
        .and_then(|c| c.pragma_update(None, "application_id", 0x1234))
        .expect("tag");
    let err = SqliteStore::open(&tagged).await.expect_err("refused");
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");

    let missing_dir = scratch.dir.path().join("no/such/dir/trail.db");
    let err = SqliteStore::open(&missing_dir).await.expect_err("refused");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(
        err.to_string().contains("no/such/dir/trail.db"),
        "names the path: {err}"
    );
}

#[tokio::test]
async fn newer_and_half_migrated_stores_are_refused() {
    let scratch = Scratch::new();
    drop(scratch.open().await);
    scratch
        .raw()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .expect("bump");
    match SqliteStore::open(&scratch.path()).await {
        Err(StoreError::TooNew {
            found, supported, ..
        }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION))
        }
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("expected TooNew, the store opened"),
    }

    // The version says 1 but no migration was recorded as finished.
    let raw = scratch.raw();
    raw.pragma_update(None, "user_version", SCHEMA_VERSION)
        .expect("restore");
    raw.execute("delete from pgtrail_migrations", [])
        .expect("forget");
    let err = SqliteStore::open(&scratch.path())
        .await
        .expect_err("refused");
    assert!(
        matches!(err, StoreError::HalfMigrated { version: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_older_store_is_migrated_on_open() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 3)).await.expect("append");
    drop(store);
    // Turn the file back into a version-1 store.
    let raw = scratch.raw();
    downgrade_to_v4(&raw);
    raw.execute_batch(
        "drop index events_truncates; drop view events_readable; \
         delete from pgtrail_migrations where version > 1; pragma user_version = 1;",
    )
    .expect("downgrade");

    let store = scratch.open().await;
    let version = recorded_version(&raw);
    let index: i64 = raw
        .query_row(
            "select count(*) from sqlite_schema where name in ('events_truncates', 'events_readable')",
            [],
            |r| r.get(0),
        )
        .expect("index");
    assert_eq!((version, index), (SCHEMA_VERSION, 2));
    assert_eq!(stored(&store).await.len(), 3, "events kept");
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// Turns a store back into the version-4 layout: rows and users indexed
/// by their text, no key columns.
fn downgrade_to_v4(raw: &Connection) {
    downgrade_to_v6(raw);
    raw.execute_batch(
        "drop index events_row; drop index events_app_user; drop index events_db_user;
         alter table events drop column row_key;
         alter table events drop column app_user_key;
         alter table events drop column db_user_key;
         create index events_row on events (table_name, pk);
         create index events_app_user on events (app_user, captured_at);
         create index events_db_user on events (db_user, captured_at);
         delete from pgtrail_migrations where version > 4; pragma user_version = 4;",
    )
    .expect("downgrade to version 4");
}

#[tokio::test]
async fn a_version_4_store_gets_integer_keys_for_the_events_it_has() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let mut batch = events(0, 120);
    let mut truncate = Event::new(Source::Trigger, Kind::RowChange);
    truncate.schema = Some("public".into());
    truncate.table = Some("orders".into());
    truncate.operation = Some("TRUNCATE".into());
    batch.push(truncate);
    let mut session = Event::new(Source::Proxy, Kind::Session);
    session.db_user = Some("user7@example.com".into());
    batch.push(session);
    store.append(&batch).await.expect("append");

    let row = RowRef {
        table: TableName::parse("orders").expect("table"),
        pk: PkFilter::parse("id=7").expect("pk"),
    };
    let filters = [
        Filter::default(),
        Filter {
            table: Some(TableName::parse("public.orders").expect("table")),
            ..Default::default()
        },
        Filter {
            table: Some(TableName::parse("orders").expect("table")),
            pk: Some(PkFilter::parse("id=57").expect("pk")),
            ..Default::default()
        },
        Filter {
            user: Some("user7@example.com".into()),
            ..Default::default()
        },
    ];
    let mut before = Vec::new();
    for filter in &filters {
        before.push(store.query(filter).await.expect("query"));
    }
    let row_before = store.row_events(&row).await.expect("row events");
    assert_eq!(
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        [122, 121, 1, 4],
        "the filters select something to compare"
    );
    assert_eq!(row_before.len(), 2, "the row's event and the truncate");
    drop(store);
    downgrade_to_v4(&scratch.raw());

    let store = scratch.open().await;
    let version = recorded_version(&scratch.raw());
    assert_eq!(version, SCHEMA_VERSION);
    for (filter, expected) in filters.iter().zip(&before) {
        assert_eq!(
            &store.query(filter).await.expect("query"),
            expected,
            "{filter:?}"
        );
    }
    assert_eq!(store.row_events(&row).await.expect("row"), row_before);

    // Events appended after the migration are found with the old ones.
    let mut again = event(7);
    again.operation = Some("DELETE".into());
    store.append(&[again]).await.expect("append");
    assert_eq!(store.row_events(&row).await.expect("row").len(), 3);
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// Version 8 indexes the objects of the statements already stored: they
/// are found by `--table` after the migration as after a fresh append,
/// and the store still verifies.
#[tokio::test]
async fn a_version_7_store_indexes_the_objects_of_its_statements() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let mut batch = events(0, 10);
    for (i, e) in batch.iter_mut().enumerate() {
        e.objects = if i % 2 == 0 {
            vec!["public.orders".into(), "public.customers".into()]
        } else {
            vec!["public.orders".into(), r#""Odd Schema"."customers""#.into()]
        };
    }
    // A DDL event's objects stay out of the index.
    let mut ddl = Event::new(Source::Trigger, Kind::Ddl);
    ddl.operation = Some("ALTER TABLE".into());
    ddl.objects = vec!["public.customers".into()];
    batch.push(ddl);
    store.append(&batch).await.expect("append");
    let by_table = |name: &str| Filter {
        table: Some(TableName::parse(name).expect("table")),
        ..Default::default()
    };
    let questions = [
        "customers",
        "public.customers",
        r#""Odd Schema".customers"#,
        "orders",
    ];
    let mut before = Vec::new();
    for q in questions {
        before.push(store.query(&by_table(q)).await.expect("query"));
    }
    assert_eq!(
        before.iter().map(Vec::len).collect::<Vec<_>>(),
        [10, 5, 5, 10],
        "a JOINed table in any schema, or in the one named"
    );
    drop(store);
    downgrade_to_v7(&scratch.raw());
    let rows: i64 = scratch
        .raw()
        .query_row("select count(*) from events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, 11, "the events are still there");

    let store = scratch.open().await;
    let (version, indexed): (i64, i64) = scratch
        .raw()
        .query_row(
            "select (select max(version) from pgtrail_migrations), (select count(*) from events_objects)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(indexed, 10 * 2, "two objects of each statement");
    for (q, expected) in questions.iter().zip(&before) {
        assert_eq!(
            &store.query(&by_table(q)).await.expect("query"),
            expected,
            "{q}"
        );
    }
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// `op:` walks its own index from version 17. A store from before gets
/// the index on open, and its searches by operation find what the events
/// say: newest first, case as stored or not, in a window, beside a
/// role left out, stepping over events without an operation.
#[tokio::test]
async fn a_version_16_store_finds_operations_through_their_index() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let start = chrono::Utc::now() - chrono::Duration::hours(10);
    let operations = ["INSERT", "update", "DELETE", "delete", "UPDATE"];
    let all: Vec<Event> = (0..120i64)
        .map(|n| {
            let mut e = event(n);
            e.operation = (n % 7 != 0).then(|| operations[n as usize % 5].to_string());
            e.db_user = Some(if n % 3 == 0 { "app" } else { "etl" }.into());
            e.captured_at = start + chrono::Duration::minutes(n * 5);
            e
        })
        .collect();
    store.append(&all).await.expect("append");
    drop(store);
    downgrade_to_v16(&scratch.raw());
    let store = scratch.open().await;
    assert_eq!(recorded_version(&scratch.raw()), SCHEMA_VERSION);
    let since = start + chrono::Duration::hours(4);
    let questions = [
        ("op:delete", None, None, 200),
        ("op:update limit 5", None, None, 5),
        ("-user:app op:delete since:4h", Some("app"), Some(since), 7),
        ("op:truncate", None, None, 200),
    ];
    for (q, not_user, since, limit) in questions {
        let operation = q
            .split_whitespace()
            .find_map(|w| w.strip_prefix("op:"))
            .expect("op");
        let filter = Filter {
            operation: Some(operation.into()),
            not_user: not_user.map(str::to_string),
            since,
            limit: Some(limit),
            ..Default::default()
        };
        let found: Vec<String> = store
            .query(&filter)
            .await
            .expect("query")
            .iter()
            .map(|e| e.id.to_string())
            .collect();
        let expected: Vec<String> = all
            .iter()
            .rev()
            .filter(|e| {
                e.operation
                    .as_deref()
                    .is_some_and(|o| o.eq_ignore_ascii_case(operation))
                    && not_user.is_none_or(|u| e.db_user.as_deref() != Some(u))
                    && since.is_none_or(|s| e.captured_at >= s)
            })
            .take(limit)
            .map(|e| e.id.to_string())
            .collect();
        assert_eq!(found, expected, "{q}");
        assert_eq!(expected.is_empty(), operation == "truncate", "{q}");
    }
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// Undoes version 17 (the index of operations in chain order).
fn downgrade_to_v16(raw: &Connection) {
    raw.execute_batch(
        "drop index events_operation;
         delete from pgtrail_migrations where version > 16; pragma user_version = 16;",
    )
    .expect("downgrade to version 16");
}

/// Undoes version 16 (the seq range of each capture hour).
fn downgrade_to_v15(raw: &Connection) {
    downgrade_to_v16(raw);
    raw.execute_batch(
        "drop table seq_hours;
         delete from pgtrail_migrations where version > 15; pragma user_version = 15;",
    )
    .expect("downgrade to version 15");
}

/// Undoes version 15 (the client, database, backend and transaction as
/// columns): the body-expression indexes of version 11 come back.
fn downgrade_to_v14(raw: &Connection) {
    downgrade_to_v15(raw);
    raw.execute_batch(
        "drop index events_backend_pid; drop index events_xid;
         drop index events_client_addr; drop index events_database;
         alter table events drop column client_addr;
         alter table events drop column database;
         alter table events drop column backend_pid;
         alter table events drop column xid;
         create index events_backend_pid on events
             ((case when json_valid(body) then json_extract(body, '$.backend_pid') end), captured_at)
             where (case when json_valid(body) then json_extract(body, '$.backend_pid') end) is not null;
         create index events_xid on events
             ((case when json_valid(body) then json_extract(body, '$.xid') end))
             where (case when json_valid(body) then json_extract(body, '$.xid') end) is not null;
         delete from pgtrail_migrations where version > 14; pragma user_version = 14;",
    )
    .expect("downgrade to version 14");
}

/// Events from many clients, databases, backends and transactions, with
/// client addresses that are no address (a zone id, a name, a prefix).
fn clients(from: i64, count: i64) -> Vec<Event> {
    (from..from + count)
        .map(|n| {
            let mut e = event(n);
            e.client_addr = Some(match n % 9 {
                0 => "fe80::1%eth0".into(),
                1 => "not an address".into(),
                2 => format!("2001:db8::{:x}", n % 40),
                3 => format!("10.0.{}.{}/32", n % 3, n % 50),
                4 => format!("::ffff:10.0.4.{}", n % 50),
                _ => format!("10.0.{}.{}", n % 7, n % 60),
            });
            e.database = (n % 5 != 0).then(|| ["crm", "shop", "hr"][(n % 3) as usize].into());
            e.backend_pid = (n % 4 != 0).then_some(1000 + (n % 13) as i32);
            e.xid = (n % 6 != 0).then_some(50_000 + n / 3);
            e
        })
        .collect()
}

/// What `ip:`, `db:` and the link's lookups answer, by question.
async fn client_answers(store: &SqliteStore, questions: &[&str]) -> Vec<Vec<i64>> {
    let now = chrono::Utc::now();
    let mut answers = Vec::new();
    for q in questions {
        let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
        filter.limit = Some(40);
        answers.push(seqs_of(store.query(&filter).await.expect(q)));
    }
    for (pid, xid) in [(1003, 50_010), (1012, 50_100)] {
        let by_pid = Filter {
            backend_pid: Some(pid),
            ..Default::default()
        };
        let by_xid = Filter {
            xid: Some(xid),
            ..Default::default()
        };
        answers.push(seqs_of(store.query(&by_pid).await.expect("pid")));
        answers.push(seqs_of(store.query(&by_xid).await.expect("xid")));
    }
    answers
}

fn seqs_of(events: Vec<Event>) -> Vec<i64> {
    events.iter().map(|e| e.seq.expect("sealed")).collect()
}

/// `ip:` blocks small and large (the walks, and the range past
/// `ADDR_WALKS` addresses), IPv6 and IPv4-mapped, and `db:`.
const CLIENT_QUESTIONS: &[&str] = &[
    "ip:10.0.4.0/24",
    "ip:10.0.4.9",
    "ip:10.0.0.0/8",
    "ip:0.0.0.0/0",
    "ip:::/0",
    "ip:2001:db8::/32",
    "ip:::ffff:10.0.4.0/120",
    "ip:10.0.1.0/24 kind:statement",
    "ip:10.0.0.0/8 db:crm",
    "db:crm",
    "db:hr op:update",
    "ip:10.0.4.0/24 since:7d",
    "db:shop since:7d",
];

/// Version 15 fills its columns from the bodies of the events stored: the
/// same answers before and after, the store verifies, and the columns are
/// what an append writes.
#[tokio::test]
async fn a_version_14_store_gets_client_and_link_columns_for_its_events() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&clients(0, 400)).await.expect("append");
    let before = client_answers(&store, CLIENT_QUESTIONS).await;
    assert!(
        before.iter().all(|a| !a.is_empty()),
        "every question finds something: {before:?}"
    );
    let columns = "select seq, client_addr, database, backend_pid, xid from events order by seq";
    let read_columns = |raw: &Connection| {
        let mut statement = raw.prepare(columns).expect("columns");
        statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<Vec<u8>>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })
            .expect("query")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows")
    };
    let appended = read_columns(&scratch.raw());
    assert_eq!(
        appended.iter().filter(|c| c.1.is_none()).count(),
        (0..400).filter(|n| n % 9 < 2).count(),
        "a zone id and a name are no address"
    );
    drop(store);
    downgrade_to_v14(&scratch.raw());

    let store = scratch.open().await;
    let version = recorded_version(&scratch.raw());
    assert_eq!(version, SCHEMA_VERSION);
    assert_eq!(read_columns(&scratch.raw()), appended);
    assert_eq!(client_answers(&store, CLIENT_QUESTIONS).await, before);
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// A row image nested deeper than SQLite's JSON parser goes: version 15
/// fills that event's columns from the event as `verify` decodes it, so
/// the store still verifies and the event is found by `ip:` and its
/// backend.
#[tokio::test]
async fn a_deep_event_gets_its_columns_in_the_migration() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let mut deep = event(1);
    let mut value = json!(1);
    for _ in 0..1_100 {
        value = json!([value]);
    }
    deep.new = json!({ "doc": value }).as_object().cloned();
    deep.client_addr = Some("10.7.7.7".into());
    deep.database = Some("deep".into());
    deep.backend_pid = Some(777);
    deep.xid = Some(7_777);
    store
        .append(&[event(0), deep, event(2)])
        .await
        .expect("append");
    let valid: i64 = scratch
        .raw()
        .query_row(
            "select count(*) from events where json_valid(body)",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(valid, 2, "SQLite's JSON does not read the deep body");
    drop(store);
    downgrade_to_v14(&scratch.raw());

    let store = scratch.open().await;
    assert_eq!(recorded_version(&scratch.raw()), SCHEMA_VERSION);
    let now = chrono::Utc::now();
    for q in ["ip:10.7.7.0/24", "ip:10.7.7.7", "db:deep"] {
        let filter = pgtrail_core::search::parse_search(q, now).expect(q);
        assert_eq!(seqs_of(store.query(&filter).await.expect(q)), [2], "{q}");
    }
    let by_pid = Filter {
        backend_pid: Some(777),
        xid: Some(7_777),
        ..Default::default()
    };
    assert_eq!(seqs_of(store.query(&by_pid).await.expect("pid")), [2]);
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
}

/// What `ip:` answers is what `AddrFilter::contains` says of every event,
/// whichever way the store reads it (a walk per address, a range).
#[tokio::test]
async fn ip_searches_answer_as_the_address_filter_does() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let all = clients(0, 400);
    store.append(&all).await.expect("append");
    for q in CLIENT_QUESTIONS.iter().filter(|q| q.starts_with("ip:")) {
        let mut filter = pgtrail_core::search::parse_search(q, chrono::Utc::now()).expect(q);
        let block = filter.client_addr.expect("a block");
        let expected: Vec<i64> = (1..=all.len() as i64)
            .rev()
            .filter(|seq| {
                let e = &all[*seq as usize - 1];
                block.contains(e.client_addr.as_deref().unwrap_or_default())
                    && filter.kind.is_none_or(|k| k == e.kind)
                    && filter
                        .database
                        .as_ref()
                        .is_none_or(|d| e.database.as_ref() == Some(d))
            })
            .collect();
        // All of them; and the newest 5, found among the newest events or,
        // for a block with fewer there, by the address index.
        for limit in [None, Some(5)] {
            filter.limit = limit;
            let want = &expected[..limit.unwrap_or(expected.len()).min(expected.len())];
            assert_eq!(
                seqs_of(store.query(&filter).await.expect(q)),
                want,
                "{q} {limit:?}"
            );
        }
    }
}

/// Hostile `ip:` values: not an address, a prefix too long or absurd, an
/// IPv6 zone, SQL: each a clear error before the store is asked. Blocks
/// as wide as they come answer without scanning forever.
#[tokio::test]
async fn hostile_ip_values_are_refused_or_match_nothing() {
    let now = chrono::Utc::now();
    for q in [
        "ip:not-an-address",
        "ip:10.0.0.0/33",
        "ip:10.0.0.0/99999999999999999999",
        "ip:::/129",
        "ip:fe80::1%eth0",
        "ip:10.0.0.1/-1",
        "ip:10.0.0.1/",
        "ip:' or 1=1 --",
        "ip:10.0.0.0/8/8",
    ] {
        let err = pgtrail_core::search::parse_search(q, now).expect_err(q);
        assert!(err.to_string().contains("address"), "{q}: {err}");
    }
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&clients(0, 200)).await.expect("append");
    for q in [
        "ip:0.0.0.0/0",
        "ip:::/0",
        "ip:ffff::/16",
        "ip:255.255.255.255",
    ] {
        let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
        filter.limit = Some(10);
        let found = store.query(&filter).await.expect(q);
        assert!(found.len() <= 10, "{q}");
        let facets = store.facets(&filter, 5).await.expect(q);
        drop(facets);
    }
}

/// Undoes version 14 (tables and users in chain order).
fn downgrade_to_v13(raw: &Connection) {
    downgrade_to_v14(raw);
    raw.execute_batch(
        "drop index events_table; drop index events_app_user; drop index events_db_user;
         create index events_app_user on events (app_user_key, captured_at) where app_user_key is not null;
         create index events_db_user on events (db_user_key, captured_at) where db_user_key is not null;
         delete from pgtrail_migrations where version > 13; pragma user_version = 13;",
    )
    .expect("downgrade to version 13");
}

/// Undoes version 13 (witness servers' cosignatures).
fn downgrade_to_v12(raw: &Connection) {
    downgrade_to_v13(raw);
    raw.execute_batch(
        "drop table cosignatures;
         delete from pgtrail_migrations where version > 12; pragma user_version = 12;",
    )
    .expect("downgrade to version 12");
}

/// Undoes version 12 (the Merkle tree's kept nodes).
fn downgrade_to_v11(raw: &Connection) {
    downgrade_to_v12(raw);
    raw.execute_batch(
        "drop table tree_nodes;
         delete from pgtrail_migrations where version > 11; pragma user_version = 11;",
    )
    .expect("downgrade to v11");
}

/// Undoes version 11 (the link's indexes).
fn downgrade_to_v10(raw: &Connection) {
    downgrade_to_v11(raw);
    raw.execute_batch(
        "drop index events_backend_pid; drop index events_xid;
         delete from pgtrail_migrations where version > 10; pragma user_version = 10;",
    )
    .expect("downgrade to version 10");
}

/// Undoes version 10 (kinds and failures in chain order).
fn downgrade_to_v9(raw: &Connection) {
    downgrade_to_v10(raw);
    raw.execute_batch(
        "drop index events_kind; drop index events_failed;
         delete from pgtrail_migrations where version > 9; pragma user_version = 9;",
    )
    .expect("downgrade to version 9");
}

/// Undoes version 9 (facet counts by the hour).
fn downgrade_to_v8(raw: &Connection) {
    downgrade_to_v9(raw);
    raw.execute_batch(
        "drop table facet_hours;
         delete from pgtrail_migrations where version > 8; pragma user_version = 8;",
    )
    .expect("downgrade to version 8");
}

/// Undoes version 8 (the index of statements' objects).
fn downgrade_to_v7(raw: &Connection) {
    downgrade_to_v8(raw);
    raw.execute_batch(
        "drop table events_objects;
         delete from pgtrail_migrations where version > 7; pragma user_version = 7;",
    )
    .expect("downgrade to version 7");
}

/// Undoes version 7 (store id, note checkpoints).
fn downgrade_to_v6(raw: &Connection) {
    downgrade_to_v7(raw);
    raw.execute_batch(
        "drop table store_identity;
         alter table checkpoints drop column note;
         alter table checkpoints drop column frontier;
         delete from pgtrail_migrations where version > 6; pragma user_version = 6;",
    )
    .expect("downgrade to version 6");
}

fn downgrade_to_v5(raw: &Connection) {
    downgrade_to_v6(raw);
    raw.execute_batch(
        "drop index events_row;
         create index events_row on events (row_key) where row_key is not null;
         delete from pgtrail_migrations where version > 5; pragma user_version = 5;",
    )
    .expect("downgrade to version 5");
}

/// Version 6 groups the row index by stretches of 524,288 events; a row's
/// events are found in every stretch, those stored before the migration
/// included.
#[tokio::test]
async fn a_version_5_store_finds_rows_across_stretches_of_the_chain() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 20)).await.expect("append");
    drop(store);
    downgrade_to_v5(&scratch.raw());

    let store = scratch.open().await;
    let version = recorded_version(&scratch.raw());
    assert_eq!(version, SCHEMA_VERSION);
    // Move the chain to the end of the first stretch, so the next batch
    // spans the boundary at seq 524,288. (This breaks the chain: lookups
    // are under test here, not verify.)
    scratch
        .raw()
        .execute("update chain_head set seq = 524286", [])
        .expect("skip ahead");
    store
        .append(&[event(7), event(8), event(7), event(9)])
        .await
        .expect("append");
    let seqs = |events: Vec<Event>| -> Vec<i64> {
        events.iter().map(|e| e.seq.expect("sealed")).collect()
    };

    let row = RowRef {
        table: TableName::parse("public.orders").expect("table"),
        pk: PkFilter::parse("id=7").expect("pk"),
    };
    assert_eq!(
        seqs(store.row_events(&row).await.expect("row")),
        [8, 524_287, 524_289],
        "the row's events in both stretches, oldest first"
    );
    let by_row = Filter {
        table: Some(row.table.clone()),
        pk: Some(row.pk.clone()),
        ..Default::default()
    };
    assert_eq!(
        seqs(store.query(&by_row).await.expect("query")),
        [524_289, 524_287, 8]
    );
    let by_table = Filter {
        table: Some(row.table.clone()),
        limit: Some(5),
        ..Default::default()
    };
    assert_eq!(
        seqs(store.query(&by_table).await.expect("query")),
        [524_290, 524_289, 524_288, 524_287, 20],
        "newest first across the boundary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_keep_one_chain_and_skip_retried_batches() {
    let scratch = Scratch::new();
    let (a, b) = (scratch.open().await, scratch.open().await);
    let batches: Vec<Vec<Event>> = (0..20).map(|i| events(i * 50, 50)).collect();
    let (left, right) = batches.split_at(10);
    let (left, right) = (left.to_vec(), right.to_vec());
    let write = |store: SqliteStore, batches: Vec<Vec<Event>>| async move {
        for batch in batches {
            store.append(&batch).await.expect("append");
        }
        store
    };
    let (a, b) = tokio::join!(tokio::spawn(write(a, left)), tokio::spawn(write(b, right)));
    let (a, b) = (a.expect("writer a"), b.expect("writer b"));

    // A batch retried through the other store adds nothing.
    let receipt = b.append(&batches[0]).await.expect("retry");
    assert_eq!(receipt.first_seq, None);
    assert_eq!(receipt.head.map(|h| h.seq), Some(1000));

    let chain = stored(&a).await;
    assert_eq!(chain.len(), 1000);
    assert!(chain
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == Some(i as i64 + 1)));
    assert!(verify(&a, None).await.expect("verify").ok());
}

/// A large batch is encoded and hashed ahead of its inserts on a second
/// thread, assuming every event goes in. Events of it already stored shift
/// the chain; the events after them must be linked again, not skipped.
#[tokio::test]
async fn a_large_batch_around_stored_events_links_only_the_new_ones() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let batch = events(0, 6_000);
    store
        .append(&batch[1_000..1_500])
        .await
        .expect("some of the middle first");
    store
        .append(&batch[5_999..])
        .await
        .expect("the last one first");
    let mut retried = batch.clone();
    retried.push(batch[10].clone()); // twice in one batch

    let receipt = store.append(&retried).await.expect("the whole batch");
    assert_eq!(receipt.first_seq, Some(502));
    let head = receipt.head.expect("a head");
    assert_eq!(head.seq, 6_000);

    let chain = stored(&store).await;
    let ids: Vec<_> = chain.iter().map(|e| e.id).collect();
    let expected: Vec<_> = batch[1_000..1_500]
        .iter()
        .chain(&batch[5_999..])
        .chain(&batch[..1_000])
        .chain(&batch[1_500..5_999])
        .map(|e| e.id)
        .collect();
    assert!(ids == expected, "stored in append order, each once");
    assert_eq!(chain.last().and_then(|e| e.hash.clone()), Some(head.hash));
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
}

/// A mix where a table is found two ways (its own events, statements that
/// touched it) and a user two ways (as application user, as database
/// role), for the searches that walk a key's index newest first.
fn keyed_mix() -> Vec<Event> {
    (0..90)
        .map(|n| {
            let mut e = event(n);
            if n % 3 == 0 {
                e.table = Some("items".into());
                e.objects = vec!["public.orders".into()];
            }
            if n % 5 == 0 {
                e.app_user = None;
                e.db_user = Some("user7@example.com".into());
            }
            if n % 2 == 0 {
                e.operation = Some("DELETE".into());
            }
            e
        })
        .collect()
}

/// Which events a filter should match, written out by hand.
type Matches = fn(&Event) -> bool;

/// The keyed searches (schema 14) give what a reading of every event
/// gives: the newest matches, in chain order, page after page, whichever
/// way each was found.
#[tokio::test]
async fn keyed_searches_find_the_newest_matches_found_either_way() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&keyed_mix()).await.expect("append");
    let all = stored(&store).await;
    let table = |name: &str| Some(TableName::parse(name).expect("table"));
    let cases: [(Filter, Matches); 6] = [
        (
            // With words, the full-text index drives and the table filters.
            Filter {
                table: table("orders"),
                search: Some("tenant_id".into()),
                ..Default::default()
            },
            |e: &Event| e.table.as_deref() == Some("orders") || !e.objects.is_empty(),
        ),
        (
            Filter {
                user: Some("user7@example.com".into()),
                ..Default::default()
            },
            |e: &Event| {
                e.app_user.as_deref() == Some("user7@example.com")
                    || e.db_user.as_deref() == Some("user7@example.com")
            },
        ),
        (
            Filter {
                table: table("orders"),
                ..Default::default()
            },
            |e: &Event| e.table.as_deref() == Some("orders") || !e.objects.is_empty(),
        ),
        (
            Filter {
                table: table("public.orders"),
                operation: Some("delete".into()),
                ..Default::default()
            },
            |e: &Event| {
                (e.table.as_deref() == Some("orders") || !e.objects.is_empty())
                    && e.operation.as_deref() == Some("DELETE")
            },
        ),
        (
            Filter {
                table: table("items"),
                user: Some("user7@example.com".into()),
                ..Default::default()
            },
            |e: &Event| {
                e.table.as_deref() == Some("items")
                    && (e.app_user.as_deref() == Some("user7@example.com")
                        || e.db_user.as_deref() == Some("user7@example.com"))
            },
        ),
        (
            Filter {
                db_user: Some("app".into()),
                operation: Some("DELETE".into()),
                ..Default::default()
            },
            |e: &Event| {
                e.db_user.as_deref() == Some("app") && e.operation.as_deref() == Some("DELETE")
            },
        ),
    ];
    for (filter, matches) in cases {
        let expected: Vec<i64> = all
            .iter()
            .rev()
            .filter(|e| matches(e))
            .filter_map(|e| e.seq)
            .collect();
        assert!(expected.len() > 4, "{filter:?} matches enough to page");
        let mut found = Vec::new();
        let mut page = Filter {
            limit: Some(4),
            ..filter.clone()
        };
        loop {
            let events = store.query(&page).await.expect("query");
            if events.is_empty() {
                break;
            }
            found.extend(events.iter().filter_map(|e| e.seq));
            page.before_seq = events.last().and_then(|e| e.seq);
        }
        assert_eq!(found, expected, "{filter:?}");
    }
}

/// A table or user name made of SQL is a value, never SQL: it matches
/// nothing and breaks nothing, whichever way the search walks.
#[tokio::test]
async fn hostile_table_and_user_names_match_nothing() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&keyed_mix()).await.expect("append");
    for hostile in [
        r#"orders' or '1'='1"#,
        r#"orders") union select seq from events --"#,
        "orders; drop table events",
        &"x".repeat(100_000),
    ] {
        for filter in [
            Filter {
                table: Some(TableName {
                    schema: None,
                    table: hostile.to_string(),
                }),
                ..Default::default()
            },
            Filter {
                user: Some(hostile.to_string()),
                ..Default::default()
            },
            Filter {
                db_user: Some(hostile.to_string()),
                limit: Some(50),
                ..Default::default()
            },
        ] {
            let found = store
                .query(&filter)
                .await
                .expect("a hostile name is only a value");
            assert!(found.is_empty(), "{hostile:.40}: {found:?}");
        }
    }
    assert_eq!(stored(&store).await.len(), 90, "nothing was dropped");
}

#[tokio::test]
async fn search_strings_are_never_fts_syntax() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 5)).await.expect("append");
    let search = |s: &str| Filter {
        search: Some(s.to_string()),
        ..Default::default()
    };
    for hostile in [
        r#"" OR * ("#,
        "sql:orders",
        "orders NOT status",
        "^orders",
        "-status +id",
        "NEAR(orders status, 2)",
        "{sql}: orders",
        "orders*",
        "\"\"\"",
        "tenant_id\u{0}",
    ] {
        let found = store.query(&search(hostile)).await;
        assert!(found.is_ok(), "{hostile:?}: {:?}", found.err());
    }
    // Syntax characters separate words; the words still match.
    assert_eq!(
        store
            .query(&search("sql:orders"))
            .await
            .expect("query")
            .len(),
        0,
        "'sql' is not in the text"
    );
    assert_eq!(
        store
            .query(&search("orders NOT status"))
            .await
            .expect("query")
            .len(),
        0,
        "'not' is a word here"
    );
    assert_eq!(
        store
            .query(&search("(orders) status* tenant_id"))
            .await
            .expect("query")
            .len(),
        5
    );
    assert_eq!(
        store
            .query(&search("\"id = 3\""))
            .await
            .expect("query")
            .len(),
        1
    );
}

#[tokio::test]
async fn prune_removes_events_and_their_index_and_the_chain_continues() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(0, 10)).await.expect("append");
    let chain = stored(&store).await;
    let prune_point = |seq: usize| {
        let e = &chain[seq - 1];
        Checkpoint::new(
            CheckpointKind::Prune,
            seq as i64,
            e.hash.clone().expect("sealed"),
            seq as i64,
        )
    };
    store
        .add_checkpoint(&prune_point(4))
        .await
        .expect("checkpoint");
    assert_eq!(store.prune(4).await.expect("prune").removed, 4);
    let indexed: i64 = scratch
        .raw()
        .query_row("select count(*) from events_fts", [], |r| r.get(0))
        .expect("count");
    assert_eq!(indexed, 6, "full-text rows of pruned events are gone");
    assert!(verify(&store, None).await.expect("verify").ok());

    // Prune everything: the chain continues from the pruned head, not from genesis.
    store
        .add_checkpoint(&prune_point(10))
        .await
        .expect("checkpoint");
    assert_eq!(store.prune(10).await.expect("prune").removed, 6);
    let receipt = store.append(&events(10, 3)).await.expect("append");
    assert_eq!(receipt.first_seq, Some(11));
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.events_checked, report.head_seq), (3, 13));
}

#[tokio::test]
async fn a_full_disk_fails_the_batch_and_keeps_nothing_of_it() {
    let scratch = Scratch::new();
    let options = SqliteOptions {
        max_page_count: Some(64),
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&scratch.path(), options)
        .await
        .expect("open");
    store
        .append(&events(0, 10))
        .await
        .expect("small batch fits");
    let head = store.head().await.expect("head");

    let err = store
        .append(&events(10, 5_000))
        .await
        .expect_err("does not fit");
    assert!(matches!(err, StoreError::Backend { .. }), "{err}");
    let source = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(source.contains("full"), "says the disk is full: {source}");

    assert_eq!(store.head().await.expect("head"), head, "head unchanged");
    assert_eq!(stored(&store).await.len(), 10, "nothing of the batch kept");
    assert_eq!(
        store.query(&Filter::default()).await.expect("query").len(),
        10
    );
    assert!(verify(&store, None).await.expect("verify").ok());
    store
        .append(&events(5_010, 1))
        .await
        .expect("a batch that fits still goes in");
}

/// Throughput of sealed, indexed appends. Run with
/// `cargo nextest run -p pgtrail-store --release --run-ignored only -E 'test(append_throughput)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly, in release"]
async fn append_throughput() {
    const BATCH: i64 = 10_000;
    const BATCHES: i64 = 30;
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let sample = serde_json::to_string(&event(123_456)).expect("json").len();
    let mut elapsed = std::time::Duration::ZERO;
    for b in 0..BATCHES {
        let batch = events(b * BATCH, BATCH);
        let start = std::time::Instant::now();
        store.append(&batch).await.expect("append");
        elapsed += start.elapsed();
    }
    let total = (BATCH * BATCHES) as f64;
    let size = std::fs::metadata(scratch.path())
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(scratch.dir.path().join("trail.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "append_throughput: {total} events of ~{sample} bytes in batches of {BATCH}: {:.0} events/s ({:.1} s), file {:.0} MiB",
        total / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        size as f64 / (1024.0 * 1024.0),
    );
    let started = std::time::Instant::now();
    let hits = store
        .query(&Filter {
            search: Some("id = 123456".into()),
            ..Default::default()
        })
        .await
        .expect("search");
    println!("search: {} hits in {:?}", hits.len(), started.elapsed());
}

/// Facets of `store` over `filter`, counted from the events (a filter the
/// summary cannot answer: a role no event has is left out).
/// What verify says after `tamper`: it fails, every problem in an index
/// (a summary beside the events), and these are the sentences.
async fn index_problems(store: &SqliteStore, tamper: &str) -> Vec<String> {
    let report = verify(store, None).await.expect("verify");
    let details: Vec<String> = report.problems.iter().map(|p| p.detail.clone()).collect();
    assert!(!report.ok(), "{tamper}");
    assert!(
        report.problems.iter().all(|p| p.kind == ProblemKind::Index),
        "{tamper}: {details:?}"
    );
    details
}

async fn facets_from_events(store: &SqliteStore, filter: &Filter) -> pgtrail_core::search::Facets {
    let mut f = filter.clone();
    f.not_user = Some("nobody at all".into());
    store.facets(&f, 100).await.expect("facets")
}

/// Version 9 counts facets by the hour: a store from before gets the
/// counts of its events, the summary answers a time window exactly as
/// counting the events does (edges of partial hours included), prune
/// recounts, and verify names a count someone edited.
#[tokio::test]
async fn facet_counts_by_the_hour_are_filled_kept_and_verified() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let start = chrono::Utc::now() - chrono::Duration::hours(30);
    let events: Vec<Event> = (0..300)
        .map(|n| {
            let mut e = event(n);
            // Every 6 minutes over 30 hours, some late (an earlier time
            // after a later one), some failed, some without a table.
            let minutes = n * 6 - if n % 17 == 0 { 90 } else { 0 };
            e.captured_at = start + chrono::Duration::minutes(minutes);
            if n % 11 == 0 {
                e.sqlstate = Some("42P01".into());
            }
            if n % 13 == 0 {
                e.table = None;
                e.schema = None;
            }
            e
        })
        .collect();
    store.append(&events[..150]).await.expect("append");
    drop(store);
    downgrade_to_v8(&scratch.raw());
    let store = scratch.open().await;
    store.append(&events[150..]).await.expect("append");
    let at = |minutes: i64| {
        Some(start + chrono::Duration::minutes(minutes) + chrono::Duration::seconds(7))
    };
    for (since, until) in [
        (None, None),
        (at(0), None),
        (at(95), at(1201)),
        (None, at(600)),
        (at(61), at(62)),
        (at(600), at(300)),
    ] {
        let window = Filter {
            since,
            until,
            ..Filter::default()
        };
        let summed = store.facets(&window, 100).await.expect("facets");
        assert_eq!(
            summed,
            facets_from_events(&store, &window).await,
            "{since:?}..{until:?}"
        );
        assert!(summed.complete);
    }
    let everything = store.facets(&Filter::default(), 3).await.expect("facets");
    assert_eq!(everything.counted, 300);
    assert!(verify(&store, None).await.expect("verify").ok());

    let raw = scratch.raw();
    let report_of = |sql: &str| {
        raw.execute_batch(sql).expect("tamper");
        sql.to_string()
    };
    report_of("create temp table saved as select * from facet_hours");
    for (tamper, says) in [
        (
            "update facet_hours set count = count + 5 where facet = 'user' \
             and value = (select max(value) from facet_hours where facet = 'user')",
            "facet_hours (user ",
        ),
        (
            "delete from facet_hours where facet = 'outcome' and value = 'failed'",
            "facet_hours (outcome 'failed'",
        ),
        (
            "insert into facet_hours values (1, 'table', 'public.secret', 1)",
            "facet_hours (table 'public.secret' in the hour from 1970-01-01T01:00:00.000000Z) holds 1, but the event says 0",
        ),
    ] {
        report_of(tamper);
        let details = index_problems(&store, tamper).await;
        assert!(details.iter().any(|d| d.contains(says)), "{tamper}: {details:?}");
        report_of("delete from facet_hours; insert into facet_hours select * from saved");
        assert!(verify(&store, None).await.expect("verify").ok());
    }
    // A prune recounts the hours it touched (verify would want its
    // checkpoint; the counts are what is checked here).
    store.prune(100).await.expect("prune");
    let all = Filter::default();
    assert_eq!(
        store.facets(&all, 100).await.expect("facets"),
        facets_from_events(&store, &all).await
    );
    assert_eq!(store.facets(&all, 100).await.expect("facets").counted, 200);

    // Whoever edits the counts is named by verify.
}

/// `seq_hours` as the events say it should be: hour → (least, greatest
/// seq), from every event stored.
async fn seq_ranges_of(store: &SqliteStore) -> Vec<(i64, i64, i64)> {
    let mut ranges = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for e in stored(store).await {
        let seq = e.seq.expect("sealed");
        let hour = e.captured_at.timestamp_micros().div_euclid(3_600_000_000);
        let range = ranges.entry(hour).or_insert((seq, seq));
        *range = (range.0.min(seq), range.1.max(seq));
    }
    ranges.into_iter().map(|(h, (f, l))| (h, f, l)).collect()
}

fn seq_hours_in(raw: &Connection) -> Vec<(i64, i64, i64)> {
    raw.prepare("select hour, first_seq, last_seq from seq_hours order by hour")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .expect("seq_hours")
}

/// Version 16's `seq_hours` is filled by the migration, kept by appends
/// (events captured out of chain order, before 1970 too), recomputed by a
/// prune, and checked by verify. The attack: someone with the file narrows
/// an hour's range (or deletes it) so a windowed search misses an event;
/// the search does miss it, and verify names `seq_hours` and the hour.
#[tokio::test]
async fn seq_ranges_by_the_hour_are_filled_kept_pruned_and_verified() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    let start = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let events: Vec<Event> = (0..300)
        .map(|n| {
            let mut e = event(n);
            // Every 6 minutes over 30 hours, some late by 90 minutes, and
            // an import from before 1970.
            let minutes = n * 6 - if n % 17 == 0 { 90 } else { 0 };
            e.captured_at = if n % 41 == 0 {
                chrono::DateTime::UNIX_EPOCH - chrono::Duration::minutes(n)
            } else {
                start + chrono::Duration::minutes(minutes)
            };
            e
        })
        .collect();
    store.append(&events[..150]).await.expect("append");
    drop(store);
    downgrade_to_v15(&scratch.raw());
    let store = scratch.open().await;
    assert_eq!(seq_hours_in(&scratch.raw()), seq_ranges_of(&store).await);
    for batch in events[150..].chunks(40) {
        store.append(batch).await.expect("append");
    }
    assert_eq!(seq_hours_in(&scratch.raw()), seq_ranges_of(&store).await);
    assert!(verify(&store, None).await.expect("verify").ok());

    // The attack. Hour 3 of the trail holds events 31..40 and the late
    // event 51 (n = 34 and 51 are late): narrowing it past 31 hides 31.
    let hour_start = start + chrono::Duration::hours(3);
    let window = Filter {
        since: Some(hour_start),
        until: Some(hour_start + chrono::Duration::hours(1)),
        ..Filter::default()
    };
    let in_hour = seqs_of(store.query(&window).await.expect("query"));
    let hour = hour_start.timestamp() / 3600;
    let (first, last): (i64, i64) = scratch
        .raw()
        .query_row(
            "select first_seq, last_seq from seq_hours where hour = ?1",
            [hour],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the hour's range");
    assert_eq!(in_hour.last(), Some(&first));
    assert_eq!(in_hour.first(), Some(&last));
    let raw = scratch.raw();
    raw.execute_batch("create temp table saved as select * from seq_hours")
        .expect("save");
    for (tamper, hidden, says) in [
        (
            format!("update seq_hours set first_seq = first_seq + 1 where hour = {hour}"),
            vec![first],
            format!(
                "seq_hours (the hour from 2026-03-01T13:00:00.000000Z) holds seq {} to {last}, \
                 but the event says seq {first} to {last}",
                first + 1
            ),
        ),
        (
            format!("delete from seq_hours where hour = {hour}"),
            in_hour.clone(),
            format!(
                "seq_hours (the hour from 2026-03-01T13:00:00.000000Z) holds NULL, \
                 but the event says seq {first} to {last}"
            ),
        ),
        (
            "insert into seq_hours values (1, 2, 3)".to_string(),
            vec![],
            "seq_hours (the hour from 1970-01-01T01:00:00.000000Z) holds seq 2 to 3".to_string(),
        ),
    ] {
        raw.execute_batch(&tamper).expect("tamper");
        let found = seqs_of(store.query(&window).await.expect("query"));
        let missed: Vec<i64> = in_hour
            .iter()
            .copied()
            .filter(|s| !found.contains(s))
            .collect();
        assert_eq!(missed, hidden, "{tamper}");
        let details = index_problems(&store, &tamper).await;
        assert!(
            details.iter().any(|d| d.contains(&says)),
            "{tamper}: {details:?}"
        );
        raw.execute_batch("delete from seq_hours; insert into seq_hours select * from saved")
            .expect("restore");
        assert!(verify(&store, None).await.expect("verify").ok());
    }

    // A prune recomputes the hours it touched: the hour at its edge keeps
    // the events left, the hours before it go, and windows still find
    // what is left.
    let chain = stored(&store).await;
    let through = 100;
    let head = &chain[through - 1];
    store
        .add_checkpoint(&Checkpoint::new(
            CheckpointKind::Prune,
            through as i64,
            head.hash.clone().expect("sealed"),
            through as i64,
        ))
        .await
        .expect("checkpoint");
    store.prune(through as i64).await.expect("prune");
    assert_eq!(seq_hours_in(&scratch.raw()), seq_ranges_of(&store).await);
    assert!(verify(&store, None).await.expect("verify").ok());
    let left = stored(&store).await;
    for hours in [(0, 11), (9, 10), (10, 11), (12, 40), (-500_000, 0)] {
        let window = Filter {
            since: Some(start + chrono::Duration::hours(hours.0)),
            until: Some(start + chrono::Duration::hours(hours.1)),
            ..Filter::default()
        };
        let mut expected: Vec<i64> = left
            .iter()
            .filter(|e| {
                window.since.is_none_or(|s| e.captured_at >= s)
                    && window.until.is_none_or(|u| e.captured_at < u)
            })
            .filter_map(|e| e.seq)
            .collect();
        expected.reverse();
        assert_eq!(
            seqs_of(store.query(&window).await.expect("query")),
            expected,
            "{hours:?}"
        );
    }
}

/// Readers stay open between reads (kept warm for the server): a reader
/// kept from before must see what another process appended since, after
/// the file grew and the log was copied back into it, and a body someone
/// rewrote in the file, not the page it cached before.
#[tokio::test]
async fn kept_readers_see_growth_checkpoints_and_edits_made_by_others() {
    let scratch = Scratch::new();
    let store = scratch.open().await;
    store.append(&events(1, 10)).await.expect("append");
    // Readers are taken and kept warm by these reads.
    let filter = Filter::default();
    let (first, _) = tokio::join!(store.query(&filter), store.query(&filter));
    assert_eq!(first.expect("query").len(), 10);

    // Another process appends enough to grow the file well past what the
    // readers read, and copies its log back into the file.
    let other = scratch.open().await;
    for batch in 0..5 {
        other
            .append(&events(11 + batch * 1000, 1000))
            .await
            .expect("append elsewhere");
    }
    drop(other);
    scratch
        .raw()
        .query_row("pragma wal_checkpoint(truncate)", [], |_| Ok(()))
        .expect("checkpoint");
    let all = store.query(&filter).await.expect("query");
    assert_eq!(all.len(), 5010);
    assert_eq!(all.first().and_then(|e| e.seq), Some(5010));
    assert_eq!(stored(&store).await.len(), 5010);

    // Someone with the file rewrites a body: the kept readers read the new
    // bytes (which verify then reports), not the page they read before.
    scratch
        .raw()
        .execute(
            "update events set body = replace(body, 'shipped', 'SHIPPED') where seq = 3",
            [],
        )
        .expect("tamper");
    let third = store.scan(2, 1).await.expect("scan");
    assert_eq!(
        third[0].params.as_ref().and_then(|p| p.first()).cloned(),
        Some(json!("SHIPPED"))
    );
    assert_eq!(first_problem(&store).await, (ProblemKind::Modified, 3));
}
