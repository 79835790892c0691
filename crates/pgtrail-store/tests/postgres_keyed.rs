//! The Postgres store's keyed searches (schema 12): a table, a user or a
//! database role found by one ordered index walk per way. They must answer
//! exactly what the SQLite store answers, in the same order and pages; a
//! hostile key is only ever a bound value; the reader role reads through
//! the new indexes and writes through nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgtrail_core::filter::TableName;
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::sqlite::SqliteStore;
use pgtrail_store::Store;
use pgtrail_testkit::Cluster;

use crate::postgres::raw;

/// Users as application user, as database role, and as both; hostile
/// names among them, stored so an exact match has something to find.
const APP_USERS: [Option<&str>; 6] = [
    Some("alice"),
    Some("bob"),
    None,
    Some("o'brien\\%_--"),
    Some("a_ice"),
    Some("alice"),
];
const ROLES: [&str; 4] = ["app", "alice", "reporting", "etl"];

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A mixed store: row changes of tables of the same name in two schemas,
/// statements targeting a table or only touching it (a join), sessions;
/// times across a month boundary (two partitions), some arriving late.
fn mixed_events() -> Vec<Event> {
    (0..400i64)
        .map(|n| {
            let late = if n % 23 == 0 { 300 } else { 0 };
            let at = start() + Duration::minutes(n * 37 - late);
            let kind = match n % 10 {
                0..=5 => Kind::RowChange,
                6..=8 => Kind::Statement,
                _ => Kind::Session,
            };
            let mut e = Event::at(Source::Proxy, kind, at);
            e.app_user = APP_USERS[(n % 6) as usize].map(String::from);
            e.db_user = Some(ROLES[(n % 4) as usize].into());
            let table = ["accounts", "orders", "o'rders\\%_--"][(n % 3) as usize];
            let schema = if n % 5 == 0 { "billing" } else { "public" };
            match kind {
                Kind::RowChange => {
                    e.schema = Some(schema.into());
                    e.table = Some(table.into());
                    e.operation = Some(["INSERT", "UPDATE", "DELETE"][(n % 3) as usize].into());
                    e.pk = serde_json::from_str(&format!(r#"{{"id":"{}"}}"#, n % 7)).ok();
                }
                Kind::Statement => {
                    e.operation = Some("SELECT".into());
                    e.sql = Some(format!("select * from {table} join accounts using (id)"));
                    e.objects = vec![format!("{schema}.{table}"), "public.accounts".into()];
                    // Half target their table; the others only touch it.
                    if n % 2 == 0 {
                        e.schema = Some(schema.into());
                        e.table = Some(table.into());
                    }
                }
                _ => {}
            }
            e
        })
        .collect()
}

/// The `seq` of each event `filter` finds, in the order found.
pub(crate) async fn seqs(store: &dyn Store, filter: &Filter) -> Vec<i64> {
    store
        .query(filter)
        .await
        .unwrap_or_else(|e| panic!("{filter:?}: {e}"))
        .iter()
        .map(|e| e.seq.unwrap_or(-1))
        .collect()
}

/// Every page of `filter` by `before_seq`, `size` at a time.
async fn pages(store: &dyn Store, filter: &Filter, size: usize) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut page = Filter {
        limit: Some(size),
        ..filter.clone()
    };
    loop {
        let found = seqs(store, &page).await;
        let Some(&last) = found.last() else {
            return pages;
        };
        pages.push(found);
        page.before_seq = Some(last);
    }
}

fn table(name: &str) -> Option<TableName> {
    TableName::parse(name).ok()
}

fn keyed_filters() -> Vec<Filter> {
    let day = |d: i64| Some(start() + Duration::days(d) + Duration::minutes(11));
    let user = |u: &str| Some(u.to_string());
    vec![
        Filter {
            table: table("accounts"),
            ..Filter::default()
        },
        Filter {
            table: table("public.accounts"),
            ..Filter::default()
        },
        Filter {
            table: table("billing.orders"),
            ..Filter::default()
        },
        Filter {
            table: table("\"o'rders\\%_--\""),
            ..Filter::default()
        },
        Filter {
            user: user("alice"),
            ..Filter::default()
        },
        Filter {
            user: user("a_ice"),
            ..Filter::default()
        },
        Filter {
            user: user("o'brien\\%_--"),
            ..Filter::default()
        },
        Filter {
            user: user("al%"),
            ..Filter::default()
        },
        Filter {
            db_user: user("reporting"),
            ..Filter::default()
        },
        Filter {
            db_user: user("alice"),
            user: user("alice"),
            ..Filter::default()
        },
        Filter {
            user: user("alice"),
            since: day(2),
            until: day(5),
            ..Filter::default()
        },
        Filter {
            table: table("orders"),
            user: user("bob"),
            ..Filter::default()
        },
        Filter {
            table: table("accounts"),
            since: day(3),
            operation: user("update"),
            ..Filter::default()
        },
        Filter {
            table: table("accounts"),
            kind: Some(Kind::Statement),
            ..Filter::default()
        },
        Filter {
            user: user("alice"),
            not_user: user("alice"),
            ..Filter::default()
        },
        Filter {
            user: user("alice'; drop table pgtrail.events; --"),
            ..Filter::default()
        },
        Filter {
            user: user("alice\0"),
            ..Filter::default()
        },
        Filter {
            table: table("accounts\0"),
            ..Filter::default()
        },
        Filter {
            db_user: user("x' or '1'='1"),
            ..Filter::default()
        },
    ]
}

/// A keyed search over Postgres returns the events SQLite returns, in the
/// same order, whole and page by page; hostile keys are matched exactly
/// (`%`, `_` are no wildcards, a quote ends nothing) or match nothing.
#[tokio::test]
async fn keyed_searches_answer_as_sqlite_does() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("keyed").await.expect("database");
    let postgres = PostgresStore::connect(&url).await.expect("postgres store");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = SqliteStore::open(&dir.path().join("trail.db"))
        .await
        .expect("sqlite store");
    let events = mixed_events();
    for chunk in events.chunks(64) {
        postgres.append(chunk).await.expect("append postgres");
        sqlite.append(chunk).await.expect("append sqlite");
    }
    for filter in keyed_filters() {
        let want = seqs(&sqlite, &filter).await;
        assert_eq!(seqs(&postgres, &filter).await, want, "{filter:?}");
        let limited = Filter {
            limit: Some(50),
            ..filter.clone()
        };
        assert_eq!(
            seqs(&postgres, &limited).await,
            seqs(&sqlite, &limited).await,
            "{filter:?} limit 50"
        );
        let paged = pages(&postgres, &filter, 7).await;
        assert_eq!(paged, pages(&sqlite, &filter, 7).await, "{filter:?} pages");
        assert_eq!(
            paged.concat(),
            want,
            "{filter:?}: pages are the whole answer"
        );
    }
    // The cases are not vacuous: hostile names are found exactly.
    let by = |filter: Filter| {
        let postgres = &postgres;
        async move { seqs(postgres, &filter).await.len() }
    };
    let user = |u: &str| Filter {
        user: Some(u.into()),
        ..Filter::default()
    };
    assert_eq!(by(user("o'brien\\%_--")).await, 400 / 6 + 1);
    assert_eq!(by(user("al%")).await, 0);
    assert!(by(user("a_ice")).await < by(user("alice")).await);
    let odd = Filter {
        table: table("\"o'rders\\%_--\""),
        ..Filter::default()
    };
    assert!(by(odd).await > 0);
    // Nothing was dropped by the injection attempt.
    assert_eq!(by(Filter::default()).await, 400);
}

