//! bench/export: events/s each sink delivers from a SQLite store of N
//! sealed events, next to the store's sealed ingest rate measured in the
//! same run, and the CPU the bench process (the sink: its store reads,
//! encoding, requests, cursor saves) spends per event, from
//! `/proc/self/stat`: that figure holds on a busy machine where events/s
//! does not. Sinks come from a TOML file of `[[sinks]]` entries (any kind
//! `pgtrail_sink::open` builds), with `${OUT}` replaced by a fresh
//! directory each round; `${RECEIVER}` by the `http://` URL of the
//! receiver in its own process (the `http_receiver` example: reads and
//! drops each body, answers what each API answers; its CPU per event is
//! printed apart), `${TLS_RECEIVER}` by its `https://` URL and
//! `${RECEIVER_CA}` by the CA file to trust for it; `${CHECKING_RECEIVER}`
//! by the URL of an in-process receiver that parses every body as its API
//! would and ends the bench on a malformed one (its parsing is counted in
//! the sink's CPU); `${SYSLOG_TCP}` by the `tcp://` URL of an in-process
//! receiver that reads and drops the stream; and `${NATS}` by the URL of a
//! nats-server given in `BENCH_NATS_URL`.
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

/// The `http_receiver` example in its own process (built beside this
/// one), its `http://` and `https://` URLs and CA file; killed on drop.
struct Receiver {
    child: std::process::Child,
    url: String,
    tls_url: String,
    ca_file: String,
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().expect("own path");
        let bin = exe.with_file_name("http_receiver");
        std::fs::create_dir_all(dir).expect("receiver dir");
        let mut child = std::process::Command::new(&bin)
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (cargo build -p pgtrail-sink --example http_receiver)",
                    bin.display()
                )
            });
        let stdout = child.stdout.take().expect("piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut line = || lines.next().expect("a line").expect("receiver output");
        let (url, tls_url, ca_file) = (line(), line(), line());
        Receiver {
            child,
            url,
            tls_url,
            ca_file,
        }
    }

    /// CPU seconds the receiver used so far.
    fn cpu(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of the process whose `stat` file is `path`.
fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command (which may hold spaces), from the state on.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (11 and 12 after the state), in
    // clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// An in-process receiver that reads every body as its API would (JSON
/// array, NDJSON, HEC envelopes, `_bulk` action and document lines) and
/// answers `_bulk` with one outcome per action; a malformed body ends the
/// bench. The parsing costs CPU in this process: the row prices sink and
/// a checking receiver together.
async fn checking_receiver() -> String {
    use axum::http::{HeaderMap, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(
        |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| async move {
            match check(&uri, &headers, &body) {
                Ok(answer) => answer,
                Err(reason) => {
                    eprintln!("malformed body to {uri}: {reason}");
                    std::process::exit(2);
                }
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

/// What the checking receiver answers to a body, or what is wrong with it.
fn check(
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<String, String> {
    type Value = serde_json::Value;
    let lines = || body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
    let parse = |line: &[u8]| serde_json::from_slice::<Value>(line).map_err(|e| e.to_string());
    if uri.path().ends_with("/_bulk") {
        let lines: Vec<&[u8]> = lines().collect();
        if lines.len() % 2 != 0 {
            return Err("an action without its document".into());
        }
        for pair in lines.chunks(2) {
            let action = parse(pair[0])?;
            if !action["index"]["_id"].is_string() {
                return Err(format!("no _id in {action}"));
            }
            parse(pair[1])?;
        }
        let items = vec![r#"{"index":{"status":201}}"#; lines.len() / 2].join(",");
        return Ok(format!(r#"{{"took":0,"errors":false,"items":[{items}]}}"#));
    }
    if uri.path().ends_with("/services/collector/event") {
        for line in lines() {
            let envelope = parse(line)?;
            if !envelope["time"].is_number() || envelope.get("event").is_none() {
                return Err(format!("not a HEC event: {envelope}"));
            }
        }
        return Ok(r#"{"text":"Success","code":0}"#.into());
    }
    let ndjson = headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/x-ndjson");
    match ndjson {
        true => lines().try_for_each(|line| parse(line).map(drop))?,
        false => {
            if !parse(body)?.is_array() {
                return Err("not a JSON array".into());
            }
        }
    }
    Ok(String::new())
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

/// The median, least and most of `values` (`None`: no values).
fn median_min_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = match n % 2 {
        _ if n == 0 => return None,
        1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some((median, sorted[0], sorted[n - 1]))
}

fn spread(values: &[f64]) -> String {
    median_min_max(values).map_or("-".into(), |(median, min, max)| {
        format!("{median:>9.0} ({min:.0}–{max:.0})")
    })
}

/// [`spread`] with two decimals.
fn spread_fine(values: &[f64]) -> String {
    median_min_max(values).map_or("-".into(), |(median, min, max)| {
        format!("{median:.2} ({min:.2}–{max:.2})")
    })
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
    let receiver = Receiver::start(&tmp.join("export-receiver"));
    let text = match &args.sinks {
        Some(path) => std::fs::read_to_string(path).expect("sinks file"),
        None => DEFAULT_SINKS.to_string(),
    };
    let out = tmp.join("export-out");
    let text = text
        .replace("${OUT}", &out.display().to_string())
        .replace("${RECEIVER}", &receiver.url)
        .replace("${TLS_RECEIVER}", &receiver.tls_url)
        .replace("${RECEIVER_CA}", &receiver.ca_file)
        .replace("${CHECKING_RECEIVER}", &checking_receiver().await)
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
    // CPU µs per event: this process (the sink), the receiver process.
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let mut receiver_cpu: Vec<Vec<f64>> = vec![Vec::new(); sinks.len()];
    let mut ingest = Vec::new();
    for round in 0..args.rounds {
        // Each round in another order, the ingest between.
        let mut order: Vec<usize> = (0..sinks.len()).collect();
        order.rotate_left(round % sinks.len().max(1));
        for i in order {
            let state = tmp.join("export-state");
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_dir_all(&out);
            let (own, theirs) = (cpu_seconds("/proc/self/stat"), receiver.cpu());
            let rate = deliver(&sinks[i], &store_url, head, &state).await;
            let own = (cpu_seconds("/proc/self/stat") - own) * 1e6 / head as f64;
            let theirs = (receiver.cpu() - theirs) * 1e6 / head as f64;
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let load = load.split(' ').next().unwrap_or("?");
            eprintln!(
                "round {round}: {} {rate:.0} events/s, sink CPU {own:.2} µs/event, receiver CPU {theirs:.2} µs/event, load {load}",
                sinks[i].name
            );
            rates[i].push(rate);
            cpu[i].push(own);
            receiver_cpu[i].push(theirs);
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
        "{:<20} {:<7} {:>28} {:>26} {:>26}",
        "sink", "format", "events/s median (min–max)", "sink CPU µs/event", "receiver CPU µs/event"
    );
    for (i, sink) in sinks.iter().enumerate() {
        println!(
            "{:<20} {:<7} {:>28} {:>26} {:>26}",
            sink.name,
            sink.format.as_deref().unwrap_or(match sink.kind {
                SinkKind::Syslog(_) => "syslog",
                _ => "jsonl",
            }),
            spread(&rates[i]),
            spread_fine(&cpu[i]),
            spread_fine(&receiver_cpu[i])
        );
    }
    println!(
        "{:<20} {:<7} {:>28}",
        "SQLite sealed ingest",
        "-",
        spread(&ingest)
    );
}
