//! The Postgres store's time windows (schema 13, `pgtrail.seq_hours`): a
//! windowed search walks only the `seq` range of the window's hours. It
//! must find every event a search without the range finds, however late an
//! event was captured relative to the chain; the migration fills the
//! ranges of a store with events; prune keeps them true; whoever narrows a
//! range hides events from windowed searches, and `verify` names the hour;
//! the reader and an application role cannot write the table.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgtrail_core::filter::TableName;
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::{verify, ProblemKind, Store};
use pgtrail_testkit::Cluster;

use crate::postgres::raw;
use crate::postgres_keyed::seqs;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 20, 0, 0)
        .single()
        .unwrap_or_default()
}

/// 600 events over ~60 hours across a month boundary, appended in chain
/// order but captured out of it: every 7th arrives 5 hours late (a spool
/// drained late), one batch runs backwards in time across hours, and the
/// last 60 are an import of history two days before the rest.
fn out_of_order_batches() -> Vec<Vec<Event>> {
    let event = |n: i64, at: DateTime<Utc>| {
        let kind = match n % 5 {
            0..=2 => Kind::RowChange,
            3 => Kind::Statement,
            _ => Kind::Session,
        };
        let mut e = Event::at(Source::Proxy, kind, at);
        e.app_user = ["alice", "bob", "carol"]
            .get((n % 3) as usize)
            .map(|u| u.to_string());
        e.db_user = Some(["app", "reporting", "etl", "app"][(n % 4) as usize].into());
        e.client_addr = Some(format!("10.0.{}.{}", n % 4, n % 200));
        match kind {
            Kind::RowChange => {
                e.schema = Some("public".into());
                e.table = Some(["accounts", "orders"][(n % 2) as usize].into());
                e.operation = Some(["INSERT", "UPDATE", "DELETE"][(n % 3) as usize].into());
                e.pk = serde_json::from_str(&format!(r#"{{"id":"{}"}}"#, n % 9)).ok();
            }
            Kind::Statement => {
                e.operation = Some("SELECT".into());
                e.sql = Some("select * from accounts".into());
                e.objects = vec!["public.accounts".into()];
                if n % 2 == 0 {
                    e.sqlstate = Some("42501".into());
                    e.error = Some("permission denied".into());
                }
            }
            _ => {}
        }
        e
    };
    let mut batches = Vec::new();
    for b in 0..9i64 {
        let batch = (0..60i64)
            .map(|i| {
                let n = b * 60 + i;
                let minutes = if b == 4 {
                    // Backwards in time, across three hours.
                    n * 6 - i * 12
                } else if n % 7 == 0 {
                    n * 6 - 300
                } else {
                    n * 6
                };
                event(
                    n,
                    start() + Duration::minutes(minutes) + Duration::seconds(n % 60),
                )
            })
            .collect();
        batches.push(batch);
    }
    let import = (540..600i64)
        .map(|n| {
            event(
                n,
                start() - Duration::days(2) + Duration::minutes((n - 540) * 17),
            )
        })
        .collect();
    batches.push(import);
    batches
}

/// What a full scan answers for `filter`: the same search without its time
/// window (no `seq` range is read for it), the window then applied to each
/// event's capture time, and the limit after.
async fn scanned(store: &dyn Store, filter: &Filter) -> Vec<i64> {
    let everywhere = Filter {
        since: None,
        until: None,
        limit: None,
        ..filter.clone()
    };
    let events = store
        .query(&everywhere)
        .await
        .unwrap_or_else(|e| panic!("{everywhere:?}: {e}"));
    events
        .iter()
        .filter(|e| filter.since.is_none_or(|s| e.captured_at >= s))
        .filter(|e| filter.until.is_none_or(|u| e.captured_at < u))
        .map(|e| e.seq.unwrap_or(-1))
        .take(filter.limit.unwrap_or(usize::MAX))
        .collect()
}

/// A time window, `(since, until)`.
type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// Windows: hour-aligned and not, open at either end, inside one hour, over
/// the imported history only, empty and inverted.
fn windows() -> Vec<Window> {
    let at = |minutes: i64| Some(start() + Duration::minutes(minutes));
    vec![
        (at(0), None),
        (at(600), at(1200)),
        (at(1201), at(1263)),
        (None, at(300)),
        (at(1500), at(1560)),
        (at(2000), None),
        (at(1710), at(1800)),
        (at(-2880), at(-1440)),
        (at(-2000), at(100)),
        (at(5000), None),
        (at(900), at(900)),
        (at(900), at(600)),
    ]
}

/// The forms a search takes: the window alone, by table, by user, by
/// role and kind, failures, an excluded role with an operation, words, a
/// client block, a kind and a source.
fn forms() -> Vec<Filter> {
    let name = |s: &str| Some(s.to_string());
    vec![
        Filter::default(),
        Filter {
            table: TableName::parse("public.accounts").ok(),
            ..Filter::default()
        },
        Filter {
            table: TableName::parse("accounts").ok(),
            operation: name("update"),
            ..Filter::default()
        },
        Filter {
            user: name("alice"),
            ..Filter::default()
        },
        Filter {
            db_user: name("reporting"),
            kind: Some(Kind::Statement),
            ..Filter::default()
        },
        Filter {
            failed: true,
            ..Filter::default()
        },
        Filter {
            not_user: name("app"),
            operation: name("delete"),
            ..Filter::default()
        },
        Filter {
            search: name("accounts"),
            ..Filter::default()
        },
        Filter {
            client_addr: pgtrail_core::filter::AddrFilter::parse("10.0.1.0/24").ok(),
            ..Filter::default()
        },
        Filter {
            kind: Some(Kind::Session),
            source: Some(Source::Proxy),
            ..Filter::default()
        },
    ]
}

/// Appends [`out_of_order_batches`] to `store`, into monthly partitions.
async fn append_out_of_order(store: &PostgresStore) {
    store
        .prepare_until(start() + Duration::days(5))
        .await
        .expect("partitions");
    for batch in out_of_order_batches() {
        store.append(&batch).await.expect("append");
    }
}

async fn store_with_events(cluster: &Cluster, name: &str) -> (PostgresStore, String) {
    let url = cluster.create_database(name).await.expect("database");
    let store = PostgresStore::connect(&url).await.expect("store");
    append_out_of_order(&store).await;
    (store, url)
}

/// Asserts every form in every window, whole, limited and page by page,
/// answers what a full scan does; returns how many found something.
async fn assert_windows_answer_as_a_scan(store: &PostgresStore) -> usize {
    let mut found = 0;
    for (since, until) in windows() {
        for form in forms() {
            let filter = Filter {
                since,
                until,
                ..form
            };
            let want = scanned(store, &filter).await;
            assert_eq!(seqs(store, &filter).await, want, "{filter:?}");
            found += usize::from(!want.is_empty());
            let mut page = Filter {
                limit: Some(7),
                ..filter.clone()
            };
            let mut paged = Vec::new();
            loop {
                let got = seqs(store, &page).await;
                assert_eq!(got, scanned(store, &page).await, "{page:?}");
                let Some(&last) = got.last() else { break };
                paged.extend(got);
                page.before_seq = Some(last);
            }
            assert_eq!(paged, want, "{filter:?}: pages are the whole answer");
        }
    }
    found
}

/// Events captured out of chain order (late, backwards, imported) across
/// hours and batches: every windowed search returns what a full scan does.
#[tokio::test]
async fn a_window_finds_events_captured_out_of_chain_order_on_postgres() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _url) = store_with_events(&cluster, "window order").await;
    let found = assert_windows_answer_as_a_scan(&store).await;
    assert!(found > 40, "the windows are not vacuous: {found}");
    // The imported history is found by a window over its days alone.
    let imported = Filter {
        since: Some(start() - Duration::days(3)),
        until: Some(start() - Duration::days(1)),
        ..Filter::default()
    };
    assert_eq!(seqs(&store, &imported).await.len(), 60);
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// The ranges a table holds, and those the events say, `(hour, first, last)`.
async fn stored_and_recomputed(url: &str) -> (Vec<(i64, i64, i64)>, Vec<(i64, i64, i64)>) {
    let client = raw(url).await;
    let read = |rows: Vec<tokio_postgres::Row>| {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect::<Vec<_>>()
    };
    let stored = client
        .query(
            "select hour, first_seq, last_seq from pgtrail.seq_hours order by hour",
            &[],
        )
        .await
        .expect("stored");
    let recomputed = client
        .query(
            "select floor(extract(epoch from captured_at) / 3600)::bigint, min(seq), max(seq) \
             from pgtrail.events group by 1 order by 1",
            &[],
        )
        .await
        .expect("recomputed");
    (read(stored), read(recomputed))
}

/// Migration 13 on a store with events fills the ranges from them (verify
/// passes, the windows answer as a scan); appends after it keep them; a
/// prune recomputes the hours it touched.
#[tokio::test]
async fn the_migration_fills_the_ranges_and_prune_keeps_them_true() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster
        .create_database("window migration")
        .await
        .expect("db");
    PostgresStore::create_at_version(&url, 12)
        .await
        .expect("version 12");
    let old = PostgresStore::connect_for_verify(&url).await;
    assert!(old.is_err(), "a version 12 store is not this build's");
    let batches = out_of_order_batches();
    {
        // Appended as version 12 did: no ranges kept. The tables are made
        // for the append (this build writes them) and dropped after.
        let client = raw(&url).await;
        client
            .batch_execute(
                "create table pgtrail.seq_hours (hour bigint primary key, \
                 first_seq bigint not null, last_seq bigint not null); \
                 create table pgtrail.events_objects (name text, seq bigint); \
                 alter table pgtrail.events add column client_addr inet",
            )
            .await
            .expect("scratch table");
        let mut lower = client;
        let tx = lower.transaction().await.expect("tx");
        for batch in &batches[..6] {
            pgtrail_store::postgres::append_in(&tx, batch)
                .await
                .expect("append as version 12");
        }
        tx.batch_execute(
            "drop table pgtrail.seq_hours, pgtrail.events_objects; \
             alter table pgtrail.events drop column client_addr",
        )
        .await
        .expect("drop scratch table");
        tx.commit().await.expect("commit");
    }
    let store = PostgresStore::connect(&url).await.expect("migrates to 13");
    let (stored, recomputed) = stored_and_recomputed(&url).await;
    assert!(!stored.is_empty());
    assert_eq!(stored, recomputed, "the migration fills every hour");
    assert!(verify(&store, None).await.expect("verify").ok());
    for batch in &batches[6..] {
        store.append(batch).await.expect("append");
    }
    let (stored, recomputed) = stored_and_recomputed(&url).await;
    assert_eq!(stored, recomputed, "appends keep every hour");
    assert!(verify(&store, None).await.expect("verify").ok());
    assert_windows_answer_as_a_scan(&store).await;

    // A prune recomputes: the hours of the pruned events lose them.
    store.prune(250).await.expect("prune");
    let (stored, recomputed) = stored_and_recomputed(&url).await;
    assert_eq!(
        stored, recomputed,
        "a prune recomputes the hours it touched"
    );
    assert_windows_answer_as_a_scan(&store).await;
    // And the relations of the pruned statements go with them (schema 15,
    // filled by the migration above from the bodies of statements
    // appended without them).
    let left: i64 = raw(&url)
        .await
        .query_one(
            "select count(*) from pgtrail.events_objects where seq <= 250",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    // Without a checkpoint, verify can only say the prefix is gone; no
    // index names an event that is not there.
    let report = verify(&store, None).await.expect("verify");
    assert!(
        report
            .problems
            .iter()
            .all(|p| p.kind == ProblemKind::Removed && p.seq == 1),
        "{report:#?}"
    );
}

/// Whoever may write the table (the appending `pgtrail_admin`, or someone
/// with the store) narrows an hour's range: a windowed search misses the
/// event it no longer covers, and `verify` names `seq_hours` and the hour.
/// The reader and an application role cannot write it at all.
#[tokio::test]
async fn a_narrowed_hour_hides_an_event_and_verify_names_it() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("window attack").await.expect("db");
    PostgresStore::create_at_version(&url, 12)
        .await
        .expect("version 12");
    let admin = raw(&url).await;
    // The roles a trigger install makes, before the migration grants.
    admin
        .batch_execute(
            "create role pgtrail_admin login; create role pgtrail_reader login; \
             create role app_writer login; \
             grant usage on schema pgtrail to pgtrail_admin, pgtrail_reader, app_writer; \
             grant select on all tables in schema pgtrail to pgtrail_reader",
        )
        .await
        .expect("roles");
    let store = PostgresStore::connect(&url).await.expect("migrates to 13");
    append_out_of_order(&store).await;
    assert!(verify(&store, None).await.expect("verify").ok());

    // The reader searches a window through the table, and writes nothing.
    let reader_url = url.replacen("postgres@", "pgtrail_reader@", 1);
    let reader = PostgresStore::connect_for_verify(&reader_url)
        .await
        .expect("reader opens");
    let window = Filter {
        since: Some(start() + Duration::minutes(600)),
        until: Some(start() + Duration::minutes(660)),
        ..Filter::default()
    };
    let all_in_window = seqs(&store, &window).await;
    assert!(!all_in_window.is_empty());
    assert_eq!(seqs(&reader, &window).await, all_in_window);
    let hour: i64 = admin
        .query_one(
            "select hour from pgtrail.seq_hours where first_seq < last_seq order by hour limit 1 offset 5",
            &[],
        )
        .await
        .expect("an hour")
        .get(0);
    for (role, attacks) in [
        (
            "pgtrail_reader",
            vec![
                "update pgtrail.seq_hours set first_seq = last_seq",
                "insert into pgtrail.seq_hours values (1, 1, 1)",
                "delete from pgtrail.seq_hours",
            ],
        ),
        (
            "app_writer",
            vec![
                "select * from pgtrail.seq_hours",
                "update pgtrail.seq_hours set first_seq = last_seq",
                "delete from pgtrail.seq_hours",
            ],
        ),
        // The appender may widen hours, never remove them.
        ("pgtrail_admin", vec!["delete from pgtrail.seq_hours"]),
    ] {
        let client = raw(&url.replacen("postgres@", &format!("{role}@"), 1)).await;
        for attack in attacks {
            let refused = client.batch_execute(attack).await;
            let code = refused
                .as_ref()
                .err()
                .and_then(|e| e.code())
                .map(|c| c.code().to_string());
            assert_eq!(
                code.as_deref(),
                Some("42501"),
                "{role}: {attack}: {refused:?}"
            );
        }
    }
    let (stored, recomputed) = stored_and_recomputed(&url).await;
    assert_eq!(stored, recomputed, "nothing was changed by the refused");

    // pgtrail_admin narrows the hour by one event at its start.
    let narrowing = raw(&url.replacen("postgres@", "pgtrail_admin@", 1)).await;
    let (first, last): (i64, i64) = {
        let row = narrowing
            .query_one(
                "select first_seq, last_seq from pgtrail.seq_hours where hour = $1",
                &[&hour],
            )
            .await
            .expect("the hour");
        (row.get(0), row.get(1))
    };
    narrowing
        .execute(
            "update pgtrail.seq_hours set first_seq = first_seq + 1 where hour = $1",
            &[&hour],
        )
        .await
        .expect("the appender may update the table");
    let hour_start = DateTime::from_timestamp(hour * 3600, 0).expect("hour");
    let in_hour = Filter {
        since: Some(hour_start),
        until: Some(hour_start + Duration::hours(1)),
        ..Filter::default()
    };
    let want = scanned(&store, &in_hour).await;
    let got = seqs(&store, &in_hour).await;
    assert!(want.contains(&first), "{want:?} holds {first}");
    assert!(
        !got.contains(&first),
        "the attack hides seq {first}: {got:?}"
    );
    let report = verify(&store, None).await.expect("verify");
    assert!(!report.ok());
    assert!(
        report.problems.iter().all(|p| p.kind == ProblemKind::Index),
        "{:?}",
        report.problems
    );
    let hour_text = pgtrail_core::time::format_micros(&hour_start);
    let named = format!(
        "seq_hours (the hour from {hour_text}) holds seq {} to {last}, but the event says seq {first} to {last}",
        first + 1
    );
    assert!(
        report.problems.iter().any(|p| p.detail.contains(&named)),
        "{named}: {:?}",
        report.problems
    );
}