/// The reader role searches through the new indexes, and can neither
/// write events nor build or drop an index of its own on the table.
#[tokio::test]
async fn a_reader_searches_and_writes_nothing() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster
        .create_database("keyed reader")
        .await
        .expect("database");
    let store = PostgresStore::connect(&url).await.expect("store");
    store.append(&mixed_events()).await.expect("append");
    let admin = raw(&url).await;
    admin
        .batch_execute(
            "create role keyed_reader login; \
             grant usage on schema pgtrail to keyed_reader; \
             grant select on all tables in schema pgtrail to keyed_reader",
        )
        .await
        .expect("reader role");
    let reader_url = url.replacen("postgres@", "keyed_reader@", 1);
    let reader = PostgresStore::connect_for_verify(&reader_url)
        .await
        .expect("reader opens");
    let alice = Filter {
        user: Some("alice".into()),
        limit: Some(50),
        ..Filter::default()
    };
    assert_eq!(seqs(&reader, &alice).await, seqs(&store, &alice).await);
    assert!(!seqs(&reader, &alice).await.is_empty());

    let client = raw(&reader_url).await;
    for attack in [
        "insert into pgtrail.events (id, seq, source, kind, captured_at, prev_hash, hash, body, failed) \
         values (gen_random_uuid(), 999, 'proxy', 'session', now(), '', '', '{}', false)",
        "update pgtrail.events set app_user = 'nobody' where app_user = 'alice'",
        "drop index pgtrail.events_app_user_seq_idx",
        "create index on pgtrail.events (app_user, seq)",
        "reindex index pgtrail.events_table_seq_idx",
    ] {
        let refused = client.batch_execute(attack).await;
        let code = refused
            .as_ref()
            .err()
            .and_then(|e| e.code())
            .map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{attack}: {refused:?}");
    }
    assert_eq!(seqs(&store, &Filter::default()).await.len(), 400);
}
