//! The client matrix (issue 11, item 9): real clients run the same small
//! suite twice, once straight against the server and once through `pgtrail
//! proxy`, and must print the same thing; their marked statements must then
//! be in what the proxy recorded, with the right class, rows and SQLSTATE.
//!
//! One cluster and one proxy for every client; each run gets a fresh
//! database (`<client>_direct`, `<client>_proxy`), and all runs go at once.
//! The suites live in `tests/clients/<client>/` (psql, pgbench, Python's
//! psycopg 3 and asyncpg, node-postgres); tokio-postgres and sqlx are in
//! `clients_rust.rs`, with a raw client sending malformed frames. A run that does not finish within [`RUN_TIMEOUT`] is a
//! failure that shows what it printed so far: a client the proxy confuses
//! must get the direct result or a clean error, never a hang.
//!
//! A client whose runtime is missing fails its run (CI installs them all:
//! `.ci/run`). `PGTRAIL_TEST_SKIP_CLIENTS=psycopg,node` leaves clients out
//! on a machine without them; `PGTRAIL_TEST_PYTHON` names the Python to
//! use (default `python3`); `PGTRAIL_TEST_DEBUG=1` prints every run's output.
//!
//! The trail check reads the statements back from the store with `pgtrail
//! log --kind statement --format jsonl` when `pgtrail proxy` writes to one
//! (it takes `--durability`), and then requires each event's class; a proxy
//! without a store is checked on the JSON lines it prints (rows and
//! SQLSTATE).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgtrail_testkit::Cluster;
use serde_json::Value;

use crate::clients_rust;

/// Longest a client's run may take (the slowest, pgbench, needs ~10 s).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

const SUITES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/clients");

/// A statement a suite marks (an identifier `mark_<client>_<what>` in its
/// text) and what its record must say.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub text: &'static str,
    pub class: &'static str,
    /// Rows affected or returned; None for a failed statement.
    pub rows: Option<u64>,
    pub sqlstate: Option<&'static str>,
    /// How many times the suite runs it through the proxy.
    pub times: usize,
}

const fn ok(text: &'static str, class: &'static str, rows: u64) -> Mark {
    Mark {
        text,
        class,
        rows: Some(rows),
        sqlstate: None,
        times: 1,
    }
}

const fn failed(text: &'static str, class: &'static str, sqlstate: &'static str) -> Mark {
    Mark {
        text,
        class,
        rows: None,
        sqlstate: Some(sqlstate),
        times: 1,
    }
}

/// The usual three of a suite: two rows inserted, read back, a duplicate key.
const fn usual(insert: &'static str, select: &'static str, dup: &'static str) -> [Mark; 3] {
    [
        ok(insert, "WRITE", 2),
        ok(select, "READ", 2),
        failed(dup, "WRITE", "23505"),
    ]
}

/// A client of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Psql,
    Pgbench,
    Psycopg,
    Asyncpg,
    Node,
    TokioPostgres,
    Sqlx,
    /// Malformed and out-of-place frames on a raw socket.
    Raw,
}

