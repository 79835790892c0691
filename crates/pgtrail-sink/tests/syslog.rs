//! The syslog sink against a real rsyslog (Debian's `rsyslog` and
//! `rsyslog-openssl`) that each test starts with its own configuration:
//! UDP (imudp), TCP with octet counting (imptcp) and TLS requiring a client
//! certificate (imtcp with the ossl driver), every message written by the
//! receiver as one JSON line the test reads back.
//!
//! The records are `jsonl` inside the sink's own RFC 5424 header: the
//! `syslog` format is written by another change; the sink sends its
//! messages as they are, with the same framing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pgtrail_core::config::SyslogSinkConfig;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::format::{Encoder, Format};
use pgtrail_sink::sink::{Item, Sink, SinkError};
use pgtrail_sink::syslog::SyslogSink;
use pgtrail_testkit::rsyslog::Rsyslog;
use pgtrail_testkit::TestCa;
use serde_json::Value;

fn sink_config(rsyslog: &Rsyslog, scheme: &str) -> SyslogSinkConfig {
    let port = match scheme {
        "udp" => rsyslog.udp,
        "tcp" => rsyslog.tcp,
        _ => rsyslog.tls,
    };
    let host = if scheme == "tls" {
        "localhost"
    } else {
        "127.0.0.1"
    };
    let mut config = SyslogSinkConfig {
        url: format!("{scheme}://{host}:{port}"),
        hostname: Some("db1.example".into()),
        timeout_secs: 2,
        ..Default::default()
    };
    if scheme == "tls" {
        config.ca_file = Some(rsyslog.path("ca.pem").display().to_string());
        config.cert_file = Some(rsyslog.path("client.pem").display().to_string());
        config.key_file = Some(rsyslog.path("client.key").display().to_string());
    }
    config
}

fn sink(config: &SyslogSinkConfig) -> SyslogSink {
    SyslogSink::new(config, Encoder::new(Format::Jsonl)).expect("sink")
}

/// Statements an application role can make pgtrail carry: a forged
/// second record after a newline, an octet count, brackets and quotes of
/// the structured data, a backslash, multi-byte text.
fn hostile_sql(n: usize) -> String {
    match n % 5 {
        0 => format!(
            "SELECT 1 -- {n}\n<14>1 2026-01-01T00:00:00Z evil forged - - - forged record {n}"
        ),
        1 => format!("SELECT '{n}' \n\n12 <13>1 - - forged - - - also forged"),
        2 => format!("SELECT \"x]\" FROM t -- ] [pgtrail@32473 id=\"forged\"] {n}"),
        3 => format!("SELECT E'\\\\' || 'ünïcødé {n}' \r\n 999999 trailing"),
        _ => format!("UPDATE t SET v = 'plain {n}'"),
    }
}

fn events(from: usize, count: usize) -> Vec<Item> {
    (from..from + count)
        .map(|n| {
            let mut event = Event::new(Source::Proxy, Kind::Statement);
            event.seq = Some(n as i64 + 1);
            event.sql = Some(hostile_sql(n));
            event.table = Some(format!("a.*.>{n}"));
            Item::Event(event)
        })
        .collect()
}

fn event_of(item: &Item) -> &Event {
    match item {
        Item::Event(event) => event,
        Item::Checkpoint(_) => panic!("not an event"),
    }
}

/// The event a received message carries (its MSG is the `jsonl` record),
/// after checking the header the sink wrote around it.
fn parse(message: &Value) -> Event {
    assert_eq!(message["app"], "pgtrail", "{message}");
    assert_eq!(message["msgid"], "statement", "{message}");
    let body = message["msg"].as_str().expect("msg");
    let event: Event = serde_json::from_str(body.trim_start())
        .unwrap_or_else(|e| panic!("MSG is not the event ({e}): {message}"));
    let sd = message["sd"].as_str().expect("sd");
    assert!(
        sd.starts_with(&format!("[pgtrail@32473 id=\"{}\"", event.id)),
        "structured data carries the event id: {sd}"
    );
    event
}

