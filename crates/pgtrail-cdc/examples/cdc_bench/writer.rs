//! Part (a) of bench/cdc: what capture costs the writers.
//!
//! The machine is shared (two cores, one disk, other people's builds), so a
//! single pgbench run per configuration says little: a burst of load or of
//! disk flushes elsewhere lands on one configuration only. Instead:
//!
//! - many short rounds; in each, every configuration runs every workload
//!   once, in an order rotated from round to round;
//! - each run's TPS is divided by the same round's no-capture TPS for the
//!   same workload, and the table shows the median of those per-round ratios
//!   with their spread (min–max): a noisy round moves one sample, not the
//!   figure;
//! - two clusters run side by side and take turns: one with PostgreSQL's
//!   default durability (fsync and full-page writes on: the headline, as the
//!   issue measured it) and one with fsync off (writers CPU-bound: the worst
//!   case for a consumer sharing the cores). Settings given on the command
//!   line cannot be changed by ALTER SYSTEM, hence two clusters;
//! - every run starts after a CHECKPOINT (so each pays the same full-page
//!   writes) and after the consumer caught up with the previous run.
//!
//! Besides TPS, each run records the CPU the capture used per writer
//! transaction: the walsender's (decoding) and the consumer's (pgtrail in
//! this process, or pg_recvlogical), from /proc.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_cdc::catalog::{self, ServerFacts, TableSelection};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::ReplicationOptions;
use pgtrail_cdc::setup::{self, SetupOptions};
use pgtrail_core::config::IdentityConfig;
use pgtrail_pipeline::cdc::{self, Progress};
use pgtrail_store::Store;
use pgtrail_testkit::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{Consumer, NullStore, INSERT, UPDATE};

/// What part (a) runs.
pub struct WriterArgs {
    pub rounds: u32,
    /// Length of one pgbench run.
    pub seconds: u64,
    /// Transactions per second per run (pgbench --rate), instead of as many
    /// as possible: for comparing CPU per transaction at the same load.
    pub rate: Option<u32>,
    /// `true` for fsync on (durable), `false` for fsync off; in this order.
    pub durability: Vec<bool>,
    pub configs: Vec<Config>,
}

/// One capture configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    NoCapture,
    Wal2json,
    Pgtrail,
    PgtrailContext,
    ContextAlone,
    /// pgtrail consuming into a store that keeps nothing (experiment).
    PgtrailNull,
    /// pgtrail's SQLite store on tmpfs, no disk flushes (experiment).
    PgtrailTmpfs,
    /// pgtrail with batch_wait 1 s instead of 100 ms (experiment).
    PgtrailWait1s,
}

impl Config {
    const ALL: [Config; 8] = [
        Config::NoCapture,
        Config::Wal2json,
        Config::Pgtrail,
        Config::PgtrailContext,
        Config::ContextAlone,
        Config::PgtrailNull,
        Config::PgtrailTmpfs,
        Config::PgtrailWait1s,
    ];
    /// The default set; the experiments are chosen with `--configs`.
    pub const DEFAULT: [Config; 5] = [
        Config::NoCapture,
        Config::Wal2json,
        Config::Pgtrail,
        Config::PgtrailContext,
        Config::ContextAlone,
    ];

    /// Name for `--configs` and the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Config::NoCapture => "none",
            Config::Wal2json => "wal2json",
            Config::Pgtrail => "pgtrail",
            Config::PgtrailContext => "pgtrail_context",
            Config::ContextAlone => "context",
            Config::PgtrailNull => "pgtrail_null",
            Config::PgtrailTmpfs => "pgtrail_tmpfs",
            Config::PgtrailWait1s => "pgtrail_wait1s",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Config::NoCapture => "no capture",
            Config::Wal2json => "pg_recvlogical + wal2json",
            Config::Pgtrail => "pgtrail → SQLite",
            Config::PgtrailContext => "pgtrail + context trigger",
            Config::ContextAlone => "context trigger alone",
            Config::PgtrailNull => "pgtrail → null store",
            Config::PgtrailTmpfs => "pgtrail → SQLite on tmpfs",
            Config::PgtrailWait1s => "pgtrail, batch_wait 1 s",
        }
    }

    /// Parses a comma-separated `--configs` list; `none` is always included.
    pub fn parse_list(list: &str) -> Vec<Config> {
        let mut configs = vec![Config::NoCapture];
        for name in list.split(',').filter(|n| !n.is_empty()) {
            let config = Config::ALL
                .into_iter()
                .find(|c| c.key() == name)
                .unwrap_or_else(|| panic!("unknown configuration {name} in --configs"));
            if !configs.contains(&config) {
                configs.push(config);
            }
        }
        configs
    }

    fn slot(self) -> Option<&'static str> {
        match self {
            Config::NoCapture | Config::ContextAlone => None,
            Config::Wal2json => Some("w2j_writer"),
            _ => Some("writer"),
        }
    }
}

