//! The `bench/cdc` benchmark (run it with `bench/cdc/run`, release build).
//!
//! One throwaway cluster, three measurements:
//! (a) writer cost: pgbench single-row UPDATE and INSERT throughput at 1 and
//!     2 clients with no capture, with pg_recvlogical+wal2json consuming,
//!     with pgtrail consuming, and with pgtrail plus the context trigger,
//!     in interleaved rounds on clusters of its own (fsync on and off; see
//!     cdc_bench/writer.rs);
//! (b) consumer throughput on the same pre-generated WAL: pg_recvlogical +
//!     wal2json to /dev/null, and pgtrail into a null store, SQLite and the
//!     Postgres store, in alternating rounds with CPU per change per stage
//!     (cdc_bench/throughput.rs);
//! (c) end-to-end lag (commit → durably stored) p50/p99 at a steady rate;
//! (i) on request (`--only i`): instructions per transaction of the context
//!     trigger under callgrind (cdc_bench/instructions.rs).
//! Prints a table and writes JSON (`--json FILE`).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_cdc::catalog::{self, TableSelection};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::ReplicationOptions;
use pgtrail_cdc::setup::{self, SetupOptions};
use pgtrail_core::config::IdentityConfig;
use pgtrail_core::{Event, Filter, RowRef};
use pgtrail_pipeline::cdc::{self, Progress};
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::{AppendReceipt, ChainHead, Checkpoint, PruneOutcome, Store};
use pgtrail_testkit::{Cluster, ClusterOptions};
use pgtrail_wire::Lsn;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Built with `--features mimalloc` (bench/cdc/run's default), the
/// consumer runs on the allocator of the `pgtrail` binary.
#[path = "cdc_bench/instructions.rs"]
mod instructions;
#[path = "cdc_bench/throughput.rs"]
mod throughput;
#[path = "cdc_bench/writer.rs"]
mod writer;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    /// Which parts to run: any of `a`, `b`, `c`.
    only: String,
    durable: bool,
    seconds: u64,
    rounds: u32,
    /// (b): rounds of every consumer (`--rounds` too, when given).
    throughput_rounds: u32,
    changes: u64,
    json: Option<String>,
    /// (a): length of one pgbench run, which durabilities, which configurations.
    round_seconds: u64,
    rate: Option<u32>,
    fsync: Option<String>,
    configs: Vec<writer::Config>,
}

