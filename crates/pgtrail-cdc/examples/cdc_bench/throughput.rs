//! (b) consumer throughput: every consumer reads the same pre-generated
//! WAL from its own slot, in `rounds` rounds whose order rotates, so a
//! machine that slows down for a while slows every consumer alike. Each
//! round creates nothing: all slots are made before the WAL is written, so
//! they start at the same LSN.
//!
//! Per consumer and round: changes per second, the ratio to the same
//! round's pg_recvlogical + wal2json, and CPU per change: the server's (all
//! its processes, reaped ones included: the walsender decoding, mostly),
//! the consumer process's, and for pgtrail its stages as
//! `pgtrail_store::cpu` counts them (thread CPU around each stage's work).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_store::cpu;
use pgtrail_store::Store;
use pgtrail_testkit::Cluster;
use serde_json::{json, Value};

use super::writer::{cpu_seconds, server_cpu_seconds, spread};
use super::{current_lsn, recvlogical, Consumer, NullStore};

/// The consumers, in the first round's order.
const CONSUMERS: [(&str, &str); 4] = [
    ("w2j", "pg_recvlogical + wal2json → /dev/null"),
    ("null", "pgtrail → null store (decode only)"),
    ("sqlite", "pgtrail → SQLite store"),
    ("pg", "pgtrail → Postgres store"),
];

/// One consumer's run over the whole WAL.
#[derive(Debug, Default, Clone)]
struct Run {
    rate: f64,
    /// µs of CPU per change.
    server: f64,
    client: f64,
    decode: f64,
    toast: f64,
    encode: f64,
    store: f64,
}

impl Run {
    fn other(&self) -> f64 {
        (self.client - self.decode - self.toast - self.encode - self.store).max(0.0)
    }
}

