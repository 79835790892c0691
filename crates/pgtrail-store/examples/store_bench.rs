//! `bench/store`: ingest and query figures for both backends, side by side
//! with a plain unsealed insert of the same events into the same table.
//!
//! Like with like: the plain side writes into the store's own schema (the
//! same table, indexes, full-text index, partitions, pragmas and session
//! settings, made by opening the store), with the same statement form (SQLite
//! prepared inserts in one transaction per batch, Postgres one binary COPY
//! per batch), so the ratio prices what sealing adds: canonical encoding,
//! SHA-256 chain, chain lock, idempotency lookup. Rounds alternate the two
//! sides (each on a fresh database) and repeat; the table shows the median
//! and the spread (min–max) of every figure.
//!
//! Run through `bench/store/run` (release build). Prints a table and writes
//! JSON. The Postgres cluster runs with fsync on: the figures are for
//! durable writes, like the SQLite ones (synchronous=FULL).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::{Event, Filter, Kind, RowRef, Source};
use pgtrail_store::{row, Store};
use serde_json::json;

struct Args {
    events: usize,
    rounds: usize,
    big_sqlite: Option<usize>,
    batch: usize,
    backends: Vec<String>,
    json_out: Option<String>,
    /// Leave out the plain side (halves the time and disk of a 10M run).
    skip_plain: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        rounds: 3,
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
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--big-sqlite" => args.big_sqlite = Some(value().parse().expect("--big-sqlite N")),
            "--batch" => args.batch = value().parse().expect("--batch N"),
            "--backends" => args.backends = value().split(',').map(String::from).collect(),
            "--json" => args.json_out = Some(value()),
            "--skip-plain" => args.skip_plain = true,
            other => panic!("unknown flag {other}; flags: --events N --rounds N --big-sqlite N --batch N --backends sqlite,postgres --json FILE --skip-plain"),
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

/// One backend's figures over all rounds.
#[derive(Default, serde::Serialize)]
struct Figures {
    backend: String,
    events: usize,
    /// Events/s of each round, in round order.
    sealed_per_s: Vec<f64>,
    plain_per_s: Vec<f64>,
    /// plain / sealed of each round (the two sides of one round ran
    /// back to back, so a noisy minute hits both).
    seal_cost_ratio: Vec<f64>,
    /// Postgres: WAL bytes written per event, each round.
    sealed_wal_bytes_per_event: Vec<f64>,
    plain_wal_bytes_per_event: Vec<f64>,
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

/// The SQLite store's integer lookup keys (`sqlite/keys.rs`, FNV-1a), so the
/// plain rows land in its indexes as the sealed ones do.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn fnv1a_32(text: &str) -> u64 {
    let hash = fnv1a(text);
    (hash ^ (hash >> 32)) & 0xffff_ffff
}

/// The baseline: the same events inserted unsealed into a SQLite store's
/// own schema (made by opening the store: same table, indexes, full-text
/// table), with the writer's pragmas, one transaction per batch. The body
/// is serde_json's, the hashes a placeholder.
async fn sqlite_plain(
    path: &std::path::Path,
    total: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> f64 {
    drop(
        pgtrail_store::sqlite::SqliteStore::open(path)
            .await
            .expect("create the plain store's schema"),
    );
    let options = pgtrail_store::sqlite::SqliteOptions::default();
    let mut conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(&format!(
        "pragma journal_mode = wal; pragma synchronous = full; pragma cache_size = -{}; \
         pragma temp_store = memory; pragma wal_autocheckpoint = {}; pragma journal_size_limit = {};",
        options.cache_kib,
        options.wal_autocheckpoint_pages,
        u64::from(options.wal_autocheckpoint_pages) * u64::from(options.page_size),
    ))
    .expect("pragmas");
    let placeholder = [0u8; 32];
    let mut seq = 0i64;
    let mut busy = Duration::ZERO;
    for chunk in batches(total, batch, now) {
        let start = Instant::now();
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare_cached(
                    "insert into events (seq, id, captured_at, source, kind, schema_name, \
                     table_name, pk, app_user, db_user, operation, failed, body, prev_hash, hash, row_key, \
                     app_user_key, db_user_key) \
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
                     on conflict (id) do nothing",
                )
                .expect("prepare");
            let mut fts = tx
                .prepare_cached("insert into events_fts (rowid, sql) values (?1, ?2)")
                .expect("prepare fts");
            for e in &chunk {
                seq += 1;
                let pk = e.pk.as_ref().map(pgtrail_core::filter::canonical_pk);
                let row_key = e.table.as_deref().map(|table| {
                    ((fnv1a_32(table) << 32) | fnv1a_32(pk.as_deref().unwrap_or(""))) as i64
                });
                let user_key = |u: &Option<String>| u.as_deref().map(|u| fnv1a(u) as i64);
                let body = serde_json::to_string(e).expect("json");
                insert
                    .execute(rusqlite::params![
                        seq,
                        e.id.as_bytes().as_slice(),
                        e.captured_at.timestamp_micros(),
                        e.source.as_str(),
                        e.kind.as_str(),
                        e.schema,
                        e.table,
                        pk,
                        e.app_user,
                        e.db_user,
                        e.operation,
                        e.failed(),
                        body,
                        placeholder.as_slice(),
                        placeholder.as_slice(),
                        row_key,
                        user_key(&e.app_user),
                        user_key(&e.db_user),
                    ])
                    .expect("insert");
                if let Some(sql) = &e.sql {
                    fts.execute(rusqlite::params![seq, sql]).expect("fts");
                }
            }
        }
        tx.commit().expect("commit");
        busy += start.elapsed();
    }
    total as f64 / busy.as_secs_f64()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| ".".into()))
        .expect("tempdir")
}

