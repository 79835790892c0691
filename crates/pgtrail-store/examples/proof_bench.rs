//! `bench/proof`: what issue 14's proofs cost (item 5).
//!
//!   proof_bench ingest [--events N] [--rounds R] [--sign-every N] [--backends sqlite,postgres]
//!       sealed ingest with checkpoints signed every N events, the tree's
//!       interior nodes kept (`Store::add_tree_nodes` real) against a
//!       wrapper whose `add_tree_nodes` does nothing, rounds alternated on
//!       fresh stores; median and spread of events/s and their ratio.
//!       With `--whole-issue` the side without nodes also hashes its events
//!       as version 1 (no nonce, no per-value commitments), so the ratio is
//!       the store before issue 14 against today's: the tree and hash
//!       version 2 priced together.
//!   proof_bench big --backend sqlite|postgres --sizes 1000000,10000000 [--store PATH]
//!                   [--proofs N] [--proof-seconds S] [--add 10000,100000] [--full-verify]
//!       for each size: fills (or extends) one store to it, signing a
//!       checkpoint every million events and at the end; times proof
//!       generation for random events against the newest checkpoint
//!       (p50/p95/max), the verification of each proof (event hash,
//!       inclusion, note signature), then the incremental check
//!       (`signing::check_chain` from the newest checkpoint) after +N
//!       events, and with `--full-verify` a whole `verify`. A SQLite store
//!       at `--store` is kept (so a run can resume it); without, and for
//!       Postgres, the store is thrown away.
//!
//! Run through `bench/proof/run` (release build).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{Event, Filter, Kind, RowRef, Source};
use pgtrail_store::checkpoint::NoteCheckpoint;
use pgtrail_store::merkle::{self, Hash, Subtree};
use pgtrail_store::signing::{self, Signer};
use pgtrail_store::{
    AppendReceipt, ChainHead, Checkpoint, ExpectedIndexes, KeyPair, Mismatch, PruneOutcome, Result,
    Store, StoredEvent, TrustedKey,
};
use serde_json::json;

const BATCH: usize = 10_000;

#[path = "common/lcg.rs"]
mod lcg;
use lcg::Lcg;

