//! Planted functions and operators: an application role that owns its
//! database and may create in `public` shadows every built-in function
//! pgtrail's SQL names (the list is read from pgtrail's own sources, so a
//! call added later is shadowed too) and the common operators, and puts
//! `public` before `pg_catalog` on the database's search path. Each planted
//! object records who ran it. Then pgtrail installs, tracks, captures with
//! triggers and logical replication, drains, checks, imports and verifies
//! with its superuser: no planted object may run as anyone but the
//! application.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgtrail_testkit::Cluster;

use crate::support::{pgtrail_in, Run};

/// Operators pgtrail's queries and functions use; each binary operator of
/// the catalog by these names, on ordinary types, gets a planted twin.
const OPERATORS: &[&str] = &[
    "=", "<>", "<", ">", "<=", ">=", "||", "->", "->>", "#>", "#>>", "@>", "<@", "?", "~~", "+",
    "-", "*", "/", "&&",
];

/// Every word followed by `(` in pgtrail's sources (Rust and SQL files):
/// a superset of the functions its SQL calls.
fn called_names() -> BTreeSet<String> {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    let mut stack = vec![crates];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !["target", "tests", "testkit", "pgtrail-testkit"].contains(&name.as_str()) {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") || name.ends_with(".sql") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let bytes = text.as_bytes();
                let mut start = None;
                for (i, &b) in bytes.iter().enumerate() {
                    if b.is_ascii_alphanumeric() || b == b'_' {
                        start.get_or_insert(i);
                        continue;
                    }
                    if let Some(s) = start.take() {
                        let rest = text[i..].trim_start_matches([' ', '\n']);
                        if rest.starts_with('(') && !bytes[s].is_ascii_digit() {
                            names.insert(text[s..i].to_ascii_lowercase());
                        }
                    }
                }
            }
        }
    }
    names
}

