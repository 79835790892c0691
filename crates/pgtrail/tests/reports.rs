//! `pgtrail report`: the dashboard's reports from the command line, on
//! SQLite and Postgres, answering as `pgtrail_store::reports` does (its
//! own suite covers the shapes), and refusing a bad parameter with one
//! error line.

use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_testkit::proxy_events::statement;
use serde_json::json;

use crate::both_backends;
use crate::support::Trail;

both_backends!(reports_from_the_command_line);

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0)
        .single()
        .expect("valid time")
}

fn delete(when: DateTime<Utc>, user: &str, id: usize) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, when);
    e.app_user = Some(user.into());
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e.operation = Some("DELETE".into());
    e.pk = json!({ "id": id.to_string() }).as_object().cloned();
    e
}

async fn reports_from_the_command_line(trail: Trail) {
    // mallory deletes 30 orders on Wednesday night; alice one each weekday at noon.
    let mut events: Vec<Event> = (0..30)
        .map(|i| delete(at(4, 2, i as u32), "mallory", i))
        .collect();
    events.extend((2..7).map(|d| delete(at(d, 12, 0), "alice", 100 + d as usize)));
    events.push(statement(
        at(3, 11, 0),
        "nurse",
        "SELECT",
        "READ",
        &["public.patients"],
        "select * from patients where id = 42",
        1,
    ));
    let mut lines = String::new();
    for e in &events {
        lines.push_str(&serde_json::to_string(e).expect("json"));
        lines.push('\n');
    }
    trail
        .run_stdin(&["import", "-", "--format", "json"], lines.as_bytes())
        .ok();
    let week = [
        "--since",
        "2026-03-02",
        "--until",
        "2026-03-09",
        "--format",
        "json",
    ];
    let run = |name: &str, extra: &[&str]| {
        let mut argv = vec!["report", name];
        argv.extend_from_slice(&week);
        argv.extend_from_slice(extra);
        trail.run(&argv).json()
    };
    let bulk = run("bulk-changes", &["--threshold", "10"]);
    assert_eq!(bulk["rows"][0]["user"], "mallory", "{bulk}");
    assert_eq!(bulk["rows"][0]["rows"], 30);
    assert_eq!(bulk["rows"].as_array().map(Vec::len), Some(1));

    let after = run("after-hours", &["--tz", "-05:00"]);
    // At -05:00 mallory's 02:00 UTC is Tuesday 21:00, alice's noon is
    // 07:00, the nurse's 11:00 is 06:00.
    let users: Vec<&str> = after["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["user"].as_str())
        .collect();
    assert_eq!(users, ["mallory", "alice", "nurse"], "{after}");

    let spikes = run("delete-spikes", &[]);
    assert_eq!(spikes["spikes"][0]["deletes"], 30, "{spikes}");
    assert_eq!(spikes["spikes"].as_array().map(Vec::len), Some(1));

    let who = run("who-read", &["--table", "patients", "--pk", "id=42"]);
    assert_eq!(who["reads"][0]["mentions"], "text", "{who}");

    let text = trail
        .run(&[
            "report",
            "who-read",
            "--table",
            "patients",
            "--since",
            "2026-03-02",
            "--until",
            "2026-03-09",
            "--format",
            "table",
        ])
        .ok()
        .to_string();
    assert!(text.contains("not the rows they returned"), "{text}");

    let error = trail
        .run(&["report", "after-hours", "--tz", "Europe/Atlantis"])
        .error()
        .to_string();
    assert!(error.contains("--tz"), "{error}");
    let named = trail.run(&["report", "after-hours", "--tz", "Europe/Paris"]);
    assert!(named.ok().contains("\"tz\":\"Europe/Paris\""), "{named:?}");
    let error = trail
        .run(&["report", "bulk-changes", "--since", "2020-01-01"])
        .error()
        .to_string();
    assert!(error.contains("92 days"), "{error}");
}