/// Event `i`: ~400 bytes, mostly row changes, every tenth a statement (the
/// mix of `bench/store`), one a second back from `now` per 1,000 events, so
/// a store extended later goes on in time order.
fn event(i: usize, now: DateTime<Utc>) -> Event {
    let mut rng = Lcg(42 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.next();
    let at = now - chrono::Duration::days(60) + chrono::Duration::microseconds(i as i64 * 1_000);
    let user = format!("user{}@example.com", rng.below(500));
    if i % 10 == 9 {
        let mut e = Event::at(Source::Proxy, Kind::Statement, at);
        e.sql = Some(format!(
            "SELECT id, name, balance FROM public.table_{} WHERE customer_id = $1 AND status = 'open' ORDER BY created_at DESC LIMIT {}",
            rng.below(20),
            rng.below(100)
        ));
        e.db_user = Some("app".into());
        e.app_user = Some(user);
        e.operation = Some("SELECT".into());
        e.rows = Some(rng.below(100) as i64);
        e.duration_us = Some(rng.below(5_000) as i64);
        return e;
    }
    let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
    let id = rng.below(50_000);
    e.schema = Some("public".into());
    e.table = Some(format!("table_{}", rng.below(20)));
    e.pk = json!({ "id": id.to_string() }).as_object().cloned();
    e.db_user = Some("app".into());
    e.app_user = Some(user);
    e.client_addr = Some("10.0.0.12".into());
    e.application_name = Some("billing-api".into());
    e.backend_pid = Some(1000 + rng.below(50) as i32);
    e.xid = Some(100_000 + i as i64);
    e.operation = Some("UPDATE".into());
    let balance = format!("{}.{:02}", rng.below(100_000), rng.below(100));
    e.old = json!({"id": id, "status": "open", "balance": "10.00", "name": "Customer name here"})
        .as_object()
        .cloned();
    e.new = json!({"id": id, "status": "open", "balance": balance, "name": "Customer name here"})
        .as_object()
        .cloned();
    e.changed = vec!["balance".into()];
    e
}

/// A store whose `add_tree_nodes` keeps nothing (today's cost without the
/// tree), every other method forwarded.
struct NoNodes(Arc<dyn Store>);

#[async_trait]
impl Store for NoNodes {
    async fn append(&self, events: &[Event]) -> Result<AppendReceipt> {
        self.0.append(events).await
    }
    async fn query(&self, filter: &Filter) -> Result<Vec<Event>> {
        self.0.query(filter).await
    }
    async fn facets(&self, filter: &Filter, top: usize) -> Result<pgtrail_core::search::Facets> {
        self.0.facets(filter, top).await
    }
    async fn activity_counts(
        &self,
        filter: &Filter,
        cap: usize,
    ) -> Result<(Vec<pgtrail_store::ActivityCount>, u64)> {
        self.0.activity_counts(filter, cap).await
    }
    async fn row_events(&self, row: &RowRef) -> Result<Vec<Event>> {
        self.0.row_events(row).await
    }
    async fn row_image(&self, row: &RowRef) -> Result<Option<JsonObject>> {
        self.0.row_image(row).await
    }
    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.0.scan(after, limit).await
    }
    async fn scan_stored(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.0.scan_stored(after, limit).await
    }
    async fn expected_indexes(&self, page: &[StoredEvent]) -> Result<ExpectedIndexes> {
        self.0.expected_indexes(page).await
    }
    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: ExpectedIndexes,
    ) -> Result<Vec<(i64, Mismatch)>> {
        self.0.check_indexes(first, last, expected).await
    }
    async fn head(&self) -> Result<Option<ChainHead>> {
        self.0.head().await
    }
    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.0.add_checkpoint(checkpoint).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.0.checkpoints().await
    }
    async fn store_id(&self) -> Result<Option<String>> {
        self.0.store_id().await
    }
    async fn subtree_hashes(&self, trees: &[Subtree]) -> Result<Vec<Hash>> {
        self.0.subtree_hashes(trees).await
    }
    async fn add_tree_nodes(&self, _nodes: &[(Subtree, Hash)]) -> Result<()> {
        Ok(())
    }
    async fn tree_nodes(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<pgtrail_store::tree::TreeNode>> {
        self.0.tree_nodes(after, limit).await
    }
    async fn seq_of_id(&self, id: uuid::Uuid) -> Result<Option<i64>> {
        self.0.seq_of_id(id).await
    }
    async fn add_cosignature(
        &self,
        cosignature: &pgtrail_store::cosignature::StoredCosignature,
    ) -> Result<()> {
        self.0.add_cosignature(cosignature).await
    }
    async fn cosignatures(
        &self,
        seq: i64,
    ) -> Result<Vec<pgtrail_store::cosignature::StoredCosignature>> {
        self.0.cosignatures(seq).await
    }
    async fn prune(&self, through: i64) -> Result<PruneOutcome> {
        self.0.prune(through).await
    }
    async fn prepare_until(&self, until: DateTime<Utc>) -> Result<Vec<String>> {
        self.0.prepare_until(until).await
    }
    fn location(&self) -> String {
        self.0.location()
    }
}

struct Args {
    command: String,
    events: usize,
    rounds: usize,
    sign_every: usize,
    backends: Vec<String>,
    sizes: Vec<usize>,
    store: Option<PathBuf>,
    proofs: usize,
    proof_seconds: f64,
    add: Vec<usize>,
    full_verify: bool,
    whole_issue: bool,
}

fn list(text: &str) -> Vec<usize> {
    text.split(',')
        .map(|n| n.replace('_', "").parse().expect("a list of numbers"))
        .collect()
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        command: it.next().expect("a command: ingest or big"),
        events: 1_000_000,
        rounds: 3,
        sign_every: 100_000,
        backends: vec!["sqlite".into()],
        sizes: vec![1_000_000, 10_000_000],
        store: None,
        proofs: 1_000,
        proof_seconds: 120.0,
        add: vec![10_000, 100_000],
        full_verify: false,
        whole_issue: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = list(&value())[0],
            "--rounds" => args.rounds = value().parse().expect("--rounds N"),
            "--sign-every" => args.sign_every = list(&value())[0],
            "--backends" | "--backend" => {
                args.backends = value().split(',').map(String::from).collect()
            }
            "--sizes" => args.sizes = list(&value()),
            "--store" => args.store = Some(value().into()),
            "--proofs" => args.proofs = value().parse().expect("--proofs N"),
            "--proof-seconds" => args.proof_seconds = value().parse().expect("--proof-seconds S"),
            "--add" => args.add = list(&value()),
            "--full-verify" => args.full_verify = true,
            "--whole-issue" => args.whole_issue = true,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `median (min–max)`.
fn spread(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.d$} ({:.d$}–{:.d$})",
        median(values),
        min,
        max,
        d = decimals
    )
}