/// `rounds` rounds of plain and sealed (the order alternating), then the
/// query latencies on the last sealed store.
async fn bench_sqlite(
    total: usize,
    rounds: usize,
    batch: usize,
    now: DateTime<Utc>,
    skip_plain: bool,
) -> Figures {
    let mut figures = Figures {
        backend: "sqlite".into(),
        events: total,
        ..Default::default()
    };
    let mut last = None;
    for round in 0..rounds {
        let dir = tempdir();
        let plain = || async {
            if skip_plain {
                f64::NAN
            } else {
                let dir = tempdir();
                sqlite_plain(&dir.path().join("plain.db"), total, batch, now).await
            }
        };
        let sealed = || async {
            let store = pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("trail.db"))
                .await
                .expect("open");
            let rate = ingest(&store, total, batch, now).await;
            (rate, store)
        };
        let (plain_rate, (sealed_rate, store)) = if round % 2 == 0 {
            let p = plain().await;
            (p, sealed().await)
        } else {
            let s = sealed().await;
            (plain().await, s)
        };
        eprintln!(
            "  round {}: sealed {sealed_rate:.0}/s, plain {plain_rate:.0}/s",
            round + 1
        );
        figures.sealed_per_s.push(sealed_rate);
        figures.plain_per_s.push(plain_rate);
        figures.seal_cost_ratio.push(plain_rate / sealed_rate);
        // Keep only the last sealed store (for the latencies).
        last = Some((store, dir));
    }
    if let Some((store, _dir)) = &last {
        latencies(store, now, &mut figures).await;
    }
    figures
}

/// WAL bytes the cluster wrote since `from`.
async fn wal_since(client: &tokio_postgres::Client, from: &str) -> f64 {
    let row = client
        .query_one(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::float8",
            &[&from],
        )
        .await
        .expect("wal diff");
    row.get(0)
}

async fn wal_now(client: &tokio_postgres::Client) -> String {
    client
        .query_one("select pg_current_wal_lsn()::text", &[])
        .await
        .expect("wal lsn")
        .get(0)
}

