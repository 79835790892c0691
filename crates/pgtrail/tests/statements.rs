//! Reading the proxy's statements and logins back (issue 11, item 8): the
//! seed questions, one command each, on SQLite and Postgres, each beside
//! the near-misses that a wrong filter would let through or leave out.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgtrail_core::event::Channel;
use pgtrail_core::Event;
use pgtrail_testkit::proxy_events::{claimed, failed, login, statement};

use crate::both_backends;
use crate::support::Trail;

both_backends!(
    deletes_by_a_user_on_a_table_between_two_times,
    failed_inserts_in_the_last_day,
    selects_on_patients_by_anyone_but_reporting,
    class_filter,
    hostile_filter_values_match_literally,
    sessions_show_failed_logins_first
);

fn t(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0)
        .single()
        .expect("valid time")
}

/// Imports `events` (sealed anew, in this order).
fn import(trail: &Trail, events: &[Event]) {
    let mut lines = String::new();
    for e in events {
        lines.push_str(&serde_json::to_string(e).expect("json"));
        lines.push('\n');
    }
    let summary = trail
        .run_stdin(&["import", "-", "--format", "json"], lines.as_bytes())
        .json();
    assert_eq!(summary["imported"], events.len(), "{summary}");
}

/// The SQL texts `pgtrail log args` returns, newest first.
fn sql_of(trail: &Trail, args: &[&str]) -> Vec<String> {
    trail
        .run(&[&["log", "--format", "jsonl"], args].concat())
        .events()
        .into_iter()
        .map(|e| e.sql.clone().unwrap_or_default())
        .collect()
}

async fn deletes_by_a_user_on_a_table_between_two_times(trail: Trail) {
    let delete =
        |at, user, objects: &[&str], sql| statement(at, user, "DELETE", "WRITE", objects, sql, 1);
    import(
        &trail,
        &[
            delete(
                t(1),
                "alice",
                &["public.orders"],
                "delete from orders where id = 1 -- before",
            ),
            delete(
                t(10),
                "alice",
                &["public.orders"],
                "delete from orders where id = 2",
            ),
            delete(
                t(11),
                "bob",
                &["public.orders"],
                "delete from orders where id = 3 -- bob",
            ),
            delete(
                t(12),
                "alice",
                &["public.order_lines"],
                "delete from order_lines where id = 4",
            ),
            delete(
                t(13),
                "alice",
                &["archive.orders"],
                "delete from archive.orders where id = 5",
            ),
            statement(
                t(14),
                "alice",
                "UPDATE",
                "WRITE",
                &["public.orders"],
                "update orders set n = 6",
                1,
            ),
            delete(
                t(15),
                "alice",
                &["public.order_lines", "public.orders"],
                "delete from order_lines l using orders o where l.order_id = o.id and o.id = 7",
            ),
            delete(
                t(20),
                "alice",
                &["public.orders"],
                "delete from orders where id = 8 -- at until",
            ),
            delete(
                t(25),
                "alice",
                &["public.orders"],
                "delete from orders where id = 9 -- after",
            ),
        ],
    );
    let found = sql_of(
        &trail,
        &[
            "--kind",
            "statement",
            "--op",
            "DELETE",
            "--user",
            "alice",
            "--table",
            "public.orders",
            "--since",
            "2026-03-02T10:05:00Z",
            "--until",
            "2026-03-02T10:20:00Z",
        ],
    );
    assert_eq!(
        found,
        [
            "delete from order_lines l using orders o where l.order_id = o.id and o.id = 7",
            "delete from orders where id = 2",
        ],
        "the DELETEs that touched public.orders in the window, newest first"
    );
    // The lower-case operation and the bare table name ask the same, plus
    // the other schema's orders.
    let found = sql_of(
        &trail,
        &[
            "--kind",
            "statement",
            "--op",
            "delete",
            "--user",
            "alice",
            "--table",
            "orders",
            "--since",
            "2026-03-02T10:05:00Z",
            "--until",
            "2026-03-02T10:20:00Z",
        ],
    );
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found.contains(&"delete from archive.orders where id = 5".to_string()));
}