/// The `p`th percentile (0–100) of `samples`, in ms.
fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i].as_secs_f64() * 1e3
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into()))
        .expect("tempdir")
}

#[path = "common/cluster.rs"]
mod cluster;

/// Appends events `from..to`, signing the head every `sign_every` events
/// and at the end: seconds spent appending and signing.
async fn extend(
    store: &dyn Store,
    key: &KeyPair,
    from: usize,
    to: usize,
    sign_every: usize,
    make: &dyn Fn(usize) -> Event,
    progress: bool,
) -> (f64, f64) {
    let signer = Signer {
        key,
        trusted: &[],
        witness: None,
    };
    let (mut appending, mut signing) = (Duration::ZERO, Duration::ZERO);
    let mut last_report = Instant::now();
    let mut first = from;
    while first < to {
        let last = (first + BATCH).min(to);
        let events: Vec<Event> = (first..last).map(make).collect();
        let start = Instant::now();
        store.append(&events).await.expect("append");
        appending += start.elapsed();
        if last % sign_every == 0 || last == to {
            let start = Instant::now();
            signing::sign_head(store, &signer, true)
                .await
                .expect("sign_head");
            signing += start.elapsed();
        }
        if progress && last_report.elapsed() > Duration::from_secs(30) {
            let done = last - from;
            eprintln!(
                "  {last} of {to} events, {:.0}/s",
                done as f64 / (appending + signing).as_secs_f64()
            );
            last_report = Instant::now();
        }
        first = last;
    }
    (appending.as_secs_f64(), signing.as_secs_f64())
}

/// Part 1: ingest with the nodes kept against without, rounds alternated.
async fn ingest(args: &Args) {
    let now = Utc::now();
    for backend in &args.backends {
        let pg = (backend == "postgres").then(cluster::durable);
        let (mut kept, mut not, mut ratio, mut sign_kept, mut sign_not) =
            (vec![], vec![], vec![], vec![], vec![]);
        eprintln!(
            "ingest: {backend}, {} events, a checkpoint every {}, {} rounds",
            args.events, args.sign_every, args.rounds
        );
        for round in 0..args.rounds {
            let mut rates = [0.0; 2];
            for side in 0..2 {
                let keep = (side + round) % 2 == 0;
                let dir = tempdir();
                let inner: Arc<dyn Store> = match &pg {
                    None => Arc::new(
                        pgtrail_store::sqlite::SqliteStore::open(&dir.path().join("trail.db"))
                            .await
                            .expect("open"),
                    ),
                    Some(cluster) => {
                        let name = format!("r{round}s{side}");
                        let url = cluster.create_database(&name).await.expect("db");
                        Arc::new(
                            pgtrail_store::postgres::PostgresStore::connect(&url)
                                .await
                                .expect("open"),
                        )
                    }
                };
                let store: Arc<dyn Store> = if keep {
                    inner
                } else {
                    Arc::new(NoNodes(inner))
                };
                let key = KeyPair::generate().expect("key");
                let (append_s, sign_s) = extend(
                    store.as_ref(),
                    &key,
                    0,
                    args.events,
                    args.sign_every,
                    &|i| {
                        let mut e = event(i, now);
                        if !keep && args.whole_issue {
                            e.nonce = None;
                        }
                        e
                    },
                    false,
                )
                .await;
                let rate = args.events as f64 / (append_s + sign_s);
                eprintln!(
                    "  round {}: nodes {} {rate:.0} events/s (signing {sign_s:.1} s of {:.1} s)",
                    round + 1,
                    if keep { "kept    " } else { "not kept" },
                    append_s + sign_s
                );
                rates[usize::from(!keep)] = rate;
                if keep {
                    kept.push(rate);
                    sign_kept.push(sign_s);
                } else {
                    not.push(rate);
                    sign_not.push(sign_s);
                }
            }
            ratio.push(rates[1] / rates[0]);
        }
        println!(
            "\nSealed ingest, {backend}, {} events in batches of {BATCH}, a checkpoint signed every {} events, {} rounds alternated (median, min–max):",
            args.events, args.sign_every, args.rounds
        );
        println!("| side | events/s | of which signing, s |");
        println!("| --- | --- | --- |");
        println!(
            "| nodes not kept (add_tree_nodes a no-op){} | {} | {} |",
            if args.whole_issue {
                ", hash version 1"
            } else {
                ""
            },
            spread(&not, 0),
            spread(&sign_not, 1)
        );
        println!(
            "| nodes kept | {} | {} |",
            spread(&kept, 0),
            spread(&sign_kept, 1)
        );
        println!(
            "| cost (not kept ÷ kept, within a round; goal ≤ 1.05) | {} | |",
            spread(&ratio, 3)
        );
    }
}