/// The baseline: the same events copied unsealed into the Postgres store's
/// own schema in a fresh database (made by connecting the store: same
/// table, partitions, indexes, full-text index, `synchronous_commit = on`),
/// one binary COPY per batch with the store's row mapping
/// (`postgres::copy_unsealed`). Returns events/s and WAL bytes per event.
async fn postgres_plain(
    cluster: &pgtrail_testkit::Cluster,
    admin: &tokio_postgres::Client,
    total: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> (f64, f64) {
    let url = cluster.create_database("plain").await.expect("db");
    let db = url.rsplit('/').next().expect("db name").to_string();
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("create the plain store's schema");
    // The store makes this month's and next month's partitions on its first
    // append; make them here the same way.
    store
        .prepare_until(Utc::now() + chrono::Duration::days(40))
        .await
        .expect("partitions");
    drop(store);
    let mut client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute("set synchronous_commit = on")
        .await
        .expect("session");
    let wal_from = wal_now(admin).await;
    let mut busy = Duration::ZERO;
    let mut seq = 1;
    for chunk in batches(total, batch, now) {
        let start = Instant::now();
        let tx = client.transaction().await.expect("tx");
        pgtrail_store::postgres::copy_unsealed(&tx, &chunk, seq)
            .await
            .expect("copy");
        tx.commit().await.expect("commit");
        busy += start.elapsed();
        seq += chunk.len() as i64;
    }
    let wal = wal_since(admin, &wal_from).await;
    drop(client);
    admin
        .batch_execute(&format!("drop database \"{db}\""))
        .await
        .expect("drop");
    (total as f64 / busy.as_secs_f64(), wal / total as f64)
}

async fn postgres_sealed(
    cluster: &pgtrail_testkit::Cluster,
    admin: &tokio_postgres::Client,
    total: usize,
    batch: usize,
    now: DateTime<Utc>,
) -> (f64, f64, pgtrail_store::postgres::PostgresStore, String) {
    let url = cluster.create_database("sealed").await.expect("db");
    let db = url.rsplit('/').next().expect("db name").to_string();
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    let wal_from = wal_now(admin).await;
    let rate = ingest(&store, total, batch, now).await;
    let wal = wal_since(admin, &wal_from).await;
    (rate, wal / total as f64, store, db)
}

async fn bench_postgres(total: usize, rounds: usize, batch: usize, now: DateTime<Utc>) -> Figures {
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
    let admin = cluster.connect("postgres").await.expect("connect");
    let mut figures = Figures {
        backend: "postgres".into(),
        events: total,
        ..Default::default()
    };
    let mut last: Option<(pgtrail_store::postgres::PostgresStore, String)> = None;
    for round in 0..rounds {
        if let Some((store, db)) = last.take() {
            drop(store);
            admin
                .batch_execute(&format!("drop database \"{db}\" with (force)"))
                .await
                .expect("drop");
        }
        let ((plain, plain_wal), (sealed, sealed_wal, store, db)) = if round % 2 == 0 {
            let p = postgres_plain(&cluster, &admin, total, batch, now).await;
            (
                p,
                postgres_sealed(&cluster, &admin, total, batch, now).await,
            )
        } else {
            let s = postgres_sealed(&cluster, &admin, total, batch, now).await;
            (postgres_plain(&cluster, &admin, total, batch, now).await, s)
        };
        eprintln!(
            "  round {}: sealed {sealed:.0}/s ({sealed_wal:.0} WAL bytes/event), plain {plain:.0}/s ({plain_wal:.0})",
            round + 1
        );
        figures.sealed_per_s.push(sealed);
        figures.plain_per_s.push(plain);
        figures.seal_cost_ratio.push(plain / sealed);
        figures.sealed_wal_bytes_per_event.push(sealed_wal);
        figures.plain_wal_bytes_per_event.push(plain_wal);
        last = Some((store, db));
    }
    if let Some((store, db)) = &last {
        let client = cluster.connect(db).await.expect("connect");
        client.batch_execute("analyze").await.expect("analyze");
        latencies(store, now, &mut figures).await;
    }
    figures
}

/// `median (min–max)` of `values`.
fn spread(values: &[f64], decimals: usize) -> String {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return "-".into();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    format!(
        "{median:.decimals$} ({:.decimals$}–{:.decimals$})",
        sorted[0],
        sorted[n - 1]
    )
}

fn print(all: &[Figures]) {
    println!("\nmedian (min–max) over rounds; cost× = plain rate / sealed rate of the same round");
    println!(
        "{:<9} {:>9} {:>6} | {:>26} {:>26} {:>18} | {:>18}",
        "backend",
        "events",
        "rounds",
        "sealed ev/s",
        "plain ev/s",
        "cost×",
        "WAL B/ev sealed/plain"
    );
    for f in all {
        let wal = if f.sealed_wal_bytes_per_event.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{} / {}",
                spread(&f.sealed_wal_bytes_per_event, 0),
                spread(&f.plain_wal_bytes_per_event, 0)
            )
        };
        println!(
            "{:<9} {:>9} {:>6} | {:>26} {:>26} {:>18} | {wal}",
            f.backend,
            f.events,
            f.sealed_per_s.len(),
            spread(&f.sealed_per_s, 0),
            spread(&f.plain_per_s, 0),
            spread(&f.seal_cost_ratio, 2),
        );
    }
    println!(
        "\n{:<9} {:>9} | {:>16} {:>16} {:>16}   (ms, last sealed store)",
        "backend", "events", "history p50/95", "user+1d p50/95", "search p50/95"
    );
    for f in all {
        println!(
            "{:<9} {:>9} | {:>7.2} / {:<6.2} {:>7.2} / {:<6.2} {:>7.2} / {:<6.2}",
            f.backend,
            f.events,
            f.history_p50_ms,
            f.history_p95_ms,
            f.user_since_p50_ms,
            f.user_since_p95_ms,
            f.search_p50_ms,
            f.search_p95_ms
        );
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let now = Utc::now();
    let mut all = Vec::new();
    for backend in &args.backends {
        eprintln!(
            "bench: {backend}, {} events, batches of {}, {} rounds",
            args.events, args.batch, args.rounds
        );
        all.push(match backend.as_str() {
            "sqlite" => {
                bench_sqlite(args.events, args.rounds, args.batch, now, args.skip_plain).await
            }
            "postgres" => bench_postgres(args.events, args.rounds, args.batch, now).await,
            other => panic!("unknown backend {other}"),
        });
    }
    if let Some(n) = args.big_sqlite {
        eprintln!("bench: sqlite, {n} events, one round");
        all.push(bench_sqlite(n, 1, args.batch, now, args.skip_plain).await);
    }
    print(&all);
    if let Some(path) = args.json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&all).expect("json"))
            .expect("write json");
    }
}
