//! Statement events from real traffic: a throwaway cluster, the proxy's
//! `serve` with a channel sink, tokio-postgres clients, and a
//! `SessionRecorder` per session turning each record into its event (as
//! the shell does).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pgtrail_core::config::{IdentityConfig, ProxyConfig, ProxyRule, RuleAction};
use pgtrail_core::event::{Channel, Event};
use pgtrail_proxy::{serve, Recorded, Recorder, SessionRecorder, Upstream};
use pgtrail_testkit::Cluster;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

struct Setup {
    cluster: Cluster,
    proxy_port: u16,
    records: mpsc::Receiver<Recorded>,
    recorder: Arc<Recorder>,
    sessions: HashMap<u64, SessionRecorder>,
}

async fn setup(config: ProxyConfig) -> Setup {
    let cluster = Cluster::start().expect("cluster");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = listener.local_addr().expect("addr").port();
    let upstream =
        Upstream::parse(&format!("{}?sslmode=disable", cluster.url("postgres"))).expect("url");
    let (sink, records) = mpsc::channel(64);
    tokio::spawn(serve(listener, upstream, sink));
    let recorder = Arc::new(Recorder::new(&config, &IdentityConfig::default()).expect("recorder"));
    Setup {
        cluster,
        proxy_port,
        records,
        recorder,
        sessions: HashMap::new(),
    }
}

impl Setup {
    async fn connect(&self, user: &str) -> Client {
        let url = format!("postgres://{user}@127.0.0.1:{}/postgres", self.proxy_port);
        let (client, connection) = tokio_postgres::connect(&url, NoTls)
            .await
            .expect("connect through the proxy");
        tokio::spawn(connection);
        client
    }

    async fn admin(&self) -> Client {
        self.cluster.connect("postgres").await.expect("direct")
    }

    /// The events of every record that arrives until none comes for 500 ms.
    async fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(Some(recorded)) =
            tokio::time::timeout(Duration::from_millis(500), self.records.recv()).await
        {
            let session = self
                .sessions
                .entry(recorded.session.id)
                .or_insert_with(|| self.recorder.session(Arc::clone(&recorded.session)));
            if let Some(event) = session.statement(&recorded.record) {
                out.push(event);
            }
        }
        out
    }
}

fn by_sql<'a>(events: &'a [Event], sql: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.sql.as_deref() == Some(sql))
        .unwrap_or_else(|| panic!("no event for {sql}: {events:#?}"))
}