fn args() -> Args {
    let mut args = Args {
        only: "abc".into(),
        durable: false,
        seconds: 10,
        rounds: 5,
        throughput_rounds: 3,
        changes: 2_000_000,
        json: None,
        round_seconds: 2,
        rate: None,
        fsync: None,
        configs: writer::Config::DEFAULT.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                args.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N")
            }
            "--changes" => {
                args.changes = it.next().and_then(|v| v.parse().ok()).expect("--changes N")
            }
            "--json" => args.json = it.next(),
            "--durable" => args.durable = true,
            "--rounds" => {
                args.rounds = it.next().and_then(|v| v.parse().ok()).expect("--rounds N");
                args.throughput_rounds = args.rounds;
            }
            "--only" => args.only = it.next().expect("--only PARTS, e.g. ab"),
            "--round-seconds" => {
                args.round_seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--round-seconds N")
            }
            "--fsync" => args.fsync = it.next(),
            "--rate" => args.rate = it.next().and_then(|v| v.parse().ok()),
            "--configs" => {
                args.configs = writer::Config::parse_list(&it.next().expect("--configs LIST"))
            }
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// A store that keeps nothing: the decode-and-assemble rate alone.
pub(crate) struct NullStore;

#[async_trait]
impl Store for NullStore {
    async fn append(&self, _events: &[Event]) -> pgtrail_store::Result<AppendReceipt> {
        Ok(AppendReceipt {
            first_seq: None,
            head: None,
        })
    }
    async fn query(&self, _filter: &Filter) -> pgtrail_store::Result<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn row_events(&self, _row: &RowRef) -> pgtrail_store::Result<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn scan(&self, _after: i64, _limit: usize) -> pgtrail_store::Result<Vec<Event>> {
        Ok(Vec::new())
    }
    async fn scan_stored(
        &self,
        _after: i64,
        _limit: usize,
    ) -> pgtrail_store::Result<Vec<pgtrail_store::StoredEvent>> {
        Ok(Vec::new())
    }
    async fn head(&self) -> pgtrail_store::Result<Option<ChainHead>> {
        Ok(None)
    }
    async fn add_checkpoint(&self, _checkpoint: &Checkpoint) -> pgtrail_store::Result<()> {
        Ok(())
    }
    async fn checkpoints(&self) -> pgtrail_store::Result<Vec<Checkpoint>> {
        Ok(Vec::new())
    }
    async fn prune(&self, _through: i64) -> pgtrail_store::Result<PruneOutcome> {
        Ok(PruneOutcome {
            removed: 0,
            dropped_partitions: Vec::new(),
        })
    }
    async fn prepare_until(&self, _until: DateTime<Utc>) -> pgtrail_store::Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn location(&self) -> String {
        "null".into()
    }
}

/// Records, per event, how long after its commit the store's append returned.
struct LagHook {
    lags_ms: Mutex<Vec<f64>>,
}

#[async_trait]
impl AppendHook for LagHook {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        let commits: Vec<Option<DateTime<Utc>>> = events.iter().map(|e| e.committed_at).collect();
        let receipt = inner.append(events).await?;
        let now = Utc::now();
        let mut lags = self.lags_ms.lock().expect("not poisoned");
        lags.extend(
            commits
                .into_iter()
                .flatten()
                .map(|c| (now - c).num_microseconds().unwrap_or(0) as f64 / 1000.0),
        );
        Ok(receipt)
    }
}

