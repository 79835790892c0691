//! Reading the proxy's statements back, on both backends: `--table`
//! through a statement's objects (on an index), `--not-user`, `--class`,
//! and filter values that try to be syntax: quotes, LIKE wildcards,
//! backslashes, NUL, SQL, a megabyte. Each is bound as a parameter and
//! matches literally, or matches nothing.

use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::event::Channel;
use pgtrail_core::filter::TableName;
use pgtrail_core::{Event, Filter, Kind};
use pgtrail_store::{verify, Store};
use pgtrail_testkit::proxy_events::{claimed, statement};

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0)
        .single()
        .expect("valid time")
}

fn trail() -> Vec<Event> {
    let select = |minute, user, objects: &[&str], sql| {
        statement(t(minute), user, "SELECT", "READ", objects, sql, 1)
    };
    vec![
        select(1, "app", &["public.patients"], "select * from patients"),
        select(
            2,
            "app",
            &["public.visits", "public.patients"],
            "select * from visits join patients using (id)",
        ),
        select(
            3,
            "app",
            &["public.visits"],
            "select 'patients' from visits -- patients",
        ),
        select(
            4,
            "o'brien\\%_",
            &[r#"public."pat%""#],
            r#"select 1 from "pat%""#,
        ),
        select(
            5,
            "reporting",
            &["clinic.patients"],
            "select 1 from clinic.patients",
        ),
        claimed(
            select(6, "app", &["public.patients"], "select 2 from patients"),
            "reporting",
            Channel::Comment,
        ),
        statement(
            t(7),
            "app",
            "INSERT",
            "WRITE",
            &["public.visits"],
            "insert into visits values (1)",
            1,
        ),
    ]
}

async fn sqls(store: &dyn Store, filter: Filter) -> Vec<String> {
    store
        .query(&filter)
        .await
        .unwrap_or_else(|e| panic!("{filter:?}: {e}"))
        .into_iter()
        .map(|e| e.sql.clone().unwrap_or_default())
        .collect()
}

fn table(name: &str) -> Option<TableName> {
    Some(TableName {
        schema: None,
        table: name.into(),
    })
}

async fn statements_are_found_by_what_they_touched(store: &dyn Store) {
    store.append(&trail()).await.expect("append");
    let by = |t: &str| Filter {
        table: Some(TableName::parse(t).expect("table")),
        ..Default::default()
    };
    assert_eq!(
        sqls(store, by("patients")).await,
        [
            "select 2 from patients",
            "select 1 from clinic.patients",
            "select * from visits join patients using (id)",
            "select * from patients",
        ]
    );
    assert_eq!(
        sqls(store, by("clinic.patients")).await,
        ["select 1 from clinic.patients"]
    );
    assert_eq!(sqls(store, by("public.patients")).await.len(), 3);
    assert_eq!(
        sqls(store, by("visits")).await.len(),
        3,
        "the INSERT, the SELECT with a mention of patients, the JOIN"
    );
    let not_reporting = Filter {
        table: table("patients"),
        not_user: Some("reporting".into()),
        ..Default::default()
    };
    assert_eq!(
        sqls(store, not_reporting).await,
        [
            "select 2 from patients",
            "select * from visits join patients using (id)",
            "select * from patients",
        ],
        "the role is left out; a claim of it is not"
    );
    let writes = Filter {
        class: Some("write".into()),
        ..Default::default()
    };
    assert_eq!(sqls(store, writes).await, ["insert into visits values (1)"]);
    assert!(verify(store, None).await.expect("verify").ok());
}

async fn hostile_values_are_bound_and_match_literally(store: &dyn Store) {
    store.append(&trail()).await.expect("append");
    let megabyte = "patients' or ''='".repeat(62_000);
    let hostile = [
        "%",
        "_",
        "pa%",
        "patients%",
        "\\",
        "o'brien\\\\%_",
        "' or 1=1 --",
        "\"; drop table events; --",
        "patients\0",
        "\0",
        megabyte.as_str(),
    ];
    for value in hostile {
        let shown = &value[..value.len().min(30)];
        for filter in [
            Filter {
                table: table(value),
                ..Default::default()
            },
            Filter {
                table: Some(TableName {
                    schema: Some(value.into()),
                    table: "patients".into(),
                }),
                ..Default::default()
            },
            Filter {
                user: Some(value.into()),
                ..Default::default()
            },
            Filter {
                operation: Some(value.into()),
                ..Default::default()
            },
            Filter {
                class: Some(value.into()),
                ..Default::default()
            },
        ] {
            assert!(sqls(store, filter).await.is_empty(), "{shown:?} matched");
        }
        let everything = sqls(
            store,
            Filter {
                not_user: Some(value.into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(everything.len(), 7, "--not-user {shown:?} hid something");
    }
    // The odd names match themselves, exactly.
    assert_eq!(
        sqls(
            store,
            Filter {
                table: table("pat%"),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );
    assert_eq!(
        sqls(
            store,
            Filter {
                user: Some("o'brien\\%_".into()),
                ..Default::default()
            }
        )
        .await
        .len(),
        1
    );
    assert_eq!(
        sqls(
            store,
            Filter {
                not_user: Some("o'brien\\%_".into()),
                ..Default::default()
            }
        )
        .await
        .len(),
        6
    );
    assert_eq!(
        sqls(store, Filter::default()).await.len(),
        7,
        "nothing was changed"
    );
    assert!(verify(store, None).await.expect("verify").ok());
}

async fn failed_means_a_sqlstate_outside_class_00(store: &dyn Store) {
    let ok = statement(t(1), "app", "INSERT", "WRITE", &["public.t"], "insert 1", 1);
    let mut explicit_ok = statement(t(2), "app", "INSERT", "WRITE", &["public.t"], "insert 2", 1);
    explicit_ok.sqlstate = Some("00000".into());
    let failed = pgtrail_testkit::proxy_events::failed(
        statement(t(3), "app", "INSERT", "WRITE", &["public.t"], "insert 3", 1),
        "23505",
        "duplicate key",
    );
    store
        .append(&[ok, explicit_ok, failed])
        .await
        .expect("append");
    let only_failed = Filter {
        kind: Some(Kind::Statement),
        failed: true,
        ..Default::default()
    };
    assert_eq!(sqls(store, only_failed).await, ["insert 3"]);
}

macro_rules! reads {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn statements_are_found_by_what_they_touched() {
                let h = crate::conformance::$backend().await;
                super::statements_are_found_by_what_they_touched(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hostile_values_are_bound_and_match_literally() {
                let h = crate::conformance::$backend().await;
                super::hostile_values_are_bound_and_match_literally(&*h.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn failed_means_a_sqlstate_outside_class_00() {
                let h = crate::conformance::$backend().await;
                super::failed_means_a_sqlstate_outside_class_00(&*h.store).await;
            }
        }
    };
}

reads!(sqlite);
reads!(postgres);

/// Statements are the trail's highest-volume events: on a store of some
/// size the Postgres planner answers `--table` by walking the statements
/// that touched the table newest first (`events_objects`), not by reading
/// every statement, nor every statement of the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_finds_a_table_through_the_object_index() {
    let cluster = pgtrail_testkit::Cluster::start().expect("cluster");
    let url = cluster.create_database("plan").await.expect("db");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("store");
    let mut batch = Vec::new();
    for i in 0..20_000u32 {
        let target = format!("public.t{}", i % 500);
        let joined = format!("public.j{}", i % 300);
        batch.push(statement(
            t(0) + chrono::Duration::milliseconds(i64::from(i)),
            "app",
            "SELECT",
            "READ",
            &[&target, &joined],
            "select 1",
            1,
        ));
        if batch.len() == 5_000 {
            store.append(&batch).await.expect("append");
            batch.clear();
        }
    }
    let db = url.rsplit('/').next().expect("database in URL");
    cluster
        .psql(db, "vacuum analyze pgtrail.events")
        .expect("analyze");
    for name in ["j7", "public.j7"] {
        let filter = Filter {
            table: Some(TableName::parse(name).expect("table")),
            kind: Some(Kind::Statement),
            limit: Some(100),
            ..Default::default()
        };
        let plan = store.explain(&filter).await.expect("explain");
        // One walk of the statements that touched it, newest first,
        // stopping at the page: no sort of every statement of the table.
        // The events are in the default partition (March 2026); the
        // monthly partitions made ahead are empty, and scanning those is free.
        assert!(
            plan.contains("Index Only Scan Backward using events_objects_pkey"),
            "{name}: {plan}"
        );
        assert!(!plan.contains("->  Sort "), "{name}: {plan}");
        assert!(
            !plan.contains("Seq Scan on events_default"),
            "{name}: {plan}"
        );
        let found = store.query(&filter).await.expect("query");
        assert_eq!(found.len(), 67, "{name}: 20,000 / 300, rounded up");
    }
}

/// After `trail()`'s object index was edited the same way on either store
/// (statement 2's names deleted, `patients` given to statement 3, a name
/// for event 99, which is not in the chain): `--table patients` is misled
/// until verify runs, and verify names all three.
async fn assert_misled_then_named(store: &dyn Store) {
    let patients = Filter {
        table: table("patients"),
        ..Default::default()
    };
    assert_eq!(
        sqls(store, patients).await,
        [
            "select 2 from patients",
            "select 1 from clinic.patients",
            "select 'patients' from visits -- patients",
            "select * from patients",
        ],
        "the edit misleads readers until verify runs"
    );
    let report = verify(store, None).await.expect("verify");
    let found: Vec<(i64, String)> = report
        .problems
        .iter()
        .map(|p| (p.seq, p.detail.clone()))
        .collect();
    for (seq, what) in [
        (2, "events_objects holds no names"),
        (3, "events_objects holds other names"),
        (99, "no such event in the chain"),
    ] {
        assert!(
            found.iter().any(|(s, d)| *s == seq && d.contains(what)),
            "{seq} {what}: {found:#?}"
        );
    }
}

/// Someone with the SQLite file deletes a statement's names from the
/// object index (the statement vanishes from `--table patients`) or adds
/// names to another (it shows up where it never was): verify names both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_verify_finds_an_edited_object_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trail.db");
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("store");
    store.append(&trail()).await.expect("append");
    assert!(verify(&store, None).await.expect("verify").ok());
    let raw = rusqlite::Connection::open(&path).expect("raw");
    raw.execute_batch(
        "delete from events_objects where seq = 2;
         insert into events_objects (table_name, schema_name, seq) \
             values ('patients', 'public', 3), ('x', '', 99);",
    )
    .expect("tamper");
    assert_misled_then_named(&store).await;
}

/// The same edits on Postgres, whose index of the relations statements
/// touched is `pgtrail.events_objects` (quoted names, bare and qualified):
/// the store's owner (or anyone granted it) deletes a statement's names,
/// gives another statement a name it never touched, and names an event
/// that is not in the chain. Readers are misled until verify names all
/// three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_finds_an_edited_object_index() {
    let cluster = pgtrail_testkit::Cluster::start().expect("cluster");
    let url = cluster.create_database("objects").await.expect("db");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("store");
    store.append(&trail()).await.expect("append");
    assert!(verify(&store, None).await.expect("verify").ok());
    let db = url.rsplit('/').next().expect("database in URL");
    cluster
        .psql(
            db,
            r#"delete from pgtrail.events_objects where seq = 2;
               insert into pgtrail.events_objects (name, seq)
                   values ('"patients"', 3), ('"x"', 99);"#,
        )
        .expect("tamper");
    assert_misled_then_named(&store).await;
}

/// What the object index costs a SQLite append of statements, and what a
/// `--table` question then takes: statements touching two tables each,
/// appended in batches of 1,000, against the same statements with no
/// objects (nothing to index); rounds alternate. Indicative on a busy
/// machine. Run with `--run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints figures"]
async fn object_index_cost() {
    const EVENTS: u32 = 100_000;
    let make = |with_objects: bool| -> Vec<Event> {
        (0..EVENTS)
            .map(|i| {
                let target = format!("public.t{}", i % 500);
                let joined = format!("public.j{}", i % 300);
                let objects: Vec<&str> = if with_objects {
                    vec![&target, &joined]
                } else {
                    Vec::new()
                };
                let mut e = statement(
                    t(0) + chrono::Duration::milliseconds(i64::from(i)),
                    "app",
                    "SELECT",
                    "READ",
                    &objects,
                    "select * from t join j using (id) where id = $1",
                    1,
                );
                e.schema = Some("public".into());
                e.table = Some(format!("t{}", i % 500));
                e
            })
            .collect()
    };
    let mut append = [Vec::new(), Vec::new()];
    let mut lookup = Vec::new();
    for _round in 0..3 {
        for (side, with_objects) in [(0, false), (1, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("t.db"))
                .await
                .expect("store");
            let events = make(with_objects);
            let started = std::time::Instant::now();
            for batch in events.chunks(1_000) {
                store.append(batch).await.expect("append");
            }
            append[side].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(EVENTS));
            if with_objects {
                let filter = Filter {
                    table: table("j7"),
                    limit: Some(100),
                    ..Default::default()
                };
                let started = std::time::Instant::now();
                let found = store.query(&filter).await.expect("query");
                lookup.push(started.elapsed().as_secs_f64() * 1e3);
                assert_eq!(found.len(), 100);
            }
        }
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1] - v[0])
    };
    let (without, without_spread) = summary(&mut append[0]);
    let (with, with_spread) = summary(&mut append[1]);
    let (query, query_spread) = summary(&mut lookup);
    println!(
        "append, us/statement: without objects {without:.2} (spread {without_spread:.2}), \
         with two objects indexed {with:.2} (spread {with_spread:.2}), {:.2}x\n\
         log --table j7 --limit 100 among {EVENTS} statements: {query:.2} ms (spread {query_spread:.2})",
        with / without
    );
}

/// Attacker: someone with write access to the Postgres store who edits
/// `backend_pid` (a copied column) to hide a statement from the link or
/// lend it to another backend. Verify recomputes it from the hashed body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_verify_finds_an_edited_backend_pid() {
    let cluster = pgtrail_testkit::Cluster::start().expect("cluster");
    let url = cluster.create_database("pids").await.expect("db");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("store");
    let mut events = trail();
    for (i, e) in events.iter_mut().enumerate() {
        e.backend_pid = Some(4000 + i32::try_from(i).expect("small"));
    }
    store.append(&events).await.expect("append");
    assert!(verify(&store, None).await.expect("verify").ok());
    let found = store
        .query(&Filter {
            backend_pid: Some(4001),
            ..Default::default()
        })
        .await
        .expect("query");
    assert_eq!(found.iter().filter_map(|e| e.seq).collect::<Vec<_>>(), [2]);
    let db = url.rsplit('/').next().expect("database in URL");
    cluster
        .psql(
            db,
            "update pgtrail.events set backend_pid = null where seq = 2; \
             update pgtrail.events set backend_pid = 1 where seq = 3",
        )
        .expect("tamper");
    let report = verify(&store, None).await.expect("verify");
    for seq in [2, 3] {
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.seq == seq && p.detail.contains("backend_pid holds")),
            "{seq}: {:#?}",
            report.problems
        );
    }
}

