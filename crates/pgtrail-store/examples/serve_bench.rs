//! `bench/serve`: the read side the dashboard and the API stand on, at the
//! level of the shared read functions (`parse_search` + `Store::query`,
//! `Store::facets`, `Store::row_events` + `row::history`), on a store of
//! each kind filled with a realistic mix: row changes over a few hundred
//! tables, proxy statements (some failing), sessions and failed logins, a
//! few DDL, a few hundred users, three databases, clients in a few
//! networks, over 30 days.
//!
//! Goals (issue 12, item 8): filtered search p95 ≤ 50 ms, facet counts over
//! the last 7 days p95 ≤ 200 ms, a row's history p95 ≤ 20 ms, and ≥ 1,000
//! filtered searches/s on 2 cores with SQLite. Each round runs every
//! measurement once (the order rotating); the table shows the median of
//! the rounds and their spread (min–max).
//!
//! The HTTP layer comes later: [`Target`] is the hook. Each measurement
//! asks a `Target` (a search string, a facet request, a row), and
//! [`StoreTarget`] answers from the store; an HTTP target that sends the
//! same questions to `pgtrail serve` (`/api/v1/events?q=…`) plugs in
//! beside it without touching the measurements.
//!
//! Run through `bench/serve/run` (release build).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::search::parse_search;
use pgtrail_core::{Event, Kind, RowRef, Source};
use pgtrail_store::{row, Store};
use serde_json::json;

const TABLES: u64 = 300;
const ROWS_PER_TABLE: u64 = 5_000;
const USERS: u64 = 300;
const ROLES: [&str; 5] = ["app", "app", "app", "reporting", "etl"];
const DATABASES: [&str; 3] = ["shop", "shop", "crm"];
const BATCH: usize = 1_000;
const PAGE: usize = 50;

struct Args {
    events: usize,
    rounds: usize,
    backends: Vec<String>,
    seconds: u64,
    keep: Option<String>,
    per_form: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        rounds: 3,
        backends: vec!["sqlite".into(), "postgres".into()],
        seconds: 10,
        keep: None,
        per_form: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag value");
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--backends" => args.backends = value().split(',').map(String::from).collect(),
            "--seconds" => args.seconds = value().parse().expect("--seconds N"),
            "--sqlite-file" => args.keep = Some(value()),
            "--per-form" => args.per_form = true,
            other => panic!(
                "unknown flag {other}; flags: --events N --rounds N --backends sqlite,postgres \
                 --seconds N (throughput run) --sqlite-file PATH (reuse or keep the SQLite store)"
            ),
        }
    }
    args
}

/// A deterministic pseudo-random stream (same data every run).
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
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

fn table_name(n: u64) -> (String, String) {
    let schema = if n % 10 == 0 { "billing" } else { "public" };
    (schema.to_string(), format!("t_{n:03}"))
}

fn client(rng: &mut Lcg) -> String {
    if rng.below(10) == 0 {
        format!("192.168.1.{}", 1 + rng.below(10))
    } else {
        format!("10.0.{}.{}", rng.below(10), 1 + rng.below(20))
    }
}