/// pgtrail consuming in this process.
pub(crate) struct Consumer {
    shutdown: watch::Sender<bool>,
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    pub(crate) fn start(
        url: &str,
        slot: &str,
        publication: &str,
        store: Arc<dyn Store>,
    ) -> Consumer {
        let (shutdown, rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let connect = ConnectOptions::parse(url).expect("valid URL");
        let mut options = ReplicationOptions::new(slot, publication);
        if let Some(n) = std::env::var("PGTRAIL_BENCH_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            options.batch_events = n;
        }
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

    pub(crate) async fn wait_for(&mut self, lsn: Lsn) -> Instant {
        self.progress
            .wait_for(|p| p.position >= lsn)
            .await
            .expect("consumer runs");
        Instant::now()
    }

    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connects");
    tokio::spawn(connection);
    client
}

pub(crate) async fn current_lsn(client: &tokio_postgres::Client) -> Lsn {
    let text: String = client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    Lsn::parse(&text).expect("valid LSN")
}

pub(crate) fn recvlogical(cluster: &Cluster, url: &str, slot: &str, endpos: Option<Lsn>) -> Child {
    let mut cmd = Command::new(cluster.binaries().program("pg_recvlogical"));
    cmd.args([
        "-d",
        url,
        "--slot",
        slot,
        "--start",
        "-f",
        "/dev/null",
        "-o",
        "format-version=2",
        "-s",
        "1",
    ]);
    if let Some(end) = endpos {
        cmd.args(["-E", &end.to_string()]);
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pg_recvlogical runs")
}

const UPDATE: &str = "\\set id random(1, 100000)\nupdate acct set n = n + 1 where id = :id;\n";
const INSERT: &str = "insert into ins (n, note) values (1, 'x');\n";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    // The test cluster's defaults, except that commits flush the WAL at once
    // (fsync stays off): with synchronous_commit=off the walsender would only
    // see a commit after the WAL writer's next round (up to 200 ms later).
    // With --durable, PostgreSQL's own defaults: fsync and full-page writes on.
    let mut settings = vec![("synchronous_commit".to_string(), "on".to_string())];
    if args.durable {
        settings.push(("fsync".into(), "on".into()));
        settings.push(("full_page_writes".into(), "on".into()));
    }
    let cluster = Cluster::start_with(ClusterOptions {
        settings,
        ..ClusterOptions::default()
    })
    .expect("cluster");
    println!(
        "durability: fsync {}",
        if args.durable {
            "on"
        } else {
            "off (CPU-bound worst case)"
        }
    );
    let version = cluster.psql("postgres", "select version()").expect("psql");
    println!(
        "machine: {} cores; {version}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let url = cluster
        .create_database("cdc_bench")
        .await
        .expect("database");
    let client = sql(&url).await;
    client
        .batch_execute(
            "create table acct (id int primary key, n int not null, note text);
             insert into acct select g, 0, 'row ' || g from generate_series(1, 100000) g;
             create table ins (id bigserial primary key, n int, note text);
             create table bulk (id int primary key, n int, note text);",
        )
        .await
        .expect("schema");
    client
        .batch_execute("vacuum analyze")
        .await
        .expect("vacuum");
    let facts = catalog::check_ready(&client).await.expect("ready");
    let setup_options = |slot: &str, publication: &str, actor: bool| SetupOptions {
        slot: slot.into(),
        publication: publication.into(),
        selection: TableSelection::default(),
        replica_identity_full: false,
        actor,
        identity: IdentityConfig::default(),
        create_slot: true,
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut results = serde_json::Map::new();

    // (a) writer cost, on clusters of its own (cdc_bench/writer.rs)
    if args.only.contains('a') {
        let durability = match args.fsync.as_deref() {
            Some("on") => vec![true],
            Some("off") => vec![false],
            Some("both") => vec![true, false],
            None if args.durable => vec![true],
            None => vec![true, false],
            Some(other) => panic!("--fsync on|off|both, not {other}"),
        };
        let writer_args = writer::WriterArgs {
            rounds: args.rounds,
            seconds: args.round_seconds,
            rate: args.rate,
            durability,
            configs: args.configs.clone(),
        };
        results.insert("writer".into(), writer::run(&writer_args).await);
    }
    // Instructions per transaction of the context trigger (cdc_bench/instructions.rs)
    if args.only.contains('i') {
        results.insert("instructions".into(), instructions::run().await);
    }

    // (b) consumer throughput on the same WAL (cdc_bench/throughput.rs)
    if args.only.contains('b') {
        let rounds = args.throughput_rounds;
        let consumers =
            throughput::run(&cluster, &url, &client, args.changes, rounds, tmp.path()).await;
        results.insert("consumer_throughput".into(), consumers);
    }

    // (c) lag at a steady rate
    if args.only.contains('c') {
        setup::prepare(&client, &facts, &setup_options("lag", "bench_lag", false))
            .await
            .expect("setup");
        let inner = pgtrail_store::open(&format!("sqlite:{}", tmp.path().join("lag.db").display()))
            .await
            .expect("store");
        let lag_store = Arc::new(Hooked::new(
            inner,
            LagHook {
                lags_ms: Mutex::new(Vec::new()),
            },
        ));
        let consumer = Consumer::start(&url, "lag", "bench_lag", lag_store.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rate = 500u64;
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(args.seconds) {
            tick.tick().await;
            client
                .execute("insert into ins (n, note) values (2, 'lag')", &[])
                .await
                .expect("insert");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        consumer.stop().await;
        let mut lags = lag_store
            .hook()
            .lags_ms
            .lock()
            .expect("not poisoned")
            .clone();
        lags.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            lags.get(((lags.len() as f64 * p) as usize).min(lags.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        println!("\n(c) lag commit → stored at {rate} tx/s for {} s ({} events): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", args.seconds, lags.len(), pct(0.5), pct(0.99), pct(1.0));
        results.insert("lag_ms".into(), json!({"rate_tx_per_s": rate, "events": lags.len(), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)}));
        let verdict = if pct(0.99) <= 100.0 { "met" } else { "not met" };
        println!("goal (issue 10): lag p99 <= 100 ms: {verdict}");
    }

    if let Some(path) = args.json {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&Value::Object(results)).expect("json"),
        )
        .expect("write json");
        println!("\nresults: {path}");
    }
}