/// The four workloads: (label, JSON key, pgbench script, clients).
const WORKLOADS: [(&str, &str, &str, u32); 4] = [
    ("UPD 1c", "update_1c", UPDATE, 1),
    ("UPD 2c", "update_2c", UPDATE, 2),
    ("INS 1c", "insert_1c", INSERT, 1),
    ("INS 2c", "insert_2c", INSERT, 2),
];

/// One pgbench run's outcome.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    tps: f64,
    /// CPU seconds during the run: all server processes (the backends,
    /// the walsender, background processes), of which the walsender, and
    /// the consumer.
    server_cpu: f64,
    walsender_cpu: f64,
    consumer_cpu: f64,
    /// WAL bytes the consumer had not confirmed when pgbench ended.
    behind_bytes: f64,
    /// Writer transactions in the run.
    transactions: f64,
}

/// A cluster of one durability, set up for the workloads.
struct Target {
    durable: bool,
    cluster: Cluster,
    url: String,
    client: tokio_postgres::Client,
    facts: ServerFacts,
    /// runs[config][workload] over the rounds.
    runs: Vec<Vec<Vec<Run>>>,
}

/// A configuration while it is set up.
struct Active {
    recv: Option<std::process::Child>,
    consumer: Option<Consumer>,
    store_file: Option<std::path::PathBuf>,
}

pub async fn run(args: &WriterArgs) -> Value {
    let store_dir = tempfile::tempdir().expect("tempdir");
    let tmpfs_dir = tempfile::tempdir_in("/dev/shm").ok();
    let mut targets = Vec::new();
    for &durable in &args.durability {
        targets.push(Target::start(durable, args.configs.len()).await);
    }
    println!(
        "\n(a) writer cost: pgbench, {} rounds of {} s per run, configurations in rotating order;\n    ratio = TPS / the same round's no-capture TPS: median (min–max) over the rounds",
        args.rounds, args.seconds
    );
    let started = Instant::now();
    for round in 0..args.rounds as usize {
        for target in &mut targets {
            let n = args.configs.len();
            for i in 0..n {
                let index = (i + round) % n;
                let config = args.configs[index];
                let active = target
                    .set_up(
                        config,
                        store_dir.path(),
                        tmpfs_dir.as_ref().map(|d| d.path()),
                    )
                    .await;
                for (w, (label, _, script, clients)) in WORKLOADS.iter().enumerate() {
                    let run = target
                        .measure(config, &active, script, *clients, (args.seconds, args.rate))
                        .await;
                    eprintln!(
                        "round {}/{} fsync {} {:<28} {label}: {:>8.0} tps  ({:.0} s)",
                        round + 1,
                        args.rounds,
                        if target.durable { "on " } else { "off" },
                        config.label(),
                        run.tps,
                        started.elapsed().as_secs_f64()
                    );
                    target.runs[index][w].push(run);
                }
                target.tear_down(config, active).await;
            }
        }
    }
    let mut results = serde_json::Map::new();
    for target in &targets {
        let key = if target.durable {
            "fsync_on"
        } else {
            "fsync_off"
        };
        results.insert(key.into(), target.report(&args.configs));
    }
    Value::Object(results)
}

impl Target {
    async fn start(durable: bool, configs: usize) -> Target {
        // Commits wait for their WAL flush (synchronous_commit=on) in both,
        // so the walsender sees each commit at once; with fsync off that
        // flush is a write to the page cache only.
        let mut settings = vec![
            ("synchronous_commit".to_string(), "on".to_string()),
            // Checkpoints only where the bench asks for them.
            ("checkpoint_timeout".into(), "1h".into()),
            ("max_wal_size".into(), "8GB".into()),
        ];
        if durable {
            settings.push(("fsync".into(), "on".into()));
            settings.push(("full_page_writes".into(), "on".into()));
        }
        let cluster = Cluster::start_with(ClusterOptions {
            settings,
            ..ClusterOptions::default()
        })
        .expect("cluster");
        let url = cluster.create_database("writer").await.expect("database");
        let client = super::sql(&url).await;
        client
            .batch_execute(
                "create table acct (id int primary key, n int not null, note text);
                 insert into acct select g, 0, 'row ' || g from generate_series(1, 100000) g;
                 create table ins (id bigserial primary key, n int, note text);",
            )
            .await
            .expect("schema");
        client
            .batch_execute("vacuum analyze")
            .await
            .expect("vacuum");
        let facts = catalog::check_ready(&client).await.expect("ready");
        Target {
            durable,
            cluster,
            url,
            client,
            facts,
            runs: vec![vec![Vec::new(); WORKLOADS.len()]; configs],
        }
    }

