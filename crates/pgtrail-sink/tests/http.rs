//! The HTTP sink against a local receiver (axum) that drops connections,
//! answers 500, 503 and 400, and stops answering, then recovers: every
//! event arrives at least once and in order, with the right
//! authentication; `_bulk`'s per-item failures are retried; the secret
//! never shows in an error.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use pgtrail_core::config::Config;
use pgtrail_sink::cursor::Cursor;
use pgtrail_sink::http::{verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::Value;
use tokio::net::TcpListener;

use common::{
    append_events, checkpoint_at, runner_for, sqlite_store, store_with_edited_body, until,
};

/// What the receiver does with the next request.
#[derive(Debug, Clone)]
enum Answer {
    Status(u16, &'static str),
    /// Answers after this long (past the sink's timeout).
    Late(Duration),
    /// Takes the request after this long (within the sink's timeout).
    Slow(Duration),
}

/// A request the receiver took (answered 2xx).
#[derive(Debug, Clone)]
struct Taken {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Receiver {
    script: VecDeque<Answer>,
    taken: Vec<Taken>,
    refused: usize,
    /// `_bulk`: the index, by `_id`.
    index: HashMap<String, Value>,
    /// `_bulk`: per-item failures to answer, one list per request.
    bulk_failures: VecDeque<Vec<(usize, u16)>>,
    /// `_bulk`: answers that claim success for the first item only (a
    /// proxy or receiver that lies), before honest ones.
    bulk_short_answers: usize,
    /// Requests being handled now, and the most at once.
    handling: usize,
    most_at_once: usize,
}

type Shared = Arc<Mutex<Receiver>>;

/// Starts a receiver; the first `drop_connections` connections are
/// accepted and closed at once. Returns its base URL.
async fn receiver(shared: Shared, drop_connections: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        for _ in 0..drop_connections {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        }
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            handle(shared.clone(), uri, headers, body)
        });
        axum::serve(listener, app).await.expect("serve");
    });
    url
}

async fn handle(
    shared: Shared,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let answer = {
        let mut receiver = shared.lock().expect("lock");
        receiver.handling += 1;
        receiver.most_at_once = receiver.most_at_once.max(receiver.handling);
        receiver.script.pop_front()
    };
    let response = answer_with(&shared, answer, uri, headers, body).await;
    shared.lock().expect("lock").handling -= 1;
    response
}

async fn answer_with(
    shared: &Shared,
    answer: Option<Answer>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    match answer {
        Some(Answer::Slow(pause)) => tokio::time::sleep(pause).await,
        Some(Answer::Late(pause)) => {
            tokio::time::sleep(pause).await;
            return StatusCode::OK.into_response();
        }
        Some(Answer::Status(status, text)) => {
            shared.lock().expect("lock").refused += 1;
            // Echoes the request's Authorization, as a careless collector
            // might: the sink must not log it.
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let status = StatusCode::from_u16(status).expect("status");
            return (status, format!("{text}: {auth}")).into_response();
        }
        None => {}
    }
    let mut receiver = shared.lock().expect("lock");
    if uri.path().ends_with("/_bulk") {
        let failures = receiver.bulk_failures.pop_front().unwrap_or_default();
        let lines: Vec<&[u8]> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let mut items = Vec::new();
        for (n, pair) in lines.chunks(2).enumerate() {
            let action: Value = serde_json::from_slice(pair[0]).expect("action line");
            let id = action["index"]["_id"].as_str().expect("_id").to_string();
            let status = failures
                .iter()
                .find(|(item, _)| *item == n)
                .map_or(201, |(_, status)| *status);
            if status == 201 {
                let doc: Value = serde_json::from_slice(pair[1]).expect("document line");
                receiver.index.insert(id, doc);
                items.push(
                    serde_json::json!({"index": {"_id": action["index"]["_id"], "status": 201}}),
                );
            } else {
                items.push(serde_json::json!({"index": {"_id": action["index"]["_id"], "status": status,
                    "error": {"type": if status == 429 { "es_rejected_execution_exception" } else { "mapper_parsing_exception" }}}}));
            }
        }
        let errors = !failures.is_empty();
        if receiver.bulk_short_answers > 0 {
            receiver.bulk_short_answers -= 1;
            receiver.refused += 1;
            items.truncate(1);
        }
        receiver.taken.push(Taken {
            path: uri.path().into(),
            headers,
            body,
        });
        return axum::Json(serde_json::json!({"took": 1, "errors": errors, "items": items}))
            .into_response();
    }
    receiver.taken.push(Taken {
        path: uri.path().into(),
        headers,
        body,
    });
    (StatusCode::OK, "{\"text\":\"Success\",\"code\":0}").into_response()
}

