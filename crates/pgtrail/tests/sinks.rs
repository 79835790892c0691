//! `pgtrail run` with sinks, as a user runs it: a file sink and a signed
//! webhook fed from a SQLite store while events are appended, the process
//! killed with SIGKILL in the middle of delivering, again and again; after
//! a restart every event is at each destination at least once, in chain
//! order, none missing (checked by event id). And a failing destination's
//! log never shows its secret.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::cursor::Cursor;
use pgtrail_sink::http::{verify_signature, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::Value;

use crate::running::Running;

const KEY: &str = "webhook-key-for-the-kill-test";

/// Event ids a webhook took, in the order it took them; false once a
/// signature did not check.
#[derive(Default)]
struct Hook {
    ids: Vec<String>,
    bad_signatures: usize,
}

async fn webhook(hook: Arc<Mutex<Hook>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let hook = hook.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string()
            };
            let now = chrono::Utc::now().timestamp();
            let mut hook = hook.lock().expect("lock");
            if !verify_signature(
                KEY.as_bytes(),
                &header(TIMESTAMP_HEADER),
                &body,
                &header(SIGNATURE_HEADER),
                now,
                300,
            ) {
                hook.bad_signatures += 1;
                return StatusCode::UNAUTHORIZED.into_response();
            }
            let records: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
            hook.ids.extend(
                records
                    .iter()
                    .map(|r| r["id"].as_str().expect("id").to_string()),
            );
            StatusCode::OK.into_response()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    url
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let mut event = Event::new(Source::Proxy, Kind::Statement);
            event.sql = Some(format!(
                "UPDATE accounts SET balance = balance - {i} WHERE id = 7"
            ));
            event.db_user = Some("app".into());
            event
        })
        .collect()
}

/// The ids in the file sink's files (rotated ones first, by first seq),
/// and how many lines did not parse (a crash's fragments).
fn file_ids(dir: &Path) -> (Vec<String>, usize) {
    let mut names: Vec<(i64, String)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .map(|name| {
            let first = match name.as_str() {
                "pgtrail-events.jsonl" => i64::MAX,
                _ => name
                    .trim_end_matches(".jsonl")
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("rotated name ends with its first seq"),
            };
            (first, name)
        })
        .collect();
    names.sort();
    let (mut ids, mut fragments) = (Vec::new(), 0);
    for (_, name) in names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read");
        for line in text.lines() {
            match serde_json::from_str::<Value>(line) {
                Ok(event) => ids.push(event["id"].as_str().expect("id").to_string()),
                Err(_) => fragments += 1,
            }
        }
    }
    (ids, fragments)
}

