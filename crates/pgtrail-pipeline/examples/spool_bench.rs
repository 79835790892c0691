//! Spool push throughput: batches of 1, 100 and 1000 statement events, each
//! push returning after its fsync, from one pusher; and batches of 1 from 32
//! pushers at once (proxy sessions), which share fsyncs by group commit.
//! Run by `bench/pipeline/run`.
//!
//!   spool_bench [--dir DIR] [--rounds R]
//!
//! Each round runs every batch size once (the order rotates between rounds,
//! so a noisy minute hits all of them), each into a fresh spool in DIR,
//! which must be on the disk the spool will use (not tmpfs: fsync is free
//! there). Prints median and min–max of pushes/s and events/s per size, and
//! the events/s of encoding alone (the CPU part of a push). Then the time
//! of one async push (written, not waiting for its fsync) as a proxy
//! session at one client makes it: one event every 200 µs, the syncer
//! fsyncing beside it; median and p99 per round.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind, Source};
use pgtrail_pipeline::spool::{Spool, SpoolOptions};

/// What the proxy will push: one statement with its actor and parameters.
fn statement(i: usize) -> Event {
    let mut e = Event::new(Source::Proxy, Kind::Statement);
    e.db_user = Some("app".into());
    e.app_user = Some(format!("user{}@example.com", i % 500));
    e.client_addr = Some("10.0.3.17".into());
    e.client_port = Some(51234);
    e.backend_pid = Some(4242);
    e.session_id = Some("6561f1e2.1092".into());
    e.database = Some("shop".into());
    e.operation = Some("UPDATE".into());
    e.objects = vec!["public.accounts".into()];
    e.sql = Some(
        "UPDATE public.accounts SET balance = balance - $1 WHERE id = $2 AND status = 'open'"
            .into(),
    );
    e.params = Some(vec![
        serde_json::from_str("12.50").expect("number"),
        serde_json::Value::from(i),
    ]);
    e.command_tag = Some("UPDATE 1".into());
    e.rows = Some(1);
    e.duration_us = Some(180);
    e
}

/// One case: batches of `size` events pushed by `pushers` threads at once.
#[derive(Clone, Copy)]
struct Case {
    size: usize,
    pushers: usize,
}

const CASES: [Case; 4] = [
    Case {
        size: 1,
        pushers: 1,
    },
    Case {
        size: 100,
        pushers: 1,
    },
    Case {
        size: 1000,
        pushers: 1,
    },
    Case {
        size: 1,
        pushers: 32,
    },
];

/// Pushes per round of each case (about the same time for each).
fn pushes(case: Case) -> usize {
    match (case.size, case.pushers) {
        (1, 1) => 400,
        (1, _) => 3200,
        (100, _) => 200,
        _ => 40,
    }
}

fn median_and_spread(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:>10.0} ({:.0}–{:.0})",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = PathBuf::from("target/spool-bench");
    let mut rounds = 5;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(args.next().expect("--dir DIR")),
            "--rounds" => rounds = args.next().expect("--rounds R").parse().expect("a number"),
            other => panic!("unknown argument {other}"),
        }
    }
    let batches: Vec<Vec<Event>> = CASES
        .iter()
        .map(|case| (0..case.size).map(statement).collect())
        .collect();
    let mut push_rates = vec![Vec::new(); CASES.len()];
    let mut commit_shares = vec![Vec::new(); CASES.len()];
    let mut encode_rates = vec![Vec::new(); CASES.len()];
    for round in 0..rounds {
        for k in 0..CASES.len() {
            let which = (k + round) % CASES.len();
            let (case, batch) = (CASES[which], &batches[which]);
            let spool_dir = dir.join(format!("round{round}-{}x{}", case.size, case.pushers));
            let _ = std::fs::remove_dir_all(&spool_dir);
            let spool = Spool::open(
                &spool_dir,
                SpoolOptions {
                    max_bytes: 64 << 30,
                    ..SpoolOptions::default()
                },
            )
            .expect("open the spool");
            let n = pushes(case);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..case.pushers {
                    scope.spawn(|| {
                        for _ in 0..n / case.pushers {
                            spool.push_blocking(batch).expect("push");
                        }
                    });
                }
            });
            let took = started.elapsed().max(Duration::from_micros(1));
            push_rates[which].push(n as f64 / took.as_secs_f64());
            commit_shares[which].push(spool.commits() as f64 / n as f64);
            drop(spool);
            std::fs::remove_dir_all(&spool_dir).expect("clean up");

            let started = Instant::now();
            for _ in 0..n {
                std::hint::black_box(serde_json::to_vec(batch).expect("encode"));
            }
            let took = started.elapsed().max(Duration::from_micros(1));
            encode_rates[which].push((n * case.size) as f64 / took.as_secs_f64());
        }
    }
    let async_push = async_push_times(&dir, rounds);
    let bytes = |batch: &Vec<Event>| serde_json::to_vec(batch).expect("encode").len();
    println!(
        "spool push (fsync'd), {rounds} rounds, median (min–max), dir {}",
        dir.display()
    );
    println!(
        "{:>6} {:>8} {:>10} {:>28} {:>28} {:>16} {:>28}",
        "batch", "pushers", "bytes", "pushes/s", "events/s", "fsyncs/push", "encode only, events/s"
    );
    for (i, case) in CASES.iter().enumerate() {
        let events: Vec<f64> = push_rates[i].iter().map(|r| r * case.size as f64).collect();
        let mut shares = commit_shares[i].clone();
        shares.sort_by(f64::total_cmp);
        println!(
            "{:>6} {:>8} {:>10} {:>28} {:>28} {:>16.3} {:>28}",
            case.size,
            case.pushers,
            bytes(&batches[i]),
            median_and_spread(push_rates[i].clone()),
            median_and_spread(events),
            shares[shares.len() / 2],
            median_and_spread(encode_rates[i].clone()),
        );
    }
    let (medians, p99s): (Vec<f64>, Vec<f64>) = async_push.into_iter().unzip();
    println!(
        "async push of 1 event every 200 µs, µs per push, median over {rounds} rounds (min–max): p50 {}, p99 {}",
        median_and_spread(medians),
        median_and_spread(p99s)
    );
}

/// Per round: the median and p99, in µs, of 10,000 async pushes of one
/// statement event, paced one per 200 µs (a spin, not a sleep: a sleep's
/// wake-up is coarser than the pace).
fn async_push_times(dir: &std::path::Path, rounds: usize) -> Vec<(f64, f64)> {
    const PUSHES: usize = 10_000;
    const PACE: Duration = Duration::from_micros(200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    (0..rounds)
        .map(|round| {
            let spool_dir = dir.join(format!("round{round}-async"));
            let _ = std::fs::remove_dir_all(&spool_dir);
            let spool = Spool::open(&spool_dir, SpoolOptions::default()).expect("open the spool");
            let mut times = Vec::with_capacity(PUSHES);
            let started = Instant::now();
            for i in 0..PUSHES {
                while started.elapsed() < PACE * i as u32 {
                    std::hint::spin_loop();
                }
                let mut events = vec![statement(i)];
                let at = Instant::now();
                runtime
                    .block_on(spool.push_async_taking(&mut events))
                    .expect("push");
                times.push(at.elapsed().as_secs_f64() * 1e6);
            }
            drop(spool);
            std::fs::remove_dir_all(&spool_dir).expect("clean up");
            times.sort_by(f64::total_cmp);
            (times[PUSHES / 2], times[PUSHES * 99 / 100])
        })
        .collect()
}