pub async fn run(
    cluster: &Cluster,
    url: &str,
    client: &tokio_postgres::Client,
    changes_wanted: u64,
    rounds: u32,
    tmp: &std::path::Path,
) -> Value {
    client
        .batch_execute("create publication bench for table bulk")
        .await
        .expect("publication");
    for round in 0..rounds {
        for (key, _) in CONSUMERS {
            let plugin = if key == "w2j" { "wal2json" } else { "pgoutput" };
            client
                .execute(
                    "select pg_create_logical_replication_slot($1, $2)",
                    &[&slot(key, round), &plugin],
                )
                .await
                .expect("slot");
        }
    }
    let per_tx = 1_000u64;
    let transactions = changes_wanted / per_tx / 2;
    let started = Instant::now();
    for t in 0..transactions {
        let (from, to) = ((t * per_tx + 1) as i32, ((t + 1) * per_tx) as i32);
        client
            .execute(
                "insert into bulk select g, 0, md5(g::text) from generate_series($1::int, $2::int) g",
                &[&from, &to],
            )
            .await
            .expect("insert");
    }
    for t in 0..transactions {
        let (from, to) = ((t * per_tx + 1) as i32, ((t + 1) * per_tx) as i32);
        client
            .execute(
                "update bulk set n = n + 1 where id between $1 and $2",
                &[&from, &to],
            )
            .await
            .expect("update");
    }
    let end = current_lsn(client).await;
    let changes = transactions * per_tx * 2;
    println!(
        "\n(b) consumer throughput: {changes} changes pre-generated in {:.1} s (inserts then updates, \
         1,000 per transaction); {rounds} rounds, order rotated each round",
        started.elapsed().as_secs_f64()
    );

    let data_dir = cluster.data_dir();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); CONSUMERS.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); CONSUMERS.len()];
    for round in 0..rounds {
        let mut this_round: Vec<Option<Run>> = vec![None; CONSUMERS.len()];
        for i in 0..CONSUMERS.len() {
            let which = (i + round as usize) % CONSUMERS.len();
            let key = CONSUMERS[which].0;
            let slot = slot(key, round);
            let server0 = server_cpu_seconds(&data_dir);
            let run = if key == "w2j" {
                let t0 = Instant::now();
                let mut child = recvlogical(cluster, url, &slot, Some(end));
                let pid = child.id();
                let mut client_cpu = 0.0;
                loop {
                    if child.try_wait().expect("pg_recvlogical").is_some() {
                        break;
                    }
                    client_cpu = cpu_seconds(Some(pid)).max(client_cpu);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let seconds = t0.elapsed().as_secs_f64();
                Run {
                    rate: changes as f64 / seconds,
                    client: client_cpu,
                    ..Run::default()
                }
            } else {
                let (store, db): (Arc<dyn Store>, Option<String>) = match key {
                    "null" => (Arc::new(NullStore), None),
                    "sqlite" => (
                        pgtrail_store::open(&format!(
                            "sqlite:{}",
                            tmp.join(format!("throughput-{round}.db")).display()
                        ))
                        .await
                        .expect("sqlite store"),
                        None,
                    ),
                    _ => {
                        let db = cluster
                            .create_database("cdc_bench_store")
                            .await
                            .expect("store db");
                        (
                            pgtrail_store::open(&db).await.expect("postgres store"),
                            Some(db),
                        )
                    }
                };
                let me = Some(std::process::id());
                let (process0, stages0) = (cpu_seconds(me), cpu::snapshot());
                let t0 = Instant::now();
                let mut consumer = Consumer::start(url, &slot, "bench", store);
                let done = consumer.wait_for(end).await;
                let seconds = (done - t0).as_secs_f64();
                let (process, stages) =
                    (cpu_seconds(me) - process0, cpu::snapshot().since(&stages0));
                consumer.stop().await;
                if let Some(db) = db {
                    let name = db.rsplit('/').next().unwrap_or_default().to_string();
                    let _ = client
                        .batch_execute(&format!("drop database \"{name}\" with (force)"))
                        .await;
                }
                let _ = std::fs::remove_file(tmp.join(format!("throughput-{round}.db")));
                Run {
                    rate: changes as f64 / seconds,
                    client: process,
                    decode: stages.decode.as_secs_f64(),
                    toast: stages.toast.as_secs_f64(),
                    encode: stages.encode.as_secs_f64(),
                    store: stages.store.as_secs_f64(),
                    ..Run::default()
                }
            };
            let server = server_cpu_seconds(&data_dir) - server0;
            let per_change = 1e6 / changes as f64;
            let run = Run {
                server: server * per_change,
                client: run.client * per_change,
                decode: run.decode * per_change,
                toast: run.toast * per_change,
                encode: run.encode * per_change,
                store: run.store * per_change,
                rate: run.rate,
            };
            println!(
                "  round {} {:<40} {:>10.0} changes/s",
                round + 1,
                CONSUMERS[which].1,
                run.rate
            );
            this_round[which] = Some(run);
        }
        let w2j = this_round[0].as_ref().map_or(f64::NAN, |r| r.rate);
        for (i, run) in this_round.into_iter().enumerate() {
            let run = run.expect("every consumer ran");
            ratios[i].push(run.rate / w2j);
            runs[i].push(run);
        }
    }

    println!(
        "\n{:<40} {:>22} {:>18}",
        "consumer", "changes/s med (min–max)", "ratio to wal2json"
    );
    let mut out = serde_json::Map::new();
    for (i, (key, name)) in CONSUMERS.iter().enumerate() {
        let rates: Vec<f64> = runs[i].iter().map(|r| r.rate).collect();
        let (m, lo, hi) = spread(&rates);
        let (rm, rlo, rhi) = spread(&ratios[i]);
        println!(
            "{:<40} {:>8.0} ({:.0}–{:.0}) {:>6.2} ({:.2}–{:.2})",
            name, m, lo, hi, rm, rlo, rhi
        );
        out.insert(
            (*key).into(),
            json!({
                "changes_per_s": rates,
                "ratio_to_wal2json": ratios[i],
                "median_changes_per_s": m,
                "median_ratio": rm,
                "cpu_us_per_change": runs[i].iter().map(|r| json!({
                    "server": r.server, "client": r.client, "decode": r.decode,
                    "toast": r.toast, "encode": r.encode, "store": r.store, "other": r.other(),
                })).collect::<Vec<_>>(),
            }),
        );
    }
    println!(
        "\nCPU µs per change, median of the rounds (server = all PostgreSQL processes, the walsender \
         mostly; client = the consumer process; its stages by thread CPU; other = client − stages)"
    );
    println!(
        "{:<40} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "consumer", "server", "client", "decode", "toast", "encode", "store", "other"
    );
    for (i, (_, name)) in CONSUMERS.iter().enumerate() {
        let med = |f: fn(&Run) -> f64| spread(&runs[i].iter().map(f).collect::<Vec<_>>()).0;
        println!(
            "{:<40} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
            name,
            med(|r| r.server),
            med(|r| r.client),
            med(|r| r.decode),
            med(|r| r.toast),
            med(|r| r.encode),
            med(|r| r.store),
            med(Run::other),
        );
    }
    // Issue 10's goals for (b), on the medians of the same rounds' ratios.
    println!("\ngoals (issue 10), median ratio to wal2json:");
    for (key, what, goal) in [
        ("sqlite", "into SQLite", 1.0),
        ("pg", "into the Postgres store", 0.5),
    ] {
        if let Some(i) = CONSUMERS.iter().position(|(k, _)| *k == key) {
            let ratio = spread(&ratios[i]).0;
            let verdict = if ratio >= goal { "met" } else { "not met" };
            println!("  {what}: {ratio:.2}x (goal >= {goal:.1}x): {verdict}");
        }
    }
    Value::Object(out)
}

fn slot(key: &str, round: u32) -> String {
    format!("t_{key}_{round}")
}