/// Event `i` of `total`, the same whichever batch asks for it.
fn event(i: usize, total: usize, now: DateTime<Utc>) -> Event {
    let span_us = 30 * 86_400 * 1_000_000i64;
    let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next();
    let at = now - chrono::Duration::microseconds(span_us - span_us * i as i64 / total as i64);
    let roll = rng.below(1000);
    let user = format!("user{:03}@example.com", rng.below(USERS));
    let role = rng.pick(&ROLES).to_string();
    let database = rng.pick(&DATABASES).to_string();
    let addr = client(&mut rng);
    let (schema, table) = table_name(rng.below(TABLES));
    let mut e = if roll < 700 {
        let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
        let id = rng.below(ROWS_PER_TABLE);
        let op = match rng.below(20) {
            0..=3 => "INSERT",
            4..=16 => "UPDATE",
            _ => "DELETE",
        };
        e.operation = Some(op.into());
        e.pk = json!({ "id": id.to_string() }).as_object().cloned();
        let balance = format!("{}.{:02}", rng.below(100_000), rng.below(100));
        if op != "INSERT" {
            e.old = json!({"id": id, "status": "open", "balance": "10.00"})
                .as_object()
                .cloned();
        }
        if op != "DELETE" {
            e.new = json!({"id": id, "status": "open", "balance": balance})
                .as_object()
                .cloned();
        }
        e.app_user = Some(user);
        e.schema = Some(schema);
        e.table = Some(table);
        e.xid = Some(100_000 + i as i64);
        e
    } else if roll < 960 {
        let mut e = Event::at(Source::Proxy, Kind::Statement, at);
        let select = rng.below(4) != 0;
        e.operation = Some(if select { "SELECT" } else { "UPDATE" }.into());
        e.sql = Some(if select {
            format!(
                "SELECT id, status, balance FROM {schema}.{table} WHERE customer_id = $1 LIMIT {}",
                rng.below(100)
            )
        } else {
            format!("UPDATE {schema}.{table} SET status = $1 WHERE id = $2")
        });
        e.objects = vec![format!("{schema}.{table}")];
        e.class = Some(if select { "READ" } else { "WRITE" }.into());
        if rng.below(40) == 0 {
            e.sqlstate = Some("42501".into());
            e.error = Some(format!("permission denied for table {table}"));
        }
        e.app_user = (rng.below(2) == 0).then_some(user);
        e.duration_us = Some(rng.below(5_000) as i64);
        e
    } else if roll < 999 {
        let mut e = Event::at(Source::Proxy, Kind::Session, at);
        let connect = rng.below(2) == 0;
        e.operation = Some(if connect { "CONNECT" } else { "DISCONNECT" }.into());
        if connect && rng.below(20) == 0 {
            e.sqlstate = Some("28P01".into());
            e.error = Some("password authentication failed".into());
        }
        e
    } else {
        let mut e = Event::at(Source::Trigger, Kind::Ddl, at);
        e.operation = Some("ALTER TABLE".into());
        e.sql = Some(format!("alter table {schema}.{table} add column note text"));
        e.schema = Some(schema);
        e.table = Some(table);
        e
    };
    e.db_user = Some(role);
    e.database = Some(database);
    e.client_addr = Some(addr);
    e.backend_pid = Some(1000 + rng.below(200) as i32);
    e
}