    async fn set_up(
        &self,
        config: Config,
        store_dir: &std::path::Path,
        tmpfs_dir: Option<&std::path::Path>,
    ) -> Active {
        let mut active = Active {
            recv: None,
            consumer: None,
            store_file: None,
        };
        match config {
            Config::NoCapture => {}
            Config::Wal2json => {
                self.client
                    .execute(
                        "select pg_create_logical_replication_slot('w2j_writer', 'wal2json')",
                        &[],
                    )
                    .await
                    .expect("slot");
                active.recv = Some(recvlogical(&self.cluster, &self.url));
            }
            Config::ContextAlone => {
                let tables = catalog::resolve_tables(&self.client, &TableSelection::default())
                    .await
                    .expect("tables");
                pgtrail_cdc::triggers::install_actor(
                    &self.client,
                    &IdentityConfig::default(),
                    &tables,
                )
                .await
                .expect("triggers");
            }
            _ => {
                let options = SetupOptions {
                    slot: "writer".into(),
                    publication: "bench".into(),
                    selection: TableSelection::default(),
                    replica_identity_full: false,
                    actor: config == Config::PgtrailContext,
                    identity: IdentityConfig::default(),
                    create_slot: true,
                };
                setup::prepare(&self.client, &self.facts, &options)
                    .await
                    .expect("setup");
                let store: Arc<dyn Store> = if config == Config::PgtrailNull {
                    Arc::new(NullStore)
                } else {
                    let dir = match (config, tmpfs_dir) {
                        (Config::PgtrailTmpfs, Some(dir)) => dir,
                        (Config::PgtrailTmpfs, None) => panic!("/dev/shm is not available"),
                        _ => store_dir,
                    };
                    let file = dir.join(format!("writer-{}.db", std::process::id()));
                    let store = pgtrail_store::open(&format!("sqlite:{}", file.display()))
                        .await
                        .expect("store");
                    active.store_file = Some(file);
                    store
                };
                let mut options = ReplicationOptions::new("writer", "bench");
                if config == Config::PgtrailWait1s {
                    options.batch_wait = Duration::from_secs(1);
                }
                active.consumer = Some(start_consumer(&self.url, store, options));
            }
        }
        // Let the consumer connect and the walsender start.
        tokio::time::sleep(Duration::from_millis(500)).await;
        active
    }

