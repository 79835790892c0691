//! The NATS JetStream sink against a real `nats-server -js` (Debian's
//! `nats-server`) that each test starts on a free port with its own store
//! directory, and restarts where the test says.

use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::StreamMessage;
use pgtrail_core::config::NatsSinkConfig;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::format::{Encoder, Format};
use pgtrail_sink::nats::NatsSink;
use pgtrail_sink::sink::{Item, Sink, SinkError};
use pgtrail_testkit::nats::NatsServer;

/// A sink configuration for `server`: the stream made if missing, short
/// timeouts.
fn sink_config(server: &NatsServer) -> NatsSinkConfig {
    NatsSinkConfig {
        url: server.url(),
        create_stream: true,
        timeout_secs: 2,
        ..Default::default()
    }
}

fn events(from: usize, count: usize) -> Vec<Item> {
    (from..from + count)
        .map(|n| {
            let mut event = Event::new(Source::Trigger, Kind::RowChange);
            event.seq = Some(n as i64 + 1);
            // A table name a subject built from event fields would obey.
            event.schema = Some("pgtrail.checkpoints".into());
            event.table = Some(format!("a.*.>{n}"));
            event.sql = Some(format!("INSERT INTO \"a.*.>\" VALUES ({n})\n"));
            Item::Event(event)
        })
        .collect()
}

fn id_of(item: &Item) -> String {
    match item {
        Item::Event(event) => event.id.to_string(),
        Item::Checkpoint(_) => panic!("not an event"),
    }
}

/// The messages the stream holds, in order.
async fn stream_messages(url: &str, stream: &str) -> Vec<StreamMessage> {
    let client = async_nats::connect(url).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client);
    let mut stream = jetstream.get_stream(stream).await.expect("stream");
    let info = stream.info().await.expect("info");
    let (first, count) = (info.state.first_sequence, info.state.messages);
    let mut out = Vec::new();
    for seq in first..first + count {
        out.push(stream.get_raw_message(seq).await.expect("message"));
    }
    out
}

/// What the stream holds: (subject, Nats-Msg-Id, the event) in order.
async fn stream_contents(url: &str, stream: &str) -> Vec<(String, String, Event)> {
    let mut out = Vec::new();
    for message in stream_messages(url, stream).await {
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .unwrap_or_default();
        let event: Event = serde_json::from_slice(&message.payload).expect("payload is the event");
        out.push((message.subject.to_string(), id, event));
    }
    out
}

#[tokio::test]
async fn a_server_restart_mid_stream_ends_with_each_event_exactly_once() {
    let mut server = NatsServer::start("");
    let config = sink_config(&server);
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let sent = events(0, 300);
    let batches: Vec<&[Item]> = sent.chunks(25).collect();
    for batch in &batches[..5] {
        sink.deliver(batch).await.expect("before the restart");
    }

    server.stop();
    let started = Instant::now();
    let error = sink.deliver(batches[5]).await.expect_err("server is down");
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "deliver must not hang"
    );

    server.run();
    // The runner's back-off and retry of the same batch.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sink.deliver(batches[5]).await {
            Ok(()) => break,
            Err(error) if Instant::now() < deadline => {
                eprintln!("retrying: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("never recovered: {error}"),
        }
    }
    // A runner killed after the acknowledgements and before its cursor was
    // saved sends acknowledged batches again.
    sink.deliver(batches[4]).await.expect("redelivery");
    sink.deliver(batches[5]).await.expect("redelivery");
    for batch in &batches[6..] {
        sink.deliver(batch).await.expect("after the restart");
    }

    let held = stream_contents(&server.url(), &config.stream).await;
    assert_eq!(held.len(), sent.len(), "exactly once");
    for ((subject, msg_id, event), item) in held.iter().zip(&sent) {
        assert_eq!(
            subject, "pgtrail.events",
            "the subject is the configured one"
        );
        assert_eq!(*msg_id, id_of(item));
        assert_eq!(event.id.to_string(), id_of(item), "in order");
    }
}

