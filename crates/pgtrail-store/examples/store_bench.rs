//! `bench/store`: ingest and query figures for both backends, side by side
//! with a plain unsealed bulk insert of the same rows into the same engine.
//!
//! Run through `bench/store/run` (release build). Prints a table and writes
//! JSON. The Postgres cluster runs with fsync on: the figures are for
//! durable writes, like the SQLite ones (synchronous=FULL).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::{Event, Filter, Kind, RowRef, Source};
use pgtrail_store::{row, Store};
use serde_json::{json, Value};

struct Args {
    events: usize,
    big_sqlite: Option<usize>,
    batch: usize,
    backends: Vec<String>,
    json_out: Option<String>,
    /// Leave out SQLite's plain insert (halves the time and disk of a 10M run).
    skip_plain: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        big_sqlite: None,
        batch: 10_000,
        backends: vec!["sqlite".into(), "postgres".into()],
        json_out: None,
        skip_plain: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--big-sqlite" => args.big_sqlite = Some(value().parse().expect("--big-sqlite N")),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--backends" => args.backends = value().split(',').map(String::from).collect(),
            "--json" => args.json_out = Some(value()),
            "--skip-plain" => args.skip_plain = true,
            other => panic!("unknown flag {other}; flags: --events N --big-sqlite N --batch N --backends sqlite,postgres --json FILE --skip-plain"),
        }
    }
    args
}

/// A deterministic pseudo-random stream (no dependency, same data every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TABLES: u64 = 20;
const ROWS_PER_TABLE: u64 = 50_000;
const USERS: u64 = 500;

/// Events `range` of `total` ~400-byte events spread over 30 days: mostly
/// row changes, every tenth a statement with SQL. Event `i` is the same
/// whichever batch asks for it, so batches are made just before they are
/// timed and never all held in memory (10M events would not fit twice).
fn generate(range: std::ops::Range<usize>, total: usize, now: DateTime<Utc>) -> Vec<Event> {
    let span_us = 30 * 86_400 * 1_000_000i64;
    range
        .map(|i| {
            let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            rng.next();
            let n = total;
            let at = now - chrono::Duration::microseconds(span_us - span_us * i as i64 / n as i64);
            let user = format!("user{}@example.com", rng.below(USERS));
            if i % 10 == 9 {
                let mut e = Event::at(Source::Proxy, Kind::Statement, at);
                let table = format!("table_{}", rng.below(TABLES));
                e.sql = Some(format!(
                    "SELECT id, name, balance FROM public.{table} WHERE customer_id = $1 AND status = 'open' ORDER BY created_at DESC LIMIT {}",
                    rng.below(100)
                ));
                e.db_user = Some("app".into());
                e.app_user = Some(user);
                e.operation = Some("SELECT".into());
                e.rows = Some(rng.below(100) as i64);
                e.duration_us = Some(rng.below(5_000) as i64);
                return e;
            }
            let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
            let id = rng.below(ROWS_PER_TABLE);
            e.schema = Some("public".into());
            e.table = Some(format!("table_{}", rng.below(TABLES)));
            e.pk = json!({ "id": id.to_string() }).as_object().cloned();
            e.db_user = Some("app".into());
            e.app_user = Some(user);
            e.client_addr = Some("10.0.0.12".into());
            e.application_name = Some("billing-api".into());
            e.backend_pid = Some(1000 + rng.below(50) as i32);
            e.xid = Some(100_000 + i as i64);
            e.operation = Some("UPDATE".into());
            let balance = format!("{}.{:02}", rng.below(100_000), rng.below(100));
            e.old = json!({"id": id, "status": "open", "balance": "10.00", "name": "Customer name here"}).as_object().cloned();
            e.new = json!({"id": id, "status": "open", "balance": balance, "name": "Customer name here"}).as_object().cloned();
            e.changed = vec!["balance".into()];
            e
        })
        .collect()
}

#[derive(Default, serde::Serialize)]
struct Figures {
    backend: String,
    events: usize,
    sealed_per_s: f64,
    plain_per_s: f64,
    seal_cost_ratio: f64,
    history_p50_ms: f64,
    history_p95_ms: f64,
    user_since_p50_ms: f64,
    user_since_p95_ms: f64,
    search_p50_ms: f64,
    search_p95_ms: f64,
}

/// The batches of a run, each generated when it is needed.
fn batches(total: usize, batch: usize, now: DateTime<Utc>) -> impl Iterator<Item = Vec<Event>> {
    (0..total)
        .step_by(batch)
        .map(move |start| generate(start..(start + batch).min(total), total, now))
}

