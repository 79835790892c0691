//! One suite of attacks by someone with write access to the store (the
//! SQLite file, or a Postgres login that can write schema `pgtrail`) and no
//! signing key, run against both backends: each edits what readers rely on,
//! and `verify` (on the store opened read-only) must fail naming what it
//! found. Every attack starts from a fresh store that verifies clean.
//!
//! An attack says what it does on each backend (SQL, or a rewrite computed
//! from the stored events) and what verify must report there. Where a
//! backend keeps no copy to edit (Postgres stores columns, not a body; it
//! has no key columns and its full-text index is an expression index on the
//! hashed `sql`), the same edit lands on a hashed column and must be found
//! by the hash instead.

use pgtrail_core::canonical::{seal, CanonicalBody};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::{open_for_verify, verify, ProblemKind, Store};
use serde_json::json;

/// The store every attack starts from: ten row changes of `public.orders`,
/// each with its SQL (event 2 without), one failed.
fn fixture() -> Vec<Event> {
    (1..=10)
        .map(|i: i64| {
            let mut e = Event::new(Source::Trigger, Kind::RowChange);
            e.db_user = Some("app".into());
            e.app_user = Some(format!("alice{}", i % 2));
            e.schema = Some("public".into());
            e.table = Some("orders".into());
            e.operation = Some("UPDATE".into());
            e.pk = json!({ "id": i.to_string() }).as_object().cloned();
            e.new = json!({ "n": i }).as_object().cloned();
            if i != 2 {
                e.sql = Some(format!("UPDATE public.orders SET n = {i} WHERE id = {i}"));
            }
            if i == 7 {
                e.sqlstate = Some("23505".into());
            }
            e.duration_us = Some(100 + i);
            e.client_addr = Some("10.0.4.7".into());
            e.database = Some("crm".into());
            e.backend_pid = Some(4242);
            e.xid = Some(900 + i);
            e
        })
        .collect()
}

