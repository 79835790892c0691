//! Sealing: only finished transactions, in commit order, exactly once,
//! and writes that never fail for want of a partition.

use pgtrail_core::filter::TableName;
use pgtrail_store::{verify, Store};
use pgtrail_triggers::TrackOptions;

use crate::support::{connect, Db};

async fn tracked_table(db: &Db) {
    db.sql("create table t (id int primary key, label text)")
        .await;
    let t = TableName::parse("t").expect("name");
    pgtrail_triggers::track(&db.client, &t, &TrackOptions::default())
        .await
        .expect("track");
}

fn labels(events: &[pgtrail_core::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| {
            e.new
                .as_ref()
                .and_then(|n| n.get("label"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .collect()
}

#[tokio::test]
async fn only_final_transactions_are_sealed_and_in_commit_order() {
    let db = Db::installed("commit_order").await;
    tracked_table(&db).await;
    db.drain().await;
    let (t0, t1, t2) = (db.session().await, db.session().await, db.session().await);
    // xids in the order t0 < t1 < t2; commits in the order t2, t0, t1.
    t0.batch_execute("begin; insert into t values (0, 'first xid')")
        .await
        .expect("t0");
    t1.batch_execute("begin; insert into t values (1, 'long running')")
        .await
        .expect("t1");
    t2.batch_execute("begin; insert into t values (2, 'commits first'); commit")
        .await
        .expect("t2");
    t0.batch_execute("commit").await.expect("t0 commit");

    // t0 ended and its xid is below xmin, but t2 committed before it and
    // is not final yet (t1 holds xmin back): sealing t0 now would put t2
    // after it. Nothing is sealed.
    let report = db.drain().await;
    assert_eq!(report.events, 0, "{report:?}");

    t1.batch_execute("commit").await.expect("t1 commit");
    let report = db.drain().await;
    assert_eq!(report.transactions, 3);
    let events = db.row_events("t").await;
    assert_eq!(
        labels(&events),
        ["commits first", "first xid", "long running"]
    );
    let committed: Vec<_> = events
        .iter()
        .map(|e| e.committed_at.expect("commit time"))
        .collect();
    assert!(committed.windows(2).all(|w| w[0] <= w[1]), "{committed:?}");
}

#[tokio::test]
async fn a_rolled_back_transaction_leaves_nothing_and_tx_seq_counts_inside_each_transaction() {
    let db = Db::installed("rollback").await;
    tracked_table(&db).await;
    db.sql(
        "begin; insert into t values (1, 'a'); insert into t values (2, 'b'); commit;
         begin; insert into t values (3, 'gone'); rollback;
         begin; insert into t values (4, 'c'); savepoint s; insert into t values (5, 'undone'); rollback to s; commit;",
    )
    .await;
    let events = db.row_events("t").await;
    assert_eq!(labels(&events), ["a", "b", "c"]);
    let seqs: Vec<_> = events.iter().map(|e| e.tx_seq.expect("tx_seq")).collect();
    assert_eq!(seqs, [0, 1, 0]);
}

#[tokio::test]
async fn concurrent_sealers_never_duplicate_and_the_chain_verifies() {
    let db = Db::installed("concurrent_seal").await;
    tracked_table(&db).await;
    db.drain().await;
    let writer = db.session().await;
    for i in 0..300 {
        writer
            .execute("insert into t values ($1, 'x')", &[&i])
            .await
            .expect("insert");
    }
    let (mut a, mut b) = (connect(&db.url).await, connect(&db.url).await);
    let (ra, rb) = tokio::join!(
        pgtrail_triggers::drain_all(&mut a),
        pgtrail_triggers::drain_all(&mut b)
    );
    assert_eq!(ra.expect("seal a").events + rb.expect("seal b").events, 300);
    let store = db.store().await;
    assert_eq!(db.row_events("t").await.len(), 300);
    let report = verify(&store, None).await.expect("verify");
    assert!(report.ok(), "{report:?}");
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.inbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn writes_succeed_and_seal_without_a_partition_for_the_month() {
    let db = Db::installed("no_partition").await;
    tracked_table(&db).await;
    // Drop every monthly partition: only the default one is left.
    db.sql(
        "do $$ declare r record; begin
           for r in select c.oid::regclass as p from pg_inherits i join pg_class c on c.oid = i.inhrelid
                    where i.inhparent = 'pgtrail.events'::regclass and c.relname <> 'events_default' loop
             execute format('drop table %s', r.p);
           end loop; end $$;",
    )
    .await;
    db.sql("insert into t values (1, 'still recorded')").await;
    let events = db.row_events("t").await;
    assert_eq!(labels(&events), ["still recorded"]);
    let in_default: i64 = db
        .client
        .query_one(
            "select count(*) from pgtrail.events_default where table_name = 't' and kind = 'row_change'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(in_default, 1);
    assert!(db.store().await.head().await.expect("head").is_some());
}

#[tokio::test]
async fn a_sealer_finds_no_install_without_creating_the_store() {
    let db = Db::empty("sealer_no_install").await;
    let mut drainer = pgtrail_triggers::Drainer::new(&db.url);
    let refused = drainer.drain().await;
    assert!(
        matches!(refused, Err(pgtrail_triggers::Error::NotInstalled)),
        "{refused:?}"
    );
    let store: bool = db
        .client
        .query_one("select to_regclass('pgtrail.events') is not null", &[])
        .await
        .expect("look for the store")
        .get(0);
    assert!(
        !store,
        "a drainer must not create the store where nothing is installed"
    );
}

#[tokio::test]
async fn a_sealer_whose_connection_is_killed_seals_everything_once_on_its_next_seal() {
    let db = Db::installed("sealer_reconnects").await;
    tracked_table(&db).await;
    db.drain().await;
    let mut drainer = pgtrail_triggers::Drainer::new(&db.url);
    db.sql("insert into t values (1, 'before')").await;
    assert_eq!(drainer.drain().await.expect("first seal").events, 1);

    // The server ends the drainer's session (a restart, a failover, an
    // operator): its next seal fails with an error that may pass, the one
    // after connects again and seals what waited, once.
    db.sql("insert into t values (2, 'while gone')").await;
    db.sql(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where application_name like 'pgtrail%' and pid <> pg_backend_pid()",
    )
    .await;
    match drainer.drain().await {
        Err(error) => assert!(error.is_retryable(), "{error:?}"),
        // The kill raced the seal's own reconnect: still sealed exactly once.
        Ok(report) => assert_eq!(report.events, 1),
    }
    drainer.drain().await.expect("sealed after reconnecting");
    db.sql("insert into t values (3, 'after')").await;
    drainer.drain().await.expect("sealed again");
    assert_eq!(
        labels(&db.row_events("t").await),
        ["before", "while gone", "after"]
    );
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.pending", &[])
        .await
        .expect("count pending")
        .get(0);
    assert_eq!(pending, 0);
}

/// A seal pass seals what was final when it began and ends, even while a
/// writer keeps committing: chasing every newly final transaction kept a
/// drainer sealing a few rows per database transaction for as long as the
/// writer wrote. What the pass left is sealed by the next; every committed
/// write is an event exactly once, in commit order.
#[tokio::test]
async fn a_seal_pass_ends_while_writers_keep_committing_and_loses_nothing() {
    let db = Db::installed("pass_ends").await;
    tracked_table(&db).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (client, stop) = (db.session().await, stop.clone());
        tokio::spawn(async move {
            // Ground truth: the labels of committed transactions, in commit order.
            let mut committed = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let label = format!("w{n}");
                client
                    .execute("insert into t values ($1, $2)", &[&n, &label])
                    .await
                    .expect("insert");
                committed.push(label);
                n += 1;
            }
            committed
        })
    };
    // Let the writer get going, then seal while it writes.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pass = tokio::time::timeout(std::time::Duration::from_secs(60), db.drain())
        .await
        .expect("a seal pass ends while the writer keeps committing");
    assert!(pass.events > 0, "{pass:?}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let committed = writer.await.expect("writer");
    assert!(
        committed.len() > pass.events,
        "the writer went on after the pass: {} committed, {} sealed by it",
        committed.len(),
        pass.events
    );
    assert_eq!(labels(&db.row_events("t").await), committed);
}