fn sink_config(toml: &str) -> pgtrail_core::config::SinkConfig {
    let config = Config::from_toml(toml, "sinks.toml").expect("valid config");
    config.sinks.into_iter().next().expect("one sink")
}

/// The ids of the events in the store, in chain order.
async fn ids_in_order(store: &dyn pgtrail_store::Store) -> Vec<String> {
    store
        .scan(0, 100_000)
        .await
        .expect("scan")
        .into_iter()
        .map(|e| e.id.to_string())
        .collect()
}

/// Waits until the cursor file at `path` says `done`.
async fn until_cursor(what: &str, path: &std::path::Path, done: impl Fn(&Cursor) -> bool) {
    until(what, || {
        Cursor::load(path).ok().flatten().is_some_and(|c| done(&c))
    })
    .await
}

/// `ids` with each id's first sighting only.
fn first_sightings(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[tokio::test]
async fn a_webhook_gets_every_event_in_order_signed_through_outages() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 300).await;
    let key_file = dir.path().join("hmac.key");
    std::fs::write(&key_file, "a-webhook-key-nobody-knows\n").expect("key");
    let shared = Shared::default();
    shared.lock().expect("lock").script = VecDeque::from([
        Answer::Status(500, "internal error"),
        Answer::Late(Duration::from_secs(3)),
        Answer::Status(503, "unavailable"),
        Answer::Status(400, "bad request"),
    ]);
    let base = receiver(shared.clone(), 2).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{base}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 1\n",
        key_file.display()
    ));
    let sink = pgtrail_sink::open::open(&config).await.expect("sink");
    let mut runner = runner_for(&url, dir.path(), sink);
    runner.batch = 40;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    append_events(store.as_ref(), 100).await;
    let expected = ids_in_order(store.as_ref()).await;
    let received = |shared: &Shared| -> Vec<String> {
        let receiver = shared.lock().expect("lock");
        receiver
            .taken
            .iter()
            .flat_map(|taken| {
                let records: Vec<Value> =
                    serde_json::from_slice(&taken.body).expect("a JSON array");
                records
                    .into_iter()
                    .map(|r| r["id"].as_str().expect("id").to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    until("every event at the webhook", || {
        first_sightings(received(&shared)).len() >= 400
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    assert_eq!(
        first_sightings(received(&shared)),
        expected,
        "every event, in chain order"
    );
    let receiver = shared.lock().expect("lock");
    assert_eq!(receiver.refused, 3, "500, 503 and 400 were answered");
    let key = b"a-webhook-key-nobody-knows";
    let now = chrono::Utc::now().timestamp();
    for taken in &receiver.taken {
        assert_eq!(taken.path, "/hook");
        let signature = taken.headers[SIGNATURE_HEADER].to_str().expect("ascii");
        let timestamp = taken.headers[TIMESTAMP_HEADER].to_str().expect("ascii");
        assert!(verify_signature(
            key,
            timestamp,
            &taken.body,
            signature,
            now,
            300
        ));
        // Someone on the way changes the body, or replays it an hour later.
        let mut forged = taken.body.to_vec();
        forged[1] = b' ';
        assert!(!verify_signature(
            key, timestamp, &forged, signature, now, 300
        ));
        assert!(!verify_signature(
            key,
            timestamp,
            &taken.body,
            signature,
            now + 3600,
            300
        ));
    }
}

#[tokio::test]
async fn splunk_hec_gets_its_envelope_and_token_and_the_token_is_never_in_an_error() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 120).await;
    let token = "11111111-2222-3333-4444-555555555555";
    std::env::set_var("PGTRAIL_TEST_HEC_TOKEN", token);
    let shared = Shared::default();
    shared.lock().expect("lock").script = VecDeque::from([Answer::Status(403, "Invalid token")]);
    let base = receiver(shared.clone(), 0).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"splunk\"\ntype = \"http\"\napi = \"splunk\"\nurl = \"{base}\"\nsecret_env = \"PGTRAIL_TEST_HEC_TOKEN\"\nsourcetype = \"pgtrail:test\"\n"
    ));
    let sink = pgtrail_sink::open::open(&config).await.expect("sink");
    assert!(!sink.destination().contains(token));
    let mut runner = runner_for(&url, dir.path(), sink);
    runner.batch = 50;
    // Slow enough back-off to read the error the refusal left.
    runner.backoff =
        pgtrail_pipeline::retry::Backoff::new(Duration::from_millis(400), Duration::from_secs(1));
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until_cursor("the refusal recorded", &cursor_path, |c| {
        c.last_error.is_some()
    })
    .await;
    let error = Cursor::load(&cursor_path)
        .expect("read")
        .expect("saved")
        .last_error
        .expect("error");
    assert!(
        error.message.contains("403") && error.message.contains("Invalid token"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains(token),
        "the token leaked: {}",
        error.message
    );
    until("every event at HEC", || {
        let receiver = shared.lock().expect("lock");
        receiver.taken.len() >= 3
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    let expected = ids_in_order(store.as_ref()).await;
    let receiver = shared.lock().expect("lock");
    let mut ids = Vec::new();
    for taken in &receiver.taken {
        assert_eq!(taken.path, "/services/collector/event");
        assert_eq!(
            taken.headers["authorization"],
            format!("Splunk {token}").as_str()
        );
        for envelope in serde_json::Deserializer::from_slice(&taken.body).into_iter::<Value>() {
            let envelope = envelope.expect("one JSON object per event");
            assert!(envelope["time"].as_f64().is_some_and(|t| t > 1.6e9));
            assert!(envelope["host"].as_str().is_some_and(|h| !h.is_empty()));
            assert_eq!(envelope["source"], "pgtrail");
            assert_eq!(envelope["sourcetype"], "pgtrail:test");
            ids.push(
                envelope["event"]["id"]
                    .as_str()
                    .expect("event id")
                    .to_string(),
            );
        }
    }
    assert_eq!(first_sightings(ids), expected);
}

#[tokio::test]
async fn bulk_retries_a_batch_with_failed_items_and_indexes_each_event_once_by_its_id() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 200).await;
    let shared = Shared::default();
    // The first answer: 2 items rejected for load (429); the second: one
    // item refused (400): both 200 OK with `errors: true`.
    shared.lock().expect("lock").bulk_failures =
        VecDeque::from([vec![(3, 429), (7, 429)], vec![(0, 400)]]);
    let base = receiver(shared.clone(), 0).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"es\"\ntype = \"http\"\napi = \"elasticsearch\"\nurl = \"{base}\"\nindex = \"audit\"\n"
    ));
    let sink = pgtrail_sink::open::open(&config).await.expect("sink");
    let mut runner = runner_for(&url, dir.path(), sink);
    runner.batch = 50;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    until_cursor("all delivered", &cursor_path, |c| c.seq == 200).await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    let expected = ids_in_order(store.as_ref()).await;
    let receiver = shared.lock().expect("lock");
    assert_eq!(
        receiver.taken.len(),
        6,
        "4 batches, 2 of them sent again whole"
    );
    assert_eq!(receiver.index.len(), 200, "each event once: its id is _id");
    for id in &expected {
        let doc = &receiver.index[id];
        assert_eq!(doc["id"].as_str(), Some(id.as_str()));
    }
    for taken in &receiver.taken {
        assert_eq!(taken.path, "/_bulk");
        let first: Value =
            serde_json::from_slice(taken.body.split(|b| *b == b'\n').next().expect("line"))
                .expect("action");
        assert_eq!(first["index"]["_index"], "audit");
    }
}

