//! `pgtrail export --format F` and `--follow` against a real store: each
//! record format from the sample trail, the same filters as `log`, and a
//! follow that sees events appended while it runs exactly once, in chain
//! order, and stops cleanly on Ctrl-C.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind, Source};
use serde_json::Value;

use crate::support::{Backend, Trail};

#[tokio::test]
async fn export_writes_each_record_format() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let all = trail.run(&["export"]).events();
    assert_eq!(all.len(), 20);
    let jsonl = trail.run(&["export", "--format", "jsonl"]).events();
    assert_eq!(jsonl, all, "--format jsonl is the default's output");

    for format in ["ocsf", "ecs"] {
        let run = trail.run(&["export", "--format", format]);
        let records: Vec<Value> = run
            .ok()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(records.len(), 20, "{format}");
        for (record, event) in records.iter().zip(&all) {
            let id = if format == "ocsf" {
                &record["metadata"]["uid"]
            } else {
                &record["event"]["id"]
            };
            assert_eq!(id, &event.id.to_string(), "{format}: chain order");
        }
    }
    let ocsf = trail.run(&["export", "--format", "ocsf", "--kind", "session"]);
    for line in ocsf.ok().lines() {
        let record: Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(record["class_uid"], 3002, "sessions are Authentication");
    }

    let cef = trail.run(&["export", "--format", "cef", "--table", "public.users"]);
    let lines: Vec<&str> = cef.ok().lines().collect();
    assert_eq!(lines.len(), 9, "the same filter as log: {lines:#?}");
    assert!(lines
        .iter()
        .all(|l| l.starts_with("CEF:0|pgtrail|pgtrail|")));
    assert!(lines.iter().all(|l| l.contains("cs4=public.users")));

    let syslog = trail.run(&["export", "--format", "syslog", "--facility", "local4"]);
    let lines: Vec<&str> = syslog.ok().lines().collect();
    assert_eq!(lines.len(), 20, "one message per line");
    for (line, event) in lines.iter().zip(&all) {
        let severity = if event.kind == Kind::Alarm {
            1
        } else if event.failed() {
            4
        } else {
            6
        };
        assert!(
            line.starts_with(&format!("<{}>1 ", 20 * 8 + severity)),
            "{line}"
        );
        assert!(line.contains(&format!("id=\"{}\"", event.id)), "{line}");
    }

    let out = trail.path("trail.csv");
    trail
        .run(&[
            "export",
            "--format",
            "csv",
            "--out",
            out.to_str().expect("utf8"),
        ])
        .ok();
    let csv = std::fs::read_to_string(&out).expect("csv written");
    assert!(
        csv.starts_with("seq,id,source,kind,captured_at,"),
        "{csv:.200}"
    );
    assert!(csv.ends_with("\r\n"));
    assert_eq!(
        csv.matches(",row_change,").count()
            + csv.matches(",statement,").count()
            + csv.matches(",ddl,").count()
            + csv.matches(",session,").count()
            + csv.matches(",alarm,").count(),
        20,
        "every event a line"
    );

    let json = trail.run(&["export", "--format", "json"]).json();
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(20),
        "json stays an array"
    );
}

#[tokio::test]
async fn record_formats_are_refused_where_they_mean_nothing() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let line = trail.run(&["log", "--format", "cef"]).error().to_string();
    assert!(line.contains("only `pgtrail export`"), "{line}");
    let line = trail
        .run(&["export", "--format", "table"])
        .error()
        .to_string();
    assert!(line.contains("not a table"), "{line}");
    let line = trail
        .run(&["export", "--format", "json", "--follow"])
        .error()
        .to_string();
    assert!(line.contains("--follow"), "{line}");
    let line = trail
        .run(&["export", "--format", "cef", "--facility", "auth"])
        .error()
        .to_string();
    assert!(line.contains("--facility"), "{line}");
    let run = trail.run(&["export", "--format", "syslog", "--facility", "kern"]);
    assert_eq!(run.code, 2, "{run:?}");
}

/// `count` new row changes of table `bulk`, every other one a DELETE, as
/// JSON Lines for `pgtrail import`.
fn batch(count: usize) -> String {
    (0..count)
        .map(|i| {
            let mut e = Event::new(Source::Cdc, Kind::RowChange);
            e.schema = Some("public".into());
            e.table = Some("bulk".into());
            e.operation = Some(if i % 2 == 0 { "INSERT" } else { "DELETE" }.into());
            e.pk = serde_json::json!({ "id": i.to_string() })
                .as_object()
                .cloned();
            serde_json::to_string(&e).expect("json") + "\n"
        })
        .collect()
}

