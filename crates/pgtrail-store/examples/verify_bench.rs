//! `verify` throughput in events/s, this build against an older one on the
//! same stores. Run by `bench/store/verify`, which builds the older one from
//! a git worktree (it compiles this same file there).
//!
//!   verify_bench run --old PATH [--events N] [--rounds R] [--backends sqlite,postgres]
//!       fills one store per backend with N events, then runs `verify` on it
//!       R times with each binary, alternating, and prints median and spread.
//!   verify_bench verify URL
//!       one verify of the store at URL; prints `events seconds`.

/// The allocator the `pgtrail` binary runs with, so both builds allocate as
/// `pgtrail verify` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::Store;
use serde_json::json;

#[path = "common/lcg.rs"]
mod lcg;
use lcg::Lcg;

/// The mix of `bench/store`: row changes, every tenth a statement with SQL.
fn generate(range: std::ops::Range<usize>, now: DateTime<Utc>) -> Vec<Event> {
    range
        .map(|i| {
            let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            rng.next();
            let at = now - chrono::Duration::seconds(1_000_000 - (i as i64 % 1_000_000));
            let user = format!("user{}@example.com", rng.below(500));
            if i % 10 == 9 {
                let mut e = Event::at(Source::Proxy, Kind::Statement, at);
                let table = format!("table_{}", rng.below(20));
                e.sql = Some(format!(
                    "SELECT id, name, balance FROM public.{table} WHERE customer_id = $1 AND status = 'open' ORDER BY created_at DESC LIMIT {}",
                    rng.below(100)
                ));
                e.db_user = Some("app".into());
                e.app_user = Some(user);
                e.operation = Some("SELECT".into());
                e.rows = Some(rng.below(100) as i64);
                return e;
            }
            let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
            let id = rng.below(50_000);
            e.schema = Some("public".into());
            e.table = Some(format!("table_{}", rng.below(20)));
            e.pk = json!({ "id": id.to_string() }).as_object().cloned();
            e.db_user = Some("app".into());
            e.app_user = Some(user);
            e.operation = Some("UPDATE".into());
            let balance = format!("{}.{:02}", rng.below(100_000), rng.below(100));
            e.old = json!({"id": id, "status": "open", "balance": "10.00"})
                .as_object()
                .cloned();
            e.new = json!({"id": id, "status": "open", "balance": balance})
                .as_object()
                .cloned();
            e.changed = vec!["balance".into()];
            e
        })
        .collect()
}

async fn fill(store: &dyn Store, total: usize) {
    let now = Utc::now();
    for start in (0..total).step_by(10_000) {
        let events = generate(start..(start + 10_000).min(total), now);
        store.append(&events).await.expect("append");
    }
}

/// One verify of `url` with this build: `(events, seconds)`.
async fn verify_once(url: &str) -> (u64, f64) {
    let start = Instant::now();
    let store = pgtrail_store::open_for_verify(url).await.expect("open");
    let report = pgtrail_store::verify(&*store, None).await.expect("verify");
    let seconds = start.elapsed().as_secs_f64();
    assert!(report.ok(), "{:?}", report.problems);
    (report.events_checked, seconds)
}

/// Runs `binary verify url` and returns its events/s.
fn rate_of(binary: &str, url: &str) -> f64 {
    let output = Command::new(binary)
        .args(["verify", url])
        .output()
        .expect("run verify_bench");
    assert!(output.status.success(), "{binary}: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text.split_whitespace();
    let events: f64 = parts.next().and_then(|s| s.parse().ok()).expect("events");
    let seconds: f64 = parts.next().and_then(|s| s.parse().ok()).expect("seconds");
    events / seconds
}

fn median_and_spread(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    (median, rates[0], rates[rates.len() - 1])
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("verify") => {
            let url = args.get(2).expect("verify URL");
            let (events, seconds) = verify_once(url).await;
            println!("{events} {seconds}");
        }
        Some("fill") => {
            // Fills a new store at URL with N events, in this build's schema.
            let url = args.get(2).expect("fill URL");
            let n: usize = args
                .get(3)
                .and_then(|n| n.parse().ok())
                .expect("fill URL N");
            let store = pgtrail_store::open(url).await.expect("open");
            fill(&*store, n).await;
        }
        Some("run") => run(&args).await,
        _ => panic!(
            "usage: verify_bench run --old PATH [--events N] [--rounds R] | verify URL | fill URL N"
        ),
    }
}

async fn run(args: &[String]) {
    let old = flag(args, "--old").expect("--old PATH");
    let events: usize = flag(args, "--events").map_or(1_000_000, |n| n.parse().expect("N"));
    let rounds: usize = flag(args, "--rounds").map_or(3, |n| n.parse().expect("R"));
    let backends = flag(args, "--backends").unwrap_or_else(|| "sqlite,postgres".into());
    let new = std::env::current_exe().expect("own path");
    let new = new.to_str().expect("utf8 path");
    let dir = tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| ".".into()))
        .expect("tempdir");
    let mut cluster = None;
    println!("backend   events  build   median ev/s      min      max");
    for backend in backends.split(',') {
        // Each build verifies a store it wrote itself, in its own schema
        // (an older build refuses a newer schema): the same events, the same
        // settings and indexes, one file or database each.
        let (url_before, url_after) = match backend {
            "sqlite" => {
                let url = |name: &str| format!("sqlite:{}", dir.path().join(name).display());
                (url("before.db"), url("after.db"))
            }
            "postgres" => {
                let c = pgtrail_testkit::Cluster::start().expect("cluster");
                let before = c.create_database("verify_before").await.expect("db");
                let after = c.create_database("verify_after").await.expect("db");
                cluster = Some(c);
                (before, after)
            }
            other => panic!("unknown backend {other}"),
        };
        let filled = Command::new(&old)
            .args(["fill", &url_before, &events.to_string()])
            .status()
            .expect("run verify_bench fill");
        assert!(filled.success(), "{old} fill failed");
        {
            let store = pgtrail_store::open(&url_after).await.expect("open");
            fill(&*store, events).await;
        }
        if let Some(c) = &cluster {
            for url in [&url_before, &url_after] {
                let db = url.rsplit('/').next().expect("db").to_string();
                c.connect(&db)
                    .await
                    .expect("connect")
                    .batch_execute("vacuum analyze")
                    .await
                    .expect("analyze");
            }
        }
        // Alternated, so a noisy minute hits both builds.
        let (mut before, mut after) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            before.push(rate_of(&old, &url_before));
            after.push(rate_of(new, &url_after));
        }
        let (b, after_stats) = (median_and_spread(before), median_and_spread(after));
        for (build, (median, min, max)) in [("before", b), ("after", after_stats)] {
            println!("{backend:<9} {events:>7} {build:<7} {median:>12.0} {min:>8.0} {max:>8.0}");
        }
        println!(
            "{backend:<9} cost of the new checks: {:.2}x (median before / median after)",
            b.0 / after_stats.0
        );
    }
    drop(cluster);
}