#[tokio::test]
async fn requests_in_flight_at_once_lose_nothing_and_a_checkpoint_waits_for_its_events() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 200).await;
    checkpoint_at(store.as_ref(), 50).await;
    let shared = Shared::default();
    // The first request is slow and the fifth fails: the ones after them
    // are answered meanwhile, and the failed delivery comes again whole.
    // The first delivery's third request holds the checkpoint at 50.
    shared.lock().expect("lock").script = VecDeque::from([
        Answer::Slow(Duration::from_millis(300)),
        Answer::Slow(Duration::from_millis(50)),
        Answer::Slow(Duration::from_millis(50)),
        Answer::Slow(Duration::from_millis(50)),
        Answer::Status(503, "busy"),
    ]);
    let base = receiver(shared.clone(), 0).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{base}/hook\"\nbatch = 20\nmax_in_flight = 4\ntimeout_secs = 5\nstate_dir = \"{}\"\n",
        dir.path().display()
    ));
    let mut runner = pgtrail_sink::open::runner(&config, &url)
        .await
        .expect("runner");
    assert_eq!(runner.batch, 80, "a delivery is max_in_flight requests");
    runner.backoff = pgtrail_pipeline::retry::Backoff::new(
        Duration::from_millis(10),
        Duration::from_millis(100),
    );
    let cursor_path = runner.cursor_path.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until_cursor("all delivered", &cursor_path, |c| {
        c.seq == 200 && c.checkpoints == 1
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    let expected = ids_in_order(store.as_ref()).await;
    let receiver = shared.lock().expect("lock");
    assert!(
        receiver.most_at_once > 1,
        "requests were in flight at once ({})",
        receiver.most_at_once
    );
    assert_eq!(receiver.refused, 1);
    // Records in the order the receiver took them.
    let mut records: Vec<Value> = Vec::new();
    for taken in &receiver.taken {
        let batch: Vec<Value> = serde_json::from_slice(&taken.body).expect("a JSON array");
        assert!(batch.len() <= 20, "at most `batch` records per request");
        records.extend(batch);
    }
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| r["id"].as_str().map(String::from))
        .collect();
    let mut arrived = first_sightings(ids.clone());
    assert_ne!(arrived, expected, "requests arrived out of chain order");
    arrived.sort();
    let mut all = expected.clone();
    all.sort();
    assert_eq!(arrived, all, "every event arrived");
    // The checkpoint came only after every event it covers had arrived.
    let at = records
        .iter()
        .position(|r| r.get("checkpoint").is_some())
        .expect("the checkpoint arrived");
    assert_eq!(records[at]["checkpoint"]["seq"], 50);
    let before: std::collections::HashSet<&str> = records[..at]
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in &expected[..50] {
        assert!(
            before.contains(id.as_str()),
            "event {id} before its checkpoint"
        );
    }
}