/// The newest signed checkpoint's note, parsed.
async fn newest_note(store: &dyn Store) -> (Checkpoint, NoteCheckpoint) {
    let checkpoints = store.checkpoints().await.expect("checkpoints");
    let checkpoint = checkpoints
        .into_iter()
        .filter(|c| c.note.is_some())
        .max_by_key(|c| c.seq)
        .expect("a signed checkpoint");
    let note = NoteCheckpoint::parse(checkpoint.note.as_deref().expect("note")).expect("note");
    (checkpoint, note)
}

/// What an auditor's `verify-proof` checks, from the parts of a proof:
/// the event's hash from its body, the note's signature, the inclusion.
fn verify_proof(event: &Event, proof: &[Hash], note_text: &str, key: &TrustedKey, index: u64) {
    let note = NoteCheckpoint::parse(note_text).expect("note");
    assert!(
        note.note.verify(&note.tree.origin, &key.key),
        "the note's signature"
    );
    let hash = pgtrail_core::canonical::event_hash(event);
    assert_eq!(Some(&hash), event.hash.as_ref(), "the event's hash");
    let leaf = merkle::event_leaf(&hash).expect("leaf");
    merkle::verify_inclusion(index, note.tree.size, &leaf, proof, &note.tree.root)
        .expect("the proof verifies");
}

/// Part 2 and 3: proofs of random events against the newest checkpoint.
async fn proofs(store: &dyn Store, key: &TrustedKey, count: usize, budget: f64, label: &str) {
    let (checkpoint, note) = newest_note(store).await;
    let note_text = checkpoint.note.clone().expect("note");
    let size = note.tree.size;
    let mut rng = Lcg(7 ^ size);
    let (mut make, mut check, mut made) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    while make.len() < count && started.elapsed().as_secs_f64() < budget {
        let index = rng.next() % size;
        // What `pgtrail prove` reads: the event and its inclusion proof.
        let start = Instant::now();
        let event = store
            .scan(index as i64, 1)
            .await
            .expect("scan")
            .pop()
            .expect("the event");
        let proof = pgtrail_store::proof::inclusion(store, index, size)
            .await
            .expect("proof");
        make.push(start.elapsed());
        made.push((event, proof, index));
    }
    // Each proof verified in turn until `count` verifications (the slow
    // path makes few proofs in the budget; verifying is the same work).
    for (event, proof, index) in made.iter().cycle().take(count) {
        let start = Instant::now();
        verify_proof(event, proof, &note_text, key, *index);
        check.push(start.elapsed());
    }
    let row = |what: &str, s: &[Duration], goal: &str| {
        println!(
            "| {label} | {what} | {} | {:.3} | {:.3} | {:.3} | {goal} |",
            s.len(),
            percentile_ms(s, 50.0),
            percentile_ms(s, 95.0),
            percentile_ms(s, 100.0)
        )
    };
    row(
        "proof of a random event (read event + inclusion proof)",
        &make,
        "p95 ≤ 50 ms",
    );
    row(
        "verify a proof (note signature, event hash, inclusion)",
        &check,
        "≤ 5 ms",
    );
}

