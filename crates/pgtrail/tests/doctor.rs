//! `pgtrail doctor` against real clusters set up to trigger each finding:
//! one cluster with `wal_level = logical` that starts clean (no warning,
//! exit 0) and then gets a busy and a quiet table, a keyless one, TOASTed
//! text under the default identity, a REPLICATION role, an owner that logs
//! in beside a non-owner application role, an inactive slot holding WAL,
//! and hostile names; a second with `wal_level = replica`. Each run is
//! checked against schema/doctor.schema.json, as a superuser, as a role
//! with only `pg_monitor` (same findings, and every statement it sent
//! was a read) and as a role with nothing (degraded, never an error).

use std::collections::BTreeSet;

use pgtrail_testkit::{Cluster, ClusterOptions};
use serde_json::Value;

use crate::support::{pgtrail_in, Run};

/// The hostile names: SQL in a name, quotes, spaces, unicode, a newline
/// that would forge a report line.
const HOSTILE_TABLE: &str = "x\"; drop table y; --";
const UNICODE_SCHEMA: &str = "My Schema";
const UNICODE_TABLE: &str = "Ünïcødé 'tab'";
const NEWLINE_TABLE: &str = "evil\nFAIL  forged_code  server: all is lost";
const HOSTILE_ROLE: &str = "r\"; drop table y; --";

fn doctor(dir: &std::path::Path, url: &str, extra: &[&str]) -> Run {
    let mut args = vec!["doctor", "--db", url];
    args.extend_from_slice(extra);
    pgtrail_in(dir, &args, &[], None)
}

/// The report as JSON, checked against the schema; and the exit code.
fn report(dir: &std::path::Path, url: &str, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--format", "json"];
    args.extend_from_slice(extra);
    let run = doctor(dir, url, &args);
    let value: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:#?}"));
    let schema = validator();
    let errors: Vec<String> = schema.iter_errors(&value).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "schema: {errors:#?}\n{value:#}");
    (run.code, value)
}

fn validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/doctor.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schema file is checked in");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .build(&schema)
        .expect("schema compiles")
}

fn findings(report: &Value) -> &Vec<Value> {
    report["findings"].as_array().expect("findings")
}

/// The findings with `code`.
fn with_code<'a>(report: &'a Value, code: &str) -> Vec<&'a Value> {
    findings(report)
        .iter()
        .filter(|f| f["code"] == code)
        .collect()
}

/// Whether a finding `code` is about table `schema.name`.
fn on_table(report: &Value, code: &str, schema: &str, name: &str) -> bool {
    with_code(report, code)
        .iter()
        .any(|f| f["subject"]["schema"] == schema && f["subject"]["name"] == name)
}

fn on_role(report: &Value, code: &str, role: &str) -> bool {
    with_code(report, code)
        .iter()
        .any(|f| f["subject"]["kind"] == "role" && f["subject"]["name"] == role)
}

fn table<'a>(report: &'a Value, schema: &str, name: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .find(|t| t["schema"] == schema && t["name"] == name)
        .unwrap_or_else(|| panic!("table {schema}.{name} in {report:#}"))
}

/// Warnings and failures as `(code, subject)`, without the ones about who ran doctor.
fn problems(report: &Value) -> BTreeSet<(String, String)> {
    findings(report)
        .iter()
        .filter(|f| f["severity"] != "info")
        .map(|f| {
            (
                f["code"].as_str().unwrap_or("").to_string(),
                f["subject"].to_string(),
            )
        })
        .collect()
}

fn url_as(url: &str, role: &str) -> String {
    url.replacen("postgres@", &format!("{role}@"), 1)
}

