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
    /// Postgres, for profiling: leave out the sealed side.
    skip_sealed: bool,
    /// Postgres, for profiling: indexes of `pgtrail.events` dropped on both
    /// sides once the schema is made (`pkey` drops the primary key).
    drop_indexes: Vec<String>,
    /// Price the facet counts by the hour (SQLite schema 9, Postgres 11) instead.
    facet_cost: bool,
    /// Price SQLite's `seq_hours` (schema 16) instead.
    seq_hours_cost: bool,
    /// `--migrate FILE`: open the SQLite store FILE (migrating it to this
    /// build's schema) and print the time and CPU that took, instead.
    migrate: Option<String>,
}

/// `--hash-v1`: events are made without a nonce, so they are hashed whole
/// (version 1) instead of value by value (version 2): the same binary's
/// two hash versions, side by side.
static HASH_V1: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        rounds: 3,
        big_sqlite: None,
        batch: 10_000,
        backends: vec!["sqlite".into(), "postgres".into()],
        json_out: None,
        skip_plain: false,
        skip_sealed: false,
        drop_indexes: Vec::new(),
        facet_cost: false,
        seq_hours_cost: false,
        migrate: None,
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
            "--facet-cost" => args.facet_cost = true,
            "--seq-hours-cost" => args.seq_hours_cost = true,
            "--migrate" => args.migrate = Some(value()),
            "--hash-v1" => HASH_V1.store(true, std::sync::atomic::Ordering::Relaxed),
            "--skip-sealed" => args.skip_sealed = true,
            "--drop-index" => {
                args.drop_indexes = value().split(',').map(String::from).collect()
            }
            other => panic!("unknown flag {other}; flags: --events N --rounds N --big-sqlite N --batch N --backends sqlite,postgres --json FILE --skip-plain --skip-sealed --drop-index NAME,... --facet-cost --seq-hours-cost --hash-v1 --migrate FILE"),
        }
    }
    args
}

#[path = "common/cluster.rs"]
mod cluster;
#[path = "common/lcg.rs"]
mod lcg;
use lcg::Lcg;

const TABLES: u64 = 20;
const ROWS_PER_TABLE: u64 = 50_000;
const USERS: u64 = 500;

/// Events `range` of `total` ~400-byte events spread over 30 days: mostly
/// row changes, every tenth a statement with SQL. Event `i` is the same
/// whichever batch asks for it, so batches are made just before they are
/// timed and never all held in memory (10M events would not fit twice).
fn generate(range: std::ops::Range<usize>, total: usize, now: DateTime<Utc>) -> Vec<Event> {
    let hash_v1 = HASH_V1.load(std::sync::atomic::Ordering::Relaxed);
    range
        .map(|i| {
            let mut e = event(i, total, now);
            if hash_v1 {
                e.nonce = None;
            }
            e
        })
        .collect()
}

