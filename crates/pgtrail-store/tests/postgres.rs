//! Backend-specific tests of the Postgres store: tampering with rows through
//! SQL, signed checkpoints, monthly partitions and retention, migrations and
//! the stores they refuse, concurrent appenders, idempotency, exact round
//! trips, connection failures. Each test runs its own throwaway cluster.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::{verify, Checkpoint, CheckpointKind, KeyPair, ProblemKind, Store, StoreError};
use pgtrail_testkit::Cluster;

/// A store in a fresh database of `cluster`, and that database's URL.
async fn fresh_store(cluster: &Cluster, name: &str) -> (PostgresStore, String) {
    let url = cluster
        .create_database(name)
        .await
        .expect("create database");
    let store = PostgresStore::connect(&url).await.expect("open store");
    (store, url)
}

/// A direct connection for tampering, as a superuser with psql would.
pub(crate) async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

fn row_change(i: i64, at: DateTime<Utc>) -> Event {
    let mut e = Event::at(Source::Cdc, Kind::RowChange, at);
    e.app_user = Some(format!("user{}", i % 3));
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some("accounts".into());
    e.operation = Some("UPDATE".into());
    e.pk = Some(serde_json::from_str(&format!(r#"{{"id":"{}"}}"#, i % 10)).expect("json"));
    e.old = Some(
        serde_json::from_str(&format!(r#"{{"id":{},"balance":10.50}}"#, i % 10)).expect("json"),
    );
    e.new = Some(
        serde_json::from_str(&format!(r#"{{"id":{},"balance":{i}.25}}"#, i % 10)).expect("json"),
    );
    e.changed = vec!["balance".into()];
    e
}

fn batch(from: i64, n: i64) -> Vec<Event> {
    (from..from + n)
        .map(|i| row_change(i, Utc::now()))
        .collect()
}

async fn problem_after(url: &str, store: &PostgresStore, tamper: &str) -> (ProblemKind, i64) {
    raw(url).await.batch_execute(tamper).await.expect("tamper");
    let report = verify(store, None).await.expect("verify runs");
    let first = report.problems.first().expect("tampering is found");
    (first.kind, first.seq)
}

async fn store_with_ten(cluster: &Cluster, name: &str) -> (PostgresStore, String) {
    let (store, url) = fresh_store(cluster, name).await;
    store.append(&batch(1, 10)).await.expect("append");
    assert!(
        verify(&store, None).await.expect("verify").ok(),
        "untampered store verifies clean"
    );
    (store, url)
}

#[tokio::test]
async fn verify_names_each_kind_of_tampering() {
    let cluster = Cluster::start().expect("cluster");

    let (store, url) = store_with_ten(&cluster, "modified").await;
    let found = problem_after(
        &url,
        &store,
        "update pgtrail.events set body = replace(body::text, '\"user1\"', '\"mallory\"')::json where seq = 4",
    )
    .await;
    assert_eq!(found, (ProblemKind::Modified, 4));

    // A filter column is a copy of the body's field: edited alone, it
    // misleads readers that filter on it, and verify says so.
    let (store, url) = store_with_ten(&cluster, "copy edited").await;
    let found = problem_after(
        &url,
        &store,
        "update pgtrail.events set app_user = 'mallory' where seq = 4",
    )
    .await;
    assert_eq!(found, (ProblemKind::Index, 4));

    // The row key (schema 5) is the row index's only entry for an event:
    // moved to another key, the event would drop out of its row's history
    // with body, hash and text columns untouched. Verify recomputes it.
    let (store, url) = store_with_ten(&cluster, "row key moved").await;
    let row = pgtrail_core::RowRef {
        table: pgtrail_core::filter::TableName::parse("public.accounts").expect("table"),
        pk: pgtrail_core::filter::PkFilter::parse("id=4").expect("pk"),
    };
    assert_eq!(store.row_events(&row).await.expect("history").len(), 1);
    let found = problem_after(
        &url,
        &store,
        "update pgtrail.events set row_key = row_key + 1 where seq = 4",
    )
    .await;
    assert_eq!(found, (ProblemKind::Index, 4));
    assert!(
        store.row_events(&row).await.expect("history").is_empty(),
        "what verify guards against: the event is gone from its history"
    );

    let (store, url) = store_with_ten(&cluster, "removed").await;
    let found = problem_after(&url, &store, "delete from pgtrail.events where seq = 6").await;
    assert_eq!(found, (ProblemKind::Removed, 6));

    // A forged event sealed onto event 4's hash, squeezed in as the new 5.
    let (store, url) = store_with_ten(&cluster, "inserted").await;
    let found = problem_after(
        &url,
        &store,
        "update pgtrail.events set seq = seq + 1 where seq >= 5;
         insert into pgtrail.events (id, seq, captured_at, source, kind, db_user, app_user,
             schema_name, table_name, operation, pk, sql, xid, failed, body, prev_hash, hash)
         select gen_random_uuid(), 5, captured_at, source, kind, db_user, 'mallory', schema_name,
             table_name, operation, pk, sql, xid, failed, body, hash, repeat('f', 64)
         from pgtrail.events where seq = 4;",
    )
    .await;
    assert_eq!(found.1, 5, "{found:?}");
    assert!(
        matches!(found.0, ProblemKind::Inserted | ProblemKind::Modified),
        "{found:?}"
    );

    // Each event was hashed with its own seq: swapped as they are, the first
    // of them no longer matches its hash.
    let (store, url) = store_with_ten(&cluster, "reordered").await;
    let found = problem_after(
        &url,
        &store,
        "update pgtrail.events set seq = case seq when 3 then 4 else 3 end where seq in (3, 4)",
    )
    .await;
    assert_eq!(found, (ProblemKind::Modified, 3));

    // An attacker who re-seals both at their new places: the second still
    // links to event 2, which verify recognises as a reordering.
    let (store, url) = store_with_ten(&cluster, "resealed").await;
    let chain = store.scan(0, 10).await.expect("scan");
    let hash_2 = chain[1].hash.clone().expect("sealed");
    let client = raw(&url).await;
    for (event, seq) in [(&chain[3], 3), (&chain[2], 4)] {
        let mut moved = event.clone().unsealed();
        pgtrail_core::canonical::seal(&mut moved, seq, &hash_2);
        client
            .execute(
                "update pgtrail.events set seq = $1, prev_hash = $2, hash = $3 where id = $4",
                &[&seq, &moved.prev_hash, &moved.hash, &moved.id],
            )
            .await
            .expect("reseal");
    }
    let report = verify(&store, None).await.expect("verify");
    let first = report.problems.first().expect("found");
    assert_eq!(
        (first.kind, first.seq),
        (ProblemKind::Reordered, 4),
        "{first:?}"
    );
}

#[tokio::test]
async fn forged_event_with_a_valid_hash_is_found_as_inserted() {
    // The forger recomputes the hash with Postgres's sha256(): the content
    // check passes, only the broken link gives the insertion away.
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = store_with_ten(&cluster, "forged").await;
    let mut forged = row_change(99, Utc::now());
    pgtrail_core::canonical::seal(&mut forged, 5, "f".repeat(64).as_str());
    let client = raw(&url).await;
    client
        .batch_execute("update pgtrail.events set seq = seq + 1 where seq >= 5")
        .await
        .expect("renumber");
    let body = pgtrail_core::canonical::CanonicalBody::of(&forged)
        .as_str()
        .to_string();
    client
        .execute(
            "insert into pgtrail.events (id, seq, source, kind, captured_at, app_user, db_user, schema_name, \
             table_name, operation, pk, failed, body, prev_hash, hash) \
             select (e->>'id')::uuid, 5, e->>'source', e->>'kind', (e->>'captured_at')::timestamptz, \
             e->>'app_user', e->>'db_user', e->>'schema', e->>'table', e->>'operation', e->'pk', \
             false, $1::text::json, $2, $3 \
             from (select $1::text::jsonb as e) f",
            &[&body, &forged.prev_hash, &forged.hash],
        )
        .await
        .expect("insert forged row");
    // Its body is canonical and its hash right, so only the link can fail.
    let report = verify(&store, None).await.expect("verify");
    let first = report.problems.first().expect("found");
    assert_eq!(first.seq, 5, "{first:?}");
    assert_eq!(first.kind, ProblemKind::Inserted, "{first:?}");
}

#[tokio::test]
async fn signed_head_checkpoint_catches_a_rewritten_tail() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = store_with_ten(&cluster, "rewritten").await;
    let key = KeyPair::generate().expect("key");
    let head = store.head().await.expect("head").expect("not empty");
    let checkpoint =
        Checkpoint::new(CheckpointKind::Head, head.seq, head.hash, head.seq).signed(&key);
    store.add_checkpoint(&checkpoint).await.expect("checkpoint");
    let report = verify(&store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checkpoints_signed, 1);

    // Rewrite events 6..10 and reseal them properly: the chain itself is
    // consistent again, only the signed checkpoint still remembers event 10.
    let client = raw(&url).await;
    let prev: String = client
        .query_one("select hash from pgtrail.events where seq = 5", &[])
        .await
        .expect("hash of 5")
        .get(0);
    // A careful attacker recounts the facet summary and the hours' ranges
    // too.
    client
        .batch_execute(&format!(
            "delete from pgtrail.events where seq > 5; {} {}",
            pgtrail_store::postgres::RECOUNT_FACETS,
            pgtrail_store::postgres::RECOUNT_SEQ_HOURS
        ))
        .await
        .expect("delete tail");
    client
        .execute("update pgtrail.chain_head set seq = 5, hash = $1", &[&prev])
        .await
        .expect("reset head");
    store
        .append(&batch(100, 5))
        .await
        .expect("append forged tail");
    let report = verify(&store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    let kinds: Vec<_> = report.problems.iter().map(|p| (p.kind, p.seq)).collect();
    assert_eq!(kinds, [(ProblemKind::Checkpoint, 10)], "{report:?}");
}

fn month_start(year: i32, month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .expect("valid date")
}

#[tokio::test]
async fn partitions_are_made_ahead_and_dropped_by_retention() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "partitions").await;
    let now = Utc::now();
    // Two old months (they land in the default partition), then recent
    // events (the appending store made this month's partition first).
    let mut events = Vec::new();
    for (i, at) in [
        month_start(2024, 1),
        month_start(2024, 2),
        now - chrono::Duration::hours(1),
    ]
    .into_iter()
    .enumerate()
    {
        events.extend(
            (0..5).map(|j| row_change(i as i64 * 10 + j, at + chrono::Duration::minutes(j))),
        );
    }
    store.append(&events).await.expect("append");

    // Another process that appends (a restart, a second writer) makes the
    // partitions ahead, but leaves the old months' rows where they are:
    // moving them would hold the chain head, and stall capture, for as
    // long as rewriting them all takes.
    let writer = PostgresStore::connect(&url).await.expect("second writer");
    let late = row_change(99, now - chrono::Duration::minutes(5));
    writer.append(&[late]).await.expect("append");
    let waiting: i64 = raw(&url)
        .await
        .query_one("select count(*) from pgtrail.events_default", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(waiting, 10, "the append path moved no row");

    let created = store
        .prepare_until(now + chrono::Duration::days(40))
        .await
        .expect("prepare");
    assert!(
        created.contains(&"events_202401".to_string()),
        "{created:?}"
    );
    assert!(
        created.contains(&"events_202402".to_string()),
        "{created:?}"
    );
    let this_month = format!("events_{}", now.format("%Y%m"));
    assert!(
        !created.contains(&this_month),
        "append already made this month's partition: {created:?}"
    );
    assert!(
        store.prepare_until(now).await.expect("again").is_empty(),
        "idempotent"
    );

    let client = raw(&url).await;
    let in_default: i64 = client
        .query_one("select count(*) from pgtrail.events_default", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(in_default, 0, "rows moved out of the default partition");
    let in_january: i64 = client
        .query_one("select count(*) from pgtrail.events_202401", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(in_january, 5);
    let in_this_month: i64 = client
        .query_one(&format!("select count(*) from pgtrail.{this_month}"), &[])
        .await
        .expect("this month's partition exists")
        .get(0);
    assert_eq!(
        in_this_month, 6,
        "recent events never touched the default partition"
    );
    assert!(verify(&store, None).await.expect("verify").ok());

    // Keep 30 days: both 2024 months go, as whole partitions.
    let key = KeyPair::generate().expect("key");
    let outcome = pgtrail_store::retention::apply(
        &store,
        chrono::Duration::days(30),
        now,
        None,
        Some(&key),
        &[],
        None,
    )
    .await
    .expect("retention");
    assert_eq!(outcome.removed, 10);
    assert_eq!(outcome.through_seq, Some(10));
    assert_eq!(
        outcome.dropped_partitions,
        ["events_202401", "events_202402"]
    );
    let report = verify(&store, Some(&key.verifying_key()))
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 6);
    let left = store.scan(0, 100).await.expect("scan");
    assert_eq!(left.first().and_then(|e| e.seq), Some(11));

    // Appends go on from the head, into this month's partition.
    store
        .append(&batch(50, 3))
        .await
        .expect("append after prune");
    assert_eq!(store.head().await.expect("head").map(|h| h.seq), Some(19));
    assert!(verify(&store, None).await.expect("verify").ok());
}

#[tokio::test]
async fn partition_work_and_appends_run_side_by_side() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "side by side").await;
    let other = PostgresStore::connect(&url).await.expect("second store");
    let old = month_start(2025, 3);
    store
        .append(&(0..50).map(|i| row_change(i, old)).collect::<Vec<_>>())
        .await
        .expect("old events");
    let appends = async {
        for round in 0..20 {
            store
                .append(&batch(100 + round * 10, 10))
                .await
                .expect("append");
        }
    };
    let maintenance = async {
        let now = Utc::now();
        for ahead in 0..5 {
            other
                .prepare_until(now + chrono::Duration::days(31 * ahead))
                .await
                .expect("prepare");
        }
        other.prune(25).await.expect("prune")
    };
    let ((), pruned) = tokio::join!(appends, maintenance);
    assert_eq!(pruned.removed, 25);
    assert!(
        pruned.dropped_partitions.is_empty(),
        "events_202503 still holds 26..50"
    );
    let seqs: Vec<i64> = store
        .scan(0, 1000)
        .await
        .expect("scan")
        .iter()
        .filter_map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (26..=250).collect::<Vec<_>>());
}

#[tokio::test]
async fn migrations_are_recorded_and_reopening_is_a_no_op() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "reopen").await;
    store.append(&batch(1, 3)).await.expect("append");
    let client = raw(&url).await;
    let before: Vec<(i64, String)> = client
        .query(
            "select version, applied_at::text from pgtrail.schema_migrations order by 1",
            &[],
        )
        .await
        .expect("migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before.len() as i64, PostgresStore::schema_version());
    let again = PostgresStore::connect(&url).await.expect("reopen");
    let after: Vec<(i64, String)> = client
        .query(
            "select version, applied_at::text from pgtrail.schema_migrations order by 1",
            &[],
        )
        .await
        .expect("migrations")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(before, after);
    assert_eq!(again.scan(0, 10).await.expect("scan").len(), 3);
}

#[tokio::test]
async fn two_processes_opening_a_new_store_at_once_both_succeed() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("race").await.expect("db");
    let (a, b) = tokio::join!(PostgresStore::connect(&url), PostgresStore::connect(&url));
    a.expect("first opener");
    b.expect("second opener");
}

#[tokio::test]
async fn stores_that_must_not_be_touched_are_refused() {
    let cluster = Cluster::start().expect("cluster");

    let (_, url) = fresh_store(&cluster, "too new").await;
    raw(&url)
        .await
        .batch_execute(
            "insert into pgtrail.schema_migrations (version, name) values (999, 'from the future')",
        )
        .await
        .expect("insert");
    match PostgresStore::connect(&url).await {
        Err(StoreError::TooNew {
            found: 999,
            supported,
            ..
        }) => assert_eq!(supported, PostgresStore::schema_version()),
        other => panic!("expected TooNew, got {:?}", other.err()),
    }

    let url = cluster.create_database("foreign").await.expect("db");
    raw(&url)
        .await
        .batch_execute("create schema pgtrail; create table pgtrail.hiking_trails (name text)")
        .await
        .expect("create");
    match PostgresStore::connect(&url).await {
        Err(e @ StoreError::Foreign { .. }) => {
            assert!(e.to_string().contains("hiking_trails"), "{e}")
        }
        other => panic!("expected Foreign, got {:?}", other.err()),
    }

    let (_, url) = fresh_store(&cluster, "half").await;
    raw(&url)
        .await
        .batch_execute("drop table pgtrail.checkpoints")
        .await
        .expect("drop");
    assert!(matches!(
        PostgresStore::connect(&url).await,
        Err(StoreError::HalfMigrated { version: 1, .. })
    ));

    let (_, url) = fresh_store(&cluster, "unrecorded").await;
    raw(&url)
        .await
        .batch_execute("drop table pgtrail.schema_migrations")
        .await
        .expect("drop");
    assert!(matches!(
        PostgresStore::connect(&url).await,
        Err(StoreError::HalfMigrated { version: 1, .. })
    ));

    // An empty schema made ahead by an administrator is fine.
    let url = cluster.create_database("empty schema").await.expect("db");
    raw(&url)
        .await
        .batch_execute("create schema pgtrail")
        .await
        .expect("create");
    PostgresStore::connect(&url)
        .await
        .expect("empty schema is adopted");
}

#[tokio::test]
async fn concurrent_appends_from_two_stores_keep_one_gap_free_chain() {
    let cluster = Cluster::start().expect("cluster");
    let (a, url) = fresh_store(&cluster, "concurrent").await;
    let b = PostgresStore::connect(&url).await.expect("second store");
    let work = |store: PostgresStore, offset: i64| async move {
        for round in 0..20 {
            store
                .append(&batch(offset + round * 25, 25))
                .await
                .expect("append");
        }
    };
    tokio::join!(work(a, 0), work(b, 10_000));
    let store = PostgresStore::connect(&url).await.expect("reopen");
    let all = store.scan(0, 10_000).await.expect("scan");
    let seqs: Vec<i64> = all.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 1000);
}

#[tokio::test]
async fn re_appending_a_batch_adds_only_what_is_new() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _) = fresh_store(&cluster, "idempotent").await;
    let first = batch(1, 5);
    let receipt = store.append(&first).await.expect("append");
    assert_eq!(receipt.first_seq, Some(1));
    let again = store.append(&first).await.expect("retry");
    assert_eq!(again.first_seq, None);
    assert_eq!(again.head, receipt.head);

    let mut mixed = first;
    let new = batch(6, 2);
    mixed.extend(new.clone());
    mixed.push(new[0].clone()); // repeated inside the batch too
    let receipt = store.append(&mixed).await.expect("mixed");
    assert_eq!(receipt.first_seq, Some(6));
    assert_eq!(receipt.head.map(|h| h.seq), Some(7));
    let stored: Vec<_> = store
        .scan(5, 10)
        .await
        .expect("scan")
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored, [new[0].id, new[1].id]);
}