/// Part 4: the check incremental verify makes after `add` new events
/// (`check_chain` from the newest checkpoint, which the last step signed),
/// then the new head signed so the next step starts there.
async fn incremental(
    store: &dyn Store,
    key: &KeyPair,
    add: usize,
    label: &str,
    now: DateTime<Utc>,
) {
    let head = store.head().await.expect("head").map_or(0, |h| h.seq) as usize;
    let mut first = head;
    while first < head + add {
        let last = (first + BATCH).min(head + add);
        let events: Vec<Event> = (first..last).map(|i| event(i, now)).collect();
        store.append(&events).await.expect("append");
        first = last;
    }
    let trusted = [TrustedKey::current(key.verifying_key())];
    let start = Instant::now();
    let chain = signing::check_chain(store, &trusted, None, None)
        .await
        .expect("check_chain");
    let took = start.elapsed().as_secs_f64();
    println!(
        "| {label} | check_chain from the newest checkpoint over +{add} events | {took:.3} s | {:.0} events/s | {} nodes |",
        add as f64 / took,
        chain.nodes.len()
    );
    let signer = Signer {
        key,
        trusted: &[],
        witness: None,
    };
    signing::sign_head(store, &signer, true)
        .await
        .expect("sign");
}

/// Parts 2–4 on one store grown through `sizes`.
async fn big(args: &Args) {
    let now = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let backend = args.backends[0].as_str();
    let dir = tempdir();
    let pg = (backend == "postgres").then(cluster::durable);
    let (store, key_path): (Arc<dyn Store>, PathBuf) = match &pg {
        None => {
            let path = args
                .store
                .clone()
                .unwrap_or_else(|| dir.path().join("trail.db"));
            let key = path.with_extension("key");
            (
                Arc::new(
                    pgtrail_store::sqlite::SqliteStore::open(&path)
                        .await
                        .expect("open"),
                ),
                key,
            )
        }
        Some(cluster) => {
            let url = cluster.create_database("proofs").await.expect("db");
            (
                Arc::new(
                    pgtrail_store::postgres::PostgresStore::connect(&url)
                        .await
                        .expect("open"),
                ),
                dir.path().join("trail.key"),
            )
        }
    };
    let key = if key_path.exists() {
        KeyPair::load(&key_path).expect("key")
    } else {
        let key = KeyPair::generate().expect("key");
        key.save(&key_path, &key_path.with_extension("pub"))
            .expect("save key");
        key
    };
    let trusted = TrustedKey::current(key.verifying_key());
    for &size in &args.sizes {
        let head = store.head().await.expect("head").map_or(0, |h| h.seq) as usize;
        if head < size {
            eprintln!("big: {backend}: filling {head} → {size}");
            let (a, s) = extend(
                store.as_ref(),
                &key,
                head,
                size,
                1_000_000,
                &|i| event(i, now),
                true,
            )
            .await;
            eprintln!(
                "  filled at {:.0} events/s ({a:.0} s appending, {s:.0} s signing)",
                (size - head) as f64 / (a + s)
            );
        }
        let label = format!(
            "{backend}, {}",
            store.head().await.expect("head").map_or(0, |h| h.seq)
        );
        if args.proofs > 0 {
            println!("\n| store | measure | proofs | p50 ms | p95 ms | max ms | goal |");
            println!("| --- | --- | --- | --- | --- | --- | --- |");
            proofs(
                store.as_ref(),
                &trusted,
                args.proofs,
                args.proof_seconds,
                &label,
            )
            .await;
        }
        println!("\n| store | measure | time | rate | |");
        println!("| --- | --- | --- | --- | --- |");
        for &add in &args.add {
            incremental(store.as_ref(), &key, add, &label, now).await;
        }
        if args.full_verify {
            let start = Instant::now();
            let report = pgtrail_store::verify(store.as_ref(), Some(&key.verifying_key()))
                .await
                .expect("verify");
            let took = start.elapsed().as_secs_f64();
            assert!(report.ok(), "verify: {:?}", report.problems);
            println!(
                "| {label} | whole verify, {} events | {took:.1} s | {:.0} events/s | |",
                report.events_checked,
                report.events_checked as f64 / took
            );
        }
    }
    if let Some(path) = &args.store {
        eprintln!("big: the store is at {}", path.display());
    }
}

fn disk_note(path: &Path) -> String {
    std::fs::metadata(path).map_or(String::new(), |m| format!("{:.2} GB", m.len() as f64 / 1e9))
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    match args.command.as_str() {
        "ingest" => ingest(&args).await,
        "big" => {
            big(&args).await;
            if let Some(path) = &args.store {
                println!("\nstore file: {}", disk_note(path));
            }
        }
        other => panic!("unknown command {other}: ingest or big"),
    }
}