/// What an attacker does to the store.
enum Edit {
    /// Statements run as they are.
    Sql(&'static str),
    /// Event 5 rewritten with its hash recomputed, so only the chain
    /// (event 6 links to the old hash) gives it away.
    RehashFifth,
    /// A second, validly sealed event 5 (another id) beside the first.
    DuplicateFifth,
    /// Not possible on this backend.
    None,
}

struct Attack {
    name: &'static str,
    sqlite: Edit,
    postgres: Edit,
    /// What a problem must say on each backend: its kind, its event and a
    /// piece of its sentence.
    expect_sqlite: (ProblemKind, i64, &'static str),
    expect_postgres: (ProblemKind, i64, &'static str),
}

fn attacks() -> Vec<Attack> {
    use Edit::{DuplicateFifth, None as Nothing, RehashFifth, Sql};
    use ProblemKind::{Head, Index, Inserted, Modified, Removed};
    // Both stores keep the event once (its body) and copy what filters
    // read into columns: an edited copy misleads readers, and verify says so.
    let column = |name, sqlite, postgres, found| Attack {
        name,
        sqlite: Sql(sqlite),
        postgres: Sql(postgres),
        expect_sqlite: (Index, 3, found),
        expect_postgres: (Index, 3, found),
    };
    vec![
        column(
            "app_user edited",
            "update events set app_user = 'nobody' where seq = 3",
            "update pgtrail.events set app_user = 'nobody' where seq = 3",
            "app_user holds 'nobody'",
        ),
        column(
            "db_user edited",
            "update events set db_user = 'nobody' where seq = 3",
            "update pgtrail.events set db_user = 'nobody' where seq = 3",
            "db_user holds 'nobody'",
        ),
        column(
            "table_name edited",
            "update events set table_name = 'other' where seq = 3",
            "update pgtrail.events set table_name = 'other' where seq = 3",
            "table_name holds 'other'",
        ),
        column(
            "schema_name edited",
            "update events set schema_name = 'other' where seq = 3",
            "update pgtrail.events set schema_name = 'other' where seq = 3",
            "schema_name holds 'other'",
        ),
        Attack {
            name: "pk edited",
            sqlite: Sql("update events set pk = '{\"id\":\"99\"}' where seq = 3"),
            postgres: Sql("update pgtrail.events set pk = '{\"id\":\"99\"}' where seq = 3"),
            expect_sqlite: (Index, 3, "pk holds '{\"id\":\"99\"}'"),
            // jsonb's own spelling of the value.
            expect_postgres: (Index, 3, "pk holds '{\"id\": \"99\"}'"),
        },
        column(
            "operation edited",
            "update events set operation = 'DELETE' where seq = 3",
            "update pgtrail.events set operation = 'DELETE' where seq = 3",
            "operation holds 'DELETE'",
        ),
        column(
            "kind edited",
            "update events set kind = 'ddl' where seq = 3",
            "update pgtrail.events set kind = 'ddl' where seq = 3",
            "kind holds 'ddl'",
        ),
        column(
            "source edited",
            "update events set source = 'cdc' where seq = 3",
            "update pgtrail.events set source = 'cdc' where seq = 3",
            "source holds 'cdc'",
        ),
        column(
            "captured_at edited",
            "update events set captured_at = captured_at - 86400000000 where seq = 3",
            "update pgtrail.events set captured_at = captured_at - interval '1 hour' where seq = 3",
            "captured_at holds",
        ),
        Attack {
            name: "failed flag set",
            sqlite: Sql("update events set failed = 1 where seq = 3"),
            postgres: Sql("update pgtrail.events set failed = true where seq = 3"),
            expect_sqlite: (Index, 3, "failed holds 1"),
            expect_postgres: (Index, 3, "failed holds true"),
        },
        Attack {
            name: "id edited",
            sqlite: Sql("update events set id = randomblob(16) where seq = 3"),
            postgres: Sql("update pgtrail.events set id = gen_random_uuid() where seq = 3"),
            expect_sqlite: (Index, 3, "id holds x'"),
            expect_postgres: (Index, 3, "id holds '"),
        },
        Attack {
            name: "failed flag cleared",
            sqlite: Sql("update events set failed = 0 where seq = 7"),
            postgres: Sql("update pgtrail.events set failed = false where seq = 7"),
            expect_sqlite: (Index, 7, "failed holds 0"),
            expect_postgres: (Index, 7, "failed holds false"),
        },
        Attack {
            name: "row_key edited",
            sqlite: Sql("update events set row_key = row_key + 1 where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "row_key holds"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "app_user_key edited",
            sqlite: Sql("update events set app_user_key = 1 where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "app_user_key holds 1"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "db_user_key removed",
            sqlite: Sql("update events set db_user_key = null where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "db_user_key holds NULL"),
            expect_postgres: (Index, 0, ""),
        },
        // SQLite schema 15's copies: an edit hides the event from `ip:`,
        // `db:` and the statement-to-rows link, or plants it in another's.
        Attack {
            name: "client_addr moved out of its block (hidden from ip:)",
            sqlite: Sql("update events set client_addr = x'040a090909' where seq = 3"),
            postgres: Nothing, // an index over the body there, no copy
            expect_sqlite: (Index, 3, "client_addr holds 10.9.9.9"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "client_addr removed",
            sqlite: Sql("update events set client_addr = null where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "client_addr holds NULL"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "database edited (hidden from db:)",
            sqlite: Sql("update events set database = 'other' where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "database holds 'other'"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "backend_pid edited (the statement-to-rows link broken)",
            sqlite: Sql("update events set backend_pid = 1 where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "backend_pid holds 1"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "xid edited (moved to another transaction)",
            sqlite: Sql("update events set xid = 904 where seq = 3"),
            postgres: Nothing,
            expect_sqlite: (Index, 3, "xid holds 904"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            name: "full-text row deleted (the event hidden from --search)",
            sqlite: Sql("delete from events_fts where rowid = 4"),
            postgres: Sql("update pgtrail.events set sql = null where seq = 4"),
            expect_sqlite: (Index, 4, "events_fts holds no words"),
            expect_postgres: (Index, 4, "sql holds NULL"),
        },
        Attack {
            name: "full-text row replaced by other words",
            sqlite: Sql("delete from events_fts where rowid = 4; \
                 insert into events_fts (rowid, sql) values (4, 'select harmless')"),
            postgres: Sql("update pgtrail.events set sql = 'select harmless' where seq = 4"),
            expect_sqlite: (Index, 4, "events_fts holds other words"),
            expect_postgres: (Index, 4, "sql holds 'select harmless'"),
        },
        Attack {
            name: "full-text words added to an event without SQL",
            sqlite: Sql("insert into events_fts (rowid, sql) values (2, 'drop table orders')"),
            postgres: Sql("update pgtrail.events set sql = 'drop table orders' where seq = 2"),
            expect_sqlite: (Index, 2, "no words (the event has no SQL)"),
            expect_postgres: (Index, 2, "sql holds 'drop table orders'"),
        },
        Attack {
            name: "full-text words for an event that does not exist",
            sqlite: Sql("insert into events_fts (rowid, sql) values (99, 'forged')"),
            postgres: Nothing,
            expect_sqlite: (Index, 99, "no such event in the chain"),
            expect_postgres: (Index, 0, ""),
        },
        Attack {
            // serde keeps the last of duplicate keys (the hash still
            // matches); SQL readers see the first.
            name: "duplicate key in new",
            sqlite: Sql(
                "update events set body = replace(body, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":666,\"n\":3}') where seq = 3",
            ),
            postgres: Sql(
                "update pgtrail.events set body = replace(body::text, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":666,\"n\":3}')::json where seq = 3",
            ),
            // Refused when read: pgtrail never writes a key twice.
            expect_sqlite: (Modified, 3, "duplicate key at /n"),
            expect_postgres: (Modified, 3, "duplicate key at /n"),
        },
        Attack {
            // serde_json alone reads it as the number 3 (two texts, one hash);
            // core's reader keeps it an object, so the hash no longer matches.
            name: "serde number marker in new",
            sqlite: Sql(
                "update events set body = replace(body, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":{\"$serde_json::private::Number\":\"3\"}}') where seq = 3",
            ),
            postgres: Sql(
                "update pgtrail.events set body = replace(body::text, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":{\"$serde_json::private::Number\":\"3\"}}')::json where seq = 3",
            ),
            expect_sqlite: (Modified, 3, "no longer matches its hash"),
            expect_postgres: (Modified, 3, "no longer matches its hash"),
        },
        Attack {
            // Hash version 2 is chosen by the nonce: without it the event
            // would be hashed whole (version 1), which it was not.
            name: "nonce stripped (a downgrade to hash version 1)",
            sqlite: Sql(
                "update events set body = replace(body, \
                 ',\"nonce\":\"' || json_extract(body, '$.nonce') || '\"', '') where seq = 3",
            ),
            postgres: Sql(
                "update pgtrail.events set body = replace(body::text, \
                 ',\"nonce\":\"' || (body::json->>'nonce') || '\"', '')::json where seq = 3",
            ),
            expect_sqlite: (Modified, 3, "no longer matches its hash"),
            expect_postgres: (Modified, 3, "no longer matches its hash"),
        },
        Attack {
            // The value's commitment, and so the hash, no longer matches.
            name: "a row value edited, nonce kept",
            sqlite: Sql(
                "update events set body = replace(body, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":4}') where seq = 3",
            ),
            postgres: Sql(
                "update pgtrail.events set body = replace(body::text, '\"new\":{\"n\":3}', \
                 '\"new\":{\"n\":4}')::json where seq = 3",
            ),
            expect_sqlite: (Modified, 3, "no longer matches its hash"),
            expect_postgres: (Modified, 3, "no longer matches its hash"),
        },
        Attack {
            name: "whitespace in the body",
            sqlite: Sql(
                "update events set body = replace(body, '\"n\":3', '\"n\": 3') where seq = 3",
            ),
            postgres: Sql(
                "update pgtrail.events set body = replace(body::text, '\"n\":3', '\"n\": 3')::json \
                 where seq = 3",
            ),
            expect_sqlite: (Modified, 3, "not the canonical encoding"),
            expect_postgres: (Modified, 3, "not the canonical encoding"),
        },
        Attack {
            name: "a row that is not an event",
            sqlite: Sql("update events set body = '{\"not\":\"an event\"}' where seq = 3"),
            postgres: Sql(
                "update pgtrail.events set body = '{\"not\":\"an event\"}' where seq = 3",
            ),
            expect_sqlite: (Modified, 3, "its body is not an event"),
            expect_postgres: (Modified, 3, "its body is not an event"),
        },
        Attack {
            name: "chain_head moved back",
            sqlite: Sql(
                "update chain_head set seq = 8, hash = (select hash from events where seq = 8)",
            ),
            postgres: Sql("update pgtrail.chain_head set seq = 8, \
                 hash = (select hash from pgtrail.events where seq = 8)"),
            expect_sqlite: (Head, 8, "chain goes on to event 10"),
            expect_postgres: (Head, 8, "chain goes on to event 10"),
        },
        Attack {
            name: "chain_head hash replaced",
            sqlite: Sql("update chain_head set hash = randomblob(32)"),
            postgres: Sql("update pgtrail.chain_head set hash = md5('x') || md5('y')"),
            expect_sqlite: (Head, 10, "chain_head names event 10"),
            expect_postgres: (Head, 10, "chain_head names event 10"),
        },
        Attack {
            name: "chain_head removed",
            sqlite: Sql("delete from chain_head"),
            postgres: Sql("update pgtrail.chain_head set seq = 0"),
            expect_sqlite: (Head, 10, "chain_head is empty"),
            expect_postgres: (Head, 10, "chain_head is empty"),
        },
        Attack {
            name: "the newest events deleted, chain_head left",
            sqlite: Sql("delete from events where seq > 8; delete from events_fts where rowid > 8"),
            postgres: Sql("delete from pgtrail.events where seq > 8"),
            expect_sqlite: (Head, 10, "the chain ends at event 8"),
            expect_postgres: (Head, 10, "the chain ends at event 8"),
        },
        Attack {
            name: "an event deleted",
            sqlite: Sql("delete from events where seq = 5; delete from events_fts where rowid = 5"),
            postgres: Sql("delete from pgtrail.events where seq = 5"),
            expect_sqlite: (Removed, 5, "event 5 is missing"),
            expect_postgres: (Removed, 5, "event 5 is missing"),
        },
        Attack {
            name: "an event's row copied in again",
            sqlite: Nothing, // seq is the primary key
            postgres: DuplicateFifth,
            expect_sqlite: (Index, 0, ""),
            expect_postgres: (Inserted, 5, "a second event 5"),
        },
        Attack {
            name: "an event rewritten consistently with its own hash",
            sqlite: RehashFifth,
            postgres: RehashFifth,
            expect_sqlite: (Inserted, 6, "does not link to event 5"),
            expect_postgres: (Inserted, 6, "does not link to event 5"),
        },
    ]
}

/// Runs every attack on stores made by `fresh`, tampered by `edit`; returns
/// the attacks verify missed or misnamed.
async fn run_all<F, Fut, T, TFut>(backend: &str, fresh: F, tamper: T) -> Vec<String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (String, Box<dyn std::any::Any>)>,
    T: Fn(String, Edit, Vec<Event>) -> TFut,
    TFut: std::future::Future<Output = ()>,
{
    let mut missed = Vec::new();
    for (n, attack) in attacks().into_iter().enumerate() {
        let (edit, (kind, seq, says)) = match backend {
            "sqlite" => (attack.sqlite, attack.expect_sqlite),
            _ => (attack.postgres, attack.expect_postgres),
        };
        if matches!(edit, Edit::None) {
            continue;
        }
        let (url, guard) = fresh(n).await;
        let chain = {
            let store = open_for_verify(&url).await.expect("open for verify");
            let report = verify(&*store, None).await.expect("verify");
            assert!(
                report.ok(),
                "{backend}: untouched store: {:?}",
                report.problems
            );
            store.scan(0, 100).await.expect("scan")
        };
        tamper(url.clone(), edit, chain).await;
        let store = open_for_verify(&url).await.expect("open for verify");
        let report = verify(&*store, None).await.expect("verify");
        let found = report
            .problems
            .iter()
            .any(|p| p.kind == kind && p.seq == seq && p.detail.contains(says));
        if !found {
            missed.push(format!(
                "{backend}: {}: wanted {kind:?} at {seq} saying {says:?}, got {:#?}",
                attack.name, report.problems
            ));
        }
        drop(store);
        drop(guard);
    }
    missed
}

/// Event 5 with another duration, sealed in place: its canonical body and
/// its new hash.
fn rewritten_fifth(chain: &[Event]) -> (Event, String) {
    let mut fifth = chain[4].clone().unsealed();
    fifth.duration_us = Some(1);
    seal(&mut fifth, 5, chain[3].hash.as_deref().expect("sealed"));
    let body = CanonicalBody::of(&fifth).as_str().to_string();
    (fifth, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_on_a_sqlite_store_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();
    let missed = run_all(
        "sqlite",
        |n| {
            let path = root.join(format!("attack-{n}.db"));
            async move {
                let store = pgtrail_store::sqlite::SqliteStore::open(&path)
                    .await
                    .expect("open");
                store.append(&fixture()).await.expect("append");
                drop(store);
                (
                    format!("sqlite:{}", path.display()),
                    Box::new(()) as Box<dyn std::any::Any>,
                )
            }
        },
        |url, edit, chain| async move {
            let path = url.trim_start_matches("sqlite:").to_string();
            let raw = rusqlite::Connection::open(&path).expect("raw");
            match edit {
                Edit::Sql(sql) => raw.execute_batch(sql).expect("tamper"),
                Edit::RehashFifth => {
                    let (fifth, body) = rewritten_fifth(&chain);
                    let hash = hex::decode(fifth.hash.clone().expect("sealed")).expect("hex");
                    raw.execute(
                        "update events set body = ?1, hash = ?2 where seq = 5",
                        rusqlite::params![body, hash],
                    )
                    .expect("tamper");
                }
                Edit::DuplicateFifth | Edit::None => {}
            }
        },
    )
    .await;
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_on_a_postgres_store_is_named() {
    let cluster = std::sync::Arc::new(pgtrail_testkit::Cluster::start().expect("cluster"));
    let missed = run_all(
        "postgres",
        |n| {
            let cluster = cluster.clone();
            async move {
                let url = cluster
                    .create_database(&format!("attack{n}"))
                    .await
                    .expect("database");
                let store = pgtrail_store::postgres::PostgresStore::connect(&url)
                    .await
                    .expect("open");
                store.append(&fixture()).await.expect("append");
                drop(store);
                (url, Box::new(()) as Box<dyn std::any::Any>)
            }
        },
        |url, edit, chain| async move {
            let (raw, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("raw");
            tokio::spawn(connection);
            match edit {
                Edit::Sql(sql) => raw.batch_execute(sql).await.expect("tamper"),
                Edit::RehashFifth => {
                    let (fifth, body) = rewritten_fifth(&chain);
                    raw.execute(
                        "update pgtrail.events set body = $1::text::json, hash = $2 where seq = 5",
                        &[&body, &fifth.hash],
                    )
                    .await
                    .expect("tamper");
                }
                Edit::DuplicateFifth => {
                    let mut copy = chain[4].clone().unsealed();
                    copy.id = Event::new(Source::Trigger, Kind::RowChange).id;
                    seal(&mut copy, 5, chain[3].hash.as_deref().expect("sealed"));
                    raw.execute(
                        "insert into pgtrail.events (id, seq, captured_at, source, kind, \
                         db_user, app_user, schema_name, table_name, operation, pk, sql, xid, \
                         failed, body, prev_hash, hash) \
                         select $1::uuid, seq, captured_at, source, kind, db_user, app_user, \
                         schema_name, table_name, operation, pk, sql, xid, failed, $3::text::json, \
                         prev_hash, $2 from pgtrail.events where seq = 5",
                        &[&copy.id, &copy.hash, &CanonicalBody::of(&copy).as_str()],
                    )
                    .await
                    .expect("tamper");
                }
                Edit::None => {}
            }
        },
    )
    .await;
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

/// The store the suite starts from passes, also when opened as other
/// commands open it (so verify's read-only path is not the only one tested).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_untouched_fixture_verifies_on_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clean.db");
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("open");
    store.append(&fixture()).await.expect("append");
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 10);
    drop(store);
    let store = open_for_verify(&format!("sqlite:{}", path.display()))
        .await
        .expect("open for verify");
    assert!(verify(&*store, None).await.expect("verify").ok());
    // Opened for verify, the store refuses to write.
    assert!(store.append(&fixture()).await.is_err());
}

/// `immutable=1`, as for a copy on a read-only mount: verify reads it, and a
/// write-ahead log it could not read is refused rather than ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_copy_verifies_and_a_log_beside_it_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trail.db");
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("open");
    store.append(&fixture()).await.expect("append");
    drop(store);
    let bytes = std::fs::read(&path).expect("read");
    let store = pgtrail_store::sqlite::SqliteStore::open_immutable(&path)
        .await
        .expect("open immutable");
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.events_checked, 10);
    drop(store);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        bytes,
        "the file changed"
    );

    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::write(&wal, b"commits").expect("write");
    let refused = pgtrail_store::sqlite::SqliteStore::open_immutable(&path)
        .await
        .expect_err("a log that would go unseen");
    assert!(refused.to_string().contains("write-ahead log"), "{refused}");
}

/// Opened for verify, a Postgres store is read in read-only transactions
/// and never created: a database without one is refused and left empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_opened_for_verify_is_read_only_and_never_created() {
    let cluster = pgtrail_testkit::Cluster::start().expect("cluster");
    let empty = cluster.create_database("empty").await.expect("database");
    let refused = open_for_verify(&empty).await.err().expect("no store there");
    assert!(
        refused.to_string().contains("no pgtrail store"),
        "{refused}"
    );
    let (raw, connection) = tokio_postgres::connect(&empty, tokio_postgres::NoTls)
        .await
        .expect("raw");
    tokio::spawn(connection);
    let schemas: i64 = raw
        .query_one(
            "select count(*) from pg_namespace where nspname = 'pgtrail'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(schemas, 0, "verify created the schema");

    let url = cluster.create_database("full").await.expect("database");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    store.append(&fixture()).await.expect("append");
    let store = open_for_verify(&url).await.expect("open for verify");
    assert!(verify(&*store, None).await.expect("verify").ok());
    let write = store.append(&fixture()).await.expect_err("read-only");
    assert!(format!("{write:?}").contains("read-only"), "{write:?}");
}

/// Verify beside a writer: appends during the walk move `chain_head` and
/// add full-text rows past it, which is no tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_beside_appends_finds_nothing_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.db");
    let store = std::sync::Arc::new(
        pgtrail_store::sqlite::SqliteStore::open(&path)
            .await
            .expect("open"),
    );
    for _ in 0..200 {
        store.append(&fixture()).await.expect("append");
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                store.append(&fixture()).await.expect("append");
            }
        })
    };
    let url = format!("sqlite:{}", path.display());
    while !writer.is_finished() {
        let reader = open_for_verify(&url).await.expect("open for verify");
        let report = verify(&*reader, None).await.expect("verify");
        assert!(report.ok(), "{:?}", report.problems);
    }
    writer.await.expect("writer");
}
