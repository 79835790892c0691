//! Spool push throughput: batches of 1, 100 and 1000 statement events, each
//! push returning after its fsync. Run by `bench/pipeline/run`.
//!
//!   spool_bench [--dir DIR] [--rounds R]
//!
//! Each round runs every batch size once (the order rotates between rounds,
//! so a noisy minute hits all of them), each into a fresh spool in DIR,
//! which must be on the disk the spool will use (not tmpfs: fsync is free
//! there). Prints median and min–max of pushes/s and events/s per size, and
//! the events/s of encoding alone (the CPU part of a push).

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

/// Pushes this many batches of each size per round (about the same number
/// of fsyncs' worth of time for each).
fn pushes(size: usize) -> usize {
    match size {
        1 => 400,
        100 => 200,
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
    let sizes = [1usize, 100, 1000];
    let batches: Vec<Vec<Event>> = sizes
        .iter()
        .map(|&size| (0..size).map(statement).collect())
        .collect();
    let mut push_rates = vec![Vec::new(); sizes.len()];
    let mut encode_rates = vec![Vec::new(); sizes.len()];
    for round in 0..rounds {
        for k in 0..sizes.len() {
            let which = (k + round) % sizes.len();
            let (size, batch) = (sizes[which], &batches[which]);
            let spool_dir = dir.join(format!("round{round}-{size}"));
            let _ = std::fs::remove_dir_all(&spool_dir);
            let spool = Spool::open(
                &spool_dir,
                SpoolOptions {
                    max_bytes: 64 << 30,
                    ..SpoolOptions::default()
                },
            )
            .expect("open the spool");
            let n = pushes(size);
            let started = Instant::now();
            for _ in 0..n {
                spool.push_blocking(batch).expect("push");
            }
            let took = started.elapsed().max(Duration::from_micros(1));
            push_rates[which].push(n as f64 / took.as_secs_f64());
            drop(spool);
            std::fs::remove_dir_all(&spool_dir).expect("clean up");

            let started = Instant::now();
            for _ in 0..n {
                std::hint::black_box(serde_json::to_vec(batch).expect("encode"));
            }
            let took = started.elapsed().max(Duration::from_micros(1));
            encode_rates[which].push((n * size) as f64 / took.as_secs_f64());
        }
    }
    let bytes = |batch: &Vec<Event>| serde_json::to_vec(batch).expect("encode").len();
    println!(
        "spool push (fsync'd), {rounds} rounds, median (min–max), dir {}",
        dir.display()
    );
    println!(
        "{:>6} {:>10} {:>28} {:>28} {:>28}",
        "batch", "bytes", "pushes/s", "events/s", "encode only, events/s"
    );
    for (i, &size) in sizes.iter().enumerate() {
        let events: Vec<f64> = push_rates[i].iter().map(|r| r * size as f64).collect();
        println!(
            "{:>6} {:>10} {:>28} {:>28} {:>28}",
            size,
            bytes(&batches[i]),
            median_and_spread(push_rates[i].clone()),
            median_and_spread(events),
            median_and_spread(encode_rates[i].clone()),
        );
    }
}
