//! The four reading commands on the sample trail (examples/sample.jsonl),
//! with the same assertions on SQLite and Postgres.

use crate::both_backends;
use crate::support::{sample_events, Trail};

both_backends!(
    log_filters,
    log_table_and_limits,
    history_of_a_row,
    as_of_a_row,
    blame_of_a_row,
    claims_show_as_claims,
    ddl_by_transaction
);

fn seqs(events: &[pgtrail_core::Event]) -> Vec<i64> {
    events.iter().map(|e| e.seq.expect("sealed")).collect()
}

async fn log_filters(trail: Trail) {
    trail.import_sample();
    let all = trail.run(&["log"]).events();
    assert_eq!(
        seqs(&all),
        (1..=20).rev().collect::<Vec<_>>(),
        "newest first, every event"
    );

    let count = |args: &[&str]| trail.run(&[&["log"], args].concat()).events().len();
    let by_bob = sample_events()
        .iter()
        .filter(|e| e.app_user.as_deref() == Some("bob@example.com"))
        .count();
    assert_eq!(count(&["--user", "bob@example.com"]), by_bob);
    assert_eq!(
        count(&["--user", "app_owner"]),
        3,
        "the database role matches too"
    );
    assert_eq!(count(&["--table", "public.users", "--pk", "id=2"]), 4);
    assert_eq!(
        count(&["--table", "users", "--pk", "id=2"]),
        4,
        "the schema may be left out"
    );
    assert_eq!(count(&["--op", "delete"]), 2);
    assert_eq!(count(&["--kind", "ddl"]), 3);
    assert_eq!(count(&["--source", "proxy"]), 1);
    assert_eq!(count(&["--since", "2026-03-02T10:00:00Z"]), 10);
    assert_eq!(
        count(&[
            "--since",
            "2026-03-02T10:00:00Z",
            "--until",
            "2026-03-02T10:30:00Z"
        ]),
        3
    );
    assert_eq!(count(&["--table", "no_such_table"]), 0);

    let failed = trail.run(&["log", "--failed"]).events();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].sqlstate.as_deref(), Some("23514"));

    let found = trail.run(&["log", "--search", "balance"]).events();
    assert_eq!(
        found.len(),
        2,
        "the failed UPDATE and the CREATE TABLE mention balance"
    );
}

