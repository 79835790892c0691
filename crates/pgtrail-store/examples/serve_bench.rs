//! `bench/serve`: the dashboard and the API as a user meets them, over
//! HTTP: a real `pgtrail serve` (tokens on, so every request is
//! authenticated, and every read recorded as an access event through the
//! server's group commit, as in production) on a store of each kind
//! filled with a realistic mix: row changes over a few hundred tables,
//! proxy statements (some failing), sessions and failed logins, a few
//! DDL, a few hundred users, three databases, clients in a few networks,
//! over 30 days (`--days N`: fewer make each day as full as a larger
//! store's, to see a big store's windows without filling one).
//!
//! The load generator is this program: a small HTTP/1.1 client over
//! tokio with keep-alive connections (one per concurrent client), so the
//! bench needs nothing installed and asks exactly the questions the
//! dashboard asks. Latencies are taken one request at a time on one
//! connection; throughput from a fixed number of concurrent connections.
//!
//! Goals (issue 12, item 8): filtered search p95 ≤ 50 ms, facet counts
//! over the last 7 days p95 ≤ 200 ms, a row's page p95 ≤ 20 ms, ≥ 1,000
//! filtered searches/s on 2 cores with SQLite, the search page ≤ 100 kB.
//! Each round runs every measurement once (the order rotating); the table
//! shows the median of the rounds and their spread (min–max).
//!
//! `--target store` asks the same questions of the store's read functions
//! in process (no HTTP, no access records), as the bench did before the
//! server existed: the difference is what the server adds.
//!
//! Stores are kept for the next run in `--cache DIR` (SQLite: one file per
//! size; a file whose fill did not finish is refilled). Postgres runs in a
//! throwaway cluster and is filled each run, or with `--pg-dir DIR` in a
//! cluster kept in DIR whose filled database is reused (and migrated).
//!
//! Run through `bench/serve/run` (release build).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::search::parse_search;
use pgtrail_core::{Event, Kind, RowRef, Source};
use pgtrail_store::{row, Store};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TABLES: u64 = 300;
const ROWS_PER_TABLE: u64 = 5_000;
const USERS: u64 = 300;
const ROLES: [&str; 5] = ["app", "app", "app", "reporting", "etl"];
const DATABASES: [&str; 3] = ["shop", "shop", "crm"];
/// Events per append while filling: batched appends through `Store::append`.
const BATCH: usize = 10_000;
const PAGE: usize = 50;

struct Args {
    events: usize,
    /// The days the events span (30): fewer make each day as full as a
    /// larger store's (1M over 3 days: a day as full as 10M over 30).
    days: i64,
    rounds: usize,
    backends: Vec<String>,
    seconds: u64,
    cache: Option<PathBuf>,
    pg_dir: Option<PathBuf>,
    per_form: bool,
    throughput_only: bool,
    http: bool,
    pgtrail: PathBuf,
    clients: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        days: 30,
        rounds: 3,
        backends: vec!["sqlite".into(), "postgres".into()],
        seconds: 10,
        cache: None,
        pg_dir: None,
        per_form: false,
        throughput_only: false,
        http: true,
        pgtrail: PathBuf::from("target/release/pgtrail"),
        clients: 8,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().expect("flag value");
        match flag.as_str() {
            "--events" => args.events = value().parse().expect("--events N"),
            "--days" => args.days = value().parse().expect("--days N"),
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--backends" => args.backends = value().split(',').map(String::from).collect(),
            "--seconds" => args.seconds = value().parse().expect("--seconds N"),
            "--cache" => args.cache = Some(PathBuf::from(value())),
            "--pg-dir" => args.pg_dir = Some(PathBuf::from(value())),
            "--per-form" => args.per_form = true,
            "--throughput-only" => args.throughput_only = true,
            "--target" => {
                args.http = match value().as_str() {
                    "http" => true,
                    "store" => false,
                    other => panic!("--target http|store, not {other}"),
                }
            }
            "--pgtrail" => args.pgtrail = PathBuf::from(value()),
            "--clients" => args.clients = value().parse().expect("--clients N"),
            other => panic!(
                "unknown flag {other}; flags: --events N --days N (the span, 30) --rounds N \
                 --backends sqlite,postgres \
                 --seconds N (throughput run) --clients N (throughput connections) \
                 --cache DIR (keep and reuse SQLite stores) \
                 --pg-dir DIR (keep and reuse the Postgres cluster) --target http|store \
                 --pgtrail PATH (the binary to serve) --per-form \
                 --throughput-only (skip the latencies: for A/B runs and profiles)"
            ),
        }
    }
    args
}

