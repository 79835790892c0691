//! The raw path: `jsonl` written from events as stored (`Store::scan_raw`)
//! is byte for byte what the decoded path writes; a body edited in the
//! store file goes out as stored; and a file sink killed (SIGKILL) in the
//! middle of its batches neither skips nor reorders an event.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use pgtrail_core::event::Channel;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_sink::file::{FileOptions, FileSink};
use pgtrail_sink::format::{Encoder, Format};
use pgtrail_sink::sink::{Item, Sink};
use serde_json::{json, Value};

use common::{append_events, runner_for, sqlite_store, store_with_edited_body};

/// Events with every field, awkward text and numbers, a deep row image.
fn awkward_events() -> Vec<Event> {
    let at = Utc
        .timestamp_micros(1_774_000_000_123_456)
        .single()
        .expect("time");
    let mut full = Event::at(Source::Cdc, Kind::RowChange, at);
    full.new = serde_json::from_str(
        r#"{"id": 7, "amount": "12345678901234567890.0000000001", "ratio": 0.10,
            "big": 123456789012345678901234567890, "tags": ["a", "b,c", null],
            "doc": {"z": 1, "a": [1.50, {"k": "v}\"]"}]}, "note": "naïve — 東京 \"q\" \\ \u0001",
            "empty": "", "nothing": null, "flag": true, "e": 1e5}"#,
    )
    .expect("json");
    full.old = json!({"id": 7, "id2": {"id": ",\"id\":\"x\""}})
        .as_object()
        .cloned();
    full.pk = json!({"id": "7", "region": "eu"}).as_object().cloned();
    full.schema = Some("Weird \"Schema\"".into());
    full.table = Some("t.1".into());
    full.operation = Some("UPDATE".into());
    full.changed = vec!["amount".into(), "doc".into()];
    full.partial = vec!["blob".into()];
    full.db_user = Some("app".into());
    full.app_user = Some("o'brien@example.com".into());
    full.client_addr = Some("10.1.2.3".into());
    full.client_port = Some(54321);
    full.application_name = Some("billing-api".into());
    full.backend_pid = Some(4242);
    full.session_id = Some("64f1.2a".into());
    // A nested "id" member before the top-level one must not be taken for it.
    full.context = json!({"id": "not-the-event", "tenant": 42, "nested": {"b": [true, null]}})
        .as_object()
        .cloned();
    full.database = Some("shop".into());
    full.objects = vec!["public.a".into(), "public.b".into()];
    full.sql = Some("update t set amount = $1 -- }{ \"\t".into());
    full.params = Some(vec![
        json!("1.00"),
        Value::Null,
        json!(3),
        json!({"a": [1]}),
    ]);
    full.class = Some("WRITE".into());
    full.command_tag = Some("UPDATE 1".into());
    full.rows = Some(1);
    full.duration_us = Some(1234);
    full.sqlstate = Some("23505".into());
    full.error = Some("duplicate key value violates unique constraint \"u\"".into());
    full.xid = Some(9_000_000_000);
    full.lsn = Some("16/B374D848".into());
    full.committed_at = Some(
        Utc.timestamp_micros(1_774_000_000_999_999)
            .single()
            .expect("time"),
    );
    full.tx_seq = Some(3);
    full.vouch_server_fields();
    full.claim("app_user", Channel::Comment);

    let sparse = Event::new(Source::Proxy, Kind::Session);

    let mut deep = Event::new(Source::Trigger, Kind::RowChange);
    let depth = 3_000;
    let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    deep.new = serde_json::from_str::<Value>(&format!(r#"{{"deep": {text}}}"#))
        .ok()
        .and_then(|v| v.as_object().cloned());

    vec![full, sparse, deep]
}

#[tokio::test]
async fn raw_jsonl_is_byte_for_byte_the_decoded_jsonl() {
    let (_dir, _url, store) = sqlite_store().await;
    store.append(&awkward_events()).await.expect("append");
    append_events(store.as_ref(), 20).await;
    let decoded = store.scan(0, 1_000).await.expect("scan");
    let raw = store.scan_raw(0, 1_000).await.expect("scan_raw");
    assert_eq!(decoded.len(), 23);
    assert_eq!(raw.len(), decoded.len());
    let encoder = Encoder::new(Format::Jsonl);
    for (event, raw) in decoded.iter().zip(&raw) {
        let (mut want, mut got) = (Vec::new(), Vec::new());
        encoder.encode(event, &mut want).expect("encode");
        encoder.encode_raw(raw, &mut got).expect("encode_raw");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "event {}",
            raw.seq
        );
    }
    // The other formats take the decoded path from a raw event.
    for format in [Format::Csv, Format::Ocsf] {
        let encoder = Encoder::new(format);
        let (mut want, mut got) = (Vec::new(), Vec::new());
        encoder.encode(&decoded[0], &mut want).expect("encode");
        encoder.encode_raw(&raw[0], &mut got).expect("encode_raw");
        assert_eq!(got, want, "{format}");
    }
}