    /// One pgbench run, after a checkpoint and after the consumer caught up.
    async fn measure(
        &self,
        config: Config,
        active: &Active,
        script: &str,
        clients: u32,
        (seconds, rate): (u64, Option<u32>),
    ) -> Run {
        self.client
            .batch_execute("checkpoint")
            .await
            .expect("checkpoint");
        let walsender = match config.slot() {
            Some(slot) => {
                self.wait_caught_up(slot).await;
                self.walsender_pid(slot).await
            }
            None => None,
        };
        let consumer_pid = match (&active.recv, &active.consumer) {
            (Some(child), _) => Some(child.id()),
            (None, Some(_)) => Some(std::process::id()),
            _ => None,
        };
        let data_dir = self.cluster.data_dir();
        let (s0, ws0, c0) = (
            server_cpu_seconds(&data_dir),
            cpu_seconds(walsender),
            cpu_seconds(consumer_pid),
        );
        let tps = tokio::task::block_in_place(|| {
            pgbench(&self.cluster, &self.url, script, clients, seconds, rate)
        });
        // The postmaster adds an ended backend's CPU to its own children's
        // total once it reaped it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (s1, ws1, c1) = (
            server_cpu_seconds(&data_dir),
            cpu_seconds(walsender),
            cpu_seconds(consumer_pid),
        );
        let behind_bytes = match config.slot() {
            Some(slot) => self.behind(slot).await,
            None => 0.0,
        };
        Run {
            tps,
            server_cpu: s1 - s0,
            walsender_cpu: ws1 - ws0,
            consumer_cpu: c1 - c0,
            behind_bytes,
            transactions: tps * seconds as f64,
        }
    }

    async fn tear_down(&self, config: Config, active: Active) {
        if let Some(mut child) = active.recv {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(consumer) = active.consumer {
            consumer.stop().await;
        }
        match config {
            Config::NoCapture => {}
            Config::Wal2json => {
                // The walsender may still hold the slot for a moment after pg_recvlogical died.
                for _ in 0..50 {
                    if self
                        .client
                        .execute("select pg_drop_replication_slot('w2j_writer')", &[])
                        .await
                        .is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Config::ContextAlone => {
                setup::drop_all(&self.client, "none", "none")
                    .await
                    .expect("drop");
            }
            _ => {
                // The walsender may still hold the slot for a moment after the consumer stopped.
                let deadline = Instant::now() + Duration::from_secs(10);
                while let Err(e) = setup::drop_all(&self.client, "writer", "bench").await {
                    assert!(Instant::now() < deadline, "drop: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if let Some(file) = active.store_file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }

    /// Unconfirmed WAL of `slot`, in bytes.
    async fn behind(&self, slot: &str) -> f64 {
        self.client
            .query_one(
                "select coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::float8 \
                 from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await
            .map(|row| row.get::<_, f64>(0))
            .unwrap_or(0.0)
    }

    /// Waits (up to a minute) until `slot`'s consumer confirmed nearly all
    /// WAL, so that one run's backlog is not the next run's load.
    async fn wait_caught_up(&self, slot: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.behind(slot).await > 256.0 * 1024.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn walsender_pid(&self, slot: &str) -> Option<u32> {
        self.client
            .query_one(
                "select active_pid from pg_replication_slots where slot_name = $1",
                &[&slot],
            )
            .await
            .ok()
            .and_then(|row| row.get::<_, Option<i32>>(0))
            .and_then(|pid| u32::try_from(pid).ok())
    }

    fn report(&self, configs: &[Config]) -> Value {
        let title = if self.durable {
            "fsync on (PostgreSQL's defaults: the headline)"
        } else {
            "fsync off (writers CPU-bound: the worst case for a consumer)"
        };
        println!("\n(a) writer cost, {title}");
        print!("{:<30}", "configuration");
        for (label, ..) in WORKLOADS {
            print!(" {label:>18}");
        }
        println!();
        let baseline = &self.runs[0];
        let mut out = serde_json::Map::new();
        for (c, config) in configs.iter().enumerate() {
            print!("{:<30}", config.label());
            let mut cells = serde_json::Map::new();
            for (w, (_, key, ..)) in WORKLOADS.iter().enumerate() {
                let runs = &self.runs[c][w];
                let tps: Vec<f64> = runs.iter().map(|r| r.tps).collect();
                let ratios: Vec<f64> = runs
                    .iter()
                    .zip(&baseline[w])
                    .map(|(r, b)| r.tps / b.tps)
                    .collect();
                let (median, min, max) = spread(&ratios);
                if c == 0 {
                    print!(" {:>14.0} tps", spread(&tps).0);
                } else {
                    print!(" {median:>6.2} ({min:.2}–{max:.2})");
                }
                let per_tx = |cpu: fn(&Run) -> f64| -> f64 {
                    spread(
                        &runs
                            .iter()
                            .map(|r| cpu(r) * 1e6 / r.transactions)
                            .collect::<Vec<_>>(),
                    )
                    .0
                };
                cells.insert(
                    (*key).into(),
                    json!({
                        "tps": tps,
                        "ratio": ratios,
                        "ratio_median": median, "ratio_min": min, "ratio_max": max,
                        "server_cpu_us_per_tx": per_tx(|r| r.server_cpu),
                        "walsender_cpu_us_per_tx": per_tx(|r| r.walsender_cpu),
                        "consumer_cpu_us_per_tx": per_tx(|r| r.consumer_cpu),
                        "behind_bytes_median": spread(&runs.iter().map(|r| r.behind_bytes).collect::<Vec<_>>()).0,
                    }),
                );
            }
            println!();
            out.insert(config.key().into(), Value::Object(cells));
        }
        // CPU per writer transaction: steadier than TPS on a shared machine.
        println!("CPU per writer transaction, median µs: server (of which walsender) + consumer = total; WAL unconfirmed when pgbench ended, median");
        for config in configs {
            print!("{:<30}", config.label());
            for (_, key, ..) in WORKLOADS {
                let cell = &out[config.key()][key];
                let get = |k: &str| cell[k].as_f64().unwrap_or(0.0);
                let (server, walsender, consumer) = (
                    get("server_cpu_us_per_tx"),
                    get("walsender_cpu_us_per_tx"),
                    get("consumer_cpu_us_per_tx"),
                );
                print!(
                    " {server:>4.0} ({walsender:>3.0}) + {consumer:>3.0} = {:>4.0}",
                    server + consumer
                );
                if config.slot().is_some() {
                    print!(" {:>4.1} MB", get("behind_bytes_median") / 1e6);
                } else {
                    print!("        ");
                }
            }
            println!();
        }
        Value::Object(out)
    }
}

/// pgtrail consuming in this process.
fn start_consumer(url: &str, store: Arc<dyn Store>, options: ReplicationOptions) -> Consumer {
    let (shutdown, rx) = watch::channel(false);
    let (progress_tx, progress) = watch::channel(Progress::default());
    let connect = ConnectOptions::parse(url).expect("valid URL");
    let task = tokio::spawn(async move {
        if let Err(e) = cdc::run(&connect, &options, store, rx, Some(progress_tx)).await {
            eprintln!(
                "consumer failed: {}",
                pgtrail_pipeline::retry::error_chain(&e)
            );
        }
    });
    Consumer {
        shutdown,
        progress,
        task,
    }
}

/// Runs `script` with pgbench for `seconds` (at `rate` transactions per
/// second when given); its TPS.
fn pgbench(
    cluster: &Cluster,
    url: &str,
    script: &str,
    clients: u32,
    seconds: u64,
    rate: Option<u32>,
) -> f64 {
    let file = tempfile::NamedTempFile::new().expect("script file");
    std::fs::write(file.path(), script).expect("script written");
    let clients = clients.to_string();
    let mut command = std::process::Command::new(cluster.binaries().program("pgbench"));
    command
        .args(["-n", "-M", "prepared", "-c", &clients, "-j", &clients])
        .args(["-T", &seconds.to_string()]);
    if let Some(rate) = rate {
        command.args(["-R", &rate.to_string()]);
    }
    let out = command
        .arg("-f")
        .arg(file.path())
        .arg(url)
        .output()
        .expect("pgbench runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// pg_recvlogical + wal2json on slot `w2j_writer`, to /dev/null. It
/// reports progress every second, as pgtrail does; `-F 0` because it would
/// otherwise report its flush position only every 10 s (after an fsync of
/// /dev/null, which costs nothing), and the bench waits for that position
/// between runs.
fn recvlogical(cluster: &Cluster, url: &str) -> std::process::Child {
    std::process::Command::new(cluster.binaries().program("pg_recvlogical"))
        .args([
            "-d",
            url,
            "--slot",
            "w2j_writer",
            "--start",
            "-f",
            "/dev/null",
        ])
        .args(["-o", "format-version=2", "-s", "1", "-F", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pg_recvlogical runs")
}

/// CPU seconds of every process of the server whose data directory is
/// `data_dir`: the postmaster's children alive now, plus those it reaped.
pub(crate) fn server_cpu_seconds(data_dir: &std::path::Path) -> f64 {
    let Some(postmaster) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = stat_fields(postmaster).map_or(0.0, |f| ticks(&f, &[13, 14]));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid) {
            if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(postmaster) {
                total += ticks(&fields, &[11, 12]);
            }
        }
    }
    total
}

/// The fields of /proc/PID/stat after the command name (which may hold
/// spaces): index 0 is the state, 1 the parent, 11 and 12 utime and stime,
/// 13 and 14 the reaped children's.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(String::from).collect())
}

/// The sum of the clock-tick fields at `indexes`, in seconds (USER_HZ is 100 on Linux).
fn ticks(fields: &[String], indexes: &[usize]) -> f64 {
    indexes
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>()
        / 100.0
}

/// User + system CPU seconds of process `pid` (all its threads), from /proc.
pub(crate) fn cpu_seconds(pid: Option<u32>) -> f64 {
    pid.and_then(stat_fields)
        .map_or(0.0, |fields| ticks(&fields, &[11, 12]))
}

/// Median, min and max.
pub(crate) fn spread(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    (median, sorted[0], sorted[sorted.len() - 1])
}
