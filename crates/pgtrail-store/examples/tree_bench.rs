//! What the Merkle tree's kept nodes cost and buy, on a SQLite store (and
//! a Postgres one with `--postgres URL`):
//!
//!   tree_bench [--events N] [--proofs P] [--path FILE | --postgres URL]
//!
//! Fills the store with N events (10,000 a batch, as capture appends), then
//! times `signing::check_chain` over the whole chain (what the first
//! `sign_head` of an unsigned store does) and `Store::add_tree_nodes` of the
//! nodes it collected (what `sign_head` adds to a checkpoint), then a sign
//! after 10,000 more events (a checkpointer's usual step), and P inclusion
//! proofs of random events at the head's size: median, p95 and max.
//! `--path` reuses (or keeps) a file; without it a temporary one is removed.

use std::time::{Duration, Instant};

use chrono::Utc;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::signing::{check_chain, sign_head, Signer};
use pgtrail_store::{proof, KeyPair, Store};

/// A deterministic pseudo-random stream.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn event(i: usize) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, Utc::now());
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some("accounts".into());
    e.operation = Some("UPDATE".into());
    e.pk = serde_json::json!({ "id": i.to_string() })
        .as_object()
        .cloned();
    e
}

async fn fill(store: &dyn Store, n: usize) {
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(10_000);
        let events: Vec<Event> = (done..done + batch).map(event).collect();
        store.append(&events).await.expect("append");
        done += batch;
    }
}

fn stats(mut times: Vec<Duration>) -> String {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "median {:.2} ms, p95 {:.2} ms, max {:.2} ms ({} proofs)",
        at(0.5).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
        times.len()
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let events: usize = value("--events").map_or(1_000_000, |v| v.parse().expect("--events N"));
    let proofs: usize = value("--proofs").map_or(1_000, |v| v.parse().expect("--proofs P"));
    let temp = tempfile::tempdir().expect("tempdir");
    // Opening migrates: an older store's nodes are filled here.
    let opened = Instant::now();
    let store: Box<dyn Store> = match value("--postgres") {
        Some(url) => Box::new(
            pgtrail_store::postgres::PostgresStore::connect(&url)
                .await
                .expect("connect"),
        ),
        None => {
            let path = value("--path")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| temp.path().join("trail.db"));
            Box::new(
                pgtrail_store::sqlite::SqliteStore::open(&path)
                    .await
                    .expect("open"),
            )
        }
    };
    println!("opened in {:.2} s", opened.elapsed().as_secs_f64());
    let have = store.head().await.expect("head").map_or(0, |h| h.seq) as usize;
    if have < events {
        let started = Instant::now();
        fill(&*store, events - have).await;
        println!(
            "filled {} events in {:.1} s",
            events - have,
            started.elapsed().as_secs_f64()
        );
    }
    let key = KeyPair::generate().expect("key");
    let trusted = [pgtrail_store::TrustedKey::current(key.verifying_key())];

    let started = Instant::now();
    let chain = check_chain(&*store, &trusted, None, None)
        .await
        .expect("check");
    let checked = started.elapsed();
    let started = Instant::now();
    store.add_tree_nodes(&chain.nodes).await.expect("nodes");
    println!(
        "whole chain ({} events): check_chain {:.2} s; add_tree_nodes of its {} nodes {:.1} ms",
        chain.seq,
        checked.as_secs_f64(),
        chain.nodes.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let signer = Signer {
        key: &key,
        trusted: &[],
        witness: None,
    };
    sign_head(&*store, &signer, false).await.expect("sign");
    fill(&*store, 10_000).await;
    let chain = check_chain(&*store, &trusted, None, None)
        .await
        .expect("check");
    let mut adds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        store.add_tree_nodes(&chain.nodes).await.expect("nodes");
        adds.push(started.elapsed());
    }
    adds.sort();
    let started = Instant::now();
    sign_head(&*store, &signer, false).await.expect("sign");
    println!(
        "a sign after 10,000 more events: {:.1} ms, of which add_tree_nodes of {} nodes (median of 5) {:.2} ms",
        started.elapsed().as_secs_f64() * 1e3,
        chain.nodes.len(),
        adds[2].as_secs_f64() * 1e3
    );

    let size = store.head().await.expect("head").expect("events").seq as u64;
    let mut rng = Lcg(0x7067_7472);
    let mut times = Vec::with_capacity(proofs);
    let mut hashes = 0;
    for _ in 0..proofs {
        let index = rng.below(size);
        let started = Instant::now();
        let path = proof::inclusion(&*store, index, size).await.expect("proof");
        times.push(started.elapsed());
        hashes += path.len();
    }
    println!(
        "inclusion proofs at size {size}: {}; {:.1} hashes each",
        stats(times),
        hashes as f64 / proofs as f64
    );
}