/// Runs `sql` through psql (its own backend, which flushes its statistics
/// when it exits).
fn psql(cluster: &Cluster, db: &str, sql: &str) {
    cluster
        .psql(db, sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_finds_each_problem_on_a_logical_cluster_and_nothing_on_a_clean_one() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            ("max_slot_wal_keep_size".into(), "1GB".into()),
            (
                "shared_preload_libraries".into(),
                "pg_stat_statements".into(),
            ),
        ],
        ..ClusterOptions::default()
    })
    .expect("cluster");
    let url = cluster.create_database("doctor").await.expect("database");
    let db = url.rsplit('/').next().expect("db").to_string();
    let dir = tempfile::tempdir().expect("tempdir");

    // Clean: a keyed table owned by a NOLOGIN role, the application a
    // non-owner with DML, nothing else in the cluster.
    psql(
        &cluster,
        &db,
        "create role app_owner nologin; \
         create role app login; \
         create table public.quiet (id int primary key, v text); \
         alter table public.quiet owner to app_owner; \
         grant select, insert, update, delete on public.quiet to app; \
         insert into public.quiet values (1, 'one'); analyze public.quiet",
    );
    let (code, clean) = report(dir.path(), &url, &[]);
    assert_eq!(problems(&clean), BTreeSet::new(), "clean: {clean:#}");
    assert_eq!(code, 0, "clean exits 0: {clean:#}");
    assert_eq!(clean["summary"]["warn"], 0);
    assert!(on_role(&clean, "bootstrap_superuser", "postgres"));
    assert_eq!(with_code(&clean, "wal_level_logical").len(), 1);
    assert_eq!(with_code(&clean, "pgaudit_absent").len(), 1);
    assert_eq!(clean["server"]["pgaudit"], false);
    // The plain report of a clean database says so and shows the table.
    let plain = doctor(dir.path(), &url, &["--format", "table"]);
    assert_eq!(plain.code, 0, "{plain:#?}");
    assert!(
        plain.stdout.contains("0 failure(s), 0 warning(s)"),
        "{}",
        plain.stdout
    );
    assert!(plain.stdout.contains("public.quiet"), "{}", plain.stdout);

    // Now the problems.
    psql(
        &cluster,
        &db,
        &format!(
            "create table public.orders (id int primary key, v text); \
             create table public.nokey (a int, b text); \
             create table public.bulk (id int primary key, v text); \
             create table public.parted (id int, at date, primary key (id, at)) partition by range (at); \
             create table public.parted_2026 partition of public.parted \
               for values from ('2026-01-01') to ('2027-01-01'); \
             create table public.parted_2027 partition of public.parted \
               for values from ('2027-01-01') to ('2028-01-01'); \
             create table public.docs (id int primary key, body text); \
             create table public.y (id int); \
             create table public.{hostile} (id int primary key); \
             create schema {schema}; \
             create table {schema}.{unicode} (id int primary key); \
             create table public.{newline} (id int primary key); \
             create role owner_login login; \
             alter table public.orders owner to owner_login; \
             grant select, insert, update, delete on public.docs to app; \
             create role repl_role login replication; \
             create role {role} login bypassrls; \
             create role monitor login in role pg_monitor; \
             create role bare login; \
             create role second_su login superuser; \
             create role role_maker login createrole; \
             create publication pgtrail for table public.docs, public.orders",
            hostile = quote(HOSTILE_TABLE),
            schema = quote(UNICODE_SCHEMA),
            unicode = quote(UNICODE_TABLE),
            newline = quote(NEWLINE_TABLE),
            role = quote(HOSTILE_ROLE),
        ),
    );
    // A function planted where doctor's unqualified call would find it
    // first, were `public` on its path: a closer match (oid) than the
    // catalog's pg_relation_size(regclass). It must never run as doctor's role.
    psql(
        &cluster,
        &db,
        "grant create on schema public to app; \
         set role app; \
         create function public.pg_relation_size(oid) returns bigint language plpgsql \
           as $$ begin raise exception 'pwned: a planted function ran'; end $$; \
         reset role",
    );
    // A slot nobody consumes, then WAL for it to hold.
    psql(
        &cluster,
        &db,
        "select pg_create_logical_replication_slot('stale_slot', 'pgoutput')",
    );
    psql(
        &cluster,
        &db,
        "insert into public.orders select g, 'v' || g from generate_series(1, 3000) g; \
         update public.orders set v = v || '!'; \
         insert into public.nokey select g, 'b' from generate_series(1, 10) g",
    );
    // A table written by statements of thousands of rows, as pg_stat_statements sees it.
    psql(&cluster, &db, "create extension pg_stat_statements");
    psql(
        &cluster,
        &db,
        "insert into public.bulk select g, 'v' from generate_series(1, 2000) g",
    );
    for _ in 0..3 {
        psql(&cluster, &db, "update public.bulk set v = v || '!'");
    }
    psql(
        &cluster,
        &db,
        "insert into public.parted select g, date '2026-06-01' + (g % 400) from generate_series(1, 300) g",
    );
    // Values too long and too random to compress: stored out of line.
    psql(
        &cluster,
        &db,
        "insert into public.docs select g, \
           (select string_agg(md5(random()::text || g || i), '') from generate_series(1, 300) i) \
         from generate_series(1, 20) g; \
         analyze public.docs; analyze public.orders; analyze public.nokey",
    );

    let (code, found) = report(dir.path(), &url, &["--busy-writes", "20"]);
    assert_eq!(code, 1, "warnings, no failure: {found:#}");
    assert!(!found.to_string().contains("pwned"), "{found:#}");
    assert!(with_code(&found, "not_checked").is_empty(), "{found:#}");
    assert_eq!(found["summary"]["fail"], 0, "{found:#}");
    // Keyless table.
    assert!(on_table(
        &found,
        "table_without_primary_key",
        "public",
        "nokey"
    ));
    assert!(!on_table(
        &found,
        "table_without_primary_key",
        "public",
        "orders"
    ));
    // TOASTed text under the default identity, published: partial updates, and the WAL FULL costs.
    let docs = table(&found, "public", "docs");
    assert!(docs["toast_bytes"].as_i64().unwrap_or(0) > 0, "{docs:#}");
    assert_eq!(docs["replica_identity"], "default");
    assert_eq!(docs["in_publication"], true);
    assert!(
        docs["row_bytes"].as_f64().unwrap_or(0.0) > 2_000.0,
        "{docs:#}"
    );
    let partial = with_code(&found, "toast_partial_updates");
    assert_eq!(partial.len(), 1, "{found:#}");
    assert_eq!(partial[0]["severity"], "warn");
    assert_eq!(partial[0]["subject"]["name"], "docs");
    assert!(partial[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("of WAL per UPDATE"));
    assert_eq!(
        partial[0]["fix"],
        "ALTER TABLE \"public\".\"docs\" REPLICA IDENTITY FULL;"
    );
    assert!(!on_table(
        &found,
        "toast_partial_updates",
        "public",
        "orders"
    ));
    // Busy against quiet.
    let orders = table(&found, "public", "orders");
    let quiet = table(&found, "public", "quiet");
    assert!(
        orders["updates"].as_i64().unwrap_or(0) >= 3000,
        "{orders:#}"
    );
    assert!(
        orders["writes_per_second"].as_f64().unwrap_or(0.0) >= 20.0,
        "{orders:#}"
    );
    assert_eq!(orders["recommendation"]["capture"], "logical_replication");
    assert!(orders["recommendation"]["figure"]
        .as_str()
        .unwrap_or("")
        .contains("bench/cdc"));
    assert_eq!(quiet["recommendation"]["capture"], "row_triggers");
    assert!(quiet["recommendation"]["figure"]
        .as_str()
        .unwrap_or("")
        .contains("bench/triggers"));
    // A partitioned table is one table, its partitions' writes summed.
    let parted = table(&found, "public", "parted");
    assert_eq!(parted["kind"], "partitioned", "{parted:#}");
    assert_eq!(parted["inserts"], 300, "{parted:#}");
    assert!(found["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .all(|t| t["name"] != "parted_2026"));
    // Bulk against single-row statements, when neither is busy.
    let (_, unhurried) = report(dir.path(), &url, &["--busy-writes", "1000000000"]);
    let bulk = table(&unhurried, "public", "bulk");
    assert!(
        bulk["rows_per_statement"].as_f64().unwrap_or(0.0) >= 1000.0,
        "{bulk:#}"
    );
    assert_eq!(
        bulk["recommendation"]["capture"], "statement_triggers",
        "{bulk:#}"
    );
    assert!(bulk["recommendation"]["figure"]
        .as_str()
        .unwrap_or("")
        .contains("bulk UPDATE of 200,000 rows"));
    let quiet = table(&unhurried, "public", "quiet");
    assert_eq!(quiet["rows_per_statement"], 1.0, "{quiet:#}");
    assert_eq!(
        quiet["recommendation"]["capture"], "row_triggers",
        "{quiet:#}"
    );
    // The inactive slot and the WAL it holds.
    let stale: Vec<&Value> = with_code(&found, "slot_inactive");
    assert_eq!(stale.len(), 1, "{found:#}");
    assert_eq!(stale[0]["subject"]["name"], "stale_slot");
    let slot = found["server"]["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .find(|s| s["name"] == "stale_slot")
        .expect("stale slot");
    assert!(
        slot["retained_bytes"].as_i64().unwrap_or(0) > 100_000,
        "{slot:#}"
    );
    assert_eq!(slot["active"], false);
    // Roles: REPLICATION, BYPASSRLS (under a hostile name), the owner that logs in; not the app.
    assert!(on_role(&found, "role_replication", "repl_role"));
    assert!(on_role(&found, "role_bypassrls", HOSTILE_ROLE));
    assert!(
        on_role(&found, "role_owns_audited_tables", "owner_login"),
        "{found:#}"
    );
    assert!(!on_role(&found, "role_owns_audited_tables", "app"));
    assert!(findings(&found)
        .iter()
        .all(|f| f["subject"]["name"] != "app"));
    // Hostile names are reported as they are.
    for (schema, name) in [
        ("public", HOSTILE_TABLE),
        (UNICODE_SCHEMA, UNICODE_TABLE),
        ("public", NEWLINE_TABLE),
    ] {
        table(&found, schema, name);
        assert!(on_table(&found, "capture_recommendation", schema, name));
    }
    let not_captured = with_code(&found, "table_not_captured");
    let hostile_fix = not_captured
        .iter()
        .find(|f| f["subject"]["name"] == HOSTILE_TABLE)
        .and_then(|f| f["fix"].as_str())
        .expect("a fix for the hostile table");
    assert!(
        hostile_fix.contains("\"x\"\"; drop table y; --\""),
        "{hostile_fix}"
    );

    // Plain output: quoted names, the newline escaped (no forged line), and table y still there.
    let plain = doctor(
        dir.path(),
        &url,
        &["--format", "table", "--verbose", "--busy-writes", "20"],
    );
    assert_eq!(plain.code, 1, "{plain:#?}");
    assert!(
        plain.stdout.contains("public.\"x\"\"; drop table y; --\""),
        "{}",
        plain.stdout
    );
    assert!(
        plain.stdout.contains("\"My Schema\".\"Ünïcødé 'tab'\""),
        "{}",
        plain.stdout
    );
    assert!(plain.stdout.contains("evil\\nFAIL"), "{}", plain.stdout);
    assert!(
        !plain
            .stdout
            .lines()
            .any(|l| l.starts_with("FAIL  forged_code")),
        "{}",
        plain.stdout
    );
    assert!(
        plain
            .stdout
            .contains("role_bypassrls  role \"r\"\"; drop table y; --\" has BYPASSRLS"),
        "{}",
        plain.stdout
    );
    assert_eq!(
        cluster
            .psql(&db, "select count(*) from public.y")
            .expect("y is still there"),
        "0"
    );

    // A role with only pg_monitor finds the same problems; every statement it sent was a read.
    psql(
        &cluster,
        &db,
        "alter role monitor set log_statement = 'all'",
    );
    psql(&cluster, &db, "alter system set log_line_prefix = '%u|'");
    psql(&cluster, &db, "select pg_reload_conf()");
    // The reload reaches the postmaster, and so new backends, a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cluster.psql(&db, "show log_line_prefix").expect("show") != "%u|" {
        assert!(
            std::time::Instant::now() < deadline,
            "log_line_prefix never reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, monitored) = report(
        dir.path(),
        &url_as(&url, "monitor"),
        &["--busy-writes", "20"],
    );
    assert_eq!(code, 1, "{monitored:#}");
    assert_eq!(monitored["server"]["role_is_monitor"], true);
    assert!(
        with_code(&monitored, "not_checked").is_empty(),
        "{monitored:#}"
    );
    assert_eq!(problems(&monitored), problems(&found));
    let log = std::fs::read_to_string(cluster.dir().join("postgres.log")).expect("server log");
    let statements: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("monitor|"))
        .filter_map(|l| l.split_once("LOG:  ").map(|(_, s)| s))
        .filter_map(|s| {
            s.strip_prefix("statement: ").or_else(|| {
                s.split_once(": ")
                    .map(|(_, sql)| sql)
                    .filter(|_| s.starts_with("execute"))
            })
        })
        .collect();
    assert!(
        statements.len() > 5,
        "the monitor's statements are logged: {log}"
    );
    for statement in &statements {
        for part in statement
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let verb = part
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            assert!(
                [
                    "select",
                    "with",
                    "savepoint",
                    "release",
                    "rollback",
                    "start",
                    "set"
                ]
                .contains(&verb.as_str()),
                "doctor sent a statement that is not a read: {statement}"
            );
        }
    }

    // A role with nothing: degraded to not_checked, still a report (exit 1, not 2).
    let (code, bare) = report(dir.path(), &url_as(&url, "bare"), &[]);
    assert_eq!(code, 1, "{bare:#}");
    let unchecked = with_code(&bare, "not_checked");
    assert!(!unchecked.is_empty(), "{bare:#}");
    assert!(unchecked.iter().all(|f| f["message"]
        .as_str()
        .unwrap_or("")
        .contains("pg_read_all_settings")));
    assert!(on_table(
        &bare,
        "table_without_primary_key",
        "public",
        "nokey"
    ));
    assert!(on_role(&bare, "role_replication", "repl_role"));

    assert!(on_role(&found, "role_superuser", "second_su"));
    assert!(on_role(&found, "role_createrole", "role_maker"));
    assert!(!on_role(&found, "role_superuser", "postgres"));

    // Write rates measured now: the quiet table gets a burst while doctor
    // samples; the keyless table's earlier writes fall outside the sample.
    let sampling = std::process::Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args([
            "doctor",
            "--db",
            &url,
            "--format",
            "json",
            "--sample",
            "3",
            "--busy-writes",
            "50",
        ])
        .current_dir(dir.path())
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start doctor");
    // Doctor took its first reading and sleeps outside any transaction,
    // named so (seen twice 300 ms apart, to be sure).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let sleeping = || {
        cluster
            .psql(
                &db,
                "select count(*) from pg_stat_activity \
                 where application_name = 'pgtrail doctor (sampling)' \
                   and state = 'idle' and backend_xmin is null",
            )
            .expect("activity")
            == "1"
    };
    loop {
        if sleeping() {
            std::thread::sleep(std::time::Duration::from_millis(300));
            if sleeping() {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "doctor never started sampling"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    psql(
        &cluster,
        &db,
        "insert into public.quiet select g, 'v' from generate_series(2, 1001) g",
    );
    let output = sampling.wait_with_output().expect("doctor ends");
    let sampled: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let quiet = table(&sampled, "public", "quiet");
    assert_eq!(quiet["window_from"], "sample", "{quiet:#}");
    assert_eq!(quiet["inserts"], 1000, "{quiet:#}");
    assert_eq!(quiet["recommendation"]["capture"], "logical_replication");
    let nokey = table(&sampled, "public", "nokey");
    assert_eq!(nokey["inserts"], 0, "{nokey:#}");
    assert_eq!(nokey["recommendation"]["capture"], "row_triggers");

    // Tracked by triggers (read from pg_trigger, not schema pgtrail), then a capture trigger disabled.
    let install = pgtrail_in(dir.path(), &["install", "--db", &url], &[], None);
    install.ok();
    pgtrail_in(
        dir.path(),
        &["track", "--db", &url, "public.nokey"],
        &[],
        None,
    )
    .ok();
    let (_, tracked) = report(dir.path(), &url_as(&url, "monitor"), &[]);
    assert_eq!(
        table(&tracked, "public", "nokey")["triggers"],
        "row",
        "{tracked:#}"
    );
    assert!(!on_table(&tracked, "table_not_captured", "public", "nokey"));
    psql(
        &cluster,
        &db,
        "alter table public.nokey disable trigger pgtrail_capture_insert",
    );
    let (code, disabled) = report(dir.path(), &url_as(&url, "monitor"), &[]);
    assert_eq!(code, 3, "{disabled:#}");
    assert!(on_table(
        &disabled,
        "capture_trigger_disabled",
        "public",
        "nokey"
    ));
    psql(
        &cluster,
        &db,
        "alter table public.nokey enable trigger pgtrail_capture_insert",
    );

    // A failure: the published table loses its identity (PostgreSQL would refuse its UPDATEs).
    psql(
        &cluster,
        &db,
        "alter table public.docs replica identity nothing",
    );
    let (code, failing) = report(dir.path(), &url, &[]);
    assert_eq!(code, 3, "{failing:#}");
    assert!(on_table(
        &failing,
        "published_without_identity",
        "public",
        "docs"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_replica_wal_level_cluster_and_when_it_cannot_connect() {
    let cluster = Cluster::start_with(ClusterOptions {
        settings: vec![
            ("wal_level".into(), "replica".into()),
            ("track_commit_timestamp".into(), "off".into()),
            // Debian's postgresql-NN-pgaudit (.ci/run installs it).
            ("shared_preload_libraries".into(), "pgaudit".into()),
        ],
        ..ClusterOptions::default()
    })
    .expect("cluster");
    let url = cluster
        .create_database("doctor_replica")
        .await
        .expect("database");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, found) = report(dir.path(), &url, &[]);
    assert_eq!(code, 1, "{found:#}");
    assert_eq!(found["server"]["wal_level"], "replica");
    let wal = with_code(&found, "wal_level_not_logical");
    assert_eq!(wal.len(), 1, "{found:#}");
    assert_eq!(wal[0]["severity"], "warn");
    assert_eq!(
        wal[0]["fix"],
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
    );
    assert!(with_code(&found, "wal_level_logical").is_empty());
    assert_eq!(
        with_code(&found, "max_slot_wal_keep_size_unlimited").len(),
        1
    );
    assert_eq!(with_code(&found, "track_commit_timestamp_off").len(), 1);

    let db = url.rsplit('/').next().expect("db").to_string();

    // pgAudit loaded with its default pgaudit.log = none logs nothing; then set to log writes.
    assert_eq!(found["server"]["pgaudit"], true, "{found:#}");
    assert_eq!(
        with_code(&found, "pgaudit_logs_nothing").len(),
        1,
        "{found:#}"
    );
    assert!(with_code(&found, "pgaudit_absent").is_empty());
    psql(&cluster, &db, "alter system set pgaudit.log = 'write, ddl'");
    psql(&cluster, &db, "select pg_reload_conf()");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cluster.psql(&db, "show pgaudit.log").expect("show") != "write, ddl" {
        assert!(
            std::time::Instant::now() < deadline,
            "pgaudit.log never reloaded"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (_, audited) = report(dir.path(), &url, &[]);
    assert!(
        with_code(&audited, "pgaudit_logs_nothing").is_empty(),
        "{audited:#}"
    );
    let present = with_code(&audited, "pgaudit_present");
    assert_eq!(present.len(), 1, "{audited:#}");
    assert!(present[0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("pgaudit.log = 'write, ddl'"));
    // A role that may not read shared_preload_libraries still learns pgAudit is there.
    psql(&cluster, &db, "create role bare login");
    let (code, bare) = report(dir.path(), &url_as(&url, "bare"), &[]);
    assert_eq!(code, 1, "{bare:#}");
    assert_eq!(bare["server"]["pgaudit"], true, "{bare:#}");
    assert_eq!(with_code(&bare, "not_checked").len(), 1, "{bare:#}");
    psql(&cluster, &db, "drop role bare");

    // A managed service, as far as doctor can tell one: its admin role and its setting.
    psql(
        &cluster,
        &db,
        &format!(
            "create role rds_superuser nologin; \
             alter database {} set rds.logical_replication = 'off'",
            quote(&db)
        ),
    );
    let (_, managed) = report(dir.path(), &url, &[]);
    assert_eq!(managed["server"]["managed"], "rds", "{managed:#}");
    let off = with_code(&managed, "managed_logical_replication_off");
    assert_eq!(off.len(), 1, "{managed:#}");
    assert!(off[0]["fix"]
        .as_str()
        .unwrap_or("")
        .contains("parameter group"));
    assert!(with_code(&managed, "wal_level_not_logical")[0]["fix"]
        .as_str()
        .unwrap_or("")
        .contains("rds.logical_replication"));

    // No server: exit 2 with one error line, no report.
    let port = cluster.port();
    drop(cluster);
    let gone = doctor(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=5"),
        &["--format", "json"],
    );
    gone.error();
}

/// A name as SQL quotes it.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