/// A TLS server that answers every request 200 and keeps the bodies.
async fn tls_receiver(tls: pgtrail_testkit::ServerTls, bodies: Arc<Mutex<Vec<Vec<u8>>>>) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let config = pgtrail_connect::certificate::from_pem(
        &tls.cert_pem,
        &tls.key_pem,
        vec![b"http/1.1".to_vec()],
    )
    .expect("server TLS");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accept");
            let (acceptor, bodies) = (acceptor.clone(), bodies.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(tcp).await else {
                    return; // a client that does not trust us
                };
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buffer.len() < end + 4 + length {
                        continue;
                    }
                    bodies
                        .lock()
                        .expect("lock")
                        .push(buffer[end + 4..end + 4 + length].to_vec());
                    buffer.drain(..end + 4 + length);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn https_goes_only_to_a_server_the_configured_ca_vouches_for() {
    let (dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 30).await;
    let ca = pgtrail_testkit::TestCa::new("pgtrail sink test CA").expect("CA");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let port = tls_receiver(
        ca.server(&["localhost"]).expect("server cert"),
        bodies.clone(),
    )
    .await;
    let items: Vec<pgtrail_sink::sink::Item> = store
        .scan(0, 30)
        .await
        .expect("scan")
        .into_iter()
        .map(pgtrail_sink::sink::Item::Event)
        .collect();

    let trusting = sink_config(&format!(
        "[[sinks]]\nname = \"tls\"\ntype = \"http\"\nurl = \"https://localhost:{port}/hook\"\nca_file = \"{}\"\ntimeout_secs = 5\n",
        ca_file.display()
    ));
    let mut sink = pgtrail_sink::open::open(&trusting).await.expect("sink");
    sink.deliver(&items[..10])
        .await
        .expect("delivered over TLS");
    sink.deliver(&items[10..])
        .await
        .expect("again, on the kept connection");
    let received: Vec<Value> = bodies
        .lock()
        .expect("lock")
        .iter()
        .flat_map(|b| serde_json::from_slice::<Vec<Value>>(b).expect("array"))
        .collect();
    assert_eq!(received.len(), 30);

    // Without the CA (the system's roots), the same server is not trusted.
    let system = sink_config(&format!(
        "[[sinks]]\nname = \"tls\"\ntype = \"http\"\nurl = \"https://localhost:{port}/hook\"\ntimeout_secs = 5\n"
    ));
    match pgtrail_sink::open::open(&system).await {
        // No system roots on this machine: refused at setup, as clearly.
        Err(error) => assert!(error.to_string().contains("CA"), "{error}"),
        Ok(mut sink) => {
            let error = sink
                .deliver(&items[..1])
                .await
                .expect_err("an unknown issuer");
            assert!(error.to_string().contains("TLS"), "{error}");
        }
    }
    assert_eq!(
        bodies.lock().expect("lock").len(),
        2,
        "nothing reached the untrusted server"
    );
}

#[tokio::test]
async fn a_bulk_answer_claiming_success_for_fewer_items_than_sent_is_refused() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 30).await;
    let shared = Shared::default();
    // A receiver (or someone in the middle) answers 200, `errors: false`,
    // with an outcome for the first item only, twice: the others are not
    // known to be indexed.
    shared.lock().expect("lock").bulk_short_answers = 2;
    let base = receiver(shared.clone(), 0).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"es\"\ntype = \"http\"\napi = \"elasticsearch\"\nurl = \"{base}\"\nmax_in_flight = 1\n"
    ));
    let sink = pgtrail_sink::open::open(&config).await.expect("sink");
    let mut runner = runner_for(&url, dir.path(), sink);
    runner.batch = 10;
    runner.backoff =
        pgtrail_pipeline::retry::Backoff::new(Duration::from_millis(300), Duration::from_secs(1));
    let cursor_path = pgtrail_sink::cursor::path(dir.path(), "test");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until_cursor("the short answer refused", &cursor_path, |c| {
        c.last_error.is_some()
    })
    .await;
    let cursor = Cursor::load(&cursor_path).expect("read").expect("saved");
    assert_eq!(
        cursor.seq, 0,
        "the cursor stays before the unconfirmed items"
    );
    let message = cursor.last_error.expect("error").message;
    assert!(message.contains("1 outcomes for 10 items"), "{message}");
    until_cursor("all delivered", &cursor_path, |c| c.seq == 30).await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");
    let receiver = shared.lock().expect("lock");
    assert_eq!(receiver.refused, 2);
    assert_eq!(receiver.taken.len(), 5, "the first batch sent 3 times");
    assert_eq!(receiver.index.len(), 30, "each event indexed, by its id");
}

