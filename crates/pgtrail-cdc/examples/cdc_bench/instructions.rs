//! `--only i`: instructions per single-row UPDATE transaction, with and
//! without the context trigger, counted by valgrind's callgrind.
//!
//! CPU time on a shared two-core machine moves by 10% or more; instruction
//! counts repeat to about 1%, so trigger variants are compared by them (the
//! method of bench/triggers). Every variant gets an identical copy of the
//! table; the cluster is then stopped and each database runs a DO block of
//! single-row UPDATEs, each its own transaction, in a single-user backend
//! under callgrind, counting only the DO block. (A single-user backend has
//! no client socket, so `inet_client_addr()` costs a little less than in
//! production.)

use std::path::Path;
use std::process::{Command, Stdio};

use pgtrail_core::config::IdentityConfig;
use pgtrail_testkit::Cluster;
use serde_json::{json, Value};

/// Transactions counted per variant.
const TRANSACTIONS: u64 = 2_000;

/// The context function as pgtrail installed it before the array payload
/// (commit ef83340), for a before/after in one run.
const CONTEXT_BEFORE: &str = r#"create schema if not exists pgtrail;
create or replace function pgtrail.cdc_context() returns trigger
language plpgsql as $fn$
declare
  actor_key text := concat(current_setting('pgtrail.user', true), chr(31), current_setting('app.current_user', true), chr(31), current_setting('pgtrail.context', true), chr(31), current_user);
