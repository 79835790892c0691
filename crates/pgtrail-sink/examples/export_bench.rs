//! bench/export: events/s each sink delivers from a SQLite store of N
//! sealed events, next to the store's sealed ingest rate measured in the
//! same run. Sinks come from a TOML file of `[[sinks]]` entries (any kind
//! `pgtrail_sink::open` builds), with `${OUT}` replaced by a fresh
//! directory each round and `${RECEIVER}` by the URL of an in-process HTTP
//! receiver that takes every batch (`_bulk` answers without errors),
//! `${SYSLOG_TCP}` by the `tcp://` URL of an in-process receiver that
//! reads and drops the stream, and `${NATS}` by the URL of a nats-server
//! given in `BENCH_NATS_URL`.
//! Rounds alternate the sinks and the ingest; median and spread printed.
//! A sink whose name ends in `-decoded` is handed decoded events even if
//! it reads them as stored (`Sink::reads_raw`): the path before the raw
//! read, measured beside it in the same rounds.
//!
//! Usage: export_bench [--events N] [--rounds N] [--ingest N]
//!                     [--store PATH] [--sinks FILE] [--only NAME,NAME]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pgtrail_core::config::{Config, SinkConfig, SinkKind};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::cursor::Cursor;
use pgtrail_sink::sink::{Item, Sink, SinkError};
use pgtrail_store::Store;
use serde_json::json;

const DEFAULT_SINKS: &str = r#"
[[sinks]]
name = "file-jsonl"
type = "file"
dir = "${OUT}"

[[sinks]]
name = "webhook-ndjson"
type = "http"
url = "${RECEIVER}/hook"
body = "ndjson"

[[sinks]]
name = "bulk-jsonl"
type = "http"
api = "elasticsearch"
url = "${RECEIVER}"
"#;

struct Args {
    events: usize,
    rounds: usize,
    ingest: usize,
    store: Option<PathBuf>,
    sinks: Option<PathBuf>,
    /// Only the sinks of these names.
    only: Option<Vec<String>>,
}

