//! `pgtrail import --from pgaudit` and `--from table`: old audit history
//! from a real pgAudit on a throwaway cluster (its stderr, csvlog and
//! jsonlog files) and from real trigger-fed audit tables, sealed into a
//! store like any other event.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pgtrail_core::{Event, Source};
use pgtrail_testkit::{Cluster, ClusterOptions};

use crate::support::{Backend, Trail};

const PREFIX: &str = "%m [%p] %q%u@%d ";
const PASSWORD: &str = "sekret-pw-4711";

fn pgaudit_cluster() -> Cluster {
    let settings = [
        ("shared_preload_libraries", "pgaudit"),
        ("pgaudit.log", "all"),
        ("pgaudit.log_parameter", "on"),
        ("pgaudit.log_relation", "on"),
        ("logging_collector", "on"),
        ("log_destination", "stderr,csvlog,jsonlog"),
        ("log_directory", "audit_logs"),
        ("log_filename", "audit.log"),
        ("log_line_prefix", PREFIX),
        ("log_connections", "on"),
        ("log_disconnections", "on"),
    ];
    Cluster::start_with(ClusterOptions {
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ClusterOptions::default()
    })
    .expect("a cluster with pgAudit (Debian package postgresql-15-pgaudit; .ci/run installs it)")
}