const CLIENTS: [Client; 8] = [
    Client::Psql,
    Client::Pgbench,
    Client::Psycopg,
    Client::Asyncpg,
    Client::Node,
    Client::TokioPostgres,
    Client::Sqlx,
    Client::Raw,
];

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Psql => "psql",
            Client::Pgbench => "pgbench",
            Client::Psycopg => "psycopg",
            Client::Asyncpg => "asyncpg",
            Client::Node => "node",
            Client::TokioPostgres => "tokio_postgres",
            Client::Sqlx => "sqlx",
            Client::Raw => "raw",
        }
    }

    fn marks(self) -> Vec<Mark> {
        match self {
            Client::Psql => vec![
                ok("mark_psql_insert", "WRITE", 2),
                ok("mark_psql_select", "READ", 2),
                failed("mark_psql_dup", "WRITE", "23505"),
                ok("mark_psql_update", "WRITE", 2),
            ],
            Client::Pgbench => vec![
                Mark {
                    // 30 transactions by 2 clients in 2 query modes.
                    times: 120,
                    ..ok("mark_pgbench_counter", "WRITE", 1)
                },
                failed("mark_pgbench_dup", "WRITE", "23505"),
            ],
            Client::Psycopg => usual(
                "mark_psycopg_insert",
                "mark_psycopg_select",
                "mark_psycopg_dup",
            )
            .to_vec(),
            Client::Asyncpg => {
                let mut marks = usual(
                    "mark_asyncpg_insert",
                    "mark_asyncpg_select",
                    "mark_asyncpg_dup",
                )
                .to_vec();
                // A cursor's portal fetched 4 rows at a time: one statement.
                marks.push(ok("mark_asyncpg_cursor", "READ", 30));
                // fetchval: Execute with a row limit of 1, never run to its end.
                marks.push(Mark {
                    times: 2,
                    ..ok("mark_asyncpg_fetchval", "READ", 1)
                });
                marks
            }
            Client::Node => usual("mark_node_insert", "mark_node_select", "mark_node_dup").to_vec(),
            Client::TokioPostgres => clients_rust::TOKIO_POSTGRES_MARKS.to_vec(),
            Client::Sqlx => clients_rust::SQLX_MARKS.to_vec(),
            Client::Raw => Vec::new(),
        }
    }

    /// The command running this client's suite (None: a Rust client).
    fn command(self, cluster: &Cluster) -> Option<Command> {
        let suites = Path::new(SUITES);
        let python = std::env::var("PGTRAIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let (program, args, dir): (PathBuf, Vec<&str>, PathBuf) = match self {
            Client::Psql => ("sh".into(), vec!["run.sh"], suites.join("psql")),
            Client::Pgbench => ("sh".into(), vec!["run.sh"], suites.join("pgbench")),
            Client::Psycopg => (
                python.into(),
                vec!["psycopg_suite.py"],
                suites.join("python"),
            ),
            Client::Asyncpg => (
                python.into(),
                vec!["asyncpg_suite.py"],
                suites.join("python"),
            ),
            Client::Node => ("node".into(), vec!["suite.js"], suites.join("node")),
            Client::TokioPostgres | Client::Sqlx | Client::Raw => return None,
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(dir)
            .env("PSQL", cluster.binaries().program("psql"))
            .env("PGBENCH", cluster.binaries().program("pgbench"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        Some(command)
    }
}

/// Where a run connects: the server or the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Direct,
    Proxy,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Proxy => "proxy",
        }
    }
}

/// What one run printed, and how it ended.
#[derive(Debug)]
struct Run {
    output: String,
    /// Why the run failed on its own (exit status, timeout), if it did.
    failure: Option<String>,
}

/// Where a client connects for one run.
#[derive(Debug, Clone)]
pub struct Target {
    pub port: u16,
    pub database: String,
}

/// Kills the proxy when the test ends, passing or not.
struct Proxy {
    child: Child,
    address: String,
    out: PathBuf,
    err: PathBuf,
    /// The store the proxy writes its events to, when it has one (a
    /// `pgtrail proxy` that knows `--durability`); else its JSON lines on
    /// stdout are the record.
    store: Option<String>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// `pgtrail proxy` on a free port in front of `cluster`, its records
    /// (JSON lines) and log in `dir`.
    async fn start(cluster: &Cluster, dir: &Path) -> Proxy {
        let (out, err) = (dir.join("records"), dir.join("proxy.log"));
        let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
        let store = writes_to_store().then(|| format!("sqlite:{}", dir.join("trail.db").display()));
        let mut args = vec!["proxy", "--listen", "127.0.0.1:0", "--upstream", &upstream];
        if let Some(store) = &store {
            args.extend(["--store", store, "--log", "all"]);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("records file"))
            .stderr(std::fs::File::create(&err).expect("log file"))
            .spawn()
            .expect("start pgtrail proxy");
        let mut proxy = Proxy {
            child,
            address: String::new(),
            out,
            err,
            store,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = read(&proxy.err);
            if let Some(address) = log
                .lines()
                .find_map(|l| l.split("listening on ").nth(1).map(str::trim))
            {
                proxy.address = address.to_string();
                return proxy;
            }
            assert!(Instant::now() < deadline, "proxy not listening: {log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn port(&self) -> u16 {
        self.address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in {:?}", self.address))
    }

    /// Stops the proxy as an operator does (SIGTERM): it takes no new
    /// clients and exits once every event is in the store. A problem if it
    /// does not within 60 s.
    async fn stop(&mut self) -> Option<String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            return Some("cannot send SIGTERM to the proxy".into());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return None,
                Ok(Some(status)) => return Some(format!("the proxy exited with {status}")),
                Ok(None) if Instant::now() >= deadline => {
                    return Some("the proxy did not stop within 60 s of SIGTERM".into())
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Some(format!("wait for the proxy: {e}")),
            }
        }
    }