#[tokio::test]
async fn a_batch_that_fails_midway_leaves_nothing_behind() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _) = fresh_store(&cluster, "all or nothing").await;
    store.append(&batch(1, 2)).await.expect("append");
    let mut events = batch(3, 5);
    // Postgres keeps no time before 4713 BC: the COPY fails on the fourth row.
    events[3].captured_at = chrono::DateTime::from_timestamp(-300_000_000_000, 0).expect("time");
    let error = store
        .append(&events)
        .await
        .expect_err("the batch is refused");
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    assert_eq!(store.head().await.expect("head").map(|h| h.seq), Some(2));
    assert_eq!(store.scan(0, 100).await.expect("scan").len(), 2);
    store
        .append(&batch(10, 1))
        .await
        .expect("the chain goes on");
    assert!(verify(&store, None).await.expect("verify").ok());
}

#[tokio::test]
async fn an_event_the_store_cannot_hold_is_kept_as_its_quarantine_event() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _) = fresh_store(&cluster, "quarantine").await;
    let mut events = batch(1, 3);
    // jsonb cannot hold NUL, nor can text; json can.
    events[0].pk = Some(serde_json::from_str(r#"{"id":"a\u0000b"}"#).expect("json"));
    events[1].app_user = Some("mal\0lory".into());
    events[2].new = Some(serde_json::from_str(r#"{"doc":"x\u0000y"}"#).expect("json"));
    store.append(&events).await.expect("the batch is taken");
    store
        .append(&events)
        .await
        .expect("a retry is deduplicated");
    let stored = store.scan(0, 100).await.expect("scan");
    assert_eq!(stored.len(), 3);
    for (original, kept) in events.iter().zip(&stored).take(2) {
        assert_eq!(kept.kind, pgtrail_core::Kind::Quarantine);
        assert_eq!(kept.id, original.id);
        let raw = pgtrail_core::quarantine::raw(kept).expect("raw bytes");
        let back: pgtrail_core::Event = serde_json::from_slice(&raw).expect("the original");
        let mut expected = original.clone();
        expected.captured_at = pgtrail_core::time::truncate_micros(expected.captured_at);
        assert_eq!(back, expected);
    }
    assert_eq!(stored[2].kind, events[2].kind, "json keeps NUL as \\u0000");
    assert_eq!(stored[2].new, events[2].new);
    assert!(verify(&store, None).await.expect("verify").ok());
}

#[tokio::test]
async fn append_in_shares_the_callers_transaction() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "shared tx").await;
    let mut client = raw(&url).await;
    client
        .batch_execute("create table inbox (n int); insert into inbox values (1), (2)")
        .await
        .expect("inbox");

    // Rolled back: neither the events nor the inbox deletion happened.
    let tx = client.transaction().await.expect("begin");
    let receipt = pgtrail_store::postgres::append_in(&tx, &batch(1, 2))
        .await
        .expect("append_in");
    assert_eq!(receipt.first_seq, Some(1));
    tx.execute("delete from inbox", &[]).await.expect("delete");
    tx.rollback().await.expect("rollback");
    assert_eq!(store.head().await.expect("head"), None);

    let tx = client.transaction().await.expect("begin");
    let receipt = pgtrail_store::postgres::append_in(&tx, &batch(1, 2))
        .await
        .expect("append_in");
    tx.execute("delete from inbox", &[]).await.expect("delete");
    tx.commit().await.expect("commit");
    assert_eq!(receipt.head.map(|h| h.seq), Some(2));
    let left: i64 = client
        .query_one("select count(*) from inbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0);
    assert!(verify(&store, None).await.expect("verify").ok());

    // It fails as Store::append does: a StoreError the caller classifies
    // with is_retryable (here the caller's transaction had already failed;
    // retried in a new one, the batch goes in).
    let tx = client.transaction().await.expect("begin");
    tx.batch_execute("select 1/0")
        .await
        .expect_err("division by zero");
    let failed = pgtrail_store::postgres::append_in(&tx, &batch(3, 2))
        .await
        .expect_err("the transaction is aborted");
    assert!(
        matches!(&failed, pgtrail_store::StoreError::Backend { context, .. } if context == "appending 2 events"),
        "{failed:?}"
    );
    assert!(failed.is_retryable());
    drop(tx);
    assert_eq!(store.head().await.expect("head").map(|h| h.seq), Some(2));
}

/// A database (or role) set to `synchronous_commit = off` must not make an
/// append return before it is durable: the store's own sessions, and a
/// caller's transaction that `append_in` joins, commit synchronously. (The
/// test clusters run with it off, as an operator tuning for speed might.)
#[tokio::test]
async fn appends_commit_synchronously_whatever_the_database_says() {
    let cluster = Cluster::start().expect("cluster");
    let (_, url) = fresh_store(&cluster, "sync commit").await;
    let db = url.rsplit('/').next().expect("database");
    raw(&url)
        .await
        .batch_execute(&format!(
            "alter database \"{db}\" set synchronous_commit = off;
             create table public.seen (setting text);
             create function public.note() returns trigger language plpgsql as
               $$ begin insert into public.seen values (current_setting('synchronous_commit')); return null; end $$;
             create trigger note after insert on pgtrail.events for each row execute function public.note();"
        ))
        .await
        .expect("prepare");
    let store = PostgresStore::connect(&url).await.expect("open store");
    store.append(&batch(1, 2)).await.expect("append");

    let mut caller = raw(&url).await;
    let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
    let before = show(
        caller
            .query_one("show synchronous_commit", &[])
            .await
            .expect("show"),
    );
    assert_eq!(before, "off", "the database's setting reaches new sessions");
    let tx = caller.transaction().await.expect("begin");
    pgtrail_store::postgres::append_in(&tx, &batch(3, 1))
        .await
        .expect("append_in");
    tx.commit().await.expect("commit");
    let after = show(
        caller
            .query_one("show synchronous_commit", &[])
            .await
            .expect("show"),
    );
    assert_eq!(after, "off", "the caller's session is left as it was");

    let seen: Vec<String> = caller
        .query("select setting from public.seen", &[])
        .await
        .expect("seen")
        .into_iter()
        .map(show)
        .collect();
    assert_eq!(seen, ["on", "on", "on"]);
}

#[tokio::test]
async fn events_come_back_exactly_as_they_were_hashed() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _) = fresh_store(&cluster, "round trip").await;
    let mut e = row_change(1, Utc::now());
    e.context =
        Some(serde_json::from_str(r#"{"z":1e3,"a":{"n":0.10},"req":"r-1"}"#).expect("json"));
    e.new = Some(
        serde_json::from_str(
            r#"{"amount":12345678901234567890.000,"tiny":1E-7,"dime":0.10,"s":"é\u0000x"}"#,
        )
        .expect("json"),
    );
    e.params = Some(serde_json::from_str(r#"[1.50, "x", null, {"b":2}]"#).expect("json"));
    e.objects = vec!["public.accounts".into()];
    e.partial = vec!["blob".into()];
    e.sql = Some("update public.accounts set balance = balance + $1".into());
    e.client_addr = Some("10.0.0.1".into());
    e.client_port = Some(5432);
    e.backend_pid = Some(77);
    e.vouch_server_fields();
    e.claim("context", pgtrail_core::event::Channel::Setting);
    e.claim("context", pgtrail_core::event::Channel::Comment);
    e.xid = Some(1 << 40);
    e.lsn = Some("0/16B3748".into());
    e.committed_at = Some(Utc::now());
    e.tx_seq = Some(0);
    e.sqlstate = Some("00000".into());
    e.rows = Some(1);
    e.duration_us = Some(15);
    store.append(&[e.clone()]).await.expect("append");
    let back = store.scan(0, 1).await.expect("scan").remove(0);
    let mut expected = e;
    expected.committed_at = expected
        .committed_at
        .map(pgtrail_core::time::truncate_micros);
    assert_eq!(back.clone().unsealed(), expected);
    assert_eq!(
        pgtrail_core::canonical::event_hash(&back),
        back.hash.clone().expect("sealed")
    );
    let text = serde_json::to_string(&back.new).expect("json");
    assert!(
        text.contains("12345678901234567890.000") && text.contains("0.10"),
        "{text}"
    );
}

#[tokio::test]
async fn search_finds_words_inside_qualified_names_and_never_errors() {
    let cluster = Cluster::start().expect("cluster");
    let (store, _) = fresh_store(&cluster, "search").await;
    let mut e = Event::new(Source::Proxy, Kind::Statement);
    e.sql = Some("UPDATE public.accounts SET owner = 'alice@example.com' WHERE id = 42".into());
    // Words past a lexeme's 2,047 bytes and text past the 200,000 indexed
    // characters never fail an append; the other words stay searchable.
    let mut long = Event::new(Source::Proxy, Kind::Statement);
    long.sql = Some(format!(
        "select '\\x{}' from ledger -- {}",
        "ab".repeat(2_000),
        "pad ".repeat(60_000)
    ));
    store.append(&[e, long]).await.expect("append");
    let ledger = store
        .query(&Filter {
            search: Some("ledger".into()),
            ..Filter::default()
        })
        .await
        .expect("query");
    assert_eq!(ledger.len(), 1);
    let search = |s: &str| Filter {
        search: Some(s.into()),
        ..Filter::default()
    };
    for found in ["accounts", "ALICE example", "public.accounts", "id 42"] {
        assert_eq!(
            store.query(&search(found)).await.expect("query").len(),
            1,
            "{found}"
        );
    }
    for missing in ["account", "bob", "accounts bob"] {
        assert!(
            store
                .query(&search(missing))
                .await
                .expect("query")
                .is_empty(),
            "{missing}"
        );
    }
    for hostile in [
        "'; drop table x; --",
        "a & | ! <-> :*",
        "\\",
        "(((",
        "\u{0}",
    ] {
        store
            .query(&search(hostile))
            .await
            .expect("a hostile search never errors");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_clear_open_error_without_the_password() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("postgres://pgtrail:s3cret@127.0.0.1:{port}/trail");
    let started = Instant::now();
    let error = PostgresStore::connect(&url)
        .await
        .err()
        .expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}/trail")),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn connections_killed_by_the_server_are_replaced() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "reconnect").await;
    store.append(&batch(1, 3)).await.expect("append");
    let killed: i64 = raw(&url)
        .await
        .query_one(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where application_name = 'pgtrail' and pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed >= 1, "the store's connection was terminated");
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .append(&batch(4, 3))
        .await
        .expect("append on a new connection");
    assert_eq!(store.head().await.expect("head").map(|h| h.seq), Some(6));
}

#[tokio::test]
async fn authentication_failure_is_an_open_error() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.url("postgres").replace("postgres@", "nobody@");
    let error = PostgresStore::connect(&url)
        .await
        .err()
        .expect("no such role");
    assert!(matches!(error, StoreError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("nobody"), "{error}");
}

/// Append throughput, with and without SQL text on the events (the
/// full-text index is most of the cost):
/// `cargo nextest run -p pgtrail-store --release --run-ignored only --no-capture postgres::append_throughput`.
#[tokio::test]
#[ignore = "benchmark; run explicitly"]
async fn append_throughput() {
    let cluster = Cluster::start().expect("cluster");
    for with_sql in [true, false] {
        let (store, _) = fresh_store(&cluster, "bench").await;
        let (batches, size) = (20, 10_000);
        let mut total = Duration::ZERO;
        for b in 0..batches {
            let events: Vec<Event> = (0..size)
                .map(|i| {
                    let mut e = row_change(b * size + i, Utc::now());
                    if with_sql {
                        e.sql = Some(format!(
                            "update public.accounts set balance = {i} where id = {}",
                            i % 10
                        ));
                    }
                    e
                })
                .collect();
            let started = Instant::now();
            store.append(&events).await.expect("append");
            total += started.elapsed();
        }
        let sample = store.scan(0, 1).await.expect("scan").remove(0);
        let bytes = serde_json::to_vec(&sample).expect("json").len();
        let n = (batches * size) as f64;
        println!(
            "appended {n} events of ~{bytes} bytes (sql: {with_sql}) in batches of {size}: {:.0} events/s",
            n / total.as_secs_f64()
        );
    }
}

/// Events of every shape the capture paths make, for the migration tests:
/// row images with odd number spellings, NUL and deep values, statements
/// with SQL, params and errors, DDL with objects, context, and (from schema
/// 3) provenance.
fn varied_events(with_provenance: bool) -> Vec<Event> {
    let at = pgtrail_core::time::truncate_micros(Utc::now() - chrono::Duration::hours(2));
    let mut events = Vec::new();
    for i in 0..30i64 {
        let at = at + chrono::Duration::seconds(i);
        let mut e = row_change(i, at);
        e.client_addr = Some("10.0.0.7".into());
        e.client_port = Some(5432);
        e.backend_pid = Some(4000 + i as i32);
        e.application_name = Some("billing".into());
        e.session_id = Some(format!("s{}", i % 4));
        e.database = Some("shop".into());
        e.xid = Some(700 + i / 3);
        e.lsn = Some(format!("0/{:X}", 0x1000 + i));
        e.committed_at = Some(at);
        e.tx_seq = Some(i % 3);
        if i % 5 == 0 {
            e.context = Some(
                serde_json::from_str(r#"{"request":"r-1","route":"/pay","weird":1.50e3}"#)
                    .expect("json"),
            );
            e.new = Some(
                serde_json::from_str(r#"{"id":1,"doc":"a\u0000b","deep":[[[[{"x":[1,2.0]}]]]]}"#)
                    .expect("json"),
            );
            e.partial = vec!["doc".into()];
        }
        if i % 7 == 3 {
            e.operation = Some("DELETE".into());
            e.new = None;
            e.changed = Vec::new();
        }
        if with_provenance {
            e.vouch_server_fields();
        }
        events.push(e);
        if i % 4 == 1 {
            let mut s = Event::at(Source::Proxy, Kind::Statement, at);
            s.sql = Some(format!(
                "update public.accounts set balance = $1 where id = {i} -- note"
            ));
            s.params = Some(vec![serde_json::json!("12.50"), serde_json::json!(null)]);
            s.db_user = Some("app".into());
            s.app_user = Some(format!("user{}", i % 3));
            s.operation = Some("UPDATE".into());
            s.command_tag = Some("UPDATE 1".into());
            s.objects = vec!["public.accounts".into()];
            s.rows = Some(1);
            s.duration_us = Some(1200 + i);
            if i % 8 == 1 {
                s.sqlstate = Some("23505".into());
                s.error = Some("duplicate key value violates unique constraint".into());
                s.rows = None;
            }
            events.push(s);
        }
    }
    let mut ddl = Event::at(
        Source::Trigger,
        Kind::Ddl,
        at + chrono::Duration::seconds(40),
    );
    ddl.sql = Some("alter table public.accounts add column note text".into());
    ddl.operation = Some("ALTER TABLE".into());
    ddl.schema = Some("public".into());
    ddl.table = Some("accounts".into());
    ddl.objects = vec!["public.accounts".into()];
    events.push(ddl);
    let mut truncate = row_change(99, at + chrono::Duration::seconds(41));
    truncate.operation = Some("TRUNCATE".into());
    truncate.pk = None;
    truncate.old = None;
    truncate.new = None;
    truncate.changed = Vec::new();
    events.push(truncate);
    events
}

/// Writes `events` into a store of schema `version` (1 to 3) as that
/// pgtrail's append did: one wide row per event (each field in its own
/// column, JSON as core's writer spells it, empty arrays as NULL), sealed
/// onto the chain, and the chain head moved. Returns the sealed events.
async fn write_wide_rows(
    client: &tokio_postgres::Client,
    version: i64,
    events: &[Event],
) -> Vec<Event> {
    use pgtrail_core::json::{array_to_string, object_to_string};
    let provenance_column = if version >= 3 { ", provenance" } else { "" };
    let provenance_value = if version >= 3 {
        ", $37::text::json"
    } else {
        ""
    };
    let insert = format!(
        "insert into pgtrail.events (id, seq, source, kind, captured_at, db_user, app_user, \
         client_addr, client_port, application_name, backend_pid, session_id, context, database, \
         schema_name, table_name, operation, objects, pk, old, new, changed, partial, sql, params, \
         command_tag, rows, duration_us, sqlstate, error, xid, lsn, committed_at, tx_seq, \
         prev_hash, hash{provenance_column}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
         $12, $13::text::json, $14, $15, $16, $17, $18, $19::text::jsonb, $20::text::json, \
         $21::text::json, $22, $23, $24, $25::text::json, $26, $27, $28, $29, $30, $31, $32, $33, \
         $34, $35, $36{provenance_value})"
    );
    let mut prev_hash = "0".repeat(64);
    let mut sealed = Vec::new();
    for (seq, event) in (1..).zip(events) {
        let mut e = event.clone();
        // Wide rows predate hash version 2: their events had no nonce.
        e.nonce = None;
        e.captured_at = pgtrail_core::time::truncate_micros(e.captured_at);
        e.committed_at = e.committed_at.map(pgtrail_core::time::truncate_micros);
        pgtrail_core::canonical::seal(&mut e, seq, &prev_hash);
        let object = |o: &Option<pgtrail_core::event::JsonObject>| o.as_ref().map(object_to_string);
        let list = |l: &Vec<String>| (!l.is_empty()).then(|| l.clone());
        let provenance = e
            .provenance
            .as_ref()
            .map(|p| serde_json::to_string(p).expect("provenance"));
        let values: [&(dyn tokio_postgres::types::ToSql + Sync); 36] = [
            &e.id,
            &seq,
            &e.source.as_str(),
            &e.kind.as_str(),
            &e.captured_at,
            &e.db_user,
            &e.app_user,
            &e.client_addr,
            &e.client_port,
            &e.application_name,
            &e.backend_pid,
            &e.session_id,
            &object(&e.context),
            &e.database,
            &e.schema,
            &e.table,
            &e.operation,
            &list(&e.objects),
            &object(&e.pk),
            &object(&e.old),
            &object(&e.new),
            &list(&e.changed),
            &list(&e.partial),
            &e.sql,
            &e.params.as_deref().map(array_to_string),
            &e.command_tag,
            &e.rows,
            &e.duration_us,
            &e.sqlstate,
            &e.error,
            &e.xid,
            &e.lsn,
            &e.committed_at,
            &e.tx_seq,
            &e.prev_hash,
            &e.hash,
        ];
        let mut values = values.to_vec();
        if version >= 3 {
            values.push(&provenance);
        }
        client.execute(&insert, &values).await.expect("wide row");
        prev_hash = e.hash.clone().expect("sealed");
        sealed.push(e);
    }
    client
        .execute(
            "update pgtrail.chain_head set seq = $1, hash = $2",
            &[&(sealed.len() as i64), &prev_hash],
        )
        .await
        .expect("head");
    sealed
}

/// Writes `events` into a store of schema 4 as that pgtrail's append did:
/// the lean row (the canonical body as `json`, the filter columns, no row
/// key), sealed onto the chain, and the chain head moved. Returns the
/// sealed events.
/// The row key schema 5 stores (FNV-1a of the table, then of the key), as
/// the store computes it, for writing rows as a version-5 pgtrail did.
fn v5_row_key(e: &Event) -> Option<i64> {
    let fnv = |text: &str| {
        let h = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        (h ^ (h >> 32)) & 0xffff_ffff
    };
    let pk = e.pk.as_ref().map(pgtrail_core::filter::canonical_pk);
    e.table
        .as_deref()
        .map(|t| ((fnv(t) << 32) | fnv(pk.as_deref().unwrap_or(""))) as i64)
}

async fn write_lean_rows(
    client: &tokio_postgres::Client,
    version: i64,
    events: &[Event],
) -> Vec<Event> {
    let insert = "insert into pgtrail.events (id, seq, captured_at, source, kind, db_user, \
        app_user, schema_name, table_name, operation, pk, sql, xid, failed, body, prev_hash, hash) \
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12, $13, $14, \
        $15::text::json, $16, $17)";
    let mut prev_hash = "0".repeat(64);
    let mut sealed = Vec::new();
    for (seq, event) in (1..).zip(events) {
        let mut e = event.clone();
        e.captured_at = pgtrail_core::time::truncate_micros(e.captured_at);
        e.committed_at = e.committed_at.map(pgtrail_core::time::truncate_micros);
        let body = pgtrail_core::canonical::CanonicalBody::of(&e).into_string();
        pgtrail_core::canonical::seal(&mut e, seq, &prev_hash);
        let pk = e.pk.as_ref().map(pgtrail_core::filter::canonical_pk);
        client
            .execute(
                insert,
                &[
                    &e.id,
                    &seq,
                    &e.captured_at,
                    &e.source.as_str(),
                    &e.kind.as_str(),
                    &e.db_user,
                    &e.app_user,
                    &e.schema,
                    &e.table,
                    &e.operation,
                    &pk,
                    &e.sql,
                    &e.xid,
                    &e.failed(),
                    &body,
                    &e.prev_hash,
                    &e.hash,
                ],
            )
            .await
            .expect("lean row");
        if version >= 5 {
            client
                .execute(
                    "update pgtrail.events set row_key = $1 where seq = $2",
                    &[&v5_row_key(&e), &seq],
                )
                .await
                .expect("row key");
        }
        if version >= 8 {
            // What schema 8's appender writes beside each event.
            client
                .execute(
                    "update pgtrail.events set backend_pid = $1 where seq = $2",
                    &[&e.backend_pid, &seq],
                )
                .await
                .expect("backend pid");
        }
        if version >= 6 && e.kind == Kind::Statement && !e.objects.is_empty() {
            // What schema 6's appender writes beside a statement (from 15,
            // in a table of its own).
            let names = pgtrail_core::filter::object_index_names(&e.objects);
            let write = if version >= 15 {
                "insert into pgtrail.events_objects (name, seq) select unnest($1::text[]), $2"
            } else {
                "update pgtrail.events set object_names = $1 where seq = $2"
            };
            client
                .execute(write, &[&names, &seq])
                .await
                .expect("object names");
        }
        if version >= 8 {
            // What schema 8's appender writes beside an event.
            client
                .execute(
                    "update pgtrail.events set backend_pid = $1 where seq = $2",
                    &[&e.backend_pid, &seq],
                )
                .await
                .expect("backend pid");
        }
        prev_hash = e.hash.clone().expect("sealed");
        sealed.push(e);
    }
    client
        .execute(
            "update pgtrail.chain_head set seq = $1, hash = $2",
            &[&(sealed.len() as i64), &prev_hash],
        )
        .await
        .expect("head");
    sealed
}

/// Records checkpoints of `sealed` as a pgtrail of schema `version` did:
/// a signed head checkpoint, and from schema 2 a signed note over the
/// Merkle tree of the events.
async fn write_old_checkpoints(
    client: &tokio_postgres::Client,
    version: i64,
    sealed: &[Event],
    key: &KeyPair,
) -> Vec<Checkpoint> {
    let head = sealed.last().expect("events");
    let seq = head.seq.expect("sealed");
    let hash = head.hash.clone().expect("sealed");
    let mut written =
        vec![Checkpoint::new(CheckpointKind::Head, seq, hash.clone(), seq).signed(key)];
    if version >= 2 {
        let store_id: String = client
            .query_one("select id from pgtrail.store_identity", &[])
            .await
            .expect("store id")
            .get(0);
        let mut frontier = pgtrail_store::merkle::Frontier::new();
        for event in sealed {
            let leaf = pgtrail_store::merkle::event_leaf(event.hash.as_deref().expect("sealed"))
                .expect("leaf");
            frontier.push(leaf);
        }
        written.push(Checkpoint::signed_note(
            CheckpointKind::Head,
            &pgtrail_store::checkpoint::origin(&store_id),
            &frontier,
            &hash,
            seq,
            key,
        ));
    }
    for c in &written {
        if version >= 2 {
            client
                .execute(
                    "insert into pgtrail.checkpoints (kind, seq, hash, count, created_at, public_key, signature, note, frontier) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[&c.kind.as_str(), &c.seq, &c.hash, &c.count, &c.created_at, &c.public_key, &c.signature, &c.note, &c.frontier],
                )
                .await
                .expect("checkpoint");
        } else {
            client
                .execute(
                    "insert into pgtrail.checkpoints (kind, seq, hash, count, created_at, public_key, signature) \
                     values ($1, $2, $3, $4, $5, $6, $7)",
                    &[&c.kind.as_str(), &c.seq, &c.hash, &c.count, &c.created_at, &c.public_key, &c.signature],
                )
                .await
                .expect("checkpoint");
        }
    }
    written
}

/// The readers' questions asked of the migration tests' stores.
fn reader_filters(since: DateTime<Utc>) -> Vec<Filter> {
    let table = pgtrail_core::filter::TableName::parse("public.accounts").expect("table");
    vec![
        Filter::default(),
        Filter {
            user: Some("user1".into()),
            ..Default::default()
        },
        Filter {
            table: Some(table.clone()),
            pk: Some(pgtrail_core::filter::PkFilter::parse("id=3").expect("pk")),
            ..Default::default()
        },
        Filter {
            table: Some(table),
            operation: Some("delete".into()),
            ..Default::default()
        },
        Filter {
            kind: Some(Kind::Statement),
            failed: true,
            ..Default::default()
        },
        Filter {
            source: Some(Source::Trigger),
            ..Default::default()
        },
        Filter {
            search: Some("accounts balance".into()),
            limit: Some(5),
            ..Default::default()
        },
        // Statements that touched accounts: found through their objects
        // alone (they name no target), indexed by migration 6.
        Filter {
            table: Some(pgtrail_core::filter::TableName::parse("accounts").expect("table")),
            kind: Some(Kind::Statement),
            ..Default::default()
        },
        Filter {
            since: Some(since + chrono::Duration::seconds(10)),
            until: Some(since + chrono::Duration::seconds(20)),
            ..Default::default()
        },
        // The link's lookups, by columns migration 7 indexes (and fills).
        Filter {
            backend_pid: Some(4003),
            ..Default::default()
        },
        Filter {
            xid: Some(701),
            ..Default::default()
        },
        // Events stored before schema 17 have no address column: `ip:`
        // reads their body.
        Filter {
            client_addr: Some(
                pgtrail_core::filter::AddrFilter::parse("10.0.0.0/24").expect("block"),
            ),
            ..Default::default()
        },
    ]
}

#[tokio::test]
async fn every_earlier_schema_with_events_and_checkpoints_migrates_and_reads_the_same() {
    let cluster = Cluster::start().expect("cluster");
    let key = KeyPair::generate().expect("key");
    for version in 1..PostgresStore::schema_version() {
        let mut events = varied_events(version >= 3);
        if version < 4 {
            // Wide rows predate hash version 2: their events had no nonce.
            for e in &mut events {
                e.nonce = None;
            }
        }
        let url = cluster
            .create_database(&format!("v{version}"))
            .await
            .expect("db");
        PostgresStore::create_at_version(&url, version)
            .await
            .expect("old schema");
        let client = raw(&url).await;
        let sealed = if version >= 4 {
            write_lean_rows(&client, version, &events).await
        } else {
            write_wide_rows(&client, version, &events).await
        };
        if version >= 11 {
            // A store of version 11 kept its hourly counts with each append.
            client
                .batch_execute(pgtrail_store::postgres::RECOUNT_FACETS)
                .await
                .expect("hourly counts");
        }
        if version >= 13 {
            // And the seq range of each hour.
            client
                .batch_execute(pgtrail_store::postgres::RECOUNT_SEQ_HOURS)
                .await
                .expect("hourly ranges");
        }
        let checkpoints = write_old_checkpoints(&client, version, &sealed, &key).await;

        // Readers verify the old store read-only only at its own version.
        let refused = PostgresStore::connect_for_verify(&url).await;
        assert!(
            matches!(&refused, Err(StoreError::Open { reason, .. }) if reason.contains(&format!("schema version {version}")) && reason.contains("migrate")),
            "v{version}: {:?}",
            refused.err()
        );

        let store = PostgresStore::connect(&url).await.expect("migrates");
        let versions: i64 = client
            .query_one("select max(version) from pgtrail.schema_migrations", &[])
            .await
            .expect("versions")
            .get(0);
        assert_eq!(versions, PostgresStore::schema_version());

        let report = verify(&store, Some(&key.verifying_key()))
            .await
            .expect("verify");
        assert!(report.ok(), "v{version}: {report:?}");
        assert_eq!(report.events_checked, sealed.len() as u64);
        assert_eq!(report.checkpoints_signed, checkpoints.len(), "v{version}");
        let read_only = PostgresStore::connect_for_verify(&url)
            .await
            .expect("verify opens the migrated store");
        assert!(verify(&read_only, Some(&key.verifying_key()))
            .await
            .expect("read-only verify")
            .ok());

        assert_eq!(
            store.scan(0, 1000).await.expect("scan"),
            sealed,
            "v{version}"
        );
        assert_eq!(store.checkpoints().await.expect("checkpoints"), checkpoints);
        // The same events appended to a new store: every reader answers alike.
        let (reference, _) = fresh_store(&cluster, &format!("reference v{version}")).await;
        reference.append(&events).await.expect("append");
        assert_eq!(reference.scan(0, 1000).await.expect("scan"), sealed);
        for filter in reader_filters(sealed[0].captured_at) {
            let migrated = store.query(&filter).await.expect("query");
            assert!(
                !migrated.is_empty() || filter.failed,
                "{filter:?} finds something"
            );
            assert_eq!(
                migrated,
                reference.query(&filter).await.expect("query"),
                "v{version}: {filter:?}"
            );
        }
        let row = pgtrail_core::RowRef {
            table: pgtrail_core::filter::TableName::parse("public.accounts").expect("table"),
            pk: pgtrail_core::filter::PkFilter::parse("id=5").expect("pk"),
        };
        let history = store.row_events(&row).await.expect("row events");
        assert!(history
            .iter()
            .any(|e| e.operation.as_deref() == Some("TRUNCATE")));
        assert_eq!(
            history,
            reference.row_events(&row).await.expect("row events")
        );

        // The chain goes on from the migrated head.
        store.append(&batch(500, 3)).await.expect("append after");
        assert!(verify(&store, None).await.expect("verify").ok());
    }
}

/// Someone changed a sealed event in an old store (a column, with SQL)
/// before it was migrated: the migration writes the body the columns say,
/// keeps the stored hash, and verify still names the event.
#[tokio::test]
async fn tampering_before_the_migration_is_still_found_after_it() {
    let cluster = Cluster::start().expect("cluster");
    // The last wide schema: migration 4 writes the bodies.
    let version = 3;
    let url = cluster.create_database("tampered").await.expect("db");
    PostgresStore::create_at_version(&url, version)
        .await
        .expect("old schema");
    let client = raw(&url).await;
    write_wide_rows(&client, version, &varied_events(true)).await;
    client
        .batch_execute(
            "update pgtrail.events set new = '{\"id\":1,\"balance\":1000000}' where seq = 4;
             update pgtrail.events set error = null where seq = 9;",
        )
        .await
        .expect("tamper");
    let store = PostgresStore::connect(&url).await.expect("migrates");
    let report = verify(&store, None).await.expect("verify");
    let found: Vec<_> = report.problems.iter().map(|p| (p.kind, p.seq)).collect();
    assert_eq!(
        found.first(),
        Some(&(ProblemKind::Modified, 4)),
        "{report:?}"
    );
}

/// A row that is not an event stops the migration: the store stays at
/// the old version rather than get a made-up body.
#[tokio::test]
async fn a_row_that_is_not_an_event_stops_the_migration() {
    let cluster = Cluster::start().expect("cluster");
    // The last wide schema: migration 4 writes the bodies.
    let version = 3;
    let url = cluster.create_database("undecodable").await.expect("db");
    PostgresStore::create_at_version(&url, version)
        .await
        .expect("old schema");
    let client = raw(&url).await;
    write_wide_rows(&client, version, &varied_events(true)).await;
    client
        .batch_execute("update pgtrail.events set kind = 'bogus' where seq = 6")
        .await
        .expect("tamper");
    let refused = PostgresStore::connect(&url).await;
    assert!(
        matches!(&refused, Err(StoreError::Open { reason, .. }) if reason.contains("event 6")),
        "{:?}",
        refused.err()
    );
    let newest: i64 = client
        .query_one("select max(version) from pgtrail.schema_migrations", &[])
        .await
        .expect("versions")
        .get(0);
    assert_eq!(newest, version);
    let columns: i64 = client
        .query_one(
            "select count(*) from information_schema.columns where table_schema = 'pgtrail' and table_name = 'events' and column_name in ('body', 'new')",
            &[],
        )
        .await
        .expect("columns")
        .get(0);
    assert_eq!(columns, 1, "the wide table is as it was");
}

/// Facets of `store` over `filter`, counted from the events (a filter the
/// summary cannot answer: a role no event has is left out).
async fn facets_from_events(
    store: &PostgresStore,
    filter: &Filter,
) -> pgtrail_core::search::Facets {
    let mut f = filter.clone();
    f.not_user = Some("nobody at all".into());
    store.facets(&f, 100).await.expect("facets")
}

/// Version 11 counts facets by the hour, as SQLite does: a store from
/// before gets the counts of its events, the summary answers a time window
/// exactly as counting the events does (edges of partial hours included),
/// prune recounts, and whoever edits a count with the store's credentials
/// is named by verify.
#[tokio::test]
async fn facet_counts_by_the_hour_are_filled_kept_and_verified() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "facet hours").await;
    let start = Utc::now() - chrono::Duration::hours(30);
    let events: Vec<Event> = (0..300)
        .map(|n| {
            // Every 6 minutes over 30 hours, some late (an earlier time
            // after a later one), some failed, some without a table.
            let minutes = n * 6 - if n % 17 == 0 { 90 } else { 0 };
            let mut e = row_change(n, start + chrono::Duration::minutes(minutes));
            if n % 11 == 0 {
                e.kind = Kind::Statement;
                e.sql = Some("select 1".into());
                e.sqlstate = Some("42P01".into());
                e.error = Some("relation does not exist".into());
            }
            if n % 13 == 0 {
                e.table = None;
                e.schema = None;
            }
            if n % 19 == 0 {
                // Imports carry operations as written: the summary's
                // uppercase must be the same in SQL and in Rust (ASCII
                // only; Unicode's would make "STRASSE", Postgres's
                // upper() depends on the locale).
                e.operation = Some("straße".into());
            }
            e
        })
        .collect();
    store.append(&events[..150]).await.expect("append");
    // The first 150 as a version 10 store holds them: no summary.
    raw(&url)
        .await
        .batch_execute(
            "drop table pgtrail.facet_hours, pgtrail.seq_hours, pgtrail.events_objects; \
             alter table pgtrail.events drop column client_addr; \
             drop table pgtrail.column_starts; \
             drop index pgtrail.events_table_seq_idx, pgtrail.events_app_user_seq_idx, \
                 pgtrail.events_db_user_seq_idx; \
             delete from pgtrail.schema_migrations where version >= 11",
        )
        .await
        .expect("back to version 10");
    drop(store);
    let store = PostgresStore::connect(&url).await.expect("migrate to 11");
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

    // Someone with the store's credentials edits the counts, to hide a
    // user's activity or invent a table's: verify names the count.
    let tamperer = raw(&url).await;
    tamperer
        .batch_execute("create table saved as select * from pgtrail.facet_hours")
        .await
        .expect("save");
    for (tamper, says) in [
        (
            "update pgtrail.facet_hours set count = count + 5 where facet = 'user' \
             and value = (select max(value) from pgtrail.facet_hours where facet = 'user')",
            "facet_hours (user ",
        ),
        (
            "delete from pgtrail.facet_hours where facet = 'outcome' and value = 'failed'",
            "facet_hours (outcome 'failed'",
        ),
        (
            "insert into pgtrail.facet_hours values (1, 'table', 'public.secret', 1)",
            "facet_hours (table 'public.secret' in the hour from 1970-01-01T01:00:00.000000Z) holds 1, but the event says 0",
        ),
    ] {
        tamperer.batch_execute(tamper).await.expect("tamper");
        let report = verify(&store, None).await.expect("verify");
        let details: Vec<String> = report.problems.iter().map(|p| p.detail.clone()).collect();
        assert!(!report.ok(), "{tamper}");
        assert!(
            report.problems.iter().all(|p| p.kind == ProblemKind::Index),
            "{details:?}"
        );
        assert!(details.iter().any(|d| d.contains(says)), "{tamper}: {details:?}");
        tamperer
            .batch_execute(
                "delete from pgtrail.facet_hours; \
                 insert into pgtrail.facet_hours select * from saved",
            )
            .await
            .expect("restore");
        assert!(verify(&store, None).await.expect("verify").ok());
    }

    // A prune recounts the hours it touched.
    store.prune(100).await.expect("prune");
    let all = Filter::default();
    assert_eq!(
        store.facets(&all, 100).await.expect("facets"),
        facets_from_events(&store, &all).await
    );
    assert_eq!(store.facets(&all, 100).await.expect("facets").counted, 200);
    let window = Filter {
        since: at(0),
        ..Filter::default()
    };
    assert_eq!(
        store.facets(&window, 100).await.expect("facets"),
        facets_from_events(&store, &window).await
    );
}

/// One stored event with a `\u0000` string (a row value, an imported
/// line), which Postgres's JSON refuses to read, must not make `db:`,
/// `class:` or `ip:` (of events stored before the address column) searches
/// fail for everyone: they answer, and find it. A search value holding NUL
/// (no stored text can) finds nothing, without an error.
#[tokio::test]
async fn a_nul_in_one_event_breaks_no_search_by_database_class_or_address() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "nul bodies").await;
    let mut row = row_change(1, Utc::now());
    row.database = Some("shop".into());
    row.client_addr = Some("10.0.0.1".into());
    row.new = Some(serde_json::from_str(r#"{"id":1,"doc":"a\u0000b"}"#).expect("json"));
    let mut statement = Event::new(Source::Proxy, Kind::Statement);
    statement.database = Some("shop".into());
    statement.class = Some("WRITE".into());
    statement.sql = Some("update t set doc = $1".into());
    statement.params = Some(vec![serde_json::json!("x\u{0}y")]);
    let mut other = Event::new(Source::Proxy, Kind::Statement);
    other.database = Some("crm".into());
    other.class = Some("READ".into());
    store
        .append(&[row, statement, other])
        .await
        .expect("append");
    let count = |filter: Filter| {
        let store = &store;
        async move {
            store
                .query(&filter)
                .await
                .expect("the search answers")
                .len()
        }
    };
    let shop = Filter {
        database: Some("shop".into()),
        ..Default::default()
    };
    assert_eq!(count(shop).await, 2);
    let writes = Filter {
        class: Some("write".into()),
        ..Default::default()
    };
    assert_eq!(count(writes).await, 1);
    // As if stored before schema 17: `ip:` reads its body.
    raw(&url)
        .await
        .batch_execute(
            "update pgtrail.events set client_addr = null where seq = 1;
             update pgtrail.column_starts set first_seq = 2 where name = 'client_addr'",
        )
        .await
        .expect("as before schema 17");
    let block = Filter {
        client_addr: Some(pgtrail_core::filter::AddrFilter::parse("10.0.0.0/24").expect("block")),
        ..Default::default()
    };
    assert_eq!(count(block).await, 1);
    for hostile in [
        Filter {
            database: Some("sh\0op".into()),
            ..Default::default()
        },
        Filter {
            class: Some("wr\0ite".into()),
            ..Default::default()
        },
    ] {
        assert_eq!(count(hostile).await, 0);
    }
    assert!(verify(&store, None).await.expect("verify").ok());
}

/// `ip:` compares the `client_addr` column (schema 17) and reads the body
/// only of events stored before it. Someone who can write the table (its
/// owner) edits the column to move an event out of a search, or empties
/// it, or deletes where the column starts so the older events are not
/// read: each misleads `ip:` until verify names it.
#[tokio::test]
async fn an_edited_client_address_misleads_ip_until_verify_names_it() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "client addr").await;
    let session = |i: i64| {
        let mut e = Event::new(Source::Proxy, Kind::Session);
        e.client_addr = Some(match i % 3 {
            0 => format!("10.0.0.{i}"),
            1 => format!("10.0.0.{i}/32"),
            _ => "not an address".into(),
        });
        e
    };
    store
        .append(&(1..=6).map(session).collect::<Vec<_>>())
        .await
        .expect("append");
    let admin = raw(&url).await;
    // As a store from before schema 17: the first six events have no
    // column, the column starts at 7.
    admin
        .batch_execute(
            "update pgtrail.events set client_addr = null;
             update pgtrail.column_starts set first_seq = 7 where name = 'client_addr'",
        )
        .await
        .expect("as before schema 17");
    store
        .append(&(7..=12).map(session).collect::<Vec<_>>())
        .await
        .expect("append");
    assert!(verify(&store, None).await.expect("verify").ok());
    let block = Filter {
        client_addr: Some(pgtrail_core::filter::AddrFilter::parse("10.0.0.0/24").expect("block")),
        ..Default::default()
    };
    let seqs = |events: Vec<Event>| events.iter().filter_map(|e| e.seq).collect::<Vec<_>>();
    let all = [12, 10, 9, 7, 6, 4, 3, 1];
    assert_eq!(seqs(store.query(&block).await.expect("ip")), all);

    for (tamper, seq, found) in [
        (
            "update pgtrail.events set client_addr = '192.168.9.9' where seq = 9",
            9,
            &[12, 10, 7, 6, 4, 3, 1][..],
        ),
        (
            "update pgtrail.events set client_addr = null where seq = 10",
            10,
            &[12, 9, 7, 6, 4, 3, 1],
        ),
        ("delete from pgtrail.column_starts", 1, &[12, 10, 9, 7]),
    ] {
        admin.batch_execute(tamper).await.expect("tamper");
        assert_eq!(
            seqs(store.query(&block).await.expect("ip")),
            found,
            "{tamper}"
        );
        let report = verify(&store, None).await.expect("verify");
        assert!(
            report.problems.iter().any(|p| p.seq == seq
                && p.kind == ProblemKind::Index
                && p.detail.contains("client_addr")),
            "{tamper}: {:#?}",
            report.problems
        );
        // Put back for the next.
        admin
            .batch_execute(
                "update pgtrail.events set client_addr = null where seq < 7;
                 update pgtrail.events set client_addr = '10.0.0.9' where seq = 9;
                 update pgtrail.events set client_addr = '10.0.0.10' where seq = 10;
                 insert into pgtrail.column_starts values ('client_addr', 7) on conflict do nothing",
            )
            .await
            .expect("put back");
        assert!(verify(&store, None).await.expect("verify").ok(), "{tamper}");
    }
}

/// An `ip:` search in a parallel plan (the planner's choice on a large
/// store, forced here by making parallelism free): the address function's
/// exception block cannot run in a parallel worker, so since migration 14
/// it runs in the leader, and the search answers instead of failing with
/// "cannot start subtransactions during a parallel operation".
#[tokio::test]
async fn an_ip_search_in_a_parallel_plan_answers() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "parallel ip").await;
    let events: Vec<Event> = (0..3000)
        .map(|i| {
            let mut e = Event::new(Source::Proxy, Kind::Session);
            e.client_addr = Some(match i % 3 {
                0 => format!("10.0.{}.{}", i % 7, i % 250),
                1 => format!("192.168.1.{}", i % 250),
                _ => "not an address".into(),
            });
            e
        })
        .collect();
    store.append(&events).await.expect("append");
    let db = url.rsplit('/').next().expect("database");
    let admin = raw(&url).await;
    admin
        .batch_execute("analyze pgtrail.events")
        .await
        .expect("analyze");
    admin
        .batch_execute(&format!(
            "alter database {db} set parallel_setup_cost = 0; \
             alter database {db} set parallel_tuple_cost = 0; \
             alter database {db} set min_parallel_table_scan_size = 0; \
             alter database {db} set max_parallel_workers_per_gather = 2"
        ))
        .await
        .expect("parallelism made free");
    // New sessions, with the database's settings.
    let store = PostgresStore::connect(&url).await.expect("store");
    let filter = Filter {
        client_addr: Some(pgtrail_core::filter::AddrFilter::parse("10.0.3.0/24").expect("block")),
        ..Filter::default()
    };
    // Not vacuous: a filter without the function is scanned in parallel.
    let sessions = Filter {
        kind: Some(Kind::Session),
        ..Filter::default()
    };
    let plan = store.explain(&sessions).await.expect("explain");
    assert!(plan.contains("Parallel Seq Scan"), "{plan}");
    let found = store.query(&filter).await.expect("an ip search answers");
    assert_eq!(found.len(), 3000 / 21 + 1);
    assert!(found.iter().all(|e| e
        .client_addr
        .as_deref()
        .is_some_and(|a| a.starts_with("10.0.3."))));
}