fn first_sightings(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

fn delivered(dir: &Path, sink: &str) -> i64 {
    Cursor::load(&dir.join("trail.db.sinks").join(format!("{sink}.cursor")))
        .ok()
        .flatten()
        .map_or(0, |c| c.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_delivery_loses_no_event_at_the_file_or_the_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store");
    store.append(&events(500)).await.expect("first events");
    let hook = Arc::new(Mutex::new(Hook::default()));
    let hook_url = webhook(hook.clone()).await;
    std::fs::write(dir.path().join("hook.key"), KEY).expect("key");
    let out = dir.path().join("out");
    std::fs::write(
        dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n\n\
             [[sinks]]\nname = \"file\"\ntype = \"file\"\ndir = \"{}\"\nrotate_mb = 1\nbatch = 300\n\n\
             [[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"{hook_url}\"\nsecret_file = \"hook.key\"\nbatch = 200\n",
            out.display()
        ),
    )
    .expect("config");

    // Appends go on all along, from this process, as capture would.
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (store, appending) = (store.clone(), appending.clone());
        tokio::spawn(async move {
            while appending.load(Ordering::SeqCst) {
                store.append(&events(100)).await.expect("append");
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };

    let mut kills = 0;
    for round in 0..4u64 {
        let before = (delivered(dir.path(), "file"), delivered(dir.path(), "hook"));
        let mut run = Running::start(dir.path(), &[]);
        let start = Instant::now();
        // Killed once both sinks moved on since the last kill, at a moment
        // that differs each round: in the middle of delivering.
        loop {
            let now = (delivered(dir.path(), "file"), delivered(dir.path(), "hook"));
            if now.0 > before.0 && now.1 > before.1 {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no delivery: {}",
                run.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(37 * round)).await;
        run.0.kill().expect("SIGKILL");
        run.0.wait().expect("reaped");
        kills += 1;
    }
    // Enough events for the 1 MB file to rotate at least once.
    while store.head().await.expect("head").map_or(0, |h| h.seq) < 6_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    appending.store(false, Ordering::SeqCst);
    appender.await.expect("appender");
    let head = store.head().await.expect("head").expect("events").seq;
    assert!(head > 1_500, "appends went on during the kills ({head})");

    let run = Running::start(dir.path(), &[]);
    let start = Instant::now();
    while delivered(dir.path(), "file") < head || delivered(dir.path(), "hook") < head {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not caught up: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = run.stop().await;
    assert!(!stderr.contains(KEY));

    let expected: Vec<String> = store
        .scan(0, 1_000_000)
        .await
        .expect("scan")
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let (ids, fragments) = file_ids(&out);
    eprintln!(
        "{} events; the file holds {} records ({fragments} fragments), the webhook took {}",
        expected.len(),
        ids.len(),
        hook.lock().expect("lock").ids.len()
    );
    assert!(
        fragments <= kills,
        "at most one partial line per kill: {fragments}"
    );
    assert_eq!(
        first_sightings(&ids),
        expected,
        "the file: every event, in order"
    );
    assert!(
        std::fs::read_dir(&out).expect("list").count() > 1,
        "the files rotated during the test"
    );
    let hook = hook.lock().expect("lock");
    assert_eq!(hook.bad_signatures, 0);
    assert_eq!(
        first_sightings(&hook.ids),
        expected,
        "the webhook: every event, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_collector_is_logged_and_shown_without_its_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store");
    store.append(&events(10)).await.expect("events");
    let token = "hec-token-0123456789abcdef";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    // Refuses everything, quoting the Authorization it got back.
    let app = axum::Router::new().fallback(|headers: HeaderMap| async move {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (StatusCode::FORBIDDEN, format!("Invalid token ({auth})"))
    });
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    std::fs::write(dir.path().join("hec.token"), format!("{token}\n")).expect("token");
    std::fs::write(
        dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n\n[[sinks]]\nname = \"splunk\"\ntype = \"http\"\napi = \"splunk\"\n\
             url = \"{base}\"\nsecret_file = \"hec.token\"\n"
        ),
    )
    .expect("config");
    let run = Running::start(dir.path(), &[]);
    let cursor = dir.path().join("trail.db.sinks").join("splunk.cursor");
    let start = Instant::now();
    while Cursor::load(&cursor)
        .ok()
        .flatten()
        .is_none_or(|c| c.last_error.is_none())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failure recorded: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = run.stop().await;
    assert!(
        stderr.contains("403") && stderr.contains("Invalid token"),
        "{stderr}"
    );
    assert!(!stderr.contains(token), "the token is in the log: {stderr}");
    let cursor = Cursor::load(&cursor).expect("read").expect("saved");
    assert_eq!(cursor.seq, 0, "nothing counted as delivered");
    assert!(!format!("{cursor:?}").contains(token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_sinks_lag_and_why_one_is_stalled() {
    let s = crate::running::Service::new("sinkstatus", "create table t (id int primary key)").await;
    let url = format!("sqlite:{}", s.store_file().display());
    let store = pgtrail_store::open(&url).await.expect("store");
    store.append(&events(25)).await.expect("events");
    // A port nothing listens on: the webhook cannot be reached.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    std::fs::write(
        s.dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n\n[[sinks]]\nname = \"file\"\ntype = \"file\"\ndir = \"out\"\n\n\
             [[sinks]]\nname = \"hook\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{closed}/hook\"\n"
        ),
    )
    .expect("config");
    let run = Running::start(s.dir.path(), &[]);
    let start = Instant::now();
    while delivered(s.dir.path(), "file") < 25
        || Cursor::load(&s.dir.path().join("trail.db.sinks/hook.cursor"))
            .ok()
            .flatten()
            .is_none_or(|c| c.last_error.is_none())
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop().await;

    let status = crate::support::pgtrail_in(
        s.dir.path(),
        &["status", "--db", &s.url, "--format", "json"],
        &[],
        None,
    );
    let report: Value = serde_json::from_str(status.ok()).expect("json");
    let sinks = report["sinks"].as_array().expect("sinks");
    assert_eq!(sinks.len(), 2, "{report}");
    assert_eq!(sinks[0]["name"], "file");
    assert_eq!(sinks[0]["delivered_seq"], 25);
    assert_eq!(sinks[0]["lag_events"], 0);
    assert!(sinks[0]["warning"].is_null(), "{report}");
    assert_eq!(sinks[1]["name"], "hook");
    assert_eq!(sinks[1]["delivered_seq"], 0);
    assert_eq!(sinks[1]["lag_events"], 25);
    assert!(sinks[1]["lag_seconds"].as_f64().is_some_and(|s| s >= 0.0));
    let warning = sinks[1]["warning"].as_str().expect("a warning");
    assert!(
        warning.contains("failing") && warning.contains("cannot connect"),
        "{warning}"
    );

    let checked = crate::support::pgtrail_in(
        s.dir.path(),
        &["status", "--db", &s.url, "--check", "--format", "table"],
        &[],
        None,
    );
    assert_eq!(checked.code, 1, "{}", checked.stderr);
    assert!(
        checked.stdout.contains("sinks:") && checked.stdout.contains("WARNING: sink hook"),
        "{}",
        checked.stdout
    );
}

/// A store beside `dir`'s `pgtrail.toml`, holding `first` events, whose
/// `[[sinks]]` part (`sink_toml`, after `[store]`) the caller names.
async fn store_with_sink(
    dir: &Path,
    first: usize,
    sink_toml: &str,
) -> Arc<dyn pgtrail_store::Store> {
    let url = format!("sqlite:{}", dir.join("trail.db").display());
    let store = pgtrail_store::open(&url).await.expect("store");
    store.append(&events(first)).await.expect("first events");
    std::fs::write(
        dir.join("pgtrail.toml"),
        format!("[store]\nurl = \"{url}\"\n\n{sink_toml}"),
    )
    .expect("config");
    store
}

/// `pgtrail run` in `dir`, killed with SIGKILL `rounds` times in the middle
/// of `sink`'s delivery while `batch` events at a time are appended, with
/// `between(round)` called after each kill; then run once more until the
/// sink caught up with the head, which is returned.
async fn killed_while_delivering(
    dir: &Path,
    store: &Arc<dyn pgtrail_store::Store>,
    sink: &str,
    batch: usize,
    rounds: u64,
    mut between: impl FnMut(u64),
) -> i64 {
    let appending = Arc::new(AtomicBool::new(true));
    let appender = {
        let (store, appending) = (store.clone(), appending.clone());
        tokio::spawn(async move {
            while appending.load(Ordering::SeqCst) {
                store.append(&events(batch)).await.expect("append");
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    for round in 0..rounds {
        let before = delivered(dir, sink);
        let mut run = Running::start(dir, &[]);
        let start = Instant::now();
        while delivered(dir, sink) <= before {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no delivery: {}",
                run.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // At a moment that differs each round.
        tokio::time::sleep(Duration::from_millis(19 * round)).await;
        run.0.kill().expect("SIGKILL");
        run.0.wait().expect("reaped");
        between(round);
    }
    appending.store(false, Ordering::SeqCst);
    appender.await.expect("appender");
    let head = store.head().await.expect("head").expect("events").seq;

    let run = Running::start(dir, &[]);
    let start = Instant::now();
    while delivered(dir, sink) < head {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not caught up: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop().await;
    head
}

/// A NATS JetStream sink in `pgtrail run`, killed with SIGKILL in the middle
/// of delivering while events are appended, and the NATS server restarted
/// once between two kills: the stream ends with each event exactly once
/// (redeliveries dropped by `Nats-Msg-Id`), as many messages as events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_nats_restart_leave_each_event_in_the_stream_exactly_once() {
    let mut nats = pgtrail_testkit::nats::NatsServer::start("");
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = format!(
        "[[sinks]]\nname = \"bus\"\ntype = \"nats\"\nurl = \"{}\"\ncreate_stream = true\ntimeout_secs = 2\nbatch = 250\n",
        nats.url()
    );
    let store = store_with_sink(dir.path(), 500, &sink).await;
    let head = killed_while_delivering(dir.path(), &store, "bus", 50, 3, |round| {
        if round == 1 {
            // The server goes away and comes back with its stream on disk.
            nats.stop();
            nats.run();
        }
    })
    .await;

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream("PGTRAIL").await.expect("stream");
    let messages = stream.info().await.expect("info").state.messages;
    assert_eq!(
        messages, head as u64,
        "one message per event: none lost, redeliveries dropped"
    );
}

/// A syslog sink over TCP in `pgtrail run`, killed with SIGKILL in the
/// middle of delivering while events are appended, and the receiver (a real
/// rsyslogd) restarted once between two kills: every event reaches it at
/// least once (a redelivery after a kill may repeat some; each record
/// carries the event id to drop them by).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_receiver_restart_lose_no_event_at_rsyslog() {
    let mut rsyslog = pgtrail_testkit::rsyslog::Rsyslog::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = format!(
        "[[sinks]]\nname = \"siem\"\ntype = \"syslog\"\nurl = \"tcp://127.0.0.1:{}\"\ntimeout_secs = 2\nbatch = 100\n",
        rsyslog.tcp
    );
    let store = store_with_sink(dir.path(), 300, &sink).await;
    killed_while_delivering(dir.path(), &store, "siem", 30, 3, |round| {
        if round == 1 {
            rsyslog.stop();
            rsyslog.run();
        }
    })
    .await;

    let expected: HashSet<String> = store
        .scan(0, 1_000_000)
        .await
        .expect("scan")
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    let received = rsyslog.wait_for(expected.len());
    let ids: HashSet<String> = received
        .iter()
        .filter_map(|message| {
            let msg = message["msg"].as_str()?;
            let event: Value = serde_json::from_str(msg.trim()).ok()?;
            event["id"].as_str().map(str::to_string)
        })
        .collect();
    let missing: Vec<&String> = expected.difference(&ids).collect();
    assert!(
        missing.is_empty(),
        "{} of {} events never reached rsyslog (it took {} messages), e.g. {:?}",
        missing.len(),
        expected.len(),
        received.len(),
        missing.first()
    );
}