fn parse_args() -> Args {
    let mut args = Args {
        events: 1_000_000,
        rounds: 3,
        ingest: 200_000,
        store: None,
        sinks: None,
        only: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let Some(value) = given.next() else {
            panic!("{flag} needs a value");
        };
        let number = || value.replace('_', "").parse::<usize>().expect("a number");
        match flag.as_str() {
            "--events" => args.events = number(),
            "--rounds" => args.rounds = number().max(1),
            "--ingest" => args.ingest = number(),
            "--store" => args.store = Some(PathBuf::from(&value)),
            "--sinks" => args.sinks = Some(PathBuf::from(&value)),
            "--only" => args.only = Some(value.split(',').map(str::to_string).collect()),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// ~400-byte events: row changes, every tenth a statement.
fn generate(range: std::ops::Range<usize>) -> Vec<Event> {
    range
        .map(|i| {
            if i % 10 == 9 {
                let mut e = Event::new(Source::Proxy, Kind::Statement);
                e.sql = Some(format!(
                    "SELECT id, name, balance FROM public.table_{} WHERE customer_id = $1 AND status = 'open' LIMIT {}",
                    i % 300,
                    i % 100
                ));
                e.db_user = Some("app".into());
                e.app_user = Some(format!("user{}@example.com", i % 300));
                e.operation = Some("SELECT".into());
                return e;
            }
            let mut e = Event::new(Source::Trigger, Kind::RowChange);
            e.schema = Some("public".into());
            e.table = Some(format!("table_{}", i % 300));
            e.pk = json!({ "id": (i % 5000).to_string() }).as_object().cloned();
            e.db_user = Some("app".into());
            e.app_user = Some(format!("user{}@example.com", i % 300));
            e.client_addr = Some("10.0.0.12".into());
            e.application_name = Some("billing-api".into());
            e.xid = Some(100_000 + i as i64);
            e.operation = Some("UPDATE".into());
            e.old = json!({"id": i % 5000, "status": "open", "balance": "10.00", "name": "Customer name here"})
                .as_object()
                .cloned();
            e.new = json!({"id": i % 5000, "status": "open", "balance": format!("{}.00", i % 1000), "name": "Customer name here"})
                .as_object()
                .cloned();
            e.changed = vec!["balance".into()];
            e
        })
        .collect()
}

/// Appends `n` events to `store` in batches of 10,000; events/s.
async fn fill(store: &dyn Store, n: usize) -> f64 {
    let start = Instant::now();
    for from in (0..n).step_by(10_000) {
        store
            .append(&generate(from..(from + 10_000).min(n)))
            .await
            .expect("append");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(|uri: axum::http::Uri| async move {
        match uri.path().ends_with("/_bulk") {
            true => r#"{"took":1,"errors":false,"items":[]}"#,
            false => "{}",
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// A TCP receiver that reads and drops whatever it is sent (the syslog
/// rows: what is measured is the sink, not a receiver's disk). Returns its
/// `tcp://` URL.
async fn tcp_receiver() -> String {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("tcp://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 256 * 1024];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

/// A sink handed decoded events even where it reads raw ones: the read
/// and encoding path before `Store::scan_raw`, for the `-decoded` rows.
struct Decoded(Box<dyn Sink>);

#[async_trait::async_trait]
impl Sink for Decoded {
    fn destination(&self) -> String {
        self.0.destination()
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        self.0.deliver(items).await
    }
}

/// Delivers the whole store through `config`; events/s.
async fn deliver(config: &SinkConfig, store_url: &str, head: i64, state: &Path) -> f64 {
    let mut config = config.clone();
    config.state_dir = Some(state.display().to_string());
    let mut runner = pgtrail_sink::open::runner(&config, store_url)
        .await
        .expect("sink opens");
    if config.name.ends_with("-decoded") {
        runner.sink = Box::new(Decoded(runner.sink));
    }
    let cursor = runner.cursor_path.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(runner.run(stopped));
    while Cursor::load(&cursor)
        .ok()
        .flatten()
        .is_none_or(|c| c.seq < head)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = head as f64 / start.elapsed().as_secs_f64();
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    rate
}

fn spread(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return "-".into();
    }
    let median = match n % 2 {
        1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    format!("{median:>9.0} ({:.0}–{:.0})", sorted[0], sorted[n - 1])
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let tmp = PathBuf::from(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into()));
    let store_path = args
        .store
        .clone()
        .unwrap_or_else(|| tmp.join(format!("export-{}.db", args.events)));
    let store_url = format!("sqlite:{}", store_path.display());
    let store = pgtrail_store::open(&store_url).await.expect("store");
    let mut head = store.head().await.expect("head").map_or(0, |h| h.seq);
    if (head as usize) < args.events {
        let missing = args.events - head as usize;
        eprintln!("filling {} with {missing} events…", store_path.display());
        let rate = fill(store.as_ref(), missing).await;
        eprintln!("filled at {rate:.0} events/s");
        head = store.head().await.expect("head").map_or(0, |h| h.seq);
    }
    let receiver = receiver().await;
    let text = match &args.sinks {
        Some(path) => std::fs::read_to_string(path).expect("sinks file"),
        None => DEFAULT_SINKS.to_string(),
    };
    let out = tmp.join("export-out");
    let text = text
        .replace("${OUT}", &out.display().to_string())
        .replace("${RECEIVER}", &receiver)
        .replace("${SYSLOG_TCP}", &tcp_receiver().await);
    // `${NATS}`: the nats-server bench/export/run starts (BENCH_NATS_URL);
    // without one, those sinks are left out and the run says so.
    let text = match std::env::var("BENCH_NATS_URL") {
        Ok(url) => text.replace("${NATS}", &url),
        Err(_) => text,
    };
    let mut sinks = Config::from_toml(&text, "sinks.toml").expect("sinks").sinks;
    if let Some(only) = &args.only {
        sinks.retain(|sink| only.contains(&sink.name));
    }
    sinks.retain(|sink| {
        let unresolved = matches!(&sink.kind, SinkKind::Nats(nats) if nats.url.contains("${NATS}"));
        if unresolved {
            eprintln!(
                "sink {}: no nats-server (BENCH_NATS_URL), left out",
                sink.name
            );
        }
        !unresolved
    });
    println!(
        "store {} ({head} events); {} rounds",
        store_path.display(),
        args.rounds
    );

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let mut ingest = Vec::new();
    for round in 0..args.rounds {
        // Each round in another order, the ingest between.
        let mut order: Vec<usize> = (0..sinks.len()).collect();
        order.rotate_left(round % sinks.len().max(1));
        for i in order {
            let state = tmp.join("export-state");
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_dir_all(&out);
            let rate = deliver(&sinks[i], &store_url, head, &state).await;
            eprintln!("round {round}: {} {rate:.0} events/s", sinks[i].name);
            rates[i].push(rate);
            let _ = std::fs::remove_dir_all(&out);
            let _ = std::fs::remove_dir_all(&state);
        }
        let fresh = tmp.join("export-ingest.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", fresh.display()));
        }
        let scratch = pgtrail_store::open(&format!("sqlite:{}", fresh.display()))
            .await
            .expect("scratch store");
        let rate = fill(scratch.as_ref(), args.ingest).await;
        drop(scratch);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", fresh.display()));
        }
        eprintln!("round {round}: SQLite sealed ingest {rate:.0} events/s");
        ingest.push(rate);
    }
    println!(
        "{:<20} {:<7} {:>28}",
        "sink", "format", "events/s median (min–max)"
    );
    for (sink, rates) in sinks.iter().zip(&rates) {
        println!(
            "{:<20} {:<7} {:>28}",
            sink.name,
            sink.format.as_deref().unwrap_or(match sink.kind {
                SinkKind::Syslog(_) => "syslog",
                _ => "jsonl",
            }),
            spread(rates)
        );
    }
    println!(
        "{:<20} {:<7} {:>28}",
        "SQLite sealed ingest",
        "-",
        spread(&ingest)
    );
}