/// The statements whose audit lines the test imports, run as an
/// application would: over TCP, as its own role, with an application name.
async fn audited_workload(cluster: &Cluster) {
    cluster
        .psql(
            "postgres",
            "create role app login; grant create on schema public to app",
        )
        .expect("role");
    let url = format!(
        "postgres://app@127.0.0.1:{}/postgres?application_name=shop",
        cluster.port()
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect as app");
    let task = tokio::spawn(connection);
    client
        .batch_execute(
            "create table orders (id int primary key, note text);
             create table customers (id int primary key, name text)",
        )
        .await
        .expect("tables");
    client
        .batch_execute("insert into orders values (1, 'a, \"quoted\" note')")
        .await
        .expect("insert");
    client
        .batch_execute(
            "select o.id,\n       c.name\n  from orders o join customers c on c.id = o.id",
        )
        .await
        .expect("multi-line join");
    client
        .query("select note from orders where id = $1", &[&1i32])
        .await
        .expect("extended protocol with a parameter");
    // One query string, two statements: pgAudit redacts the password only
    // in the ALTER ROLE's own line, and logs the whole string (password
    // included) with the UPDATE.
    client
        .batch_execute(&format!(
            "update orders set note = 'b' where id = 1; alter role app password '{PASSWORD}'"
        ))
        .await
        .expect("two statements in one query");
    drop(client);
    let _ = task.await;
}

/// The three files once the collector wrote the last statement's lines.
fn audit_logs(cluster: &Cluster) -> Vec<std::path::PathBuf> {
    let dir = cluster.data_dir().join("audit_logs");
    let files: Vec<_> = ["audit.log", "audit.csv", "audit.json"]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = files.iter().all(|file| {
            std::fs::read_to_string(file)
                .is_ok_and(|text| text.contains("ALTER ROLE") && text.contains("disconnection"))
        });
        if done {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "the collector never wrote {files:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `pgtrail import --from pgaudit FILE` with the cluster's prefix, its summary.
fn import_pgaudit(trail: &Trail, file: &str) -> serde_json::Value {
    trail
        .run(&[
            "--format",
            "json",
            "import",
            "--from",
            "pgaudit",
            file,
            "--log-line-prefix",
            PREFIX,
            "--keep-params",
        ])
        .json()
}

fn exported(trail: &Trail) -> Vec<Event> {
    trail.run(&["export"]).events()
}

/// What must agree across the three formats.
fn summary(events: &[Event]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| {
            format!(
                "{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
                e.class,
                e.command_tag,
                e.sql,
                e.objects,
                e.db_user,
                e.database,
                e.client_addr,
                e.application_name,
                e.params
                    .as_ref()
                    .map(|p| p.iter().map(|v| v.to_string()).collect::<Vec<_>>()),
            )
        })
        .collect()
}

fn store_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        if entry.path().is_file() {
            all.extend(std::fs::read(entry.path()).expect("read"));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgaudit_logs_in_every_format_import_as_the_same_statements_without_the_password() {
    let cluster = pgaudit_cluster();
    audited_workload(&cluster).await;
    let logs = audit_logs(&cluster);
    let raw = std::fs::read_to_string(&logs[0]).expect("stderr log");
    assert!(
        raw.contains(PASSWORD),
        "pgAudit logs the password with the other statement of its query (what the import must not keep)"
    );

    let mut summaries = Vec::new();
    for log in &logs {
        let trail = Trail::new(Backend::Sqlite).await;
        let file = log.to_str().expect("path");
        let report = import_pgaudit(&trail, file);
        let events = exported(&trail);
        assert!(!events.is_empty(), "{file}: {report}");
        assert_eq!(report["imported"], events.len(), "{file}: {report}");
        for event in &events {
            assert_eq!(event.source, Source::Import);
            let imported = &event.context.as_ref().expect("context")["imported"];
            assert_eq!(imported["from"], "pgaudit", "{event:?}");
            let provenance = event.provenance.as_ref().expect("provenance");
            assert!(
                provenance.vouched.is_empty(),
                "nothing imported is vouched for: {event:?}"
            );
        }
        let app: Vec<&Event> = events
            .iter()
            .filter(|e| e.db_user.as_deref() == Some("app"))
            .collect();
        assert!(
            app.iter()
                .all(|e| e.client_addr.as_deref() == Some("127.0.0.1")
                    && e.application_name.as_deref() == Some("shop")
                    && e.database.as_deref() == Some("postgres")),
            "{file}: who and from where: {app:#?}"
        );
        let join = app
            .iter()
            .find(|e| {
                e.sql
                    .as_deref()
                    .is_some_and(|s| s.contains("join customers"))
            })
            .expect("the join");
        assert!(
            join.sql
                .as_deref()
                .is_some_and(|s| s.contains("\n       c.name")),
            "multi-line kept: {join:?}"
        );
        let objects: BTreeSet<&str> = join.objects.iter().map(String::as_str).collect();
        assert_eq!(
            objects,
            BTreeSet::from(["public.customers", "public.orders"]),
            "{file}"
        );
        let bound = app
            .iter()
            .find(|e| e.sql.as_deref() == Some("select note from orders where id = $1"))
            .expect("the extended-protocol select");
        assert_eq!(bound.params.as_ref().map(Vec::len), Some(1), "{bound:?}");
        assert_eq!(bound.class.as_deref(), Some("READ"));
        let insert = app
            .iter()
            .find(|e| e.command_tag.as_deref() == Some("INSERT"))
            .expect("insert");
        assert!(
            insert
                .sql
                .as_deref()
                .is_some_and(|s| s.contains("\"quoted\"")),
            "{insert:?}"
        );
        assert!(
            app.iter().any(|e| e.class.as_deref() == Some("ROLE")),
            "the ALTER ROLE is there, its password not"
        );
        assert!(
            !store_bytes(trail.dir.path())
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "{file}: the password reached the store"
        );
        trail.run(&["verify"]).ok();
        // Again: the same records, the same ids, nothing added.
        let again = import_pgaudit(&trail, file);
        assert_eq!(again["imported"], 0, "{again}");
        assert_eq!(again["duplicates"], events.len(), "{again}");
        summaries.push((file.to_string(), summary(&events)));
    }
    for (file, other) in &summaries[1..] {
        assert_eq!(
            &summaries[0].1, other,
            "{} and {file} disagree",
            summaries[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_line_prefix_that_does_not_match_stops_with_the_line() {
    let trail = Trail::new(Backend::Sqlite).await;
    let log = trail.path("odd.log");
    std::fs::write(
        &log,
        "2026-12-06 10:00:00.000 UTC [42] LOG:  AUDIT: SESSION,1,1,READ,SELECT,,,select 1,<not logged>\n\
         this is not a log line\n",
    )
    .expect("write");
    let error = trail
        .run(&["import", "--from", "pgaudit", log.to_str().expect("path")])
        .error()
        .to_string();
    assert!(error.contains("odd.log line 2"), "{error}");
    assert!(error.contains("log_line_prefix"), "{error}");
}

/// `audit.logged_actions` as the "audit trigger 91plus" script lays it out
/// (hstore images), filled by a trigger written here to that layout; and a
/// JSONB audit log with the application's user, filled by another.
const AUDIT_TABLES: &str = r#"
create extension hstore;
create schema audit;
create table audit.logged_actions (
    event_id bigserial primary key,
    schema_name text not null,
    table_name text not null,
    relid oid not null,
    session_user_name text,
    action_tstamp_tx timestamptz not null,
    action_tstamp_stm timestamptz not null,
    action_tstamp_clk timestamptz not null,
    transaction_id bigint,
    application_name text,
    client_addr inet,
    client_port integer,
    client_query text,
    action text not null check (action in ('I','D','U','T')),
    row_data hstore,
    changed_fields hstore,
    statement_only boolean not null
);
create function audit.if_modified_func() returns trigger language plpgsql security definer
set search_path = pg_catalog, public as $$
declare
    row audit.logged_actions;
begin
    row := row(nextval('audit.logged_actions_event_id_seq'), TG_TABLE_SCHEMA::text,
        TG_TABLE_NAME::text, TG_RELID, session_user::text, current_timestamp,
        statement_timestamp(), clock_timestamp(), txid_current(),
        current_setting('application_name'), inet_client_addr(), inet_client_port(),
        current_query(), substring(TG_OP, 1, 1), null, null, 'f');
    if TG_OP = 'UPDATE' then
        row.row_data := hstore(OLD.*);
        row.changed_fields := (hstore(NEW.*) - row.row_data);
        if row.changed_fields = hstore('') then return null; end if;
    elsif TG_OP = 'DELETE' then
        row.row_data := hstore(OLD.*);
    elsif TG_OP = 'INSERT' then
        row.row_data := hstore(NEW.*);
    end if;
    insert into audit.logged_actions values (row.*);
    return null;
end $$;
create table public.accounts (id int primary key, owner text, balance numeric);
create trigger audit_trigger_row after insert or update or delete on public.accounts
    for each row execute procedure audit.if_modified_func();

create table public.audit_log (
    id bigserial primary key,
    table_name text not null,
    operation text not null,
    old_data jsonb,
    new_data jsonb,
    changed_by text,
    changed_at timestamptz not null default now()
);
create function public.log_change() returns trigger language plpgsql security definer as $$
begin
    insert into public.audit_log (table_name, operation, old_data, new_data, changed_by)
    values (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, TG_OP,
        case when TG_OP <> 'INSERT' then to_jsonb(OLD) end,
        case when TG_OP <> 'DELETE' then to_jsonb(NEW) end,
        current_setting('app.user', true));
    return null;
end $$;
create table public.orders (id int primary key, item text, qty int);
create trigger log_change after insert or update or delete on public.orders
    for each row execute function public.log_change();
create role clerk login;
grant all on public.accounts, public.orders to clerk;
grant usage on all sequences in schema audit, public to clerk;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_tables_import_as_row_changes_with_their_history() {
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.create_database("legacy").await.expect("database");
    let (admin, connection) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    admin
        .batch_execute(AUDIT_TABLES)
        .await
        .expect("audit tables");
    let clerk_url = format!(
        "{}?application_name=backoffice",
        db.replace("postgres@", "clerk@")
    );
    let (clerk, connection) = tokio_postgres::connect(&clerk_url, tokio_postgres::NoTls)
        .await
        .expect("connect as clerk");
    tokio::spawn(connection);
    clerk
        .batch_execute(
            "insert into accounts values (1, 'ann', 10.50), (2, 'bob', 3);
             update accounts set balance = 99.95 where id = 1;
             delete from accounts where id = 2;
             begin; select set_config('app.user', 'alice@example.com', true);
             insert into orders values (7, 'pen', 1);
             update orders set qty = 3 where id = 7;
             delete from orders where id = 7; commit;",
        )
        .await
        .expect("changes");

    let trail = Trail::new(Backend::Sqlite).await;
    for table in ["audit.logged_actions", "public.audit_log"] {
        let report = trail
            .run(&[
                "--format", "json", "import", "--from", "table", &db, "--table", table,
            ])
            .json();
        assert_eq!(
            report["imported"],
            if table == "audit.logged_actions" {
                4
            } else {
                3
            },
            "{table}: {report}"
        );
    }
    let events = exported(&trail);
    let accounts: Vec<&Event> = events
        .iter()
        .filter(|e| e.table.as_deref() == Some("accounts"))
        .collect();
    let update = accounts
        .iter()
        .find(|e| e.operation.as_deref() == Some("UPDATE"))
        .expect("the update");
    assert_eq!(update.changed, ["balance"]);
    assert_eq!(update.old.as_ref().expect("old")["balance"], "10.50");
    assert_eq!(update.new.as_ref().expect("new")["balance"], "99.95");
    assert_eq!(update.pk.as_ref().expect("pk from the catalog")["id"], "1");
    assert_eq!(update.db_user.as_deref(), Some("clerk"));
    assert_eq!(update.client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(update.application_name.as_deref(), Some("backoffice"));
    assert!(
        update
            .sql
            .as_deref()
            .is_some_and(|s| s.contains("update accounts")),
        "{update:?}"
    );
    let orders: Vec<&Event> = events
        .iter()
        .filter(|e| e.table.as_deref() == Some("orders"))
        .collect();
    assert_eq!(orders.len(), 3);
    assert!(orders
        .iter()
        .all(|e| e.app_user.as_deref() == Some("alice@example.com")
            && e.provenance
                .as_ref()
                .is_some_and(|p| !p.channels("app_user").is_empty())));
    let update = orders
        .iter()
        .find(|e| e.operation.as_deref() == Some("UPDATE"))
        .expect("update");
    assert_eq!(update.changed, ["qty"]);
    assert_eq!(
        update.old.as_ref().expect("old")["qty"],
        1,
        "JSONB keeps types"
    );

    // The rows' history reads the imported changes like captured ones.
    let history = trail
        .run(&["history", "public.accounts", "id=1"])
        .ok()
        .to_string();
    assert!(history.contains("99.95"), "{history}");
    trail.run(&["verify"]).ok();
    let again = trail
        .run(&[
            "--format",
            "json",
            "import",
            "--from",
            "table",
            &db,
            "--table",
            "audit.logged_actions",
        ])
        .json();
    assert_eq!(again["imported"], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_table_name_is_a_name_not_sql() {
    let cluster = Cluster::start().expect("cluster");
    let db = cluster.create_database("legacy").await.expect("database");
    cluster
        .psql(
            db.rsplit('/').next().expect("name"),
            "create table victim (id int)",
        )
        .expect("victim");
    let trail = Trail::new(Backend::Sqlite).await;
    let error = trail
        .run(&[
            "import",
            "--from",
            "table",
            &db,
            "--table",
            "public.x\"; drop table victim; --",
        ])
        .error()
        .to_string();
    assert!(error.contains("no table"), "{error}");
    let left = cluster
        .psql(
            db.rsplit('/').next().expect("name"),
            "select count(*) from victim",
        )
        .expect("victim still there");
    assert_eq!(left.trim(), "0");
}