#[tokio::test]
async fn tcp_delivers_every_event_in_order_and_no_value_forges_a_record() {
    let rsyslog = Rsyslog::start();
    let mut sink = sink(&sink_config(&rsyslog, "tcp"));
    let sent = events(0, 60);
    for batch in sent.chunks(7) {
        sink.deliver(batch).await.expect("deliver");
    }
    rsyslog.wait_for(sent.len());
    // A record forged by a value would arrive with the others; give any
    // straggler time to be written.
    std::thread::sleep(Duration::from_millis(500));
    let received = rsyslog.received();
    assert_eq!(
        received.len(),
        sent.len(),
        "one record per event, none forged"
    );
    for (message, item) in received.iter().zip(&sent) {
        let got = parse(message);
        let want = event_of(item);
        assert_eq!(got.id, want.id, "in order");
        assert_eq!(got.sql, want.sql, "statement intact");
        assert_eq!(got.table, want.table);
    }
    assert!(
        !received
            .iter()
            .any(|m| m["app"] == "forged" || m["app"] == "evil"),
        "a forged record reached the receiver"
    );
}

#[tokio::test]
async fn tls_needs_the_receivers_ca_and_presents_the_client_certificate() {
    let rsyslog = Rsyslog::start();
    let sent = events(0, 20);
    let mut sink = sink(&sink_config(&rsyslog, "tls"));
    assert!(sink.destination().starts_with("syslog tls://localhost:"));
    sink.deliver(&sent[..10]).await.expect("deliver");
    sink.deliver(&sent[10..]).await.expect("deliver");
    let received = rsyslog.wait_for(sent.len());
    assert_eq!(received.len(), sent.len());
    for (message, item) in received.iter().zip(&sent) {
        let got = parse(message);
        assert_eq!(got.id, event_of(item).id, "in order");
        assert_eq!(got.sql, event_of(item).sql, "statement intact");
    }

    // A receiver whose certificate another CA signed is an impostor.
    let other = TestCa::new("impostor CA").expect("ca");
    let other_ca = rsyslog.path("other-ca.pem");
    std::fs::write(&other_ca, other.cert_pem()).expect("write");
    let mut config = sink_config(&rsyslog, "tls");
    config.ca_file = Some(other_ca.display().to_string());
    let error = sink_error(&config, &sent[..1]).await;
    assert!(error.contains("TLS handshake failed"), "{error}");

    // Without the client certificate rsyslog refuses the connection: the
    // batch fails rather than being written into a connection it drops.
    let mut config = sink_config(&rsyslog, "tls");
    config.cert_file = None;
    config.key_file = None;
    let error = sink_error(&config, &sent[..1]).await;
    assert!(error.contains("cannot reach"), "{error}");

    // The name checked is the one in the url.
    let mut config = sink_config(&rsyslog, "tls");
    config.url = format!("tls://127.0.0.1:{}", rsyslog.tls);
    sink_error(&config, &sent[..1]).await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rsyslog.received().len(),
        sent.len(),
        "nothing arrived from the refused sinks"
    );
}