    /// Every statement recorded: read back from the store through `pgtrail
    /// log` as a user would, or the JSON lines the proxy printed.
    fn records(&self) -> Vec<Value> {
        let text = match &self.store {
            None => read(&self.out),
            Some(store) => {
                let run = crate::support::pgtrail_in(
                    self.out.parent().unwrap_or(Path::new(".")),
                    &[
                        "--store",
                        store,
                        "log",
                        "--kind",
                        "statement",
                        "--format",
                        "jsonl",
                        "--limit",
                        "1000000",
                    ],
                    &[],
                    None,
                );
                run.ok().to_string()
            }
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Whether records must carry a class: the store's events do.
    fn classified(&self) -> bool {
        self.store.is_some()
    }
}

/// Whether this `pgtrail proxy` writes events to a store (issue 11's
/// durable part: it then takes `--durability`).
fn writes_to_store() -> bool {
    Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["proxy", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--durability"))
        .unwrap_or(false)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs an external client's suite against `target`, killing it after
/// [`RUN_TIMEOUT`].
fn run_external(mut command: Command, target: &Target, dir: &Path, label: &str) -> Run {
    let path = dir.join(format!("{label}.out"));
    let file = std::fs::File::create(&path).expect("output file");
    let spawned = command
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", target.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", &target.database)
        .env("PGSSLMODE", "disable")
        .env("PGAPPNAME", "client-matrix")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("output file"))
        .stderr(file)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Run {
                output: String::new(),
                failure: Some(format!(
                    "cannot start {command:?}: {e} (is its runtime installed?)"
                )),
            }
        }
    };
    let deadline = Instant::now() + RUN_TIMEOUT;
    let failure = loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => break None,
            Ok(Some(status)) => break Some(format!("exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Some(format!("hung: killed after {RUN_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => break Some(format!("wait: {e}")),
        }
    };
    Run {
        output: read(&path),
        failure,
    }
}

async fn run(client: Client, cluster: &Cluster, target: Target, dir: PathBuf, side: Side) -> Run {
    let label = format!("{}_{}", client.name(), side.name());
    if let Some(command) = client.command(cluster) {
        return tokio::task::spawn_blocking(move || run_external(command, &target, &dir, &label))
            .await
            .expect("run thread");
    }
    let (lines, failure) = match client {
        Client::TokioPostgres => clients_rust::tokio_postgres_suite(&target, RUN_TIMEOUT).await,
        Client::Raw => clients_rust::raw_suite(&target, RUN_TIMEOUT).await,
        _ => clients_rust::sqlx_suite(&target, RUN_TIMEOUT).await,
    };
    Run {
        output: lines.join("\n"),
        failure,
    }
}

/// What may differ between a direct run and a proxied one: the port.
fn normalize(output: &str, ports: &[u16]) -> String {
    let mut text = output.to_string();
    for port in ports {
        text = text.replace(&port.to_string(), "PORT");
    }
    text
}

/// The first line where two outputs part, with some context.
fn first_difference(direct: &str, proxied: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (direct.lines().collect(), proxied.lines().collect());
    let at = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    format!(
        "line {}:\n  direct: {}\n  proxy:  {}",
        at + 1,
        a.get(at).unwrap_or(&"<end>"),
        b.get(at).unwrap_or(&"<end>")
    )
}

/// The raw client's runs agree when each case got the server's answer or
/// the proxy's own clean FATAL.
fn raw_outputs_agree(direct: &str, proxied: &str) -> bool {
    let result = |line: &str| {
        serde_json::from_str::<Value>(line)
            .map(|v| v["result"].to_string())
            .unwrap_or_default()
    };
    direct.lines().count() == proxied.lines().count()
        && direct
            .lines()
            .zip(proxied.lines())
            .all(|(d, p)| d == p || result(p) == clients_rust::CLEAN_FATAL)
}

/// Which of `marks` the records of `database` do not bear out.
pub fn check_marks(
    records: &[Value],
    database: &str,
    marks: &[Mark],
    classified: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for mark in marks {
        let found: Vec<&Value> = records
            .iter()
            .filter(|r| r["database"] == database)
            .filter(|r| r["sql"].as_str().is_some_and(|s| s.contains(mark.text)))
            .collect();
        if found.len() != mark.times {
            problems.push(format!(
                "{}: {} records, expected {}",
                mark.text,
                found.len(),
                mark.times
            ));
        }
        for record in found {
            let sqlstate = record["error"]["sqlstate"]
                .as_str()
                .or(record["sqlstate"].as_str());
            // A portal left suspended (a row-limited Execute, then Sync or
            // Close) has no command tag: the rows it returned count.
            let rows = record["rows"].as_u64().or_else(|| {
                (record["outcome"] == "suspended")
                    .then(|| record["rows_returned"].as_u64())
                    .flatten()
            });
            let wrong_rows = mark.sqlstate.is_none() && rows != mark.rows;
            // `pgtrail proxy`'s JSON lines have no class; the store's
            // events must.
            let class = record.get("class").and_then(Value::as_str);
            let wrong_class = match class {
                Some(class) => class != mark.class,
                None => classified,
            };
            if sqlstate != mark.sqlstate || wrong_rows || wrong_class {
                problems.push(format!(
                    "{}: expected class {} rows {:?} sqlstate {:?}, recorded {record}",
                    mark.text, mark.class, mark.rows, mark.sqlstate
                ));
                break;
            }
        }
    }
    problems
}

fn skipped() -> Vec<String> {
    std::env::var("PGTRAIL_TEST_SKIP_CLIENTS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_matrix_direct_and_through_the_proxy() {
    let cluster = Cluster::start().expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut proxy = Proxy::start(&cluster, dir.path()).await;
    let admin = cluster.connect("postgres").await.expect("connect");
    let skip = skipped();
    for name in &skip {
        assert!(
            CLIENTS.iter().any(|c| c.name() == name),
            "PGTRAIL_TEST_SKIP_CLIENTS names no client {name:?}"
        );
    }
    let clients: Vec<Client> = CLIENTS
        .into_iter()
        .filter(|c| !skip.iter().any(|s| s == c.name()))
        .collect();
    for client in &clients {
        for side in [Side::Direct, Side::Proxy] {
            admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{}_{}\"",
                    client.name(),
                    side.name()
                ))
                .await
                .expect("create database");
        }
    }