/// Someone with the store file rewrites a body (a value changed, a member
/// added): the sink hands it on as stored, never "fixed"; its hash no
/// longer matches, which is what `verify` reports.
#[tokio::test]
async fn a_body_edited_in_the_store_file_is_delivered_as_stored() {
    let (_dir, store, raw) =
        store_with_edited_body(r#"'"db_user":"mallory","zz_extra":[1,{"a":"}"}]'"#).await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut sink = FileSink::new(options(out.path()), Format::Jsonl);
    assert!(sink.reads_raw());
    let items: Vec<Item<_>> = raw.iter().cloned().map(Item::Event).collect();
    sink.deliver_raw(&items).await.expect("delivered");
    let text = std::fs::read_to_string(sink.current_path()).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let edited: Value = serde_json::from_str(lines[1]).expect("a JSON line");
    assert_eq!(edited["seq"], 2);
    assert_eq!(edited["db_user"], "mallory", "delivered as stored");
    assert_eq!(
        edited["zz_extra"],
        json!([1, {"a": "}"}]),
        "unknown member kept"
    );
    assert_eq!(
        edited["hash"],
        raw[1].hash.as_str(),
        "the stored seal, unchanged"
    );
    assert!(
        lines[1].contains(r#""db_user":"mallory","zz_extra":[1,{"a":"}"}]"#),
        "in its place, byte for byte: {}",
        lines[1]
    );
    // verify names it.
    let report = pgtrail_store::verify(store.as_ref(), None)
        .await
        .expect("verify");
    assert!(!report.ok(), "verify flags the edited event: {report:?}");
}

/// Someone with the store file puts a line break into a stored body, to
/// make a collector tailing the file read a record of their own. As JSON
/// whitespace the event is written on one line (through the decoder); as
/// a second "record" after a value the body is no longer an event and the
/// batch is refused, naming it, with nothing of it in the file.
#[tokio::test]
async fn a_line_break_edited_into_a_stored_body_never_makes_a_second_line() {
    for (edit, forged) in [
        (r#"'"db_user":' || char(10) || '"mallory"'"#, false),
        (
            r#"'"db_user":1' || char(13) || char(10) || '{"seq":99,"db_user":"forged"}'"#,
            true,
        ),
    ] {
        let (_dir, _store, raw) = store_with_edited_body(edit).await;
        assert!(raw[1].body.contains('\n'), "the edit is stored");
        let out = tempfile::tempdir().expect("tempdir");
        let mut sink = FileSink::new(options(out.path()), Format::Jsonl);
        let items: Vec<Item<_>> = raw.iter().cloned().map(Item::Event).collect();
        let delivered = sink.deliver_raw(&items).await;
        let text = std::fs::read_to_string(sink.current_path()).unwrap_or_default();
        if forged {
            let error = delivered.expect_err("refused");
            assert!(
                matches!(
                    error,
                    pgtrail_sink::sink::SinkError::Format(
                        pgtrail_sink::format::FormatError::Stored { seq: 2, .. }
                    )
                ),
                "names seq 2: {error}"
            );
            assert!(!text.contains("forged"), "nothing of it written: {text}");
        } else {
            delivered.expect("delivered");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 3, "{text}");
            let edited: Value = serde_json::from_str(lines[1]).expect("a JSON line");
            assert_eq!(edited["seq"], 2);
            assert_eq!(edited["db_user"], "mallory", "delivered as stored");
        }
    }
}

fn options(dir: &Path) -> FileOptions {
    FileOptions {
        dir: dir.to_path_buf(),
        prefix: "pgtrail-events".into(),
        rotate_bytes: Some(200_000),
        rotate_every: None,
    }
}

const CHILD_STORE: &str = "PGTRAIL_RAW_CHILD_STORE";
const CHILD_OUT: &str = "PGTRAIL_RAW_CHILD_OUT";

/// The process the kill test kills: a runner of a raw file sink. Without
/// its environment it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_file_runner_child() {
    let (Ok(url), Ok(out)) = (std::env::var(CHILD_STORE), std::env::var(CHILD_OUT)) else {
        return;
    };
    let out = Path::new(&out);
    let sink = FileSink::new(options(out), Format::Jsonl);
    let mut runner = runner_for(&url, out, Box::new(sink));
    runner.batch = 37;
    let (_stop, stop) = tokio::sync::watch::channel(false);
    runner.run(stop).await;
}

fn start_child(url: &str, out: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["raw_file_runner_child", "--exact", "--nocapture"])
        .env(CHILD_STORE, url)
        .env(CHILD_OUT, out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the runner")
}

/// Every line of the sink's files, oldest file first. Read while the
/// runner writes, a file can be rotated (renamed) between the listing and
/// its reading: the whole read is then made again.
fn delivered(out: &Path) -> Vec<String> {
    loop {
        match read_delivered(out) {
            Ok(lines) => return lines,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn read_delivered(out: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            names.push(path);
        }
    }
    // Rotated names carry their time; the current file is the newest.
    names.sort_by_key(|p| (p.ends_with("pgtrail-events.jsonl"), p.clone()));
    let mut lines = Vec::new();
    for name in &names {
        lines.extend(std::fs::read_to_string(name)?.lines().map(str::to_string));
    }
    Ok(lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_file_sink_killed_mid_batch_skips_and_reorders_nothing() {
    let (_dir, url, store) = sqlite_store().await;
    let total = 3_000;
    append_events(store.as_ref(), total).await;
    let out = tempfile::tempdir().expect("tempdir");
    let seqs = |out: &Path| -> Vec<i64> {
        delivered(out)
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| v["seq"].as_i64())
            .collect()
    };
    // SIGKILLed at growing counts, then left to finish.
    for target in [total / 4, total / 2, 3 * total / 4] {
        let mut child = start_child(&url, out.path());
        let deadline = Instant::now() + Duration::from_secs(60);
        while seqs(out.path()).len() < target {
            assert!(Instant::now() < deadline, "the runner makes progress");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let mut child = start_child(&url, out.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    while seqs(out.path()).last() != Some(&(total as i64)) {
        assert!(Instant::now() < deadline, "the runner finishes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    // Every event, in chain order; a restart only repeats events after the
    // saved cursor (at least once), it never skips or goes back past one.
    let got = seqs(out.path());
    let mut next = 1;
    for seq in &got {
        assert!(*seq <= next, "event {next} skipped: {seq} came first");
        if *seq == next {
            next += 1;
        }
    }
    assert_eq!(next, total as i64 + 1, "every event delivered");
    // Each complete line is the decoded path's line for its event.
    let events = store.scan(0, total).await.expect("scan");
    let encoder = Encoder::new(Format::Jsonl);
    for line in delivered(out.path()) {
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue; // the remains of a write the kill cut short
        };
        let seq = value["seq"].as_i64().expect("seq");
        let mut want = Vec::new();
        encoder
            .encode(&events[(seq - 1) as usize], &mut want)
            .expect("encode");
        assert_eq!(format!("{line}\n").as_bytes(), want.as_slice());
    }
}