#[path = "common/lcg.rs"]
mod lcg;
use lcg::Lcg;

impl Lcg {
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
fn event(i: usize, total: usize, days: i64, now: DateTime<Utc>) -> Event {
    let span_us = days * 86_400 * 1_000_000i64;
    let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next();
    // In i128: `span_us * i` overflows i64 past ~3.5M events, and the
    // times wrapped (a 10M store then held no event of the last 19 days).
    let elapsed = i64::try_from(i128::from(span_us) * i as i128 / total as i128).unwrap_or(span_us);
    let at = now - chrono::Duration::microseconds(span_us - elapsed);
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
async fn fill(store: &dyn Store, total: usize, days: i64, now: DateTime<Utc>) -> f64 {
    let start = Instant::now();
    let mut last_report = Instant::now();
    for first in (0..total).step_by(BATCH) {
        let events: Vec<Event> = (first..(first + BATCH).min(total))
            .map(|i| event(i, total, days, now))
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

/// What a measurement asks. [`HttpTarget`] asks `pgtrail serve`;
/// [`StoreTarget`] asks the store's read functions in process.
#[async_trait]
trait Target: Send + Sync {
    /// One page of a search through the API (newest first, [`PAGE`]
    /// events, before `before`): the cursor of the next page.
    async fn search(&self, q: &str, before: Option<i64>) -> Option<i64>;
    /// The search page for `q` (its results): bytes.
    async fn search_page(&self, q: &str) -> usize;
    /// The facets of `q`, as the search page loads them after its
    /// results: bytes (events counted in process).
    async fn facets(&self, q: &str) -> usize;
    /// A row's history through the API: bytes (versions in process).
    async fn history(&self, row: &RowRef) -> usize;
    /// A row's page: bytes (versions in process).
    async fn row_page(&self, row: &RowRef) -> usize;
}

struct StoreTarget {
    store: Arc<dyn Store>,
    now: DateTime<Utc>,
}

#[async_trait]
impl Target for StoreTarget {
    async fn search(&self, q: &str, before: Option<i64>) -> Option<i64> {
        let mut filter = parse_search(q, self.now).expect("search parses");
        filter.limit = Some(PAGE + 1);
        filter.before_seq = before;
        let events = self.store.query(&filter).await.expect("search");
        (events.len() > PAGE)
            .then(|| events.get(PAGE - 1).and_then(|e| e.seq))
            .flatten()
    }

    async fn search_page(&self, q: &str) -> usize {
        let mut filter = parse_search(q, self.now).expect("search parses");
        filter.limit = Some(PAGE);
        self.store.query(&filter).await.expect("search").len()
    }

    async fn facets(&self, q: &str) -> usize {
        let filter = parse_search(q, self.now).expect("search parses");
        let facets = self.store.facets(&filter, 8).await.expect("facets");
        facets.counted as usize
    }

    async fn history(&self, row: &RowRef) -> usize {
        let events = self.store.row_events(row).await.expect("row events");
        row::history(&events).len()
    }

    async fn row_page(&self, row: &RowRef) -> usize {
        self.history(row).await
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(port: u16) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// `GET path` with `token`: the status, the body, and whether the
    /// server keeps the connection open.
    async fn get(&mut self, path: &str, token: &str) -> std::io::Result<(u16, Vec<u8>, bool)> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("status line"))?;
        let (mut length, mut chunked, mut keep) = (None, false, true);
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(bad("headers cut"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').ok_or_else(|| bad("header"))?;
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => keep = !value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad("chunk size"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if self.stream.read_line(&mut line).await? <= 2 {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size + 2, 0);
                self.stream.read_exact(&mut body[start..]).await?;
                body.truncate(start + size);
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        } else {
            self.stream.read_to_end(&mut body).await?;
            keep = false;
        }
        Ok((status, body, keep))
    }
}

/// Asks a running `pgtrail serve` over HTTP, with a token.
struct HttpTarget {
    port: u16,
    token: String,
    /// Idle keep-alive connections.
    idle: Mutex<Vec<Connection>>,
}

impl HttpTarget {
    /// `GET path`, which must answer 200: the body.
    async fn get(&self, path: &str) -> Vec<u8> {
        let idle = self.idle.lock().expect("idle connections").pop();
        let mut connection = match idle {
            Some(c) => c,
            None => Connection::open(self.port).await.expect("connect to serve"),
        };
        let (status, body, keep) = connection
            .get(path, &self.token)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(500)])
        );
        if keep {
            self.idle.lock().expect("idle connections").push(connection);
        }
        body
    }
}

/// `text` percent-encoded for a query string or a path segment.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn row_path(row: &RowRef) -> String {
    let table = match &row.table.schema {
        Some(schema) => format!("{schema}.{}", row.table.table),
        None => row.table.table.clone(),
    };
    format!("{}/{}", encode(&table), encode(&row.pk.canonical()))
}

/// The `"next":` cursor of an API page, read from the end of the body
/// (the bench does not decode the events it asked for).
fn next_cursor(body: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.rfind("\"next\":")? + "\"next\":".len();
    let rest = text[at..].trim_start();
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[async_trait]
impl Target for HttpTarget {
    async fn search(&self, q: &str, before: Option<i64>) -> Option<i64> {
        let mut path = format!("/api/v1/events?q={}&limit={PAGE}", encode(q));
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        next_cursor(&self.get(&path).await)
    }

    async fn search_page(&self, q: &str) -> usize {
        self.get(&format!("/?q={}", encode(q))).await.len()
    }

    async fn facets(&self, q: &str) -> usize {
        self.get(&format!("/fragments/facets?q={}", encode(q)))
            .await
            .len()
    }

    async fn history(&self, row: &RowRef) -> usize {
        self.get(&format!("/api/v1/rows/{}/history", row_path(row)))
            .await
            .len()
    }

    async fn row_page(&self, row: &RowRef) -> usize {
        self.get(&format!("/rows/{}", row_path(row))).await.len()
    }
}

/// The search page's weight: its HTML and every asset it links
/// (`/assets/…`), as a first visit downloads them.
async fn page_weight(t: &HttpTarget) -> (usize, Vec<(String, usize)>) {
    let html = t.get("/").await;
    let text = String::from_utf8_lossy(&html);
    let mut assets = Vec::new();
    for (at, _) in text.match_indices("\"/assets/") {
        let path: String = text[at + 1..].chars().take_while(|&c| c != '"').collect();
        if assets.iter().all(|(p, _)| *p != path) {
            let size = t.get(&path).await.len();
            assets.push((path, size));
        }
    }
    (html.len(), assets)
}

/// A running `pgtrail serve` over a store; killed on drop.
struct Server {
    child: std::process::Child,
    target: Arc<HttpTarget>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a token (`pgtrail token create`, which records its creation in
/// the store) in `dir`'s tokens file and starts `pgtrail serve` on a free
/// loopback port over `store_url`; waits until it answers.
async fn serve(pgtrail: &Path, store_url: &str, dir: &Path) -> Server {
    let tokens = dir.join("tokens.toml");
    let _ = std::fs::remove_file(&tokens);
    let config = dir.join("pgtrail.toml");
    std::fs::write(&config, "").expect("empty config");
    let command = |args: &[&str]| {
        let mut c = std::process::Command::new(pgtrail);
        c.arg("--config")
            .arg(&config)
            .args(args)
            .env("PGTRAIL_STORE", store_url)
            .env("PGTRAIL_SERVER__TOKENS_FILE", &tokens);
        c
    };
    let out = command(&["token", "create", "--name", "bench", "--role", "auditor"])
        .output()
        .expect("run pgtrail token create");
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("token")
        .trim()
        .to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start pgtrail serve");
    let mut server = Server {
        child,
        target: Arc::new(HttpTarget {
            port,
            token,
            idle: Mutex::new(Vec::new()),
        }),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = Connection::open(port).await {
            if let Ok((200, _, _)) = c.get("/healthz", "").await {
                break;
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("pgtrail serve exited: {status}");
        }
        assert!(Instant::now() < deadline, "pgtrail serve did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
}

/// The searches of the search page, with random values.
fn search_string(rng: &mut Lcg, now: DateTime<Utc>) -> String {
    let form = rng.below(SEARCH_FORMS);
    search_of_form(rng, form, now)
}

/// How many forms [`search_of_form`] has.
const SEARCH_FORMS: u64 = 10;

/// A search of one form, with random values. Times are written out
/// (`since:2026-11-29T12:00:00Z` for `since:7d` before the bench's fixed
/// "now"), so a store kept from an earlier day is searched in the window
/// it holds; the server parses both forms with the same parser.
fn search_of_form(rng: &mut Lcg, form: u64, now: DateTime<Utc>) -> String {
    let user = format!("user{:03}@example.com", rng.below(USERS));
    let (schema, table) = table_name(rng.below(TABLES));
    let q = match form {
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
    };
    absolute(&q, now)
}

/// How many forms [`sparse_form`] has.
#[cfg(feature = "bench-internals")]
const SPARSE_FORMS: u64 = 7;

/// A search whose time window holds fewer matches than a page (a rare
/// filter, a quiet window, the oldest day, a window past the newest
/// event): a walk newest first that cannot stop at the window's start
/// reads on to the chain's start (SQLite schema 16 bounds it by
/// `seq_hours`). At 1M events over 30 days each holds 0 to ~30 matches.
#[cfg(feature = "bench-internals")]
fn sparse_form(rng: &mut Lcg, form: u64, now: DateTime<Utc>) -> String {
    let user = format!("user{:03}@example.com", rng.below(USERS));
    let (_, table) = table_name(rng.below(TABLES));
    let later = (now + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let q = match form {
        0 => format!("table:{table} op:delete since:1d"),
        1 => "failed since:2h".into(),
        2 => "db_user:etl kind:ddl since:1d".into(),
        3 => "kind:session failed since:1d".into(),
        4 => format!("user:{user} op:delete since:1d"),
        5 => "op:delete until:29d".into(),
        _ => format!("since:{later}"),
    };
    absolute(&q, now)
}

/// `q` with each `since:`/`until:` value written as an RFC 3339 time.
fn absolute(q: &str, now: DateTime<Utc>) -> String {
    q.split(' ')
        .map(|term| match term.split_once(':') {
            Some((key @ ("since" | "until"), value)) => {
                let at = pgtrail_core::time::parse_time(value, now).expect("time word");
                format!("{key}:{}", at.to_rfc3339_opts(SecondsFormat::Secs, true))
            }
            _ => term.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_row(rng: &mut Lcg) -> RowRef {
    let (schema, table) = table_name(rng.below(TABLES));
    RowRef {
        table: TableName::parse(&format!("{schema}.{table}")).expect("table"),
        pk: PkFilter::parse(&format!("id={}", rng.below(ROWS_PER_TABLE))).expect("pk"),
    }
}

/// p50, p95 and p99 of one measurement in one round (ms).
#[derive(Default, Clone, Copy)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
}

fn latency(samples: &mut [Duration]) -> Latency {
    samples.sort();
    let at = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Latency {
        p50: at(0.5),
        p95: at(0.95),
        p99: at(0.99),
    }
}

/// One round's figures.
#[derive(Default, Clone)]
struct Round {
    search: Latency,
    next_page: Latency,
    search_page: Latency,
    search_facets: Latency,
    facets_week: Latency,
    facets_user: Latency,
    history: Latency,
    row_page: Latency,
    throughput: Throughput,
}

/// Times `ask` once.
async fn timed<F: std::future::Future>(ask: F) -> Duration {
    let start = Instant::now();
    ask.await;
    start.elapsed()
}

async fn measure_searches(t: &dyn Target, seed: u64, now: DateTime<Utc>, round: &mut Round) {
    let mut rng = Lcg(seed);
    let (mut first, mut next, mut pages, mut facets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..300 {
        let q = search_string(&mut rng, now);
        let start = Instant::now();
        let cursor = t.search(&q, None).await;
        first.push(start.elapsed());
        if let Some(cursor) = cursor {
            next.push(timed(t.search(&q, Some(cursor))).await);
        }
        // The page, and the facets it then loads: one in three.
        if i % 3 == 0 {
            pages.push(timed(t.search_page(&q)).await);
            facets.push(timed(t.facets(&q)).await);
        }
    }
    round.search = latency(&mut first);
    round.next_page = latency(&mut next);
    round.search_page = latency(&mut pages);
    round.search_facets = latency(&mut facets);
}

async fn measure_facets(t: &dyn Target, seed: u64, now: DateTime<Utc>, round: &mut Round) {
    let mut rng = Lcg(seed);
    let (mut week, mut by_user) = (Vec::new(), Vec::new());
    let q = absolute("since:7d", now);
    for _ in 0..60 {
        week.push(timed(t.facets(&q)).await);
        let q = absolute(
            &format!("user:user{:03}@example.com since:7d", rng.below(USERS)),
            now,
        );
        by_user.push(timed(t.facets(&q)).await);
    }
    round.facets_week = latency(&mut week);
    round.facets_user = latency(&mut by_user);
}

async fn measure_rows(t: &dyn Target, seed: u64, round: &mut Round) {
    let mut rng = Lcg(seed);
    let (mut api, mut page) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let row = random_row(&mut rng);
        api.push(timed(t.history(&row)).await);
        page.push(timed(t.row_page(&row)).await);
    }
    round.history = latency(&mut api);
    round.row_page = latency(&mut page);
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (`self` for this one); `None` where there is no such
/// file. Ticks are USER_HZ, which Linux fixes at 100 for `/proc`.
fn cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: `) S ppid …`;
    // utime and stime are fields 14 and 15 of the whole line.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What one throughput run measured.
#[derive(Default, Clone, Copy)]
struct Throughput {
    searches_per_s: f64,
    /// CPU of the process serving (the server over HTTP; this process in
    /// process) per search, ms: what holds on a busy machine.
    server_cpu_ms: f64,
    /// CPU of the load generator (this process) per search, ms; 0 in
    /// process, where it is part of the above.
    client_cpu_ms: f64,
}

/// Filtered searches (the API's first page) per second from `clients`
/// concurrent connections for `seconds`, and the CPU per search of the
/// server (`server_pid`, or this process in process) and of this load
/// generator.
async fn measure_throughput(
    t: Arc<dyn Target>,
    seed: u64,
    now: DateTime<Utc>,
    clients: usize,
    seconds: u64,
    server_pid: Option<u32>,
) -> Throughput {
    let server = server_pid.map_or("self".to_string(), |pid| pid.to_string());
    let server_before = cpu_time(&server);
    let client_before = cpu_time("self");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for client in 0..clients as u64 {
        let t = Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            let mut rng = Lcg(seed ^ (client + 1).wrapping_mul(0x51_7CC1));
            let mut done = 0u64;
            while Instant::now() < deadline {
                t.search(&search_string(&mut rng, now), None).await;
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
    let elapsed = start.elapsed();
    let per_search = |before: Option<Duration>, pid: &str| match (before, cpu_time(pid)) {
        (Some(before), Some(after)) if total > 0 => {
            (after - before).as_secs_f64() * 1000.0 / total as f64
        }
        _ => f64::NAN,
    };
    Throughput {
        searches_per_s: total as f64 / elapsed.as_secs_f64(),
        server_cpu_ms: per_search(server_before, &server),
        client_cpu_ms: if server_pid.is_some() {
            per_search(client_before, "self")
        } else {
            0.0
        },
    }
}

/// Each form of search on its own: p50, p95 and p99 of 30 runs. In
/// process on SQLite with `bench-internals`, also the windows that hold
/// fewer matches than a page, each search once with its walks bounded by
/// `seq_hours` and once without (as schema 15 read), the order
/// alternating.
async fn per_form(t: &dyn Target, now: DateTime<Utc>, in_process_sqlite: bool) {
    println!("| search form (example) | p50 ms | p95 ms | p99 ms |");
    println!("| --- | --- | --- | --- |");
    for form in 0..SEARCH_FORMS {
        let mut rng = Lcg(99 + form);
        let mut samples = Vec::new();
        let mut example = String::new();
        for _ in 0..30 {
            let q = search_of_form(&mut rng, form, now);
            samples.push(timed(t.search(&q, None)).await);
            example = q;
        }
        let l = latency(&mut samples);
        println!(
            "| `{example}` | {:.2} | {:.2} | {:.2} |",
            l.p50, l.p95, l.p99
        );
    }
    #[cfg(feature = "bench-internals")]
    if in_process_sqlite {
        sparse_windows(t, now).await;
    }
    #[cfg(not(feature = "bench-internals"))]
    let _ = in_process_sqlite;
}

/// [`per_form`]'s second table: [`sparse_form`]s with and without `seq_hours`.
#[cfg(feature = "bench-internals")]
async fn sparse_windows(t: &dyn Target, now: DateTime<Utc>) {
    println!();
    println!("| window with few matches (example) | matches | without seq_hours p50 / p95 ms | with p50 / p95 ms |");
    println!("| --- | --- | --- | --- |");
    for form in 0..SPARSE_FORMS {
        let mut rng = Lcg(7 + form);
        let (mut without, mut with) = (Vec::new(), Vec::new());
        let (mut example, mut matches) = (String::new(), 0);
        for i in 0..20 {
            let q = sparse_form(&mut rng, form, now);
            for bounded in [i % 2 == 0, i % 2 != 0] {
                pgtrail_store::sqlite::read_seq_hours_for_bench(bounded);
                let start = Instant::now();
                matches = t.search_page(&q).await;
                let took = start.elapsed();
                if bounded {
                    with.push(took)
                } else {
                    without.push(took)
                }
            }
            example = q;
        }
        pgtrail_store::sqlite::read_seq_hours_for_bench(true);
        let (a, b) = (latency(&mut without), latency(&mut with));
        println!(
            "| `{example}` | {matches} | {:.2} / {:.2} | {:.2} / {:.2} |",
            a.p50, a.p95, b.p50, b.p95
        );
    }
}

async fn rounds(
    t: Arc<dyn Target>,
    args: &Args,
    now: DateTime<Utc>,
    server_pid: Option<u32>,
) -> Vec<Round> {
    let mut out = Vec::new();
    for r in 0..args.rounds {
        let mut round = Round::default();
        let seed = 7 + r as u64;
        // The order rotates, so no measurement always runs first.
        let steps = if args.throughput_only { 0 } else { 3 };
        for step in 0..steps {
            match (step + r) % 3 {
                0 => measure_searches(&*t, seed, now, &mut round).await,
                1 => measure_facets(&*t, seed, now, &mut round).await,
                _ => measure_rows(&*t, seed, &mut round).await,
            }
        }
        let load_before = load();
        round.throughput = measure_throughput(
            Arc::clone(&t),
            seed,
            now,
            args.clients,
            args.seconds,
            server_pid,
        )
        .await;
        eprintln!(
            "  round {}: search p95 {:.1} ms, search page p95 {:.1} ms, facets 7d p95 {:.1} ms, \
             row page p95 {:.1} ms, {:.0} searches/s, CPU per search: server {:.2} ms, \
             load generator {:.2} ms (load {load_before} → {})",
            r + 1,
            round.search.p95,
            round.search_page.p95,
            round.facets_week.p95,
            round.row_page.p95,
            round.throughput.searches_per_s,
            round.throughput.server_cpu_ms,
            round.throughput.client_cpu_ms,
            load()
        );
        out.push(round);
    }
    out
}

/// The machine's load average over the last minute.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split(' ').next().map(str::to_string))
        .unwrap_or_default()
}

fn median_spread(values: Vec<f64>) -> (f64, f64, f64) {
    let mut v = values;
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn print(backend: &str, events: usize, fill_rate: Option<f64>, args: &Args, rounds: &[Round]) {
    println!();
    let how = if args.http {
        "over HTTP (pgtrail serve, token auth, access records on)"
    } else {
        "in process (the store's read functions)"
    };
    match fill_rate {
        Some(rate) => println!("{backend}, {events} events (filled at {rate:.0} events/s), {how}"),
        None => println!("{backend}, {events} events (store reused), {how}"),
    }
    println!("| measure | goal | median of rounds | min–max | goal ÷ median |");
    println!("| --- | --- | --- | --- | --- |");
    let row = |name: &str, goal: Option<f64>, pick: &dyn Fn(&Round) -> f64| {
        let (median, min, max) = median_spread(rounds.iter().map(pick).collect());
        let (goal_text, ratio) = match goal {
            Some(g) => (format!("≤ {g:.0} ms"), format!("{:.1}", g / median)),
            None => ("—".into(), "—".into()),
        };
        println!("| {name} | {goal_text} | {median:.2} | {min:.2}–{max:.2} | {ratio} |");
    };
    let latency_rows = |name: &str, goal: Option<f64>, pick: fn(&Round) -> Latency| {
        row(&format!("{name} p50 (ms)"), None, &|r| pick(r).p50);
        row(&format!("{name} p95 (ms)"), goal, &|r| pick(r).p95);
        row(&format!("{name} p99 (ms)"), None, &|r| pick(r).p99);
    };
    latency_rows("filtered search, API", Some(50.0), |r| r.search);
    latency_rows("next page, API", None, |r| r.next_page);
    latency_rows("search page (results)", Some(50.0), |r| r.search_page);
    latency_rows("its facets (second request)", None, |r| r.search_facets);
    latency_rows("facets, last 7 days", Some(200.0), |r| r.facets_week);
    latency_rows("facets, one user's 7 days", None, |r| r.facets_user);
    latency_rows("row page", Some(20.0), |r| r.row_page);
    latency_rows("row history, API", None, |r| r.history);
    let (median, min, max) =
        median_spread(rounds.iter().map(|r| r.throughput.searches_per_s).collect());
    let goal = (backend == "sqlite").then_some(1000.0);
    println!(
        "| filtered searches/s, API, {} connections | {} | {median:.0} | {min:.0}–{max:.0} | {} |",
        args.clients,
        goal.map_or("—".into(), |g| format!("≥ {g:.0}")),
        goal.map_or("—".into(), |g| format!("{:.2}", median / g)),
    );
    row("server CPU per search, throughput run (ms)", None, &|r| {
        r.throughput.server_cpu_ms
    });
    row("load generator CPU per search (ms)", None, &|r| {
        r.throughput.client_cpu_ms
    });
    println!("(goal ÷ median above 1 meets the goal; for searches/s, median ÷ goal)");
}

async fn report_weight(t: &HttpTarget) {
    let (html, assets) = page_weight(t).await;
    let total = html + assets.iter().map(|(_, n)| n).sum::<usize>();
    println!(
        "search page weight: {:.1} kB (goal ≤ 100 kB): HTML {:.1} kB{}",
        total as f64 / 1000.0,
        html as f64 / 1000.0,
        assets
            .iter()
            .map(|(p, n)| format!(
                ", {} {:.1} kB",
                p.rsplit('/').next().unwrap_or(p),
                *n as f64 / 1000.0
            ))
            .collect::<String>()
    );
}

/// Runs the rounds on `store` (over HTTP through `store_url`, or in
/// process) and prints them.
async fn measure(
    backend: &str,
    store: Arc<dyn Store>,
    store_url: &str,
    args: &Args,
    fill_rate: Option<f64>,
    now: DateTime<Utc>,
    work: &Path,
) {
    // The fill is the chain's first `events` events; what follows are the
    // access records of earlier HTTP runs on a reused store, at the head,
    // inside the windows of the forms near "now".
    let head = store.head().await.expect("head").map_or(0, |h| h.seq);
    eprintln!(
        "{backend}: {head} events, {} of them access records of earlier runs",
        (head - args.events as i64).max(0)
    );
    let server;
    let (target, server_pid): (Arc<dyn Target>, _) = if args.http {
        server = serve(&args.pgtrail, store_url, work).await;
        report_weight(&server.target).await;
        (server.target.clone(), Some(server.child.id()))
    } else {
        (Arc::new(StoreTarget { store, now }), None)
    };
    if args.per_form {
        per_form(&*target, now, !args.http && backend == "sqlite").await;
        return;
    }
    let figures = rounds(target, args, now, server_pid).await;
    print(backend, args.events, fill_rate, args, &figures);
}

fn bench_dir() -> PathBuf {
    PathBuf::from(std::env::var("BENCH_TMP").unwrap_or_else(|_| ".".into()))
}

async fn bench_sqlite(args: &Args, now: DateTime<Utc>) {
    let scratch = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    let dir = args.cache.clone().unwrap_or_else(|| scratch.path().into());
    std::fs::create_dir_all(&dir).expect("cache directory");
    let name = match args.days {
        30 => format!("serve-{}.db", args.events),
        days => format!("serve-{}-{days}d.db", args.events),
    };
    let path = dir.join(&name);
    // Written once the fill finished: a file without it is refilled.
    let done = dir.join(format!("{name}.done"));
    if path.exists() && !done.exists() {
        eprintln!("sqlite: {} was not finished; filling again", path.display());
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let existed = path.exists();
    let opened = Instant::now();
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("open");
    if existed {
        eprintln!(
            "sqlite: reusing {} (opened and migrated in {:.1} s)",
            path.display(),
            opened.elapsed().as_secs_f64()
        );
    }
    let fill_rate = if existed {
        None
    } else {
        eprintln!(
            "sqlite: filling {} events into {}",
            args.events,
            path.display()
        );
        let rate = fill(&store, args.events, args.days, now).await;
        std::fs::write(&done, "").expect("mark the fill done");
        Some(rate)
    };
    let url = format!("sqlite:{}", path.display());
    measure(
        "sqlite",
        Arc::new(store),
        &url,
        args,
        fill_rate,
        now,
        scratch.path(),
    )
    .await;
}

async fn bench_postgres(args: &Args, now: DateTime<Utc>) {
    let cluster = pgtrail_testkit::Cluster::start_with(pgtrail_testkit::ClusterOptions {
        // Kept in --pg-dir (and reused) when given, else a throwaway one.
        data_dir: args.pg_dir.clone(),
        // 1 GB of WAL at most: a 10M store is ~11 GB, and the disk is shared.
        settings: [("shared_buffers", "1GB"), ("max_wal_size", "1GB")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .expect("cluster");
    // The database's name, written once its fill finished.
    let done = args
        .pg_dir
        .as_ref()
        .map(|dir| dir.join(format!("serve-{}.database", args.events)));
    let filled = done.as_ref().and_then(|d| std::fs::read_to_string(d).ok());
    let url = match &filled {
        Some(db) => cluster.url(db.trim()),
        None => cluster.create_database("serve").await.expect("database"),
    };
    // Connecting migrates a reused store to this build's schema.
    let opened = Instant::now();
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    let fill_rate = if filled.is_some() {
        eprintln!(
            "postgres: reusing {url} (opened and migrated in {:.1} s)",
            opened.elapsed().as_secs_f64()
        );
        None
    } else {
        store
            .prepare_until(now + chrono::Duration::days(1))
            .await
            .expect("partitions");
        eprintln!("postgres: filling {} events", args.events);
        Some(fill(&store, args.events, args.days, now).await)
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("vacuum analyze pgtrail.events")
        .await
        .expect("analyze");
    if let (Some(done), None) = (&done, &filled) {
        let db = url.rsplit('/').next().expect("a database in the url");
        std::fs::write(done, db).expect("mark the fill done");
    }
    let scratch = tempfile::tempdir_in(bench_dir()).expect("tempdir");
    measure(
        "postgres",
        Arc::new(store),
        &url,
        args,
        fill_rate,
        now,
        scratch.path(),
    )
    .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = parse_args();
    // A fixed "now", so a kept store and a new one see the same window.
    let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("valid")
        .with_timezone(&Utc);
    println!(
        "bench/serve: {} events, {} rounds, {} cores, load {}",
        args.events,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    for backend in &args.backends {
        match backend.as_str() {
            "sqlite" => bench_sqlite(&args, now).await,
            "postgres" => bench_postgres(&args, now).await,
            other => panic!("unknown backend {other}"),
        }
    }
}
