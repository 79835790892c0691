//! `bench/proof/seal`: what hash version 2 costs at sealing, per event:
//! `CanonicalBody::of` and `sealed_hash` over the same events with a nonce
//! (version 2: a commitment per row value) and without (version 1), in
//! alternating rounds. The events have the shape of `bench/store`'s (nine
//! row changes of 9 values in pk/old/new to one statement).
//!
//! `cargo run --release -p pgtrail-core --example seal_bench -- [EVENTS] [ROUNDS]`

use std::time::Instant;

use pgtrail_core::canonical::{CanonicalBody, GENESIS_HASH};
use pgtrail_core::{Event, Kind, Source};
use serde_json::json;

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            if i % 10 == 9 {
                let mut e = Event::new(Source::Proxy, Kind::Statement);
                e.sql = Some(format!(
                    "SELECT id, name, balance FROM public.table_{} WHERE customer_id = $1 \
                     AND status = 'open' ORDER BY created_at DESC LIMIT {}",
                    i % 50,
                    i % 100
                ));
                e.db_user = Some("app".into());
                e.app_user = Some(format!("user{}@example.com", i % 1000));
                e.operation = Some("SELECT".into());
                e.rows = Some((i % 100) as i64);
                e.duration_us = Some((i % 5000) as i64);
                return e;
            }
            let mut e = Event::new(Source::Trigger, Kind::RowChange);
            let id = i % 100_000;
            e.schema = Some("public".into());
            e.table = Some(format!("table_{}", i % 50));
            e.pk = json!({ "id": id.to_string() }).as_object().cloned();
            e.db_user = Some("app".into());
            e.app_user = Some(format!("user{}@example.com", i % 1000));
            e.client_addr = Some("10.0.0.12".into());
            e.application_name = Some("billing-api".into());
            e.backend_pid = Some(1000 + (i % 50) as i32);
            e.xid = Some(100_000 + i as i64);
            e.operation = Some("UPDATE".into());
            let balance = format!("{}.{:02}", i % 100_000, i % 100);
            e.old = json!({"id": id, "status": "open", "balance": "10.00", "name": "Customer name here"})
                .as_object()
                .cloned();
            e.new = json!({"id": id, "status": "open", "balance": balance, "name": "Customer name here"})
                .as_object()
                .cloned();
            e.changed = vec!["balance".into()];
            e
        })
        .collect()
}

/// Nanoseconds this thread has run on a CPU (Linux's schedstat), so a
/// busy machine's waits for a core are not counted.
fn on_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Events/s of encoding and sealing `events` once, as a store does: per
/// second on a CPU where the kernel says, else per second of wall time.
fn seal_rate(events: &[Event]) -> f64 {
    let start = Instant::now();
    let cpu_start = on_cpu_ns();
    let mut prev = [0u8; 32];
    let mut prev_hex = GENESIS_HASH.to_string();
    for (seq, event) in (1..).zip(events) {
        let body = CanonicalBody::of(event);
        prev = body.sealed_hash(seq, &prev_hex);
        prev_hex = pgtrail_core::hex::encode(&prev);
        std::hint::black_box(body.as_str().len());
    }
    std::hint::black_box(prev);
    let seconds = match (cpu_start, on_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => start.elapsed().as_secs_f64(),
    };
    events.len() as f64 / seconds
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let v2 = events(n);
    let v1: Vec<Event> = v2
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.nonce = None;
            e
        })
        .collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{n} events, {rounds} rounds, load {}", load.trim());
    println!("| round | v1 ev/s | v2 ev/s | v2/v1 |");
    let (mut r1, mut r2, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which side runs first.
        let (a, b) = if round % 2 == 0 {
            let a = seal_rate(&v1);
            (a, seal_rate(&v2))
        } else {
            let b = seal_rate(&v2);
            (seal_rate(&v1), b)
        };
        println!("| {} | {a:.0} | {b:.0} | {:.3} |", round + 1, b / a);
        r1.push(a);
        r2.push(b);
        ratio.push(b / a);
    }
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        format!("{min:.3}–{max:.3}")
    };
    let (m1, m2) = (median(r1.clone()), median(r2.clone()));
    println!(
        "median v1 {m1:.0} ev/s ({:.2} µs/event), v2 {m2:.0} ev/s ({:.2} µs/event), v2/v1 {:.3} ({}); extra {:.2} µs/event",
        1e6 / m1,
        1e6 / m2,
        median(ratio.clone()),
        spread(&ratio),
        1e6 / m2 - 1e6 / m1
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load after {}", load.trim());
}