/// Fills `store` with `total` events; returns events/s.
async fn fill(store: &dyn Store, total: usize, now: DateTime<Utc>) -> f64 {
    let start = Instant::now();
    let mut last_report = Instant::now();
    for first in (0..total).step_by(BATCH) {
        let events: Vec<Event> = (first..(first + BATCH).min(total))
            .map(|i| event(i, total, now))
            .collect();
        store.append(&events).await.expect("append");
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  {first} of {total} events, {:.0}/s",
                first as f64 / start.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// What a measurement asks. [`StoreTarget`] answers from a store; an HTTP
/// target (next session) answers the same questions through the API.
#[async_trait]
trait Target: Send + Sync {
    /// One page of a search (newest first, [`PAGE`] events, before `before`):
    /// the events' seqs.
    async fn search(&self, q: &str, before: Option<i64>) -> Vec<i64>;
    /// The facets of a search, top 10: events counted.
    async fn facets(&self, q: &str) -> u64;
    /// A row's history: versions.
    async fn history(&self, row: &RowRef) -> usize;
}

struct StoreTarget {
    store: Arc<dyn Store>,
    now: DateTime<Utc>,
}

#[async_trait]
impl Target for StoreTarget {
    async fn search(&self, q: &str, before: Option<i64>) -> Vec<i64> {
        let mut filter = parse_search(q, self.now).expect("search parses");
        filter.limit = Some(PAGE);
        filter.before_seq = before;
        let events = self.store.query(&filter).await.expect("search");
        events.iter().filter_map(|e| e.seq).collect()
    }

    async fn facets(&self, q: &str) -> u64 {
        let filter = parse_search(q, self.now).expect("search parses");
        self.store
            .facets(&filter, 10)
            .await
            .expect("facets")
            .counted
    }

    async fn history(&self, row: &RowRef) -> usize {
        let events = self.store.row_events(row).await.expect("row events");
        row::history(&events).len()
    }
}

/// The filtered searches of the search page, with random values.
fn search_string(rng: &mut Lcg) -> String {
    let form = rng.below(SEARCH_FORMS);
    search_of_form(rng, form)
}

/// How many forms [`search_of_form`] has.
const SEARCH_FORMS: u64 = 10;

/// A search of one form, with random values.
fn search_of_form(rng: &mut Lcg, form: u64) -> String {
    let user = format!("user{:03}@example.com", rng.below(USERS));
    let (schema, table) = table_name(rng.below(TABLES));
    match form {
        0 => format!("user:{user} since:7d"),
        1 => format!("table:{schema}.{table} op:update"),
        2 => "db_user:reporting kind:statement since:1d".into(),
        3 => format!("ip:10.0.{}.0/24 since:2h", rng.below(10)),
        4 => "failed since:7d".into(),
        5 => format!("{table} customer_id"),
        6 => format!("db:crm user:{user}"),
        7 => "kind:session failed".into(),
        8 => "-user:app op:delete since:1d".into(),
        _ => format!("table:{table} since:yesterday"),
    }
}

fn random_row(rng: &mut Lcg) -> RowRef {
    let (schema, table) = table_name(rng.below(TABLES));
    RowRef {
        table: TableName::parse(&format!("{schema}.{table}")).expect("table"),
        pk: PkFilter::parse(&format!("id={}", rng.below(ROWS_PER_TABLE))).expect("pk"),
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// One round's figures (ms, and searches/s).
#[derive(Default, Clone)]
struct Round {
    search_p50: f64,
    search_p95: f64,
    next_page_p95: f64,
    facets_p50: f64,
    facets_p95: f64,
    facets_user_p95: f64,
    history_p50: f64,
    history_p95: f64,
    searches_per_s: f64,
}

async fn measure_searches(t: &dyn Target, seed: u64, round: &mut Round) {
    let mut rng = Lcg(seed);
    let (mut first, mut next) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let q = search_string(&mut rng);
        let start = Instant::now();
        let page = t.search(&q, None).await;
        first.push(start.elapsed());
        if let Some(&last) = page.last() {
            let start = Instant::now();
            t.search(&q, Some(last)).await;
            next.push(start.elapsed());
        }
    }
    round.search_p50 = percentile(&mut first, 0.5);
    round.search_p95 = percentile(&mut first, 0.95);
    round.next_page_p95 = percentile(&mut next, 0.95);
}

async fn measure_facets(t: &dyn Target, seed: u64, round: &mut Round) {
    let mut rng = Lcg(seed);
    let (mut week, mut by_user) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let start = Instant::now();
        t.facets("since:7d").await;
        week.push(start.elapsed());
        let q = format!("user:user{:03}@example.com since:7d", rng.below(USERS));
        let start = Instant::now();
        t.facets(&q).await;
        by_user.push(start.elapsed());
    }
    round.facets_p50 = percentile(&mut week, 0.5);
    round.facets_p95 = percentile(&mut week, 0.95);
    round.facets_user_p95 = percentile(&mut by_user, 0.95);
}

async fn measure_history(t: &dyn Target, seed: u64, round: &mut Round) {
    let mut rng = Lcg(seed);
    let mut samples = Vec::new();
    for _ in 0..300 {
        let row = random_row(&mut rng);
        let start = Instant::now();
        t.history(&row).await;
        samples.push(start.elapsed());
    }
    round.history_p50 = percentile(&mut samples, 0.5);
    round.history_p95 = percentile(&mut samples, 0.95);
}

/// Filtered searches per second from 8 concurrent clients for `seconds`
/// (the runtime has 2 worker threads; SQLite reads run on its blocking
/// pool, so the machine's 2 cores are what bounds it).
async fn measure_throughput(t: Arc<dyn Target>, seed: u64, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..8u64 {
        let t = Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(seed ^ (client + 1).wrapping_mul(0x51_7CC1));
            let mut done = 0u64;
            while Instant::now() < deadline {
                t.search(&search_string(&mut rng), None).await;
                done += 1;
            }
            done
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Each form of search on its own: p50 and p95 of 30 runs.
async fn per_form(t: &dyn Target) {
    println!("| search form (example) | p50 ms | p95 ms |");
    println!("| --- | --- | --- |");
    for form in 0..SEARCH_FORMS {
        let mut rng = Lcg(99 + form);
        let mut samples = Vec::new();
        let mut example = String::new();
        for _ in 0..30 {
            let q = search_of_form(&mut rng, form);
            let start = Instant::now();
            t.search(&q, None).await;
            samples.push(start.elapsed());
            example = q;
        }
        let p50 = percentile(&mut samples, 0.5);
        let p95 = percentile(&mut samples, 0.95);
        println!("| `{example}` | {p50:.2} | {p95:.2} |");
    }
}

async fn rounds(t: Arc<dyn Target>, rounds: usize, seconds: u64, throughput: bool) -> Vec<Round> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut round = Round::default();
        let seed = 7 + r as u64;
        // The order rotates, so no measurement always runs first.
        for step in 0..3 {
            match (step + r) % 3 {
                0 => measure_searches(&*t, seed, &mut round).await,
                1 => measure_facets(&*t, seed, &mut round).await,
                _ => measure_history(&*t, seed, &mut round).await,
            }
        }
        if throughput {
            round.searches_per_s = measure_throughput(Arc::clone(&t), seed, seconds).await;
        }
        eprintln!(
            "  round {}: search p95 {:.1} ms, facets 7d p95 {:.1} ms, history p95 {:.1} ms, {:.0} searches/s",
            r + 1,
            round.search_p95,
            round.facets_p95,
            round.history_p95,
            round.searches_per_s
        );
        out.push(round);
    }
    out
}

fn median_spread(values: Vec<f64>) -> (f64, f64, f64) {
    let mut v = values;
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn print(backend: &str, events: usize, fill_rate: Option<f64>, rounds: &[Round]) {
    println!();
    match fill_rate {
        Some(rate) => println!("{backend}, {events} events (filled at {rate:.0} events/s)"),
        None => println!("{backend}, {events} events (store reused)"),
    }
    println!("| measure | goal | median | min–max | goal ÷ median |");
    println!("| --- | --- | --- | --- | --- |");
    let row = |name: &str, goal: Option<f64>, pick: &dyn Fn(&Round) -> f64, higher: bool| {
        let (median, min, max) = median_spread(rounds.iter().map(pick).collect());
        let (goal_text, ratio) = match goal {
            Some(g) if higher => (format!("≥ {g:.0}"), format!("{:.2}", median / g)),
            Some(g) => (format!("≤ {g:.0} ms"), format!("{:.1}", g / median)),
            None => ("—".into(), "—".into()),
        };
        println!("| {name} | {goal_text} | {median:.2} | {min:.2}–{max:.2} | {ratio} |");
    };
    row(
        "filtered search p95 (ms)",
        Some(50.0),
        &|r| r.search_p95,
        false,
    );
    row("filtered search p50 (ms)", None, &|r| r.search_p50, false);
    row("next page p95 (ms)", None, &|r| r.next_page_p95, false);
    row(
        "facets, last 7 days, p95 (ms)",
        Some(200.0),
        &|r| r.facets_p95,
        false,
    );
    row(
        "facets, last 7 days, p50 (ms)",
        None,
        &|r| r.facets_p50,
        false,
    );
    row(
        "facets, one user's 7 days, p95 (ms)",
        None,
        &|r| r.facets_user_p95,
        false,
    );
    row(
        "row history p95 (ms)",
        Some(20.0),
        &|r| r.history_p95,
        false,
    );
    row("row history p50 (ms)", None, &|r| r.history_p50, false);
    if rounds.iter().any(|r| r.searches_per_s > 0.0) {
        let goal = (backend == "sqlite").then_some(1000.0);
        row(
            "filtered searches/s, 8 clients",
            goal,
            &|r| r.searches_per_s,
            true,
        );
    }
    println!("(goal ÷ median above 1 meets the goal; for searches/s, median ÷ goal)");
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| ".".into()))
        .expect("tempdir")
}

async fn bench_sqlite(args: &Args, now: DateTime<Utc>) {
    let dir = tempdir();
    let path = match &args.keep {
        Some(path) => std::path::PathBuf::from(path),
        None => dir.path().join("trail.db"),
    };
    let existed = path.exists();
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("open");
    let fill_rate = if existed {
        None
    } else {
        eprintln!(
            "sqlite: filling {} events into {}",
            args.events,
            path.display()
        );
        Some(fill(&store, args.events, now).await)
    };
    let target: Arc<dyn Target> = Arc::new(StoreTarget {
        store: Arc::new(store),
        now,
    });
    if args.per_form {
        per_form(&*target).await;
        return;
    }
    let figures = rounds(target, args.rounds, args.seconds, true).await;
    print("sqlite", args.events, fill_rate, &figures);
}

async fn bench_postgres(args: &Args, now: DateTime<Utc>) {
    let cluster = pgtrail_testkit::Cluster::start_with(pgtrail_testkit::ClusterOptions {
        settings: [("shared_buffers", "1GB"), ("max_wal_size", "4GB")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .expect("cluster");
    let url = cluster.create_database("serve").await.expect("database");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    store
        .prepare_until(now + chrono::Duration::days(1))
        .await
        .expect("partitions");
    eprintln!("postgres: filling {} events", args.events);
    let fill_rate = fill(&store, args.events, now).await;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("vacuum analyze pgtrail.events")
        .await
        .expect("analyze");
    let target: Arc<dyn Target> = Arc::new(StoreTarget {
        store: Arc::new(store),
        now,
    });
    if args.per_form {
        per_form(&*target).await;
    }
    let figures = rounds(target, args.rounds, args.seconds, true).await;
    print("postgres", args.events, Some(fill_rate), &figures);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    // A fixed "now", so a kept store and a new one see the same window.
    let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("valid")
        .with_timezone(&Utc);
    println!(
        "bench/serve: {} events, {} rounds, {} cores",
        args.events,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for backend in &args.backends {
        match backend.as_str() {
            "sqlite" => bench_sqlite(&args, now).await,
            "postgres" => bench_postgres(&args, now).await,
            other => panic!("unknown backend {other}"),
        }
    }
}