#[tokio::test]
async fn stored_events_are_posted_as_the_same_bodies_as_decoded_ones() {
    let (dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 25).await;
    checkpoint_at(store.as_ref(), 10).await;
    let decoded: Vec<pgtrail_sink::sink::Item> = store
        .scan(0, 25)
        .await
        .expect("scan")
        .into_iter()
        .map(pgtrail_sink::sink::Item::Event)
        .collect();
    let raw: Vec<pgtrail_sink::sink::Item<pgtrail_store::RawEvent>> = store
        .scan_raw(0, 25)
        .await
        .expect("scan")
        .into_iter()
        .map(pgtrail_sink::sink::Item::Event)
        .collect();
    let checkpoint = store.checkpoints().await.expect("checkpoints").remove(0);
    let mut decoded = decoded;
    let mut raw = raw;
    decoded.insert(10, pgtrail_sink::sink::Item::Checkpoint(checkpoint.clone()));
    raw.insert(10, pgtrail_sink::sink::Item::Checkpoint(checkpoint));
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "k").expect("key");
    for (api, extra) in [
        ("webhook", String::new()),
        ("webhook", "body = \"ndjson\"\n".to_string()),
        (
            "webhook",
            format!("secret_file = \"{}\"\n", key_file.display()),
        ),
        (
            "splunk",
            format!(
                "index = \"main\"\nsecret_file = \"{}\"\n",
                key_file.display()
            ),
        ),
        ("elasticsearch", String::new()),
    ] {
        let shared = Shared::default();
        let base = receiver(shared.clone(), 0).await;
        let config = sink_config(&format!(
            "[[sinks]]\nname = \"s\"\ntype = \"http\"\napi = \"{api}\"\nurl = \"{base}/x\"\n{extra}"
        ));
        let mut sink = pgtrail_sink::open::open(&config).await.expect("sink");
        assert!(sink.reads_raw(), "{api} {extra}: jsonl reads stored events");
        sink.deliver(&decoded).await.expect("decoded delivered");
        sink.deliver_raw(&raw).await.expect("stored delivered");
        let receiver = shared.lock().expect("lock");
        assert_eq!(receiver.taken.len(), 2);
        assert!(!receiver.taken[0].body.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&receiver.taken[0].body),
            String::from_utf8_lossy(&receiver.taken[1].body),
            "{api} {extra}: the same body either way"
        );
        // Each body is what its API reads: one JSON value per line, or
        // one array.
        let body = &receiver.taken[1].body;
        let values: Vec<Value> = serde_json::Deserializer::from_slice(body)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .expect("JSON");
        let records = match (api, values.as_slice()) {
            ("webhook", [Value::Array(records)]) => records.len(),
            ("elasticsearch", lines) => lines.len() / 2,
            (_, lines) => lines.len(),
        };
        assert_eq!(records, 26, "{api} {extra}: 25 events and a checkpoint");
    }
}