async fn log_table_and_limits(trail: Trail) {
    trail.import_sample();
    let newest = trail.run(&["log", "--limit", "3"]).events();
    assert_eq!(seqs(&newest), [20, 19, 18]);

    let json = trail
        .run(&["log", "--format", "json", "--limit", "2"])
        .json();
    assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");

    let table = trail.run(&["log", "--format", "table", "--user", "bob@example.com"]);
    let text = table.ok();
    let header = text.lines().next().expect("header");
    for column in [
        "seq", "time", "user", "source", "op", "table", "pk", "summary",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(
        text.contains("changed role"),
        "updates list their changed columns:\n{text}"
    );
    assert!(
        text.contains("ERROR 23514"),
        "the failed statement shows its error:\n{text}"
    );
    assert!(
        text.contains("bob@example.com (claimed; app)"),
        "app user, a claim (the sample predates channels), with the database role:\n{text}"
    );
}

async fn history_of_a_row(trail: Trail) {
    trail.import_sample();
    let json = trail
        .run(&["history", "public.users", "id=2", "--format", "json"])
        .json();
    let entries = json.as_array().expect("array");
    assert_eq!(entries.len(), 4, "{json}");
    let newest = &entries[0];
    assert_eq!(newest["event"]["app_user"], "alice@example.com");
    assert_eq!(newest["changes"][0]["column"], "role");
    assert_eq!(newest["changes"][0]["old"], "admin");
    assert_eq!(newest["changes"][0]["new"], "user");
    assert_eq!(entries[3]["event"]["operation"], "INSERT");

    let text = trail
        .run(&["history", "public.users", "id=2", "--format", "table"])
        .ok()
        .to_string();
    let admin_granted = text.find("admin").expect("the role change is shown");
    assert!(
        text.find("#18").expect("newest") < text.find("#12").expect("older"),
        "newest first:\n{text}"
    );
    assert!(
        text[..admin_granted].contains("column  old"),
        "diff table header:\n{text}"
    );
    assert!(
        text.contains("email   bob@example.com  robert@example.com"),
        "old and new side by side:\n{text}"
    );

    let none = trail.run(&["history", "public.users", "id=99", "--format", "table"]);
    assert!(none.ok().contains("no changes recorded"), "{none:?}");
}

async fn as_of_a_row(trail: Trail) {
    trail.import_sample();
    let at = |time: &str| {
        trail
            .run(&["as-of", "public.users", "id=3", time, "--format", "table"])
            .ok()
            .to_string()
    };
    let before = at("2026-03-02T09:00:00Z");
    assert!(
        before.contains("did not exist yet") && before.contains("first seen 2026-03-02T10:30:00Z"),
        "{before}"
    );
    let during = at("2026-03-02T10:35:00Z");
    assert!(
        during.contains("Carol") && during.contains("carol@example.com"),
        "{during}"
    );
    let after = at("2026-03-02T11:00:00Z");
    assert!(
        after.contains("deleted at 2026-03-02T10:40:00Z by bob@example.com"),
        "{after}"
    );

    let json = trail
        .run(&[
            "as-of",
            "public.users",
            "id=1",
            "2026-03-02T09:30:00Z",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(json["state"], "existing", "{json}");
    assert_eq!(json["values"]["name"], "Alice Smith");
    assert!(
        json["values"].get("phone").is_none(),
        "the column was added later: {json}"
    );
}

async fn blame_of_a_row(trail: Trail) {
    trail.import_sample();
    let json = trail
        .run(&["blame", "public.users", "id=2", "--format", "json"])
        .json();
    let who = |column: &str| {
        json.as_array()
            .expect("array")
            .iter()
            .find(|l| l["column"] == column)
            .map(|l| (l["value"].clone(), l["event"]["app_user"].clone()))
            .unwrap_or_else(|| panic!("{column} in {json}"))
    };
    assert_eq!(who("role"), ("user".into(), "alice@example.com".into()));
    assert_eq!(
        who("email"),
        ("robert@example.com".into(), "bob@example.com".into())
    );
    assert_eq!(who("name"), ("Bob".into(), "bob@example.com".into()));

    let text = trail
        .run(&["blame", "public.users", "id=2", "--format", "table"])
        .ok()
        .to_string();
    assert!(
        text.lines().next().is_some_and(|h| h.contains("xid")),
        "{text}"
    );
    let gone = trail.run(&["blame", "public.users", "id=3", "--format", "table"]);
    assert!(
        gone.ok().contains("does not exist now: it was deleted"),
        "{gone:?}"
    );
    let never = trail.run(&["blame", "public.users", "id=99", "--format", "table"]);
    assert!(
        never
            .ok()
            .contains("does not exist now: no changes recorded"),
        "{never:?}"
    );
}

/// An application user is shown as a claim with the channel it came
/// through, next to the role the server vouches for, by every reader; JSON
/// carries the provenance as recorded.
async fn claims_show_as_claims(trail: Trail) {
    use pgtrail_core::event::Channel;
    use pgtrail_core::{Event, Kind, Source};
    let mut lines = String::new();
    for (n, (user, channel)) in [
        ("alice@example.com", Channel::Setting),
        ("dana", Channel::Comment),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = Event::new(Source::Cdc, Kind::RowChange);
        e.db_user = Some("app".into());
        e.backend_pid = Some(7);
        e.app_user = Some(user.into());
        e.vouch_server_fields();
        e.claim("app_user", channel);
        e.schema = Some("public".into());
        e.table = Some("plans".into());
        e.operation = Some(if n == 0 { "INSERT" } else { "UPDATE" }.into());
        e.pk = serde_json::json!({"id": "1"}).as_object().cloned();
        e.new = serde_json::json!({"id": 1, "tier": n}).as_object().cloned();
        if n == 1 {
            e.old = serde_json::json!({"tier": 0}).as_object().cloned();
            e.changed = vec!["tier".into()];
        }
        lines.push_str(&serde_json::to_string(&e).expect("json"));
        lines.push('\n');
    }
    let file = trail.path("claims.jsonl");
    std::fs::write(&file, lines).expect("write");
    trail.run(&["import", file.to_str().expect("utf-8")]).ok();

    let log = trail.run(&["log", "--format", "table"]).ok().to_string();
    assert!(
        log.contains("alice@example.com (claimed, setting; app)"),
        "{log}"
    );
    assert!(log.contains("dana (claimed, comment; app)"), "{log}");
    for command in ["history", "blame"] {
        let text = trail
            .run(&[command, "public.plans", "id=1", "--format", "table"])
            .ok()
            .to_string();
        assert!(
            text.contains("dana (claimed, comment; app)"),
            "{command}: {text}"
        );
    }
    let json = trail.run(&["log", "--format", "json"]).json();
    assert_eq!(
        json[0]["provenance"],
        serde_json::json!({"claimed": {"app_user": ["comment"]},
                           "vouched": ["backend_pid", "db_user"]}),
        "{json}"
    );
}

async fn ddl_by_transaction(trail: Trail) {
    trail.import_sample();
    let groups = trail.run(&["ddl", "--format", "json"]).json();
    let groups = groups.as_array().expect("an array of transactions");
    let summary: Vec<(i64, &str, Vec<&str>)> = groups
        .iter()
        .map(|g| {
            (
                g["xid"].as_i64().expect("xid"),
                g["actor"].as_str().expect("actor"),
                g["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| e["operation"].as_str().expect("operation"))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (741, "app_owner", vec!["CREATE TABLE"]),
            (742, "app_owner", vec!["CREATE TABLE"]),
            (750, "app_owner", vec!["ALTER TABLE"]),
        ],
        "oldest first, one group per transaction"
    );
    let text = trail.run(&["ddl", "--format", "table"]).stdout;
    assert!(
        text.contains("by app_owner  xid 750") && text.contains("ALTER TABLE"),
        "{text}"
    );
}