async fn failed_inserts_in_the_last_day(trail: Trail) {
    let now = Utc::now();
    let insert = |ago: Duration, sql| {
        statement(
            now - ago,
            "app",
            "INSERT",
            "WRITE",
            &["public.payments"],
            sql,
            1,
        )
    };
    import(
        &trail,
        &[
            failed(
                insert(
                    Duration::days(2),
                    "insert into payments values (1) -- two days ago",
                ),
                "23505",
                "duplicate key value violates unique constraint \"payments_pkey\"",
            ),
            failed(
                insert(Duration::hours(3), "insert into payments values (2)"),
                "23505",
                "duplicate key value violates unique constraint \"payments_pkey\"",
            ),
            insert(
                Duration::hours(2),
                "insert into payments values (3) -- succeeded",
            ),
            failed(
                statement(
                    now - Duration::hours(1),
                    "app",
                    "UPDATE",
                    "WRITE",
                    &["public.payments"],
                    "update payments set n = 4",
                    0,
                ),
                "40001",
                "could not serialize access",
            ),
            failed(
                insert(Duration::minutes(30), "insert into payments values (5)"),
                "42501",
                "permission denied for table payments",
            ),
        ],
    );
    let found = sql_of(
        &trail,
        &[
            "--kind",
            "statement",
            "--op",
            "INSERT",
            "--failed",
            "--since",
            "1d",
        ],
    );
    assert_eq!(
        found,
        [
            "insert into payments values (5)",
            "insert into payments values (2)"
        ]
    );
    let table = trail
        .run(&[
            "log",
            "--kind",
            "statement",
            "--op",
            "INSERT",
            "--failed",
            "--since",
            "1d",
            "--format",
            "table",
        ])
        .ok()
        .to_string();
    assert!(
        table.contains("ERROR 42501 permission denied for table payments"),
        "{table}"
    );
}

async fn selects_on_patients_by_anyone_but_reporting(trail: Trail) {
    let select = |minute, user, objects: &[&str], sql| {
        statement(t(minute), user, "SELECT", "READ", objects, sql, 3)
    };
    import(
        &trail,
        &[
            select(
                1,
                "app",
                &["public.patients"],
                "select * from patients where id = 1",
            ),
            select(
                2,
                "reporting",
                &["public.patients"],
                "select count(*) from patients -- reporting",
            ),
            select(
                3,
                "analyst",
                &["clinic.patients"],
                "select name from clinic.patients",
            ),
            select(
                4,
                "app",
                &["public.visits", "public.patients"],
                "select v.* from visits v join patients p on p.id = v.patient_id",
            ),
            select(
                5,
                "app",
                &["public.visits"],
                "select * from visits where note = 'patients' /* patients */",
            ),
            select(
                6,
                "app",
                &["public.patients_archive"],
                "select * from patients_archive",
            ),
            statement(
                t(7),
                "app",
                "UPDATE",
                "WRITE",
                &["public.patients"],
                "update patients set name = 'x'",
                1,
            ),
            claimed(
                select(
                    8,
                    "app",
                    &["public.patients"],
                    "select * from patients where id = 8",
                ),
                "reporting",
                Channel::Setting,
            ),
            select(
                9,
                "reporting",
                &["public.visits"],
                "select * from visits -- reporting",
            ),
        ],
    );
    let args = [
        "--kind",
        "statement",
        "--op",
        "SELECT",
        "--table",
        "patients",
        "--not-user",
        "reporting",
    ];
    assert_eq!(
        sql_of(&trail, &args),
        [
            "select * from patients where id = 8",
            "select v.* from visits v join patients p on p.id = v.patient_id",
            "select name from clinic.patients",
            "select * from patients where id = 1",
        ],
        "patients in any schema, in a JOIN too; the reporting role left out, \
         a mere claim of it kept; a mention in a literal or comment is not a touch"
    );
    // The claim shows as a claim beside the role the server vouched for.
    let table = trail
        .run(&[&["log", "--format", "table"], &args[..]].concat())
        .ok()
        .to_string();
    assert!(
        table.contains("reporting (claimed, setting; app)"),
        "{table}"
    );
    // Without --not-user the reporting role's SELECT on patients is there.
    let all = sql_of(&trail, &["--op", "SELECT", "--table", "public.patients"]);
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.contains(&"select count(*) from patients -- reporting".to_string()));
    // Only public's patients with the schema given.
    assert!(!all.contains(&"select name from clinic.patients".to_string()));
}

async fn class_filter(trail: Trail) {
    import(
        &trail,
        &[
            statement(
                t(1),
                "app",
                "SELECT",
                "READ",
                &["public.t"],
                "select 1 from t",
                1,
            ),
            statement(
                t(2),
                "app",
                "INSERT",
                "WRITE",
                &["public.t"],
                "insert into t values (1)",
                1,
            ),
            statement(
                t(3),
                "app",
                "SET",
                "MISC_SET",
                &[],
                "set search_path = public",
                0,
            ),
            statement(
                t(4),
                "admin",
                "CREATE ROLE",
                "ROLE",
                &[],
                "create role x",
                0,
            ),
        ],
    );
    assert_eq!(
        sql_of(&trail, &["--class", "write"]),
        ["insert into t values (1)"]
    );
    assert_eq!(
        sql_of(&trail, &["--class", "Misc_Set"]),
        ["set search_path = public"]
    );
    assert_eq!(
        sql_of(&trail, &["--class", "READ", "--table", "t"]),
        ["select 1 from t"]
    );
    let err = trail.run(&["log", "--class", "reads"]).error().to_string();
    assert!(err.contains("unknown class 'reads'"), "{err}");
}