#[tokio::test]
async fn a_frozen_server_fails_the_batch_in_time_and_then_recovers() {
    let server = NatsServer::start("");
    let config = sink_config(&server);
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let sent = events(0, 40);
    sink.deliver(&sent[..20]).await.expect("before");
    // Accepts nothing, answers nothing, closes nothing: a black hole.
    let pid = server.pid().expect("running");
    let server_pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-P", &pid.to_string(), "nats-server"])
            .output()
            .expect("pgrep")
            .stdout,
    )
    .expect("utf-8");
    let server_pid = server_pid.trim().to_string();
    assert!(!server_pid.is_empty(), "nats-server under timeout");
    let signal = |name: &str| {
        Command::new("kill")
            .args([name, &server_pid])
            .status()
            .expect("kill")
    };
    signal("-STOP");
    // kill returns before every thread stopped: wait until they all did.
    let stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{server_pid}/task")).expect("tasks");
        tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stopped() {
        assert!(Instant::now() < deadline, "nats-server did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let result = sink.deliver(&sent[20..]).await;
    let waited = started.elapsed();
    signal("-CONT");
    let error = result.expect_err("frozen");
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    sink.deliver(&sent[20..]).await.expect("thawed");
    let held = stream_contents(&server.url(), &config.stream).await;
    let ids: Vec<_> = held.iter().map(|(_, id, _)| id.clone()).collect();
    let want: Vec<_> = sent.iter().map(id_of).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn a_server_down_at_start_is_waited_for_not_an_error() {
    let mut server = NatsServer::start("");
    server.stop();
    let config = sink_config(&server);
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("down is not a setting to fix");
    let sent = events(0, 10);
    let error = sink.deliver(&sent).await.expect_err("down");
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    server.run();
    sink.deliver(&sent).await.expect("up");
    assert_eq!(
        stream_contents(&server.url(), &config.stream).await.len(),
        10
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_without_showing_the_secret() {
    let server = NatsServer::start(
        "authorization {\n  user: pgtrail\n  password: \"right-horse-battery\"\n}\n",
    );
    let wrong = server.path("wrong-password");
    std::fs::write(&wrong, "wrong-staple-secret\n").expect("write");
    let mut config = sink_config(&server);
    config.url = format!("nats://pgtrail:url-secret@127.0.0.1:{}", server.port());
    config.user = Some("pgtrail".into());
    config.password_file = Some(wrong.display().to_string());
    let error = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect_err("wrong password");
    let text = error.to_string();
    assert!(matches!(error, SinkError::Refused { .. }), "{text}");
    assert!(text.contains("authorization"), "{text}");
    for secret in ["wrong-staple-secret", "right-horse-battery", "url-secret"] {
        assert!(!text.contains(secret), "{text}");
    }

    let right = server.path("password");
    std::fs::write(&right, "right-horse-battery\n").expect("write");
    config.url = format!("nats://127.0.0.1:{}", server.port());
    config.password_file = Some(right.display().to_string());
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("right password");
    assert!(!format!("{sink:?}").contains("right-horse-battery"));
    sink.deliver(&events(0, 3)).await.expect("deliver");

    config.password_file = Some(server.path("missing").display().to_string());
    let error = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect_err("missing file");
    assert!(
        error.to_string().contains("cannot read password_file"),
        "{error}"
    );
}

#[tokio::test]
async fn a_token_and_tls_are_used_as_configured() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = pgtrail_testkit::TestCa::new("nats test CA").expect("ca");
    let server_tls = ca.server(&["localhost"]).expect("cert");
    let file = |name: &str, text: &str| {
        let path = certs.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let ca_file = file("ca.pem", &ca.cert_pem());
    let server = NatsServer::start(&format!(
        "authorization {{ token: \"tok-3141592653\" }}\ntls {{ cert_file: \"{}\"\n key_file: \"{}\" }}\n",
        file("server.pem", &server_tls.cert_pem),
        file("server.key", &server_tls.key_pem),
    ));
    let mut config = sink_config(&server);
    config.url = format!("nats://localhost:{}", server.port());
    config.token_file = Some(file("token", "tok-3141592653\n"));
    config.ca_file = Some(ca_file);
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("token over TLS");
    sink.deliver(&events(0, 3)).await.expect("deliver");

    // An impostor's certificate (another CA): nothing is sent to it.
    let other = pgtrail_testkit::TestCa::new("impostor").expect("ca");
    config.ca_file = Some(file("other.pem", &other.cert_pem()));
    let error = match NatsSink::connect(&config, Encoder::new(Format::Jsonl)).await {
        Err(error) => error,
        Ok(mut sink) => sink.deliver(&events(3, 1)).await.expect_err("impostor"),
    };
    assert!(matches!(error, SinkError::Unavailable { .. }), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(!error.to_string().contains("tok-3141592653"), "{error}");

    // A wrong token: refused, and the token is not in the message.
    config.ca_file = Some(certs.path().join("ca.pem").display().to_string());
    config.token_file = Some(file("wrong", "tok-2718281828\n"));
    let error = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect_err("wrong token");
    assert!(matches!(error, SinkError::Refused { .. }), "{error}");
    assert!(!error.to_string().contains("tok-"), "{error}");
}

#[tokio::test]
async fn without_a_stream_the_sink_stalls_and_says_why() {
    let server = NatsServer::start("");
    let mut config = sink_config(&server);
    config.create_stream = false;
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let error = sink.deliver(&events(0, 2)).await.expect_err("no stream");
    assert!(error.to_string().contains("create_stream"), "{error}");
}

#[tokio::test]
async fn subjects_are_fixed_by_the_configuration() {
    for (key, value) in [
        ("subject", "pgtrail.*"),
        ("subject", "pgtrail.>"),
        ("subject", "pgtrail..events"),
        ("checkpoint_subject", "pgtrail events"),
        ("subject", "pgtrail.checkpoints"),
    ] {
        let mut config = NatsSinkConfig {
            url: "nats://127.0.0.1:1".into(),
            ..Default::default()
        };
        match key {
            "subject" => config.subject = value.into(),
            _ => config.checkpoint_subject = value.into(),
        }
        let error = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
            .await
            .expect_err(value)
            .to_string();
        assert!(error.contains("subject"), "{value}: {error}");
    }
}

/// Makes stream PGTRAIL as the test says, before any sink does.
async fn make_stream(url: &str, config: async_nats::jetstream::stream::Config) {
    let client = async_nats::connect(url).await.expect("connect");
    async_nats::jetstream::new(client)
        .create_stream(config)
        .await
        .expect("stream");
}

#[tokio::test]
async fn a_full_stream_fails_the_batch_with_jetstreams_reason() {
    let server = NatsServer::start("");
    let config = sink_config(&server);
    make_stream(
        &server.url(),
        async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone(), config.checkpoint_subject.clone()],
            max_messages: 5,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        },
    )
    .await;
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let sent = events(0, 8);
    let error = sink.deliver(&sent).await.expect_err("the stream is full");
    assert!(matches!(error, SinkError::Refused { .. }), "{error}");
    assert!(
        error.to_string().contains("maximum messages exceeded"),
        "{error}"
    );
    // Handed again (the runner's retry), it fails again: never counted.
    let error = sink.deliver(&sent).await.expect_err("still full");
    assert!(error.to_string().contains("maximum messages"), "{error}");
    assert_eq!(
        stream_contents(&server.url(), &config.stream).await.len(),
        5
    );
}

/// An attacker who reads the event subject answers every message on its
/// reply subject before JetStream can, with acknowledgements it makes up.
/// The stream takes only the checkpoint subject, so it holds no event: no
/// forged acknowledgement may make a delivery count.
#[tokio::test]
async fn forged_acknowledgements_do_not_count_for_events_the_stream_lacks() {
    use futures_util::StreamExt as _;

    let server = NatsServer::start("");
    let mut config = sink_config(&server);
    config.create_stream = false;
    make_stream(
        &server.url(),
        async_nats::jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.checkpoint_subject.clone()],
            ..Default::default()
        },
    )
    .await;
    // One real message at sequence 1, for forgeries that point at it.
    let client = async_nats::connect(server.url()).await.expect("connect");
    let jetstream = async_nats::jetstream::new(client.clone());
    jetstream
        .publish(config.checkpoint_subject.clone(), "real".into())
        .await
        .expect("publish")
        .await
        .expect("stored");

    let forgeries = [
        r#"{"stream":"PGTRAIL","seq":SEQ}"#,
        r#"{"stream":"PGTRAIL","seq":1,"duplicate":true}"#,
        r#"{"stream":"PGTRAIL","seq":SEQ,"duplicate":true}"#,
    ];
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let sent = events(0, 20);
    for forgery in forgeries {
        let mut seen = client.subscribe(config.subject.clone()).await.expect("sub");
        // A round trip after the subscription: the server has it.
        jetstream
            .get_stream(&config.stream)
            .await
            .expect("round trip");
        let forger = client.clone();
        let attacker = tokio::spawn(async move {
            let mut seq = 100;
            while let Some(message) = seen.next().await {
                seq += 1;
                if let Some(reply) = message.reply {
                    let ack = forgery.replace("SEQ", &seq.to_string());
                    forger.publish(reply, ack.into()).await.expect("forge");
                }
            }
        });
        let error = sink
            .deliver(&sent)
            .await
            .expect_err("the stream holds none of them");
        attacker.abort();
        assert!(
            matches!(error, SinkError::Refused { .. }),
            "{forgery}: {error}"
        );
        assert!(
            error.to_string().contains("someone else answers"),
            "{forgery}: {error}"
        );
        let held: Vec<_> = stream_messages(&server.url(), &config.stream)
            .await
            .into_iter()
            .map(|message| message.payload)
            .collect();
        assert_eq!(held, ["real"], "{forgery}");
    }
}

/// Prints events/s (figures, not a check): `cargo nextest run -p
/// pgtrail-sink --release --run-ignored ignored-only -E 'test(throughput)' --no-capture`.
#[tokio::test]
#[ignore]
async fn throughput() {
    let server = NatsServer::start("max_payload: 8MB\n");
    let config = sink_config(&server);
    let mut sink = NatsSink::connect(&config, Encoder::new(Format::Jsonl))
        .await
        .expect("connect");
    let sent = events(0, 100_000);
    for round in 0..3 {
        let started = Instant::now();
        for batch in sent.chunks(1000) {
            sink.deliver(batch).await.expect("deliver");
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!("round {round}: {:.0} events/s", sent.len() as f64 / secs);
    }
}
