//! `import` and `export`: exact round trips, re-sealing, duplicates, bad lines.

use pgtrail_core::Event;

use crate::both_backends;
use crate::support::{sample_events, Trail, SAMPLE};

both_backends!(
    export_import_round_trip,
    reimport_skips_duplicates,
    a_bad_line_writes_nothing_of_its_batch,
    export_filters
);

/// Events without what the store assigns.
fn unsealed(events: Vec<Event>) -> Vec<Event> {
    events.into_iter().map(Event::unsealed).collect()
}

async fn export_import_round_trip(trail: Trail) {
    trail.import_sample();
    let exported = trail.run(&["export"]);
    let first = exported.events();
    assert_eq!(
        unsealed(first.clone()),
        sample_events(),
        "every field of every event survives"
    );
    assert!(
        first
            .iter()
            .all(|e| e.hash.is_some() && e.prev_hash.is_some()),
        "export includes the seal"
    );

    // Into a fresh store through a file and through stdin: the same events again.
    let out = trail.path("export.jsonl");
    trail
        .run(&["export", "--out", out.to_str().expect("utf8")])
        .ok();
    let other = trail.another_store().await;
    let imported = crate::support::pgtrail_in(
        trail.dir.path(),
        &[
            "--store",
            &other,
            "import",
            out.to_str().expect("utf8"),
            "--format",
            "table",
        ],
        &[],
        None,
    );
    assert!(imported.ok().contains("imported 20 events"), "{imported:?}");
    let again =
        crate::support::pgtrail_in(trail.dir.path(), &["--store", &other, "export"], &[], None)
            .events();
    assert_eq!(unsealed(again.clone()), unsealed(first.clone()));
    assert_eq!(
        again, first,
        "the same events in the same order seal to the same chain"
    );

    let piped = trail.another_store().await;
    let run = crate::support::pgtrail_in(
        trail.dir.path(),
        &["--store", &piped, "import", "-", "--format", "table"],
        &[],
        Some(exported.stdout.as_bytes()),
    );
    assert!(run.ok().contains("imported 20 events"), "{run:?}");
}

async fn reimport_skips_duplicates(trail: Trail) {
    trail.import_sample();
    let again = trail.run(&["import", SAMPLE, "--format", "table"]);
    assert!(
        again.ok().contains("imported 0 events") && again.ok().contains("20 skipped as duplicates"),
        "{again:?}"
    );
    let json = trail.run(&["import", SAMPLE, "--format", "json"]).json();
    assert_eq!(
        (json["imported"].as_u64(), json["duplicates"].as_u64()),
        (Some(0), Some(20)),
        "{json}"
    );
    assert_eq!(trail.run(&["log"]).events().len(), 20);
}

async fn a_bad_line_writes_nothing_of_its_batch(trail: Trail) {
    let mut lines: Vec<String> = std::fs::read_to_string(SAMPLE)
        .expect("sample")
        .lines()
        .map(str::to_string)
        .collect();
    lines[2] = lines[2].replace("\"captured_at\"", "\"captured\"");
    let file = trail.path("bad.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let line = trail
        .run(&["import", file.to_str().expect("utf8")])
        .error()
        .to_string();
    assert!(
        line.contains("bad.jsonl line 3") && line.contains("captured"),
        "{line}"
    );
    assert!(
        trail.run(&["log"]).events().is_empty(),
        "lines 1 and 2 share the batch: not written"
    );

    let run = trail.run_stdin(&["import", "-"], b"{\"id\": 1}\n");
    assert!(run.error().contains("standard input line 1"), "{run:?}");
}

async fn export_filters(trail: Trail) {
    trail.import_sample();
    let users = trail.run(&["export", "--table", "public.users"]).events();
    let seqs: Vec<i64> = users.iter().map(|e| e.seq.expect("sealed")).collect();
    assert_eq!(
        seqs,
        [3, 4, 7, 12, 13, 14, 15, 16, 18],
        "oldest first, only that table"
    );
    let json = trail
        .run(&["export", "--user", "bob@example.com", "--format", "json"])
        .json();
    assert!(
        json.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|e| e["app_user"] == "bob@example.com")),
        "{json}"
    );
}

/// Lines of `count` fresh events, JSONL.
fn generated(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let mut e = Event::new(pgtrail_core::Source::Cdc, pgtrail_core::Kind::RowChange);
            e.table = Some("bulk".into());
            e.operation = Some("INSERT".into());
            e.pk = serde_json::json!({ "id": i.to_string() })
                .as_object()
                .cloned();
            serde_json::to_string(&e).expect("json")
        })
        .collect()
}

#[tokio::test]
async fn import_commits_whole_batches_of_ten_thousand() {
    let trail = Trail::new(crate::support::Backend::Sqlite).await;
    let mut lines = generated(10_005);
    lines[10_002] = "{not json".into();
    let file = trail.path("bulk.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let line = trail
        .run(&["import", file.to_str().expect("utf8")])
        .error()
        .to_string();
    assert!(
        line.contains("line 10003") && line.contains("10000 events before it were"),
        "{line}"
    );
    let summary = trail.run(&["verify", "--format", "json"]).json();
    assert_eq!(
        summary["events_checked"], 10_000,
        "the first batch is in, the second is not"
    );
}