/// Events per second spent inside `append` (generation is not timed).
async fn ingest(store: &dyn Store, total: usize, batch: usize, now: DateTime<Utc>) -> f64 {
    let mut busy = Duration::ZERO;
    for events in batches(total, batch, now) {
        let start = Instant::now();
        store.append(&events).await.expect("append");
        busy += start.elapsed();
    }
    total as f64 / busy.as_secs_f64()
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

async fn latencies(store: &dyn Store, now: DateTime<Utc>, figures: &mut Figures) {
    let mut rng = Lcg(7);
    let runs = 200;
    let mut history = Vec::new();
    let mut by_user = Vec::new();
    let mut search = Vec::new();
    for _ in 0..runs {
        let row = RowRef {
            table: TableName::parse(&format!("public.table_{}", rng.below(TABLES))).expect("table"),
            pk: PkFilter::parse(&format!("id={}", rng.below(ROWS_PER_TABLE))).expect("pk"),
        };
        let start = Instant::now();
        let events = store.row_events(&row).await.expect("row events");
        let _ = row::history(&events);
        history.push(start.elapsed());

        let filter = Filter {
            user: Some(format!("user{}@example.com", rng.below(USERS))),
            since: Some(now - chrono::Duration::days(1)),
            limit: Some(100),
            ..Default::default()
        };
        let start = Instant::now();
        store.query(&filter).await.expect("query");
        by_user.push(start.elapsed());

        let filter = Filter {
            search: Some(format!("table_{} customer_id", rng.below(TABLES))),
            limit: Some(100),
            ..Default::default()
        };
        let start = Instant::now();
        store.query(&filter).await.expect("search");
        search.push(start.elapsed());
    }
    figures.history_p50_ms = percentile(history.clone(), 0.5);
    figures.history_p95_ms = percentile(history, 0.95);
    figures.user_since_p50_ms = percentile(by_user.clone(), 0.5);
    figures.user_since_p95_ms = percentile(by_user, 0.95);
    figures.search_p50_ms = percentile(search.clone(), 0.5);
    figures.search_p95_ms = percentile(search, 0.95);
}

/// The baseline: the same rows as JSON with the same lookup columns and
/// indexes, inserted in the same batches, without sealing or a text index.
fn sqlite_plain(path: &std::path::Path, total: usize, batch: usize, now: DateTime<Utc>) -> f64 {
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "pragma journal_mode=wal; pragma synchronous=full;
         create table plain(seq integer primary key, id blob unique, captured_at integer, table_name text, pk text, app_user text, db_user text, body blob);
         create index plain_row on plain(table_name, pk); create index plain_time on plain(captured_at);
         create index plain_app_user on plain(app_user); create index plain_db_user on plain(db_user);",
    )
    .expect("schema");
    let mut busy = Duration::ZERO;
    for chunk in batches(total, batch, now) {
        let start = Instant::now();
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx.prepare_cached("insert into plain(id, captured_at, table_name, pk, app_user, db_user, body) values (?,?,?,?,?,?,?)").expect("prepare");
            for e in &chunk {
                let pk = e.pk.as_ref().map(pgtrail_core::filter::canonical_pk);
                let body = serde_json::to_vec(e).expect("json");
                insert
                    .execute(rusqlite::params![
                        e.id.as_bytes().as_slice(),
                        e.captured_at.timestamp_micros(),
                        e.table,
                        pk,
                        e.app_user,
                        e.db_user,
                        body
                    ])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        busy += start.elapsed();
    }
    total as f64 / busy.as_secs_f64()
}

async fn postgres_plain(
    client: &tokio_postgres::Client,
    total: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> f64 {
    use futures_util::pin_mut;
    use tokio_postgres::binary_copy::BinaryCopyInWriter;
    use tokio_postgres::types::Type;
    client
        .batch_execute(
            "create table plain(id uuid, captured_at timestamptz, table_name text, pk jsonb, app_user text, db_user text, body json);
             create index on plain(table_name, pk); create index on plain(captured_at);
             create index on plain(app_user); create index on plain(db_user);",
        )
        .await
        .expect("schema");
    let types = [
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::JSONB,
        Type::TEXT,
        Type::TEXT,
        Type::JSON,
    ];
    let mut busy = Duration::ZERO;
    for chunk in batches(total, batch, now) {
        let start = Instant::now();
        let sink = client
            .copy_in("copy plain(id, captured_at, table_name, pk, app_user, db_user, body) from stdin binary")
            .await
            .expect("copy");
        let writer = BinaryCopyInWriter::new(sink, &types);
        pin_mut!(writer);
        for e in &chunk {
            let pk = e.pk.clone().map(Value::Object);
            let body = serde_json::to_value(e).expect("json");
            writer
                .as_mut()
                .write(&[
                    &e.id,
                    &e.captured_at,
                    &e.table,
                    &pk,
                    &e.app_user,
                    &e.db_user,
                    &body,
                ])
                .await
                .expect("row");
        }
        writer.finish().await.expect("finish");
        busy += start.elapsed();
    }
    total as f64 / busy.as_secs_f64()
}

async fn bench_sqlite(total: usize, batch: usize, now: DateTime<Utc>, skip_plain: bool) -> Figures {
    let dir = tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let plain_per_s = if skip_plain {
        f64::NAN
    } else {
        sqlite_plain(&dir.path().join("plain.db"), total, batch, now)
    };
    let store = pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("trail.db"))
        .await
        .expect("open");
    let sealed_per_s = ingest(&store, total, batch, now).await;
    let mut figures = Figures {
        backend: "sqlite".into(),
        events: total,
        sealed_per_s,
        plain_per_s,
        seal_cost_ratio: plain_per_s / sealed_per_s,
        ..Default::default()
    };
    latencies(&store, now, &mut figures).await;
    figures
}

async fn bench_postgres(total: usize, batch: usize, now: DateTime<Utc>) -> Figures {
    let cluster = pgtrail_testkit::Cluster::start_with(pgtrail_testkit::ClusterOptions {
        settings: [
            ("fsync", "on"),
            ("synchronous_commit", "on"),
            ("full_page_writes", "on"),
            ("shared_buffers", "1GB"),
            ("max_wal_size", "4GB"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    })
    .expect("cluster");
    let url = cluster.create_database("bench").await.expect("db");
    let db = url.rsplit('/').next().expect("db name").to_string();
    let client = cluster.connect(&db).await.expect("connect");
    let plain_per_s = postgres_plain(&client, total, batch, now).await;
    let store: Arc<dyn Store> = Arc::new(
        pgtrail_store::postgres::PostgresStore::connect(&url)
            .await
            .expect("open"),
    );
    let sealed_per_s = ingest(&*store, total, batch, now).await;
    client.batch_execute("analyze").await.expect("analyze");
    let mut figures = Figures {
        backend: "postgres".into(),
        events: total,
        sealed_per_s,
        plain_per_s,
        seal_cost_ratio: plain_per_s / sealed_per_s,
        ..Default::default()
    };
    latencies(&*store, now, &mut figures).await;
    figures
}

fn print(all: &[Figures]) {
    println!(
        "\n{:<9} {:>10} {:>12} {:>12} {:>7} | {:>14} {:>16} {:>14}",
        "backend",
        "events",
        "sealed ev/s",
        "plain ev/s",
        "cost×",
        "history p50/95",
        "user+1d p50/95",
        "search p50/95"
    );
    for f in all {
        println!(
            "{:<9} {:>10} {:>12.0} {:>12.0} {:>7.2} | {:>6.2}/{:<7.2} {:>7.2}/{:<8.2} {:>6.2}/{:<7.2}",
            f.backend,
            f.events,
            f.sealed_per_s,
            f.plain_per_s,
            f.seal_cost_ratio,
            f.history_p50_ms,
            f.history_p95_ms,
            f.user_since_p50_ms,
            f.user_since_p95_ms,
            f.search_p50_ms,
            f.search_p95_ms
        );
    }
    println!("(latencies in ms; cost× = plain rate / sealed rate, the price of sealing + full-text index)");
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let now = Utc::now();
    let mut all = Vec::new();
    for backend in &args.backends {
        eprintln!(
            "bench: {backend}, {} events, batches of {}",
            args.events, args.batch
        );
        all.push(match backend.as_str() {
            "sqlite" => bench_sqlite(args.events, args.batch, now, args.skip_plain).await,
            "postgres" => bench_postgres(args.events, args.batch, now).await,
            other => panic!("unknown backend {other}"),
        });
    }
    if let Some(n) = args.big_sqlite {
        eprintln!("bench: sqlite, {n} events");
        all.push(bench_sqlite(n, args.batch, now, args.skip_plain).await);
    }
    print(&all);
    if let Some(path) = args.json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&all).expect("json"))
            .expect("write json");
    }
}