/// The attacker's SQL: a log of runs, then a twin in `public` of each
/// catalog function named in `names` (the same arguments and result, or
/// one to four `text` arguments for a variadic `"any"` one, which beat the
/// catalog's even with `pg_catalog` first), and of each operator.
fn plant_sql(names: &BTreeSet<String>) -> String {
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let operators = OPERATORS
        .iter()
        .map(|o| format!("'{o}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
create table public.ran (fn text, who name);
grant insert on public.ran to public;
do $plant$
declare
    f record;
    body text;
    n int;
    made int := 0;
    ops int := 0;
begin
    set local search_path = pg_catalog;
    for f in
        select p.proname::text as name, pg_get_function_arguments(p.oid) as args,
               pg_get_function_result(p.oid) as result, p.proretset,
               coalesce(p.proargmodes && array['o', 'b', 't']::"char"[], false) as has_out,
               exists (select 1 from unnest(p.proargtypes::oid[]) t where t = '"any"'::regtype) as takes_any,
               p.oid::regprocedure::text as sig
        from pg_proc p
        where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind = 'f'
          and p.proname = any(array[{list}]::text[])
          and not exists (select 1 from unnest(p.proargtypes::oid[] || p.prorettype) t
                          join pg_type ty on ty.oid = t
                          where ty.typtype = 'p' and ty.typname not in
                            ('any', 'anyelement', 'anyarray', 'anynonarray', 'anycompatible',
                             'anycompatiblearray', 'anycompatiblenonarray', 'record', 'void'))
    loop
        body := format($b$begin
            begin
                insert into public.ran values (%L, current_user);
            exception when others then
                raise exception 'planted object %% ran as %%', %L, current_user;
            end;
            %s
        end$b$, f.sig, f.sig,
            case when f.proretset or f.has_out or f.result = 'void' then 'return;' else 'return null;' end);
        if f.takes_any then
            for n in 1..4 loop
                begin
                    execute format('create function public.%I(%s) returns %s language plpgsql as %L',
                                   f.name, array_to_string(array_fill('text'::text, array[n]), ', '),
                                   f.result, body);
                    made := made + 1;
                exception when others then null;
                end;
            end loop;
        else
            begin
                execute format('create function public.%I(%s) returns %s language plpgsql as %L',
                               f.name, f.args, f.result, body);
                made := made + 1;
            exception when others then null;
            end;
        end if;
    end loop;
    for f in
        select o.oprname::text as name, o.oprleft::regtype::text as l, o.oprright::regtype::text as r,
               o.oprresult::regtype::text as result, o.oprcode::regproc::text as code,
               o.oid::regoperator::text as sig
        from pg_operator o
        where o.oprnamespace = 'pg_catalog'::regnamespace and o.oprkind = 'b'
          and o.oprname = any(array[{operators}]::text[])
          and not exists (select 1 from pg_type ty where ty.oid in (o.oprleft, o.oprright, o.oprresult)
                          and ty.typtype = 'p')
    loop
        ops := ops + 1;
        begin
            execute format('create function public.%I(%s, %s) returns %s language plpgsql as %L',
                'planted_op_' || ops, f.l, f.r, f.result,
                format($b$begin
                    begin
                        insert into public.ran values (%L, current_user);
                    exception when others then
                        raise exception 'planted object %% ran as %%', %L, current_user;
                    end;
                    return pg_catalog.%s($1, $2);
                end$b$, f.sig, f.sig, f.code));
            execute format('create operator public.%s (leftarg = %s, rightarg = %s, function = public.%I)',
                f.name, f.l, f.r, 'planted_op_' || ops);
            made := made + 1;
        exception when others then null;
        end;
    end loop;
    raise notice 'planted %', made;
end
$plant$;
"#
    )
}

/// A session of the test's own that no planted object can reach.
async fn safe_client(url: &str) -> tokio_postgres::Client {
    let url = format!("{url}?options=-c%20search_path%3Dpg_catalog%2Cpg_temp");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Planted objects that ran, as (signature, role), with the role not the
/// application's own.
async fn ran_as_others(url: &str) -> Vec<(String, String)> {
    let client = safe_client(url).await;
    client
        .query(
            "select distinct fn, who::text from public.ran where who <> 'app' order by 1, 2",
            &[],
        )
        .await
        .expect("read the attacker's log")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pgtrail(dir: &Path, args: &[&str]) -> Run {
    pgtrail_in(dir, args, &[], None)
}

/// Exit 0 (or 1 where the command reports findings), and no word of a
/// planted object in what it printed.
#[track_caller]
fn clean(run: &Run, findings_allowed: bool) {
    let ok = run.code == 0 || (findings_allowed && run.code == 1);
    assert!(ok, "{run:#?}");
    assert!(
        !run.stdout.contains("planted object") && !run.stderr.contains("planted object"),
        "{run:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_object_an_application_plants_runs_in_any_pgtrail_session() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("shadowed").await.expect("database");
    let db = url.rsplit('/').next().expect("db").to_string();
    let app_url = url.replace("postgres@", "app@");
    let admin = safe_client(&url).await;
    admin
        .batch_execute(&format!(
            "create role app login; \
             alter database \"{db}\" owner to app; \
             grant create on schema public to app; \
             set role app; \
             create table public.orders (id int primary key, item text, qty int); \
             create table public.audit_log (id bigserial primary key, table_name text not null, \
                 operation text not null, old_data jsonb, new_data jsonb, changed_by text, \
                 changed_at timestamptz not null default pg_catalog.now()); \
             insert into public.audit_log (table_name, operation, new_data, changed_by) \
                 values ('public.orders', 'INSERT', '{{\"id\": 1, \"item\": \"pen\", \"qty\": 1}}', 'ann'); \
             reset role"
        ))
        .await
        .expect("the application's schema");
    let names = called_names();
    for name in [
        "format",
        "to_regclass",
        "quote_ident",
        "current_setting",
        "jsonb_build_object",
    ] {
        assert!(
            names.contains(name),
            "{name} is among the names pgtrail calls"
        );
    }
    let (app, connection) = tokio_postgres::connect(&app_url, tokio_postgres::NoTls)
        .await
        .expect("connect as app");
    tokio::spawn(connection);
    app.batch_execute(&plant_sql(&names)).await.expect("plant");
    // The database's owner puts its schema first for every new session.
    app.batch_execute(&format!(
        "alter database \"{db}\" set search_path = public, pg_catalog"
    ))
    .await
    .expect("search path");
    drop(app);
    let planted: i64 = admin
        .query_one(
            "select count(*) from pg_proc where pronamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert!(planted > 200, "only {planted} planted functions");

    // The attack is live: a session that does not fix its path runs them.
    let (victim, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    victim
        .batch_execute(
            "select format('%s.%s', 'a'::text, 'b'::text), to_regclass('public.orders'), \
                    'a'::text = 'b'::text",
        )
        .await
        .expect("a naive session");
    drop(victim);
    let live = ran_as_others(&url).await;
    assert!(
        ["format(", "to_regclass(", "=(text,text)"]
            .iter()
            .all(|name| live
                .iter()
                .any(|(f, who)| f.starts_with(name) && who == "postgres")),
        "{live:?}"
    );
    admin
        .batch_execute("delete from public.ran")
        .await
        .expect("clear");

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    clean(&pgtrail(d, &["install", "--db", &url]), false);
    clean(&pgtrail(d, &["track", "--db", &url, "orders"]), false);

    // The application writes as it likes, on its own path.
    let (app, connection) = tokio_postgres::connect(&app_url, tokio_postgres::NoTls)
        .await
        .expect("connect as app");
    tokio::spawn(connection);
    app.batch_execute(
        "set pgtrail.\"user\" = 'alice'; \
         insert into orders values (1, 'pen', 1), (2, 'ink', 2); \
         update orders set qty = qty + 1 where id = 1; \
         delete from orders where id = 2; \
         alter table orders add column note text; \
         create table public.scratch (id int); drop table public.scratch",
    )
    .await
    .expect("application writes");
    clean(
        &pgtrail(d, &["--store", &url, "drain", "--db", &url]),
        false,
    );
    clean(
        &pgtrail(d, &["status", "--db", &url, "--check", "--format", "json"]),
        true,
    );
    clean(
        &pgtrail(d, &["doctor", "--db", &url, "--format", "json"]),
        true,
    );

    // Logical replication of the same table, with the actor triggers.
    clean(
        &pgtrail(
            d,
            &[
                "replicate",
                "--db",
                &url,
                "--setup",
                "--actor",
                "--tables",
                "public.orders",
                "--slot",
                "planted",
                "--publication",
                "planted",
                "--no-stream",
            ],
        ),
        false,
    );
    app.batch_execute(
        "set pgtrail.\"user\" = 'bob'; \
         insert into orders values (3, 'cap', 3); update orders set qty = 9 where id = 3",
    )
    .await
    .expect("application writes again");
    // Into the Postgres store in the audited database, as the triggers' events.
    let store_file = url.as_str();
    let orders_events = || {
        let log = pgtrail(
            d,
            &[
                "--store",
                &url,
                "log",
                "--table",
                "public.orders",
                "--limit",
                "1000",
                "--format",
                "jsonl",
            ],
        );
        clean(&log, false);
        log.stdout.lines().count()
    };
    let before = orders_events();
    let mut replicate = Command::new(env!("CARGO_BIN_EXE_pgtrail"))
        .args([
            "--store",
            store_file,
            "replicate",
            "--db",
            &url,
            "--slot",
            "planted",
            "--publication",
            "planted",
        ])
        .current_dir(d)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replicate");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = orders_events();
        if now >= before + 2 {
            break;
        }
        if let Some(status) = replicate.try_wait().expect("try_wait") {
            let out = replicate.wait_with_output().expect("output");
            panic!(
                "replicate exited {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no replicated events: {now} of {before} + 2"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &replicate.id().to_string()])
        .status();
    let out = replicate.wait_with_output().expect("replicate stops");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("planted object"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    clean(
        &pgtrail(
            d,
            &["replicate", "--db", &url, "--slot", "planted", "--status"],
        ),
        true,
    );

    // Import from the application's audit table, and read the Postgres
    // store inside the audited database.
    clean(
        &pgtrail(
            d,
            &[
                "--store",
                &url,
                "import",
                "--from",
                "table",
                &url,
                "--table",
                "public.audit_log",
            ],
        ),
        false,
    );
    clean(&pgtrail(d, &["--store", &url, "verify"]), false);
    let trail = pgtrail(
        d,
        &[
            "--store",
            &url,
            "log",
            "--table",
            "public.orders",
            "--format",
            "jsonl",
        ],
    );
    clean(&trail, false);
    assert!(
        trail.stdout.lines().count() >= 4,
        "trigger capture and the import stored events: {trail:#?}"
    );

    // Functions pgtrail made without a search path of their own: each is
    // one an application's session calls (capture, identity), kept without
    // the per-call setting for speed, with every name in it qualified; the
    // application's writes above ran each on its hostile path.
    let unpinned: Vec<String> = admin
        .query(
            "select p.oid::regprocedure::text from pg_proc p \
             join pg_namespace n on n.oid = p.pronamespace \
             where n.nspname in ('pgtrail', 'pgtrail_cdc') \
               and not exists (select 1 from unnest(p.proconfig) c where c like 'search\\_path=%') \
             order by 1",
            &[],
        )
        .await
        .expect("functions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = [
        "pgtrail.app_context()",
        "pgtrail.app_user()",
        "pgtrail.comment_user_keys()",
        "pgtrail_cdc.context()",
        "pgtrail_cdc.set_context(text,jsonb)",
        "pgtrail_cdc.statement_comment(text)",
    ];
    let unknown: Vec<&String> = unpinned
        .iter()
        .filter(|f| !known.contains(&f.as_str()) && !f.starts_with("pgtrail.capture_"))
        .collect();
    assert!(
        unknown.is_empty(),
        "a function without `SET search_path`: qualify every name in it and list it here, \
         or give it one: {unknown:?}"
    );
    assert!(unpinned.iter().any(|f| f.starts_with("pgtrail.capture_")));

    let ran = ran_as_others(&url).await;
    assert!(
        ran.is_empty(),
        "planted objects ran inside pgtrail's work: {ran:#?}"
    );
}

/// The audit table's owner adds a row security policy whose function
/// records who ran it; `import --from table` as a role that may only read
/// the table refuses the table instead of running the policy as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_never_runs_a_table_owners_policy() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("policy").await.expect("database");
    let admin = safe_client(&url).await;
    admin
        .batch_execute(
            "create role app login; create role auditor login; \
             grant create on schema public to app; \
             set role app; \
             create table public.ran (fn text, who name); \
             grant insert on public.ran to public; \
             create function public.watch() returns boolean language plpgsql as $$ \
               begin insert into public.ran values ('policy', current_user); return true; end $$; \
             create table public.audit_log (id bigserial primary key, table_name text not null, \
                 operation text not null, old_data jsonb, new_data jsonb, changed_by text, \
                 changed_at timestamptz not null default pg_catalog.now()); \
             insert into public.audit_log (table_name, operation, new_data, changed_by) \
                 values ('public.orders', 'INSERT', '{\"id\": 1}', 'ann'); \
             alter table public.audit_log enable row level security; \
             create policy everyone on public.audit_log using (public.watch()); \
             grant select on public.audit_log to auditor; \
             reset role",
        )
        .await
        .expect("the owner's table");
    // The policy does run for a reader whose session allows it.
    let auditor_url = url.replace("postgres@", "auditor@");
    let (auditor, connection) = tokio_postgres::connect(&auditor_url, tokio_postgres::NoTls)
        .await
        .expect("connect as auditor");
    tokio::spawn(connection);
    auditor
        .batch_execute("select * from public.audit_log")
        .await
        .expect("read");
    let ran: i64 = admin
        .query_one("select count(*) from public.ran where who = 'auditor'", &[])
        .await
        .expect("count")
        .get(0);
    assert!(ran > 0, "the policy runs as its reader");
    admin
        .batch_execute("delete from public.ran")
        .await
        .expect("clear");

    let dir = tempfile::tempdir().expect("tempdir");
    let store = format!("sqlite:{}", dir.path().join("trail.db").display());
    let run = pgtrail(
        dir.path(),
        &[
            "--store",
            &store,
            "import",
            "--from",
            "table",
            &auditor_url,
            "--table",
            "public.audit_log",
        ],
    );
    let line = run.error();
    assert!(line.contains("row-level security"), "{line}");
    let ran: i64 = admin
        .query_one("select count(*) from public.ran", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(ran, 0, "the owner's policy ran inside the import");
}