#[tokio::test]
async fn real_statements_become_events() {
    let mut s = setup(ProxyConfig::default()).await;
    s.admin()
        .await
        .batch_execute(
            "CREATE SCHEMA app;
             CREATE TABLE app.t (id int PRIMARY KEY, name text);
             CREATE TABLE public.orders (id int PRIMARY KEY, t_id int);
             INSERT INTO app.t VALUES (1, 'one');",
        )
        .await
        .expect("schema");
    let client = s.connect("postgres").await;

    // A join lists both tables with their schemas.
    let join = "SELECT o.id FROM orders o JOIN app.t ON t.id = o.t_id";
    client.simple_query(join).await.expect("join");
    // search_path: an unqualified name resolves to app.t.
    client
        .simple_query("SET search_path = app")
        .await
        .expect("set");
    client
        .simple_query("SELECT * FROM t")
        .await
        .expect("select");
    // A failed INSERT.
    let dup = "INSERT INTO t VALUES (1, 'again')";
    let err = client.simple_query(dup).await.expect_err("duplicate");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
    // SQL-level PREPARE / EXECUTE.
    client
        .simple_query("PREPARE del(int) AS DELETE FROM t WHERE id = $1")
        .await
        .expect("prepare");
    client
        .simple_query("EXECUTE del(42)")
        .await
        .expect("execute");
    // An extended-protocol Execute of a named prepared statement.
    let update = "UPDATE t SET name = $1 WHERE id = $2";
    let statement = client.prepare(update).await.expect("parse");
    client
        .execute(&statement, &[&"uno", &1i32])
        .await
        .expect("update");
    // A multi-statement Query.
    let multi =
        "INSERT INTO t VALUES (2, 'two'); SELECT count(*) FROM t; DELETE FROM t WHERE id = 2";
    client.simple_query(multi).await.expect("multi");

    let events = s.events().await;
    let e = by_sql(&events, join);
    assert_eq!(e.class.as_deref(), Some("READ"));
    assert_eq!(e.objects, ["app.t", "public.orders"]);
    assert_eq!(e.db_user.as_deref(), Some("postgres"));
    assert!(e.backend_pid.is_some());

    let e = by_sql(&events, "SELECT * FROM t");
    assert_eq!(e.objects, ["app.t"]);
    assert_eq!(e.qualified_table().as_deref(), Some("app.t"));

    let e = by_sql(&events, dup);
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.sqlstate.as_deref(), Some("23505"));
    assert!(e.failed());

    let e = by_sql(&events, "EXECUTE del(42)");
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.operation.as_deref(), Some("DELETE"));
    assert_eq!(e.command_tag.as_deref(), Some("DELETE 0"));
    assert_eq!(e.objects, ["app.t"]);

    let e = by_sql(&events, update);
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.rows, Some(1));
    assert_eq!(
        e.context.as_ref().and_then(|c| c.get("protocol")),
        Some(&serde_json::json!("extended"))
    );

    let texts = [
        ("INSERT INTO t VALUES (2, 'two')", "WRITE", "INSERT 0 1"),
        ("SELECT count(*) FROM t", "READ", "SELECT 1"),
        ("DELETE FROM t WHERE id = 2", "WRITE", "DELETE 1"),
    ];
    for (text, class, tag) in texts {
        let e = by_sql(&events, text);
        assert_eq!(e.class.as_deref(), Some(class), "{text}");
        assert_eq!(e.command_tag.as_deref(), Some(tag), "{text}");
    }
}

/// Attacker: anyone changing a password through the proxy. The secret is
/// nowhere in the events: not when it succeeds, not when the server
/// refuses it, not when the parser rejects the text.
#[tokio::test]
async fn passwords_through_the_proxy_stay_out_of_the_trail() {
    let mut s = setup(ProxyConfig::default()).await;
    s.admin()
        .await
        .batch_execute("CREATE ROLE x LOGIN")
        .await
        .expect("role");
    let client = s.connect("postgres").await;
    let secret = "s3cr3t-Pa55";
    client
        .simple_query(&format!("ALTER ROLE x PASSWORD '{secret}'"))
        .await
        .expect("alter");
    client
        .simple_query(&format!("ALTER ROLE nobody PASSWORD '{secret}'"))
        .await
        .expect_err("no such role");
    client
        .simple_query(&format!(
            "ALTER ROLE x PASSWORD '{secret}' VALID UNTILL 'x'"
        ))
        .await
        .expect_err("syntax");
    client
        .simple_query(&format!("CREATE USER y PASSWORD '{secret}"))
        .await
        .expect_err("unterminated");
    let events = s.events().await;
    assert_eq!(events.len(), 4, "{events:#?}");
    for e in &events {
        let text = serde_json::to_string(e).expect("json");
        assert!(!text.contains(secret), "{text}");
    }
    assert_eq!(events[0].class.as_deref(), Some("ROLE"));
    assert_eq!(events[1].sqlstate.as_deref(), Some("42704"));
    assert_eq!(events[2].class.as_deref(), Some("UNKNOWN"));
    assert_eq!(events[2].sqlstate.as_deref(), Some("42601"));
}