/// Event `i` of `total`.
fn event(i: usize, total: usize, now: DateTime<Utc>) -> Event {
    let span_us = 30 * 86_400 * 1_000_000i64;
    let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next();
    // In i128: `span_us * i` overflows i64 past ~3.5M events (release
    // builds wrap: the 10M pass had its times scrambled until session 16).
    let elapsed = i64::try_from(i128::from(span_us) * i as i128 / total as i128).unwrap_or(span_us);
    let at = now - chrono::Duration::microseconds(span_us - elapsed);
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
    e.old = json!({"id": id, "status": "open", "balance": "10.00", "name": "Customer name here"})
        .as_object()
        .cloned();
    e.new = json!({"id": id, "status": "open", "balance": balance, "name": "Customer name here"})
        .as_object()
        .cloned();
    e.changed = vec!["balance".into()];
    e
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
    /// CPU µs per event (user + system), each round: the bench process
    /// inside `append` (encode, hash, COPY encoding, driver), the database
    /// backends of the side's database (parse, heap, indexes, WAL insert),
    /// and the cluster's WAL writer, checkpointer and background writer.
    sealed_client_us: Vec<f64>,
    plain_client_us: Vec<f64>,
    sealed_server_us: Vec<f64>,
    plain_server_us: Vec<f64>,
    sealed_background_us: Vec<f64>,
    plain_background_us: Vec<f64>,
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

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`; 100
/// on every Linux this runs on).
const CLOCK_TICKS: f64 = 100.0;

/// CPU seconds (user + system) process `pid` has used so far, all threads
/// (`self` for this one); `None` once it is gone.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is the first, utime the 12th.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS)
}

/// Events per second spent inside `append` (generation is not timed), and
/// the CPU seconds this process used inside it.
async fn ingest(store: &dyn Store, total: usize, batch: usize, now: DateTime<Utc>) -> (f64, f64) {
    let mut busy = Duration::ZERO;
    let mut cpu = 0.0;
    for events in batches(total, batch, now) {
        let (start, cpu_start) = (Instant::now(), cpu_seconds("self").unwrap_or(0.0));
        store.append(&events).await.expect("append");
        busy += start.elapsed();
        cpu += cpu_seconds("self").unwrap_or(0.0) - cpu_start;
    }
    (total as f64 / busy.as_secs_f64(), cpu)
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
                     app_user_key, db_user_key, client_addr, database, backend_pid, xid) \
                     values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
                     ?19, ?20, ?21, ?22) \
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
                        e.client_addr.as_deref().and_then(addr_key),
                        e.database,
                        e.backend_pid,
                        e.xid,
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

/// The `client_addr` column's key of an address (SQLite schema 15): the
/// family byte, then the address.
fn addr_key(addr: &str) -> Option<Vec<u8>> {
    match addr.split('/').next()?.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => Some([&[4u8][..], &v4.octets()].concat()),
        std::net::IpAddr::V6(v6) => Some([&[6u8][..], &v6.octets()].concat()),
    }
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
            let (rate, cpu) = ingest(&store, total, batch, now).await;
            (rate, cpu, store)
        };
        let (plain_rate, (sealed_rate, sealed_cpu, store)) = if round % 2 == 0 {
            let p = plain().await;
            (p, sealed().await)
        } else {
            let s = sealed().await;
            (plain().await, s)
        };
        // This process's CPU inside `append`: the encoding thread, SQLite
        // and the WAL checkpoints included.
        let sealed_us = sealed_cpu * 1e6 / total as f64;
        eprintln!(
            "  round {}: sealed {sealed_rate:.0}/s ({sealed_us:.1} µs CPU/event), plain {plain_rate:.0}/s",
            round + 1
        );
        figures.sealed_client_us.push(sealed_us);
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

/// CPU seconds used so far by each server process of database `db` (its
/// backends), or with `db` empty, by the WAL writer, checkpointer and
/// background writer.
async fn server_cpu(
    admin: &tokio_postgres::Client,
    db: &str,
) -> std::collections::HashMap<i32, f64> {
    let rows = admin
        .query(
            "select pid from pg_stat_activity where case when $1 = '' \
             then backend_type in ('walwriter', 'checkpointer', 'background writer') \
             else datname = $1 and pid <> pg_backend_pid() end",
            &[&db],
        )
        .await
        .expect("server pids");
    rows.iter()
        .filter_map(|row| {
            let pid: i32 = row.get(0);
            Some((pid, cpu_seconds(&pid.to_string())?))
        })
        .collect()
}

/// CPU seconds the server processes of `db` (see [`server_cpu`]) used since
/// `before`; a process that started since counts from zero.
async fn server_cpu_since(
    admin: &tokio_postgres::Client,
    db: &str,
    before: &std::collections::HashMap<i32, f64>,
) -> f64 {
    server_cpu(admin, db)
        .await
        .iter()
        .map(|(pid, now)| now - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

/// One side's figures in one round.
struct Side {
    per_s: f64,
    wal_bytes_per_event: f64,
    client_us: f64,
    server_us: f64,
    background_us: f64,
}

/// Where the CPU went while `total` events were written into `db`.
struct CpuMeter {
    db: String,
    backends: std::collections::HashMap<i32, f64>,
    background: std::collections::HashMap<i32, f64>,
    wal_from: String,
}

impl CpuMeter {
    async fn start(admin: &tokio_postgres::Client, db: &str) -> Self {
        CpuMeter {
            db: db.to_string(),
            backends: server_cpu(admin, db).await,
            background: server_cpu(admin, "").await,
            wal_from: wal_now(admin).await,
        }
    }

    async fn stop(
        self,
        admin: &tokio_postgres::Client,
        total: usize,
        per_s: f64,
        client_s: f64,
    ) -> Side {
        let per_event = |seconds: f64| seconds * 1e6 / total as f64;
        Side {
            per_s,
            wal_bytes_per_event: wal_since(admin, &self.wal_from).await / total as f64,
            client_us: per_event(client_s),
            server_us: per_event(server_cpu_since(admin, &self.db, &self.backends).await),
            background_us: per_event(server_cpu_since(admin, "", &self.background).await),
        }
    }
}

/// Drops `indexes` of `pgtrail.events` in database `db` (profiling only:
/// what each index costs per event).
async fn drop_indexes(cluster: &pgtrail_testkit::Cluster, db: &str, indexes: &[String]) {
    if indexes.is_empty() {
        return;
    }
    let client = cluster.connect(db).await.expect("connect");
    for index in indexes {
        let sql = if index == "pkey" {
            "alter table pgtrail.events drop constraint events_pkey".to_string()
        } else {
            format!("drop index pgtrail.\"{}\"", index.replace('"', "\"\""))
        };
        client.batch_execute(&sql).await.expect("drop index");
    }
}

/// The baseline: the same events copied unsealed into the Postgres store's
/// own schema in a fresh database (made by connecting the store: same
/// table, partitions, indexes, full-text index, `synchronous_commit = on`),
/// one binary COPY per batch with the store's row mapping
/// (`postgres::copy_unsealed`).
async fn postgres_plain(
    cluster: &pgtrail_testkit::Cluster,
    admin: &tokio_postgres::Client,
    settings: &Args,
    now: DateTime<Utc>,
) -> Side {
    let (total, batch) = (settings.events, settings.batch);
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
    drop_indexes(cluster, &db, &settings.drop_indexes).await;
    let mut client = cluster.connect(&db).await.expect("connect");
    client
        .batch_execute("set synchronous_commit = on")
        .await
        .expect("session");
    let meter = CpuMeter::start(admin, &db).await;
    let mut busy = Duration::ZERO;
    let mut cpu = 0.0;
    let mut seq = 1;
    for chunk in batches(total, batch, now) {
        let (start, cpu_start) = (Instant::now(), cpu_seconds("self").unwrap_or(0.0));
        let tx = client.transaction().await.expect("tx");
        pgtrail_store::postgres::copy_unsealed(&tx, &chunk, seq)
            .await
            .expect("copy");
        tx.commit().await.expect("commit");
        busy += start.elapsed();
        cpu += cpu_seconds("self").unwrap_or(0.0) - cpu_start;
        seq += chunk.len() as i64;
    }
    let side = meter
        .stop(admin, total, total as f64 / busy.as_secs_f64(), cpu)
        .await;
    drop(client);
    admin
        .batch_execute(&format!("drop database \"{db}\""))
        .await
        .expect("drop");
    side
}

async fn postgres_sealed(
    cluster: &pgtrail_testkit::Cluster,
    admin: &tokio_postgres::Client,
    settings: &Args,
    now: DateTime<Utc>,
) -> (Side, pgtrail_store::postgres::PostgresStore, String) {
    let (total, batch) = (settings.events, settings.batch);
    let url = cluster.create_database("sealed").await.expect("db");
    let db = url.rsplit('/').next().expect("db name").to_string();
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    drop_indexes(cluster, &db, &settings.drop_indexes).await;
    let meter = CpuMeter::start(admin, &db).await;
    let (rate, cpu) = ingest(&store, total, batch, now).await;
    (meter.stop(admin, total, rate, cpu).await, store, db)
}

/// A side left out (`--skip-plain`, `--skip-sealed`).
fn skipped() -> Side {
    Side {
        per_s: f64::NAN,
        wal_bytes_per_event: f64::NAN,
        client_us: f64::NAN,
        server_us: f64::NAN,
        background_us: f64::NAN,
    }
}

async fn bench_postgres(settings: &Args, now: DateTime<Utc>) -> Figures {
    let (total, rounds) = (settings.events, settings.rounds);
    let cluster = cluster::durable();
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
        let plain = || async {
            if settings.skip_plain {
                skipped()
            } else {
                postgres_plain(&cluster, &admin, settings, now).await
            }
        };
        let sealed = || async {
            if settings.skip_sealed {
                (skipped(), None)
            } else {
                let (side, store, db) = postgres_sealed(&cluster, &admin, settings, now).await;
                (side, Some((store, db)))
            }
        };
        let (plain, (sealed, store)) = if round % 2 == 0 {
            let p = plain().await;
            (p, sealed().await)
        } else {
            let s = sealed().await;
            (plain().await, s)
        };
        eprintln!(
            "  round {}: sealed {:.0}/s ({:.0} WAL bytes/event; CPU µs/event client {:.1}, backend {:.1}, WAL writer etc. {:.1}), \
             plain {:.0}/s ({:.0}; {:.1}, {:.1}, {:.1})",
            round + 1,
            sealed.per_s,
            sealed.wal_bytes_per_event,
            sealed.client_us,
            sealed.server_us,
            sealed.background_us,
            plain.per_s,
            plain.wal_bytes_per_event,
            plain.client_us,
            plain.server_us,
            plain.background_us,
        );
        figures.sealed_per_s.push(sealed.per_s);
        figures.plain_per_s.push(plain.per_s);
        figures.seal_cost_ratio.push(plain.per_s / sealed.per_s);
        figures
            .sealed_wal_bytes_per_event
            .push(sealed.wal_bytes_per_event);
        figures
            .plain_wal_bytes_per_event
            .push(plain.wal_bytes_per_event);
        figures.sealed_client_us.push(sealed.client_us);
        figures.plain_client_us.push(plain.client_us);
        figures.sealed_server_us.push(sealed.server_us);
        figures.plain_server_us.push(plain.server_us);
        figures.sealed_background_us.push(sealed.background_us);
        figures.plain_background_us.push(plain.background_us);
        last = store;
    }
    if let Some((store, db)) = &last {
        let client = cluster.connect(db).await.expect("connect");
        client.batch_execute("analyze").await.expect("analyze");
        latencies(store, now, &mut figures).await;
    }
    figures
}

/// The median of `values` (NaN, a side left out, ignored).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// `median (min–max)` of `values`.
fn spread(values: &[f64], decimals: usize) -> String {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let Some(median) = median(&sorted) else {
        return "-".into();
    };
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    format!(
        "{median:.decimals$} ({:.decimals$}–{:.decimals$})",
        sorted[0],
        sorted[n - 1]
    )
}

/// Issue 10's goals for the Postgres store.
const GOAL_SEALED_PER_S: f64 = 100_000.0;
const GOAL_SEAL_COST: f64 = 1.3;

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
    for f in all.iter().filter(|f| !f.sealed_server_us.is_empty()) {
        println!(
            "\n{} CPU µs per event, median (min–max): client = this process inside append, \
             backend = the side's database backends, WAL writer etc. = walwriter + checkpointer + bgwriter",
            f.backend
        );
        println!(
            "{:<8} | {:>20} {:>20} {:>20}",
            "side", "client", "backend", "WAL writer etc."
        );
        for (side, client, server, background) in [
            (
                "sealed",
                &f.sealed_client_us,
                &f.sealed_server_us,
                &f.sealed_background_us,
            ),
            (
                "plain",
                &f.plain_client_us,
                &f.plain_server_us,
                &f.plain_background_us,
            ),
        ] {
            println!(
                "{side:<8} | {:>20} {:>20} {:>20}",
                spread(client, 1),
                spread(server, 1),
                spread(background, 1)
            );
        }
    }
    for f in all.iter().filter(|f| f.backend == "postgres") {
        let verdict = |met: Option<bool>| match met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        let sealed = median(&f.sealed_per_s);
        let ratio = median(&f.seal_cost_ratio);
        println!("\ngoals (issue 10), Postgres, medians:");
        println!(
            "  sealed events/s >= {GOAL_SEALED_PER_S:.0}: {} -> {}",
            sealed.map_or("-".into(), |v| format!("{v:.0}")),
            verdict(sealed.map(|v| v >= GOAL_SEALED_PER_S))
        );
        println!(
            "  sealing cost (plain/sealed) <= {GOAL_SEAL_COST:.1}x: {} -> {}",
            ratio.map_or("-".into(), |v| format!("{v:.2}x")),
            verdict(ratio.map(|v| v <= GOAL_SEAL_COST))
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

/// A summary the append keeps beside the events, priced by [`summary_cost`].
#[cfg(feature = "bench-internals")]
#[derive(Clone, Copy)]
enum Summary {
    /// The facet counts by the hour (SQLite schema 9, Postgres schema 11).
    Facets,
    /// The `seq` range of each hour (SQLite schema 16).
    SeqHours,
}

#[cfg(feature = "bench-internals")]
impl Summary {
    fn name(self) -> &'static str {
        match self {
            Summary::Facets => "facet_hours",
            Summary::SeqHours => "seq_hours",
        }
    }

    /// Appends of this process keep the summary on `backend`, or not.
    fn keep(self, backend: &str, on: bool) {
        match (self, backend) {
            (Summary::Facets, "postgres") => pgtrail_store::postgres::count_for_bench(on),
            (Summary::Facets, _) => pgtrail_store::sqlite::count_for_bench(on),
            (Summary::SeqHours, "postgres") => {
                pgtrail_store::postgres::keep_seq_hours_for_bench(on)
            }
            (Summary::SeqHours, _) => pgtrail_store::sqlite::keep_seq_hours_for_bench(on),
        }
    }
}

/// Appends with and without `summary`, alternating rounds on fresh stores
/// of each backend asked for: what the summary costs ingest, in events/s
/// and in this process's CPU per event inside `append`.
#[cfg(feature = "bench-internals")]
async fn summary_cost(args: &Args, now: DateTime<Utc>, summary: Summary) {
    let (total, rounds, batch) = (args.events, args.rounds, args.batch);
    for backend in &args.backends {
        let cluster = (backend == "postgres").then(cluster::durable);
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let (mut cpu_with, mut cpu_without) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for side in 0..2 {
                let counting = (side + round) % 2 == 0;
                summary.keep(backend, counting);
                let dir = tempdir();
                let store: Box<dyn Store> = match &cluster {
                    None => Box::new(
                        pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("trail.db"))
                            .await
                            .expect("open"),
                    ),
                    Some(cluster) => {
                        let url = cluster.create_database("facets").await.expect("db");
                        Box::new(
                            pgtrail_store::postgres::PostgresStore::connect(&url)
                                .await
                                .expect("open"),
                        )
                    }
                };
                let (rate, cpu) = ingest(store.as_ref(), total, batch, now).await;
                let cpu_us = cpu * 1e6 / total as f64;
                eprintln!(
                    "  {backend} round {}: {} {} {rate:.0} events/s, {cpu_us:.1} µs CPU/event, load {}",
                    round + 1,
                    if counting { "with" } else { "without" },
                    summary.name(),
                    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
                );
                if counting { &mut with } else { &mut without }.push(rate);
                if counting {
                    &mut cpu_with
                } else {
                    &mut cpu_without
                }
                .push(cpu_us);
            }
        }
        summary.keep(backend, true);
        let name = summary.name();
        let ratios: Vec<f64> = without.iter().zip(&with).map(|(a, b)| a / b).collect();
        println!("{backend} ingest, {total} events, {rounds} rounds (median, min–max):");
        println!("| side | sealed events/s | µs CPU/event in append |");
        println!("| --- | --- | --- |");
        println!(
            "| without {name} | {} | {} |",
            spread(&without, 0),
            spread(&cpu_without, 1)
        );
        println!(
            "| with {name} | {} | {} |",
            spread(&with, 0),
            spread(&cpu_with, 1)
        );
        println!("| cost (without ÷ with) | {} | |", spread(&ratios, 2));
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let now = Utc::now();
    if let Some(path) = &args.migrate {
        // A store upgrade is a one-time cost: docs/operations.md quotes this.
        let (start, cpu_start) = (Instant::now(), cpu_seconds("self").unwrap_or(0.0));
        let store = pgtrail_store::sqlite::SqliteStore::open(std::path::Path::new(path))
            .await
            .expect("open (and migrate) the store");
        let cpu = cpu_seconds("self").unwrap_or(0.0) - cpu_start;
        drop(store);
        println!(
            "opened {path} (migrated to schema {}): {:.1} s, {cpu:.1} s CPU, load {}",
            pgtrail_store::sqlite::SCHEMA_VERSION,
            start.elapsed().as_secs_f64(),
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        return;
    }
    if args.facet_cost || args.seq_hours_cost {
        #[cfg(feature = "bench-internals")]
        summary_cost(
            &args,
            now,
            if args.facet_cost {
                Summary::Facets
            } else {
                Summary::SeqHours
            },
        )
        .await;
        #[cfg(not(feature = "bench-internals"))]
        panic!("--facet-cost and --seq-hours-cost need the bench-internals feature (bench/store/run builds it)");
        #[allow(unreachable_code)]
        return;
    }
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
            "postgres" => bench_postgres(&args, now).await,
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