async fn hostile_filter_values_match_literally(trail: Trail) {
    let odd_user = r"o'brien\%_";
    import(
        &trail,
        &[
            statement(
                t(1),
                "app",
                "SELECT",
                "READ",
                &["public.patients"],
                "select 1 from patients",
                1,
            ),
            statement(
                t(2),
                odd_user,
                "SELECT",
                "READ",
                &[r#"public."pat%""#],
                r#"select 1 from "pat%""#,
                1,
            ),
        ],
    );
    for hostile in [
        "%",
        "_atients",
        "patients' or '1'='1",
        "patients\" or 1=1 --",
        r"pat\%",
        "patients; drop table events",
        "*",
    ] {
        let by_table = trail.run(&["log", "--format", "jsonl", "--table", hostile]);
        if hostile.matches('"').count() % 2 == 1 {
            // An unbalanced quote is not a table name: refused, not guessed.
            assert!(by_table.error().contains("invalid table"), "{by_table:?}");
        } else {
            assert!(by_table.events().is_empty(), "--table {hostile} matched");
        }
        assert!(
            sql_of(&trail, &["--user", hostile]).is_empty(),
            "--user {hostile} matched"
        );
        assert_eq!(
            sql_of(&trail, &["--not-user", hostile]).len(),
            2,
            "--not-user {hostile} hid something"
        );
        assert!(
            sql_of(&trail, &["--op", hostile]).is_empty(),
            "--op {hostile} matched"
        );
    }
    // The odd names themselves match exactly.
    assert_eq!(
        sql_of(&trail, &["--user", odd_user]),
        [r#"select 1 from "pat%""#]
    );
    assert_eq!(
        sql_of(&trail, &["--table", r#""pat%""#]),
        [r#"select 1 from "pat%""#]
    );
    assert_eq!(
        sql_of(&trail, &["--not-user", odd_user]),
        ["select 1 from patients"]
    );
    // The trail is untouched.
    assert_eq!(sql_of(&trail, &[]).len(), 2);
}

async fn sessions_show_failed_logins_first(trail: Trail) {
    let bad_password = Some(("28P01", "password authentication failed for user \"admin\""));
    import(
        &trail,
        &[
            login(t(1), "app", "shop", "10.0.0.2", None),
            login(t(2), "admin", "shop", "203.0.113.9", bad_password),
            login(t(3), "admin", "shop", "203.0.113.9", bad_password),
            login(t(4), "app", "shop", "10.0.0.2", None),
            login(
                t(5),
                "ghost",
                "nodb",
                "203.0.113.9",
                Some(("3D000", "database \"nodb\" does not exist")),
            ),
            login(t(6), "app", "shop", "10.0.0.3", None),
            pgtrail_testkit::proxy_events::disconnect(
                t(7),
                "app",
                "shop",
                "10.0.0.3",
                5_000_000,
                12,
            ),
            statement(t(8), "app", "SELECT", "READ", &["public.t"], "select 1", 1),
        ],
    );
    let report = trail.run(&["sessions", "--format", "json"]).json();
    let failed = report["failed_logins"].as_array().expect("failed logins");
    assert_eq!(failed.len(), 2, "{report}");
    assert_eq!(failed[0]["sqlstate"], "3D000");
    assert_eq!(failed[1]["user"], "admin");
    assert_eq!(failed[1]["client_addr"], "203.0.113.9");
    assert_eq!(failed[1]["count"], 2);
    assert_eq!(failed[1]["first"], "2026-03-02T10:02:00.000000Z");
    assert_eq!(failed[1]["last"], "2026-03-02T10:03:00.000000Z");
    let sessions = report["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "one per user and address: {report}");
    assert_eq!(sessions[1]["client_addr"], "10.0.0.2");
    assert_eq!(sessions[1]["count"], 2);

    let text = trail
        .run(&["sessions", "--format", "table"])
        .ok()
        .to_string();
    let failed_at = text.find("failed logins").expect("failed logins shown");
    let sessions_at = text.find("\nsessions").expect("sessions shown");
    assert!(failed_at < sessions_at, "{text}");
    assert!(text.contains("password authentication failed"), "{text}");

    let only_failed = trail
        .run(&[
            "sessions", "--failed", "--user", "admin", "--format", "json",
        ])
        .json();
    assert_eq!(
        only_failed["failed_logins"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(only_failed["sessions"].as_array().map(Vec::len), Some(0));
    let recent = trail
        .run(&[
            "sessions",
            "--since",
            "2026-03-02T10:04:00Z",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(
        recent["failed_logins"].as_array().map(Vec::len),
        Some(1),
        "{recent}"
    );
}