/// A search for words on a chain long enough to be read in slices
/// (schema 16, `word_slices`: blocks of 2^16 events and up): every page,
/// for a word in many statements (the newest slice fills the page), for a
/// word in three (every slice is read, down to the first event), and in a
/// time window, is what a full read of the chain finds, newest first.
#[tokio::test]
async fn a_search_for_words_reads_the_chain_in_slices_and_misses_nothing() {
    let cluster = Cluster::start().expect("cluster");
    let (store, url) = fresh_store(&cluster, "word slices").await;
    let start = Utc::now() - chrono::Duration::days(2);
    let total: i64 = 140_000;
    let mut sqls = Vec::new();
    let mut batch = Vec::new();
    for i in 1..=total {
        let at = start + chrono::Duration::seconds(i);
        let mut e = Event::at(Source::Proxy, Kind::Session, at);
        let sql = match i {
            _ if i % 500 == 0 => Some(format!("select * from needle where customer_id = {i}")),
            5 | 70_001 | 139_999 => Some("select lonely_column from t".to_string()),
            _ if i % 7 == 0 => Some("select 1".to_string()),
            _ => None,
        };
        if let Some(sql) = &sql {
            e.kind = Kind::Statement;
            e.sql = Some(sql.clone());
        }
        sqls.push((i, sql));
        batch.push(e);
        if batch.len() == 10_000 {
            store.append(&batch).await.expect("append");
            batch.clear();
        }
    }
    // The index holds each event's blocks as the slices ask for them.
    let blocks: String = raw(&url)
        .await
        .query_one("select pgtrail.sql_index_words('x', 139999)::text", &[])
        .await
        .expect("words")
        .get(0);
    assert_eq!(blocks, "'#16_2' '#20_0' '#24_0' 'x'");
    // And the same words as a search is cut into (two functions, one
    // cut), whatever the text.
    for text in [
        "SELECT a_b, \"Mixed\"Case FROM s.t -- ünïcode  x",
        "",
        "  ..  ",
        &format!("{} tail", "w".repeat(3000)),
    ] {
        let same: bool = raw(&url)
            .await
            .query_one(
                "select pgtrail.sql_words($1) = array_to_tsvector(array( \
                     select w from unnest(tsvector_to_array(pgtrail.sql_index_words($1, 7))) as w \
                     where w not like '#%'))",
                &[&text],
            )
            .await
            .expect("words")
            .get(0);
        assert!(same, "{text:?}");
    }

    let expected = |word: &str, since: Option<i64>| -> Vec<i64> {
        sqls.iter()
            .rev()
            .filter(|(i, sql)| {
                since.is_none_or(|s| *i >= s)
                    && sql.as_deref().is_some_and(|sql| {
                        sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .any(|w| w == word)
                    })
            })
            .map(|(i, _)| *i)
            .collect()
    };
    for (word, since) in [
        ("needle", None),
        ("lonely_column", None),
        ("needle", Some(100_000)),
        ("customer_id", Some(139_000)),
    ] {
        let mut found = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .query(&Filter {
                    search: Some(word.into()),
                    since: since.map(|s| start + chrono::Duration::seconds(s)),
                    before_seq: before,
                    limit: Some(50),
                    ..Filter::default()
                })
                .await
                .expect("search");
            found.extend(page.iter().filter_map(|e| e.seq));
            match page.last().and_then(|e| e.seq) {
                Some(last) if page.len() == 50 => before = Some(last),
                _ => break,
            }
        }
        assert_eq!(found, expected(word, since), "{word} since {since:?}");
    }
}