#[tokio::test]
async fn a_failed_request_among_requests_in_flight_holds_the_cursor_before_it() {
    let (dir, url, store) = sqlite_store().await;
    append_events(store.as_ref(), 30).await;
    let shared = Shared::default();
    // Three requests of 10 in flight: the first to arrive is slow, the
    // second fails, the third is taken meanwhile.
    shared.lock().expect("lock").script = VecDeque::from([
        Answer::Slow(Duration::from_millis(200)),
        Answer::Status(503, "busy"),
    ]);
    let base = receiver(shared.clone(), 0).await;
    let config = sink_config(&format!(
        "[[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{base}/hook\"\nbatch = 10\nmax_in_flight = 3\nstate_dir = \"{}\"\n",
        dir.path().display()
    ));
    let mut runner = pgtrail_sink::open::runner(&config, &url)
        .await
        .expect("runner");
    runner.backoff =
        pgtrail_pipeline::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(1));
    let cursor_path = runner.cursor_path.clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(runner.run(stopped));
    until_cursor("the failure recorded", &cursor_path, |c| {
        c.last_error.is_some()
    })
    .await;
    let cursor = Cursor::load(&cursor_path).expect("read").expect("saved");
    assert_eq!(
        cursor.seq, 0,
        "two requests were taken, one failed: the cursor stays before it"
    );
    until_cursor("all delivered", &cursor_path, |c| {
        c.seq == 30 && c.last_error.is_none()
    })
    .await;
    stop.send(true).expect("stop");
    task.await.expect("runner ends");

    let expected = ids_in_order(store.as_ref()).await;
    let receiver = shared.lock().expect("lock");
    assert_eq!(receiver.refused, 1);
    let ids: Vec<String> = receiver
        .taken
        .iter()
        .flat_map(|taken| {
            serde_json::from_slice::<Vec<Value>>(&taken.body)
                .expect("a JSON array")
                .into_iter()
                .map(|r| r["id"].as_str().expect("id").to_string())
        })
        .collect();
    assert_eq!(
        ids.len(),
        50,
        "the two taken requests sent again with the failed one"
    );
    let mut arrived = first_sightings(ids);
    arrived.sort();
    let mut all = expected;
    all.sort();
    assert_eq!(arrived, all, "every event arrived");
}

/// Someone with the store file puts a line break and a `delete` action
/// into a stored body (a "scalar" the raw splice only delimits): spliced
/// as stored, it would become a line of its own in the `_bulk` body, run
/// with the sink's credentials. The event goes through the decoder
/// instead, which refuses the body: nothing is posted, the error names it.
#[tokio::test]
async fn a_line_break_edited_into_a_stored_body_cannot_add_a_bulk_action() {
    let (_dir, _store, raw) = store_with_edited_body(
        r#"'"db_user":1' || char(10) || '{"delete":{"_index":"audit","_id":"victim"}}'"#,
    )
    .await;
    assert!(raw[1].body.contains("\n{\"delete\""), "the edit is stored");
    let items: Vec<pgtrail_sink::sink::Item<pgtrail_store::RawEvent>> = raw
        .into_iter()
        .map(pgtrail_sink::sink::Item::Event)
        .collect();
    for (api, extra) in [
        ("elasticsearch", "index = \"audit\"\n"),
        ("webhook", "body = \"ndjson\"\n"),
    ] {
        let shared = Shared::default();
        let base = receiver(shared.clone(), 0).await;
        let config = sink_config(&format!(
            "[[sinks]]\nname = \"s\"\ntype = \"http\"\napi = \"{api}\"\nurl = \"{base}/x\"\n{extra}"
        ));
        let mut sink = pgtrail_sink::open::open(&config).await.expect("sink");
        let error = sink.deliver_raw(&items).await.expect_err("refused");
        assert!(
            matches!(
                error,
                pgtrail_sink::sink::SinkError::Format(pgtrail_sink::format::FormatError::Stored {
                    seq: 2,
                    ..
                })
            ),
            "{api}: {error}"
        );
        assert_eq!(
            shared.lock().expect("lock").most_at_once,
            0,
            "{api}: nothing was posted"
        );
    }
}