/// Attacker: an application role (`app`) claiming to be another application
/// user. The event shows the claim as a claim; `db_user` is the role the
/// server logged in. A claim whose statement failed does not hold.
#[tokio::test]
async fn an_application_role_claims_another_user() {
    let mut s = setup(ProxyConfig::default()).await;
    s.admin()
        .await
        .batch_execute("CREATE ROLE app LOGIN; CREATE TABLE pay (id int); GRANT ALL ON pay TO app")
        .await
        .expect("role");
    let client = s.connect("app").await;
    client
        .simple_query("SELECT set_config('pgtrail.user', 'ceo@corp', false)")
        .await
        .expect("claim");
    client
        .simple_query("DELETE FROM pay")
        .await
        .expect("delete");
    client
        .simple_query("SELECT set_config('pgtrail.user', 'nobody', false), 1/0")
        .await
        .expect_err("fails");
    client.simple_query("SELECT 1").await.expect("select");
    let events = s.events().await;
    let e = by_sql(&events, "DELETE FROM pay");
    assert_eq!(e.db_user.as_deref(), Some("app"));
    assert_eq!(e.app_user.as_deref(), Some("ceo@corp"));
    let provenance = e.provenance.as_ref().expect("provenance");
    assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
    assert!(provenance.vouched.iter().any(|f| f == "db_user"));
    // The failed claim did not take.
    assert_eq!(
        by_sql(&events, "SELECT 1").app_user.as_deref(),
        Some("ceo@corp")
    );
}

/// Attacker: an application role reading `patients` while an include rule
/// names `public.patients` and everything else is sampled away: quoting,
/// qualification and search_path do not hide the table, and a join with an
/// excluded table does not hide the read either.
#[tokio::test]
async fn table_rules_cannot_be_evaded_with_quoting_or_search_path() {
    let mut include = ProxyRule {
        action: RuleAction::Include,
        ..ProxyRule::default()
    };
    include.table = vec!["public.patients".into()];
    let mut exclude = ProxyRule {
        action: RuleAction::Exclude,
        ..ProxyRule::default()
    };
    exclude.table = vec!["heartbeat".into()];
    let config = ProxyConfig {
        rules: vec![exclude, include],
        sample_reads: 0.0,
        ..ProxyConfig::default()
    };
    let mut s = setup(config).await;
    s.admin()
        .await
        .batch_execute(
            "CREATE TABLE patients (id int); CREATE TABLE heartbeat (id int);
             CREATE SCHEMA other; CREATE TABLE other.notes (id int);",
        )
        .await
        .expect("schema");
    let client = s.connect("postgres").await;
    let reads = [
        "SELECT * FROM PATIENTS",
        "SELECT * FROM \"public\".\"patients\"",
        "SELECT * FROM Public.Patients",
        "SELECT * FROM heartbeat, patients",
    ];
    for sql in reads {
        client.simple_query(sql).await.expect(sql);
    }
    client
        .simple_query("SET search_path = other, public")
        .await
        .expect("set");
    client
        .simple_query("SELECT * FROM notes")
        .await
        .expect("notes");
    // Through the path: other has no patients, so this is public.patients
    // (pgtrail assumes other.patients, and the include rule on
    // public.patients matches it since public is on the path).
    client
        .simple_query("SELECT count(*) FROM patients")
        .await
        .expect("patients via the path");
    client
        .simple_query("SELECT * FROM heartbeat")
        .await
        .expect("heartbeat");
    // A write is never sampled away; a failure neither.
    client
        .simple_query("INSERT INTO other.notes VALUES (1)")
        .await
        .expect("insert");
    client
        .simple_query("SELECT * FROM other.missing")
        .await
        .expect_err("missing");
    let events = s.events().await;
    let logged: Vec<&str> = events.iter().filter_map(|e| e.sql.as_deref()).collect();
    for sql in reads.iter().chain(&["SELECT count(*) FROM patients"]) {
        assert!(logged.contains(sql), "{sql} not logged: {logged:?}");
    }
    assert!(!logged.contains(&"SELECT * FROM notes"), "{logged:?}");
    assert!(!logged.contains(&"SELECT * FROM heartbeat"), "{logged:?}");
    assert!(logged.contains(&"INSERT INTO other.notes VALUES (1)"));
    assert!(logged.contains(&"SELECT * FROM other.missing"));
}

/// Attacker: a client sending a 1 MB statement. It runs, and its event is
/// recorded in full (no panic, no truncation).
#[tokio::test]
async fn a_one_megabyte_statement_is_recorded() {
    let mut s = setup(ProxyConfig::default()).await;
    let client = s.connect("postgres").await;
    let big = format!("SELECT length('{}')", "x".repeat(1 << 20));
    client.simple_query(&big).await.expect("big");
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].class.as_deref(), Some("READ"));
    assert_eq!(events[0].sql.as_deref().map(str::len), Some(big.len()));
}