begin
  if current_setting('pgtrail.cdc_sent', true) is distinct from actor_key then
    perform pg_catalog.pg_logical_emit_message(true, 'pgtrail', (pg_catalog.json_build_object('app_user', coalesce(nullif(pg_catalog.current_setting('pgtrail.user', true), ''), nullif(pg_catalog.current_setting('app.current_user', true), '')), 'context', nullif(pg_catalog.current_setting('pgtrail.context', true), ''), 'db_user', session_user::text, 'current_user', current_user::text, 'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()), 'client_port', pg_catalog.inet_client_port(), 'application_name', pg_catalog.current_setting('application_name'), 'backend_pid', pg_catalog.pg_backend_pid()))::text);
    perform set_config('pgtrail.cdc_sent', actor_key, true);
  end if;
  return null;
end
$fn$;
create trigger pgtrail_cdc_context before insert or update or delete or truncate on acct
  for each statement execute function pgtrail.cdc_context();"#;

/// The context function of the release before schema `pgtrail_cdc`: the
/// same array payload, running as the writer, sent once per transaction and
/// again only when the actor changed, remembered in a transaction-local
/// setting (`pgtrail.cdc_sent`) — which any application could set to make
/// it send nothing. For a before/after in one run.
const CONTEXT_MARKER: &str = r#"create schema if not exists pgtrail;
create or replace function pgtrail.cdc_statement_comment(statement text) returns text
language sql immutable parallel safe as $fn$
  select coalesce(
    pg_catalog.substring(pg_catalog.right(statement, 4096), '/\*(?:[^*]|\*+[^*/])*\*+/[\s;]*$'),
    pg_catalog.substring(pg_catalog.left(statement, 4096), '^\s*/\*(?:[^*]|\*+[^*/])*\*+/'))
$fn$;
create or replace function pgtrail.cdc_context() returns trigger
language plpgsql as $fn$
declare
  actor text := pg_catalog.to_json(array[session_user::text, current_user::text,
    pg_catalog.host(pg_catalog.inet_client_addr()), pg_catalog.inet_client_port()::text,
    pg_catalog.current_setting('application_name'), pg_catalog.pg_backend_pid()::text,
    pg_catalog.current_setting('pgtrail.context', true),
    case when pg_catalog.strpos(pg_catalog.current_query(), '*/') operator(pg_catalog.>) 0
      then pgtrail.cdc_statement_comment(pg_catalog.current_query()) end,
    pg_catalog.current_setting('pgtrail.user', true),
    pg_catalog.current_setting('app.current_user', true)])::text;
  emitted pg_catalog.pg_lsn;
  sent text;
begin
  if actor is distinct from pg_catalog.current_setting('pgtrail.cdc_sent', true) then
    emitted := pg_catalog.pg_logical_emit_message(true, 'pgtrail', actor);
    sent := pg_catalog.set_config('pgtrail.cdc_sent', actor, true);
  end if;
  return null;
end
$fn$;
create trigger pgtrail_cdc_context before insert or update or delete or truncate on acct
  for each statement execute function pgtrail.cdc_context();"#;

/// An empty statement trigger: what calling any PL/pgSQL trigger costs.
const EMPTY_TRIGGER: &str = r#"create function empty_trigger() returns trigger
language plpgsql as $fn$ begin return null; end $fn$;
create trigger empty before insert or update or delete or truncate on acct
  for each statement execute function empty_trigger();"#;

enum Variant {
    /// No trigger.
    None,
    /// SQL run after the table is created.
    Sql(&'static str),
    /// pgtrail's current context trigger, installed as `--setup --context`
    /// does: SECURITY DEFINER, sent before every statement.
    Current,
}

pub async fn run() -> Value {
    println!("\n(i) instructions per single-row UPDATE transaction (callgrind, single-user backend, {TRANSACTIONS} transactions)");
    if Command::new("valgrind")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map_or(true, |s| !s.success())
    {
        println!("valgrind is not installed: skipped");
        return Value::Null;
    }
    let variants = [
        ("no trigger", "none", Variant::None),
        (
            "empty PL/pgSQL trigger",
            "empty",
            Variant::Sql(EMPTY_TRIGGER),
        ),
        (
            "context trigger before",
            "before",
            Variant::Sql(CONTEXT_BEFORE),
        ),
        (
            "once per tx, marker (previous)",
            "marker",
            Variant::Sql(CONTEXT_MARKER),
        ),
        ("context trigger now", "now", Variant::Current),
    ];
    let mut cluster = Cluster::start().expect("cluster");
    for (_, key, variant) in &variants {
        let db = format!("ir_{key}");
        cluster
            .psql("postgres", &format!("create database {db}"))
            .expect("database");
        let client = cluster.connect(&db).await.expect("connects");
        client
            .batch_execute(
                "create table acct (id int primary key, n int not null, note text);
                 insert into acct select g, 0, 'row ' || g from generate_series(1, 100000) g;",
            )
            .await
            .expect("schema");
        client
            .batch_execute("vacuum analyze acct")
            .await
            .expect("vacuum");
        match variant {
            Variant::None => {}
            Variant::Sql(sql) => client.batch_execute(sql).await.expect("variant"),
            Variant::Current => {
                let tables = pgtrail_cdc::catalog::resolve_tables(&client, &Default::default())
                    .await
                    .expect("tables");
                pgtrail_cdc::triggers::install_actor(&client, &IdentityConfig::default(), &tables)
                    .await
                    .expect("context trigger");
            }
        }
    }
    // The test cluster commits asynchronously and stops immediately: without
    // a checkpoint the last commits (the last trigger) would be lost.
    cluster.psql("postgres", "checkpoint").expect("checkpoint");
    cluster.stop().expect("cluster stops");
    let postgres = cluster.binaries().program("postgres");
    let mut results = serde_json::Map::new();
    for statements in [1, 5] {
        println!("transactions of {statements} single-row UPDATE(s):");
        println!(
            "{:<32} {:>12} {:>8} {:>18}",
            "variant", "instr./tx", "ratio", "trigger instr./tx"
        );
        let mut baseline = None;
        for (label, key, _) in &variants {
            let db = format!("ir_{key}");
            let (total, trigger) = count(&postgres, &cluster.data_dir(), &db, statements);
            let base = *baseline.get_or_insert(total);
            println!(
                "{label:<32} {total:>12} {:>8.2} {trigger:>18}",
                total as f64 / base as f64
            );
            results.insert(
                format!("{key}_{statements}"),
                json!({"statements_per_tx": statements, "instructions_per_tx": total,
                       "trigger_instructions_per_tx": trigger}),
            );
        }
    }
    Value::Object(results)
}

/// Runs the DO block (transactions of `statements` single-row UPDATEs) in
/// database `db` under callgrind: (instructions per transaction, of which
/// in the statement triggers).
fn count(postgres: &Path, data_dir: &Path, db: &str, statements: u64) -> (u64, u64) {
    let out =
        std::env::temp_dir().join(format!("pgtrail-callgrind-{}-{db}.out", std::process::id()));
    let script = format!(
        "set synchronous_commit = off\ndo $$ begin for i in 1..{TRANSACTIONS} loop \
         for j in 1..{statements} loop update acct set n = n + 1 where id = (i * 7919 + j) % 100000 + 1; \
         end loop; commit; end loop; end $$;\n"
    );
    let valgrind_args = [
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--toggle-collect=plpgsql_inline_handler".into(),
        postgres.display().to_string(),
        "--single".into(),
        "-D".into(),
        data_dir.display().to_string(),
        db.into(),
    ];
    // The server refuses to run as root; the test cluster belongs to `postgres` then.
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c.args(&valgrind_args);
        c
    } else {
        let mut c = Command::new(&valgrind_args[0]);
        c.args(&valgrind_args[1..]);
        c
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("valgrind runs");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).expect("script written");
    }
    child.wait().expect("valgrind ends");
    let annotate = Command::new("callgrind_annotate")
        .args(["--inclusive=yes"])
        .arg(&out)
        .output()
        .expect("callgrind_annotate runs");
    let _ = std::fs::remove_file(&out);
    let text = String::from_utf8_lossy(&annotate.stdout);
    let number = |marker: &str| -> u64 {
        text.lines()
            .find(|l| l.contains(marker))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.replace(',', "").parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        number("PROGRAM TOTALS") / TRANSACTIONS,
        number(":ExecBSUpdateTriggers ") / TRANSACTIONS,
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