async fn sink_error(config: &SyslogSinkConfig, items: &[Item]) -> String {
    let mut sink = sink(config);
    match sink.deliver(items).await {
        Err(error @ SinkError::Unavailable { .. }) => error.to_string(),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn udp_sends_one_datagram_per_event_and_truncates_a_long_one_visibly() {
    let rsyslog = Rsyslog::start();
    let mut sink = sink(&sink_config(&rsyslog, "udp"));
    let mut sent = events(0, 10);
    sink.deliver(&sent).await.expect("deliver");
    let received = rsyslog.wait_for(sent.len());
    assert_eq!(received.len(), sent.len());
    let got: HashSet<_> = received.iter().map(|m| parse(m).id).collect();
    assert!(sent.iter().all(|i| got.contains(&event_of(i).id)));

    // Longer than a datagram (2048 by default): sent cut, marked, counted.
    let mut long = Event::new(Source::Proxy, Kind::Statement);
    long.seq = Some(99);
    long.sql = Some(format!("SELECT '{}'", "é".repeat(5000)));
    sent.push(Item::Event(long.clone()));
    sink.deliver(&sent[sent.len() - 1..])
        .await
        .expect("deliver");
    assert_eq!(sink.truncated(), 1);
    let received = rsyslog.wait_for(sent.len());
    let last = received.last().expect("the long one");
    let raw = last["raw"].as_str().expect("raw");
    assert!(raw.len() <= 2048, "{} bytes", raw.len());
    assert!(raw.contains(" [truncated by pgtrail: "), "{raw}");
    assert!(
        raw.ends_with(" bytes; the whole event is in the store]"),
        "{raw}"
    );
    let sd = last["sd"].as_str().expect("sd");
    assert!(sd.contains(&long.id.to_string()), "the id survives: {sd}");
}

#[tokio::test]
async fn a_receiver_outage_fails_the_batch_and_loses_nothing() {
    let mut rsyslog = Rsyslog::start();
    let mut sink = sink(&sink_config(&rsyslog, "tcp"));
    let sent = events(0, 30);
    sink.deliver(&sent[..10]).await.expect("before the outage");
    assert_eq!(rsyslog.wait_for(10).len(), 10);

    rsyslog.stop();
    let error = sink
        .deliver(&sent[10..20])
        .await
        .expect_err("receiver is down");
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    // The runner retries after a back-off; still down.
    assert!(sink.deliver(&sent[10..20]).await.is_err());

    rsyslog.run();
    sink.deliver(&sent[10..20])
        .await
        .expect("after the restart");
    sink.deliver(&sent[20..30]).await.expect("and on");
    assert_eq!(rsyslog.wait_for(30).len(), 30);

    // A restart between two batches: the sink's connection is dead, and a
    // batch written into it would vanish behind an Ok. The close is seen
    // first and the batch goes on a new connection.
    rsyslog.stop();
    rsyslog.run();
    let more = events(30, 10);
    sink.deliver(&more).await.expect("on a new connection");
    let received = rsyslog.wait_for(40);
    let got: Vec<_> = received.iter().map(|m| parse(m).id).collect();
    let want: Vec<_> = sent.iter().chain(&more).map(|i| event_of(i).id).collect();
    assert_eq!(got, want, "every event, in order, once");
}

#[tokio::test]
async fn a_receiver_that_never_reads_fails_the_batch_within_the_timeout() {
    // Accepts, never reads: the socket buffers fill and writes block.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let config = SyslogSinkConfig {
        url: format!("tcp://127.0.0.1:{port}"),
        timeout_secs: 1,
        ..Default::default()
    };
    let mut sink = sink(&config);
    // 13 MB: more than the kernel buffers on both ends take.
    let big: Vec<Item> = (0..200)
        .map(|n| {
            let mut event = Event::new(Source::Proxy, Kind::Statement);
            event.seq = Some(n + 1);
            event.sql = Some("x".repeat(64 * 1024));
            Item::Event(event)
        })
        .collect();
    let started = Instant::now();
    let error = sink.deliver(&big).await.expect_err("never read");
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    assert!(error.to_string().contains("within timeout_secs"), "{error}");
    // The timeout bounds the write; making the batch's frames comes first.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}

#[test]
fn settings_are_checked_before_any_connection() {
    let bad = |config: SyslogSinkConfig| {
        SyslogSink::new(&config, Encoder::new(Format::Jsonl))
            .expect_err("invalid")
            .to_string()
    };
    let url = |url: &str| SyslogSinkConfig {
        url: url.into(),
        ..Default::default()
    };
    assert!(bad(url("syslog.example:514")).contains("udp://HOST:PORT"));
    assert!(bad(url("http://h:1")).contains("unknown scheme"));
    let mut config = url("tcp://h:601");
    config.ca_file = Some("/nonexistent".into());
    assert!(bad(config).contains("tls:// only"));
    let mut config = url("tls://h:6514");
    config.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(bad(config).contains("/nonexistent/ca.pem"));
    let mut config = url("udp://h");
    config.max_datagram = 100;
    assert!(bad(config).contains("max_datagram"));
    let mut config = url("udp://h");
    config.hostname = Some("two words".into());
    assert!(bad(config).contains("hostname"));
}

/// Prints events/s (figures, not a check): `cargo nextest run -p
/// pgtrail-sink --release --run-ignored ignored-only -E 'test(throughput)' --no-capture`.
#[tokio::test]
#[ignore]
async fn throughput() {
    let rsyslog = Rsyslog::start();
    for scheme in ["tcp", "tls", "tcp", "tls"] {
        let mut sink = sink(&sink_config(&rsyslog, scheme));
        let sent = events(0, 100_000);
        let started = Instant::now();
        for batch in sent.chunks(1000) {
            sink.deliver(batch).await.expect("deliver");
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{scheme}: {:.0} events/s", sent.len() as f64 / secs);
    }
}
