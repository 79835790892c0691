//! The file sink: rotation by size and by time into names a collector can
//! glob, and a crash's partial last line ended and followed by the record
//! whole.

mod common;

use std::path::Path;
use std::time::Duration;

use pgtrail_sink::file::{FileOptions, FileSink};
use pgtrail_sink::format::Format;
use pgtrail_sink::sink::{Item, Sink};
use serde_json::Value;

use common::{append_events, sqlite_store};

fn options(dir: &Path) -> FileOptions {
    FileOptions {
        dir: dir.to_path_buf(),
        prefix: "pgtrail-events".into(),
        rotate_bytes: None,
        rotate_every: None,
    }
}

/// The files of `dir`: rotated ones by their first seq, then the current.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pgtrail-events"))
        .collect();
    let first_seq = |name: &str| -> i64 {
        match name
            .strip_suffix(".jsonl")
            .and_then(|n| n.rsplit('-').next())
        {
            Some(seq) if name != "pgtrail-events.jsonl" => seq.parse().expect("seq in the name"),
            _ => i64::MAX,
        }
    };
    names.sort_by_key(|n| first_seq(n));
    names
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn files_rotate_by_size_into_names_that_sort_and_lose_nothing() {
    let (_store_dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 100).await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut sink = FileSink::new(
        FileOptions {
            rotate_bytes: Some(4_000),
            ..options(out.path())
        },
        Format::Jsonl,
    );
    for seq in (0..100).step_by(10) {
        let items: Vec<Item> = store
            .scan(seq, 10)
            .await
            .expect("scan")
            .into_iter()
            .map(Item::Event)
            .collect();
        sink.deliver(&items).await.expect("delivered");
    }
    let names = files(out.path());
    assert!(names.len() > 3, "rotated: {names:?}");
    assert_eq!(
        names.last().map(String::as_str),
        Some("pgtrail-events.jsonl")
    );
    let mut seqs = Vec::new();
    for name in &names {
        let lines = lines(&out.path().join(name));
        let first: Value = serde_json::from_str(&lines[0]).expect("json");
        if name != "pgtrail-events.jsonl" {
            // pgtrail-events-20261206T181500.123Z-41.jsonl
            let parts: Vec<&str> = name.trim_end_matches(".jsonl").split('-').collect();
            assert_eq!(parts.len(), 4, "{name}");
            assert!(parts[2].len() == 20 && parts[2].ends_with('Z'), "{name}");
            assert_eq!(
                first["seq"].as_i64().map(|s| s.to_string()).as_deref(),
                Some(parts[3])
            );
            let size = std::fs::metadata(out.path().join(name))
                .expect("meta")
                .len();
            assert!(size >= 4_000, "{name} rotated at {size} bytes");
        }
        for line in lines {
            let event: Value = serde_json::from_str(&line).expect("every line a record");
            seqs.push(event["seq"].as_i64().expect("seq"));
        }
    }
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
}

#[tokio::test]
async fn files_rotate_by_time() {
    let (_store_dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 3).await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut sink = FileSink::new(
        FileOptions {
            rotate_every: Some(Duration::from_millis(300)),
            ..options(out.path())
        },
        Format::Jsonl,
    );
    let events = store.scan(0, 3).await.expect("scan");
    sink.deliver(&[Item::Event(events[0].clone())])
        .await
        .expect("first");
    sink.deliver(&[Item::Event(events[1].clone())])
        .await
        .expect("young file");
    assert_eq!(files(out.path()).len(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    sink.deliver(&[Item::Event(events[2].clone())])
        .await
        .expect("old file");
    let names = files(out.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].ends_with("-1.jsonl"), "{names:?}");
    assert_eq!(lines(&out.path().join(&names[0])).len(), 2);
    assert_eq!(lines(&out.path().join(&names[1])).len(), 1);
}

#[tokio::test]
async fn a_partial_last_line_is_ended_and_its_record_follows_whole() {
    let (_store_dir, _url, store) = sqlite_store().await;
    append_events(store.as_ref(), 5).await;
    let events = store.scan(0, 5).await.expect("scan");
    let out = tempfile::tempdir().expect("tempdir");
    let current = out.path().join("pgtrail-events.jsonl");
    // What a kill -9 in the middle of writing event 3 leaves.
    let mut text = String::new();
    for event in &events[..2] {
        text.push_str(&serde_json::to_string(event).expect("json"));
        text.push('\n');
    }
    let third = serde_json::to_string(&events[2]).expect("json");
    text.push_str(&third[..third.len() / 2]);
    std::fs::write(&current, &text).expect("write");

    let mut sink = FileSink::new(options(out.path()), Format::Jsonl);
    let items: Vec<Item> = events[2..].iter().cloned().map(Item::Event).collect();
    sink.deliver(&items).await.expect("delivered");
    let lines = lines(&current);
    assert_eq!(lines.len(), 6);
    assert!(
        std::fs::read_to_string(&current)
            .expect("read")
            .starts_with(&text),
        "append only: a tailer's offset stays valid"
    );
    assert_eq!(
        lines[2],
        third[..third.len() / 2],
        "the fragment, on its own line"
    );
    assert!(
        serde_json::from_str::<Value>(&lines[2]).is_err(),
        "a reader skips it"
    );
    let seqs: Vec<i64> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| v["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every record whole");
}