/// Starts `pgtrail export ARGS --follow --out OUT` on the trail.
fn follow(trail: &Trail, args: &[&str], out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args(["export", "--follow", "--out", out.to_str().expect("utf8")])
        .args(args)
        .current_dir(trail.dir.path())
        .env_clear()
        .env("PGTRAIL_STORE", &trail.url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start export --follow")
}

/// Waits until `out` holds `lines` lines (and gives it a moment more, so a
/// repeated record would show).
async fn wait_for_lines(out: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = std::fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .count();
        if now >= lines {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{now} of {lines} lines after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
}

/// Ctrl-C, then the exit status and standard error.
fn interrupt(child: Child) -> (Option<i32>, String) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn follow_writes_each_new_event_once_in_chain_order() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let out = trail.path("follow.jsonl");
    let child = follow(&trail, &[], &out);
    wait_for_lines(&out, 20).await;
    // Appends while it follows: three imports, one big enough to span pages
    // of the follower's reads.
    for count in [1, 50, 12_000] {
        let run = trail.run_stdin(
            &["import", "-", "--format", "json"],
            batch(count).as_bytes(),
        );
        assert_eq!(run.json()["imported"], count, "{run:?}");
    }
    wait_for_lines(&out, 20 + 1 + 50 + 12_000).await;
    let (code, stderr) = interrupt(child);
    assert_eq!(code, Some(0), "Ctrl-C ends it cleanly: {stderr}");
    assert!(stderr.contains("12071 events written"), "{stderr}");

    let seqs: Vec<i64> = std::fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| {
            serde_json::from_str::<Event>(l)
                .expect("an event")
                .seq
                .expect("sealed")
        })
        .collect();
    let expected: Vec<i64> = (1..=12_071).collect();
    assert!(
        seqs == expected,
        "every event once, in order ({} lines)",
        seqs.len()
    );
}

#[tokio::test]
async fn follow_with_filters_writes_what_export_would() {
    let trail = Trail::new(Backend::Sqlite).await;
    trail.import_sample();
    let before = trail
        .run(&["export", "--op", "DELETE", "--format", "cef"])
        .ok()
        .lines()
        .count();
    let out = trail.path("follow.cef");
    let child = follow(&trail, &["--op", "DELETE", "--format", "cef"], &out);
    wait_for_lines(&out, before).await;
    for count in [7, 300] {
        trail
            .run_stdin(
                &["import", "-", "--format", "json"],
                batch(count).as_bytes(),
            )
            .ok();
    }
    let expected = trail.run(&["export", "--op", "DELETE", "--format", "cef"]);
    let expected: Vec<&str> = expected.ok().lines().collect();
    assert_eq!(expected.len(), before + 3 + 150);
    wait_for_lines(&out, expected.len()).await;
    let (code, stderr) = interrupt(child);
    assert_eq!(code, Some(0), "{stderr}");
    let written = std::fs::read_to_string(&out).expect("read");
    let ids = |lines: Vec<&str>| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                l.split(" externalId=")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .expect("externalId")
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        ids(written.lines().collect()),
        ids(expected),
        "the follow wrote exactly what a later export writes, in the same order"
    );
}

/// An application's hostile values through a real store: each format still
/// writes one record per event (one line for the line formats), and the
/// values come back.
#[tokio::test]
async fn hostile_values_in_the_store_stay_one_record_each() {
    let trail = Trail::new(Backend::Sqlite).await;
    let hostile = [
        "x\nCEF:0|evil|evil|1|forged|forged|10|suser=root",
        "y\r\n<13>1 2026-01-01T00:00:00Z evil evil - - - forged",
        "] [pgtrail@32473 db_user=\"root\"] \\\" suser=root |",
        "=HYPERLINK(\"http://evil.example\",\"click\")",
    ];
    let lines: String = hostile
        .iter()
        .map(|h| {
            let mut e = Event::new(Source::Proxy, Kind::Statement);
            e.db_user = Some("app".into());
            e.app_user = Some(h.to_string());
            e.sql = Some(h.to_string());
            e.operation = Some(h.to_string());
            e.new = serde_json::json!({ *h: h }).as_object().cloned();
            serde_json::to_string(&e).expect("json") + "\n"
        })
        .collect();
    trail
        .run_stdin(&["import", "-", "--format", "json"], lines.as_bytes())
        .ok();
    for format in ["jsonl", "ocsf", "ecs", "cef", "syslog"] {
        let run = trail.run(&["export", "--format", format]);
        let records: Vec<&str> = run.ok().lines().collect();
        assert_eq!(records.len(), hostile.len(), "{format}: {records:#?}");
        for (record, h) in records.iter().zip(hostile) {
            match format {
                "cef" => {
                    assert!(record.starts_with("CEF:0|pgtrail|pgtrail|"), "{record}");
                    let extension = cef_extension(record);
                    assert_eq!(extension.matches(" suser=").count(), 1, "{record}");
                    assert!(extension.contains(" suser=app "), "{record}");
                }
                "syslog" => {
                    assert!(record.starts_with('<'), "{record}");
                    assert_eq!(record.matches("db_user=\"").count(), 1, "{record}");
                    assert!(record.contains(" db_user=\"app\""), "{record}");
                    let msg = &record[record.find("] {").expect("MSG") + 2..];
                    let event: Event = serde_json::from_str(msg).expect("MSG is the event");
                    assert_eq!(event.app_user.as_deref(), Some(h));
                }
                _ => {
                    let value: Value = serde_json::from_str(record).expect("JSON");
                    let sql = match format {
                        "jsonl" => &value["sql"],
                        "ocsf" => &value["query_info"]["query_string"],
                        _ => &value["db"]["query"]["text"],
                    };
                    assert_eq!(sql, h, "{format}");
                }
            }
        }
    }
    let csv = trail.run(&["export", "--format", "csv"]);
    assert!(
        csv.ok()
            .contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\","),
        "the formula is text: {}",
        csv.stdout
    );
}

/// What follows a CEF line's seventh unescaped `|`.
fn cef_extension(line: &str) -> &str {
    let mut pipes = 0;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '|' => {
                pipes += 1;
                if pipes == 7 {
                    return &line[i + 1..];
                }
            }
            _ => {}
        }
    }
    panic!("fewer than seven header fields: {line}")
}