/// What the link's two SQLite indexes (schema 9: backend pid and time,
/// xid; both over the body's fields) cost an append of row changes, and
/// what the link's lookups then take: trigger-like row changes with a pid
/// and an xid, appended in batches of 1,000, to a store with the indexes
/// and one with them dropped; rounds alternate. Indicative on a busy
/// machine. Run with `--run-ignored only --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; prints figures"]
async fn link_index_cost() {
    const EVENTS: u32 = 50_000;
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| {
            let mut e = Event::at(
                pgtrail_core::Source::Trigger,
                Kind::RowChange,
                t(0) + chrono::Duration::milliseconds(i64::from(i)),
            );
            e.schema = Some("public".into());
            e.table = Some(format!("t{}", i % 50));
            e.operation = Some("INSERT".into());
            e.pk = serde_json::json!({"id": i.to_string()})
                .as_object()
                .cloned();
            e.new = serde_json::json!({"id": i, "v": "some text"})
                .as_object()
                .cloned();
            e.db_user = Some("app".into());
            e.backend_pid = Some(1000 + i32::try_from(i % 64).expect("small"));
            e.xid = Some(i64::from(i / 3));
            e
        })
        .collect();
    let mut append = [Vec::new(), Vec::new()];
    let mut lookup = Vec::new();
    for _round in 0..3 {
        for (side, indexed) in [(0, false), (1, true)] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("t.db");
            let store = pgtrail_store::sqlite::SqliteStore::open(&path)
                .await
                .expect("store");
            if !indexed {
                rusqlite::Connection::open(&path)
                    .expect("raw")
                    .execute_batch("drop index events_backend_pid; drop index events_xid;")
                    .expect("drop");
            }
            let started = std::time::Instant::now();
            for batch in events.chunks(1_000) {
                store.append(batch).await.expect("append");
            }
            append[side].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(EVENTS));
            if indexed {
                let started = std::time::Instant::now();
                let by_xid = store
                    .query(&Filter {
                        xid: Some(7_000),
                        ..Default::default()
                    })
                    .await
                    .expect("query");
                let by_pid = store
                    .query(&Filter {
                        backend_pid: Some(1010),
                        since: Some(t(0) + chrono::Duration::seconds(10)),
                        until: Some(t(0) + chrono::Duration::seconds(20)),
                        ..Default::default()
                    })
                    .await
                    .expect("query");
                lookup.push(started.elapsed().as_secs_f64() * 1e3);
                assert_eq!(by_xid.len(), 3);
                assert!(!by_pid.is_empty());
            }
        }
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[v.len() - 1] - v[0])
    };
    let (without, without_spread) = summary(&mut append[0]);
    let (with, with_spread) = summary(&mut append[1]);
    let (query, query_spread) = summary(&mut lookup);
    println!(
        "append, us/row change: without the link's indexes {without:.2} (spread {without_spread:.2}), \
         with them {with:.2} (spread {with_spread:.2}), {:.2}x\n\
         one xid's and one backend's 10 s among {EVENTS} events: {query:.2} ms (spread {query_spread:.2})",
        with / without
    );
}