    let started = Instant::now();
    let cluster = std::sync::Arc::new(cluster);
    let mut runs = tokio::task::JoinSet::new();
    for client in clients.iter().copied() {
        for side in [Side::Direct, Side::Proxy] {
            let port = match side {
                Side::Direct => cluster.port(),
                Side::Proxy => proxy.port(),
            };
            let target = Target {
                port,
                database: format!("{}_{}", client.name(), side.name()),
            };
            let (cluster, dir) = (cluster.clone(), dir.path().to_path_buf());
            runs.spawn(async move {
                let run = run(client, &cluster, target, dir, side).await;
                (client, side, run)
            });
        }
    }
    let mut results = Vec::new();
    while let Some(joined) = runs.join_next().await {
        results.push(joined.expect("run task"));
    }
    let elapsed = started.elapsed();

    let ports = [cluster.port(), proxy.port()];
    let mut problems = Vec::new();
    problems.extend(proxy.stop().await);
    let records = proxy.records();
    for client in &clients {
        let output = |side: Side| {
            results
                .iter()
                .find(|(c, s, _)| c == client && *s == side)
                .map(|(_, _, run)| run)
                .expect("a run per side")
        };
        let (direct, proxied) = (output(Side::Direct), output(Side::Proxy));
        let mut failed = false;
        for (side, run) in [(Side::Direct, direct), (Side::Proxy, proxied)] {
            if let Some(failure) = &run.failure {
                failed = true;
                let tail: Vec<&str> = run.output.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                problems.push(format!(
                    "{} {}: {failure}; last output:\n{}",
                    client.name(),
                    side.name(),
                    tail.join("\n")
                ));
            }
        }
        if failed {
            continue;
        }
        let (a, b) = (
            normalize(&direct.output, &ports),
            normalize(&proxied.output, &ports),
        );
        if a != b && !(*client == Client::Raw && raw_outputs_agree(&a, &b)) {
            problems.push(format!(
                "{}: the proxied run differs from the direct one at {}",
                client.name(),
                first_difference(&a, &b)
            ));
            continue;
        }
        let database = format!("{}_proxy", client.name());
        for problem in check_marks(&records, &database, &client.marks(), proxy.classified()) {
            problems.push(format!("{} trail: {problem}", client.name()));
        }
    }
    let log = read(&proxy.err);
    if std::env::var_os("PGTRAIL_TEST_DEBUG").is_some() {
        for (client, side, run) in &results {
            eprintln!("== {} {}\n{}", client.name(), side.name(), run.output);
        }
        eprintln!("{} records", records.len());
        let mut by_database = std::collections::BTreeMap::new();
        for record in &records {
            *by_database
                .entry(record["database"].to_string())
                .or_insert(0) += 1;
        }
        eprintln!("records by database: {by_database:?}");
        if let Some(record) = records
            .iter()
            .find(|r| r["sql"].as_str().is_some_and(|s| s.contains("counter")))
        {
            eprintln!("a counter statement: {record}");
        }
    }
    assert!(
        problems.is_empty(),
        "client matrix ({} clients in {elapsed:?}; skipped: {skip:?}):\n{}\n\nproxy log:\n{log}",
        clients.len(),
        problems.join("\n\n"),
    );
    assert!(
        !log.contains("ERROR") && !log.contains("out of step"),
        "the proxy logged an error: {log}"
    );
}
