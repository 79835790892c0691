//! What one recording costs on a hot path (docs/metrics.md, "Cost"):
//! a cached counter handle (the proxy's statements), a counter looked up by
//! the macro with static labels (an append's per-kind counts), a cached
//! histogram sample (the proxy's added latency), against an empty loop.
//! Rounds alternate the sides; prints the median and spread in ns per call.
//!
//! `cargo run --release -p pgtrail-server --example metrics_cost`

use std::hint::black_box;
use std::time::Instant;

const CALLS: u64 = 2_000_000;
const ROUNDS: usize = 7;

/// One side: its name and the call it times.
type Side = (&'static str, Box<dyn Fn(u64)>);

fn main() {
    pgtrail_server::metrics::install().expect("recorder");
    let counter = metrics::counter!("pgtrail_proxy_statements_total", "class" => "READ");
    let histogram = metrics::histogram!("pgtrail_proxy_added_latency_seconds");
    let sides: [Side; 4] = [
        (
            "empty loop",
            Box::new(|i| {
                black_box(i);
            }),
        ),
        (
            "cached counter increment",
            Box::new(move |_| counter.increment(1)),
        ),
        (
            "counter! lookup (static labels) + increment",
            Box::new(|_| {
                metrics::counter!("pgtrail_events_appended_total", "source" => "proxy", "kind" => "statement")
                .increment(1)
            }),
        ),
        (
            "cached histogram record",
            Box::new(move |i| histogram.record(black_box(i as f64) * 1e-9)),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    for round in 0..ROUNDS {
        for (side, (_, f)) in sides.iter().enumerate() {
            let started = Instant::now();
            for i in 0..CALLS {
                f(i);
            }
            times[side].push(started.elapsed().as_nanos() as f64 / CALLS as f64);
        }
        // Histogram samples are drained at upkeep; keep memory flat.
        if round % 2 == 1 {
            let _ = pgtrail_server::metrics::render();
        }
    }
    for ((name, _), mut t) in sides.iter().zip(times) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:48} median {:6.1} ns/call  [{:.1}–{:.1}]",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
}
