//! The mapping from hand-built records to events, rule by rule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pgtrail_core::config::{IdentityConfig, ParamsPolicy, ProxyConfig, ProxyRule, RuleAction};
use pgtrail_core::event::{Channel, Event, Kind, Source};
use pgtrail_wire::backend::{ErrorFields, TransactionStatus};
use serde_json::{json, Value};

use super::*;
use crate::{Outcome, Protocol, SessionContext, StartupInfo, StatementRecord, Step};

fn recorder(config: &ProxyConfig) -> Arc<Recorder> {
    Arc::new(Recorder::new(config, &IdentityConfig::default()).expect("recorder"))
}

fn context() -> Arc<SessionContext> {
    Arc::new(SessionContext {
        id: 7,
        client: SocketAddr::from(([10, 0, 0, 5], 5555)),
        user: Some("app".into()),
        database: Some("shop".into()),
        application_name: Some("billing".into()),
        backend_pid: Some(4242),
        tls: false,
    })
}

fn session(config: &ProxyConfig) -> SessionRecorder {
    recorder(config).session(context())
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// A record of statement `part` of a simple Query, completed with `tag`.
fn simple(sql: &str, part: u32, tag: &str) -> StatementRecord {
    let mut r = StatementRecord::new(Protocol::Simple { part }, Some(Arc::from(sql)), t0());
    r.finished_at = t0() + Duration::from_micros(1500);
    r.command_tag = Some(tag.into());
    r.rows = tag.rsplit(' ').next().and_then(|n| n.parse().ok());
    r.transaction_status = Some(TransactionStatus::Idle);
    r.backend_pid = Some(4242);
    r
}

fn extended(sql: &str, params: &[Option<&[u8]>], tag: &str) -> StatementRecord {
    let mut r = simple(sql, 0, tag);
    r.protocol = Protocol::Extended;
    r.statement = Some(String::new());
    r.portal = Some(String::new());
    r.params.values = params
        .iter()
        .map(|p| p.map(Bytes::copy_from_slice))
        .collect();
    r
}

fn error(code: &str, message: &str) -> ErrorFields {
    ErrorFields {
        fields: vec![
            (b'S', "ERROR".into()),
            (b'V', "ERROR".into()),
            (b'C', code.into()),
            (b'M', message.into()),
        ],
    }
}

fn failed(mut r: StatementRecord, code: &str, message: &str) -> StatementRecord {
    r.command_tag = None;
    r.rows = None;
    r.outcome = Outcome::Failed {
        step: Step::Query,
        error: error(code, message),
    };
    r
}

fn run(s: &mut SessionRecorder, sql: &str, tag: &str) -> Option<Event> {
    s.prepare(sql);
    s.statement(&simple(sql, 0, tag))
}

fn logged(s: &mut SessionRecorder, sql: &str, tag: &str) -> Event {
    run(s, sql, tag).expect("logged")
}

#[test]
fn a_select_maps_every_field_of_the_contract() {
    let mut s = session(&ProxyConfig::default());
    let e = logged(
        &mut s,
        "SELECT o.id FROM orders o JOIN app.customers c ON c.id = o.customer_id",
        "SELECT 3",
    );
    assert_eq!(e.source, Source::Proxy);
    assert_eq!(e.kind, Kind::Statement);
    assert_eq!(e.class.as_deref(), Some("READ"));
    assert_eq!(e.operation.as_deref(), Some("SELECT"));
    assert_eq!(e.command_tag.as_deref(), Some("SELECT 3"));
    assert_eq!(e.rows, Some(3));
    assert_eq!(e.duration_us, Some(1500));
    assert_eq!(e.objects, ["app.customers", "public.orders"]);
    // The first relation read (in the objects' order) is the target.
    assert_eq!(e.qualified_table().as_deref(), Some("public.orders"));
    assert_eq!(e.db_user.as_deref(), Some("app"));
    assert_eq!(e.database.as_deref(), Some("shop"));
    assert_eq!(e.client_addr.as_deref(), Some("10.0.0.5"));
    assert_eq!(e.client_port, Some(5555));
    assert_eq!(e.application_name.as_deref(), Some("billing"));
    assert_eq!(e.backend_pid, Some(4242));
    assert!(e.session_id.as_deref().is_some_and(|id| id.ends_with("-7")));
    assert_eq!(
        e.context.as_ref().map(|c| Value::Object(c.clone())),
        Some(json!({
            "transaction_status": "idle",
            "protocol": "simple",
            "tx": 1,
            "tx_statement": 0,
            "tx_started_at": "2027-01-15T08:00:00.000000Z",
        }))
    );
    let provenance = e.provenance.as_ref().expect("provenance");
    assert_eq!(
        provenance.vouched,
        ["backend_pid", "client_addr", "client_port", "db_user"]
    );
    assert_eq!(provenance.channels("application_name"), [Channel::Proxy]);
    assert!(!e.failed());
    assert_eq!(e.params, None);
}

#[test]
fn writes_target_the_written_table() {
    let mut s = session(&ProxyConfig::default());
    let e = logged(
        &mut s,
        "INSERT INTO archive.orders SELECT * FROM orders",
        "INSERT 0 4",
    );
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.operation.as_deref(), Some("INSERT"));
    assert_eq!(e.rows, Some(4));
    assert_eq!(e.qualified_table().as_deref(), Some("archive.orders"));
    assert_eq!(e.objects, ["archive.orders", "public.orders"]);
    let e = logged(&mut s, "DELETE FROM \"Orders\" WHERE id = 1", "DELETE 1");
    assert_eq!(e.objects, ["public.\"Orders\""]);
    assert_eq!(e.table.as_deref(), Some("Orders"));
}

#[test]
fn search_path_follows_set_reset_set_local_and_parameter_status() {
    let mut s = session(&ProxyConfig::default());
    logged(&mut s, "SET search_path = app, public", "SET");
    let e = logged(&mut s, "SELECT * FROM t", "SELECT 0");
    assert_eq!(e.objects, ["app.t"]);
    logged(&mut s, "RESET search_path", "RESET");
    assert_eq!(
        logged(&mut s, "SELECT * FROM t", "SELECT 0").objects,
        ["public.t"]
    );

    // SET LOCAL lasts until the transaction ends.
    let mut begin = simple("BEGIN", 0, "BEGIN");
    begin.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&begin);
    let mut local = simple("SET LOCAL search_path = audit", 0, "SET");
    local.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&local);
    let mut inside = simple("SELECT * FROM t", 0, "SELECT 0");
    inside.transaction_status = Some(TransactionStatus::InTransaction);
    assert_eq!(s.statement(&inside).expect("logged").objects, ["audit.t"]);
    logged(&mut s, "COMMIT", "COMMIT");
    assert_eq!(
        logged(&mut s, "SELECT * FROM t", "SELECT 0").objects,
        ["public.t"]
    );

    // set_config, and what the server reports.
    logged(
        &mut s,
        "SELECT set_config('search_path', 'sales', false)",
        "SELECT 1",
    );
    assert_eq!(
        logged(&mut s, "SELECT * FROM t", "SELECT 0").objects,
        ["sales.t"]
    );
    s.parameter_status("search_path", "\"Reports\", public");
    assert_eq!(
        logged(&mut s, "SELECT * FROM t", "SELECT 0").objects,
        ["\"Reports\".t"]
    );

    // A SET that failed changed nothing.
    let mut s = session(&ProxyConfig::default());
    s.statement(&failed(
        simple("SET search_path = nowhere", 0, ""),
        "42601",
        "x",
    ));
    assert_eq!(
        logged(&mut s, "SELECT * FROM t", "SELECT 0").objects,
        ["public.t"]
    );
}

#[test]
fn startup_options_set_the_search_path_and_claim_the_user() {
    let mut s = session(&ProxyConfig::default());
    s.startup(&StartupInfo {
        version: 196608,
        params: vec![
            ("user".into(), "app".into()),
            (
                "options".into(),
                "-c search_path=app -c pgtrail.user=ci-job-17".into(),
            ),
        ],
    });
    let connected = s.connected(t0());
    assert_eq!(connected.app_user.as_deref(), Some("ci-job-17"));
    let e = logged(&mut s, "SELECT * FROM t", "SELECT 0");
    assert_eq!(e.objects, ["app.t"]);
    assert_eq!(e.app_user.as_deref(), Some("ci-job-17"));
    let provenance = e.provenance.clone().expect("provenance");
    assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
}

#[test]
fn a_failed_insert_keeps_its_class_and_sqlstate() {
    let mut s = session(&ProxyConfig::default());
    let sql = "INSERT INTO payments (id) VALUES (1)";
    let e = s
        .statement(&failed(
            simple(sql, 0, ""),
            "23505",
            "duplicate key value violates unique constraint \"payments_pkey\"",
        ))
        .expect("logged");
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.sqlstate.as_deref(), Some("23505"));
    assert_eq!(
        e.error.as_deref(),
        Some("duplicate key value violates unique constraint \"payments_pkey\"")
    );
    assert!(e.failed());
    assert_eq!(e.command_tag, None);
}

#[test]
fn execute_is_classed_by_what_it_runs() {
    let mut s = session(&ProxyConfig::default());
    let e = logged(
        &mut s,
        "PREPARE del(int) AS DELETE FROM app.orders WHERE id = $1",
        "PREPARE",
    );
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    let e = logged(&mut s, "EXECUTE del(3)", "DELETE 1");
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.operation.as_deref(), Some("DELETE"));
    assert_eq!(e.objects, ["app.orders"]);
    logged(&mut s, "DEALLOCATE del", "DEALLOCATE");
    let e = logged(&mut s, "EXECUTE del(3)", "DELETE 1");
    assert_eq!(e.class.as_deref(), Some("UNKNOWN"));
    // A PREPARE that failed names nothing.
    s.statement(&failed(
        simple("PREPARE q AS SELECT * FROM nope", 0, ""),
        "42P01",
        "relation \"nope\" does not exist",
    ));
    assert_eq!(
        logged(&mut s, "EXECUTE q", "SELECT 1").class.as_deref(),
        Some("UNKNOWN")
    );
}

#[test]
fn a_multi_statement_query_gives_each_statement_its_own_text() {
    let mut s = session(&ProxyConfig::default());
    let sql = "INSERT INTO t VALUES (1); SELECT * FROM u; DELETE FROM v";
    s.prepare(sql);
    let tags = ["INSERT 0 1", "SELECT 1", "DELETE 2"];
    let events: Vec<Event> = (0..3)
        .map(|part| {
            s.statement(&simple(sql, part, tags[part as usize]))
                .expect("logged")
        })
        .collect();
    let texts: Vec<&str> = events.iter().filter_map(|e| e.sql.as_deref()).collect();
    assert_eq!(
        texts,
        [
            "INSERT INTO t VALUES (1)",
            "SELECT * FROM u",
            "DELETE FROM v"
        ]
    );
    let classes: Vec<&str> = events.iter().filter_map(|e| e.class.as_deref()).collect();
    assert_eq!(classes, ["WRITE", "READ", "WRITE"]);
    // One analysis for the three.
    let (_, misses) = s.recorder.cache_stats();
    assert_eq!(misses, 1);
}

#[test]
fn text_the_parser_rejects_is_recorded_as_unknown() {
    let mut s = session(&ProxyConfig::default());
    let e = s
        .statement(&failed(
            simple("SELEC * FROM patients", 0, ""),
            "42601",
            "syntax error at or near \"SELEC\"",
        ))
        .expect("logged");
    assert_eq!(e.class.as_deref(), Some("UNKNOWN"));
    assert_eq!(e.sqlstate.as_deref(), Some("42601"));
    assert_eq!(e.sql.as_deref(), Some("SELEC * FROM patients"));
}

/// Attacker: anyone whose statement carries a password (an admin changing
/// one, an application creating users): the secret must not reach the
/// trail, whether the statement succeeds, fails, or cannot be parsed.
#[test]
fn passwords_never_reach_the_event() {
    let mut s = session(&ProxyConfig::default());
    let secret = "hunter2-secret";
    let e = logged(
        &mut s,
        &format!("ALTER ROLE x PASSWORD '{secret}'"),
        "ALTER ROLE",
    );
    assert_eq!(e.class.as_deref(), Some("ROLE"));
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains(secret), "{text}");

    let sql = format!("CREATE USER y PASSWORD '{secret}'");
    let e = s
        .statement(&failed(
            simple(&sql, 0, ""),
            "42710",
            "role \"y\" already exists",
        ))
        .expect("logged");
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains(secret), "{text}");
    assert_eq!(e.error.as_deref(), Some("role \"***\" already exists"));

    // Rejected by the parser, the server quoting the secret near the error.
    let sql = format!("ALTER ROLE x PASSWORD '{secret}' VALID UNTILL 'x'");
    let e = s
        .statement(&failed(
            simple(&sql, 0, ""),
            "42601",
            &format!("syntax error at or near \"'{secret}'\""),
        ))
        .expect("logged");
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains(secret), "{text}");
    assert_eq!(e.class.as_deref(), Some("UNKNOWN"));

    // Unterminated: the scanner fails, the text is withheld.
    let sql = format!("ALTER ROLE x PASSWORD '{secret}");
    let e = s
        .statement(&failed(
            simple(&sql, 0, ""),
            "42601",
            &format!("unterminated quoted string at or near \"'{secret}\""),
        ))
        .expect("logged");
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains(secret), "{text}");

    // A dblink connection string as a literal, and as a parameter.
    let sql = format!("SELECT dblink_connect('host=h user=u password={secret}')");
    let e = logged(&mut s, &sql, "SELECT 1");
    assert!(!serde_json::to_string(&e).expect("json").contains(secret));
    let full = ProxyConfig {
        params: ParamsPolicy::Full,
        ..ProxyConfig::default()
    };
    let mut s = session(&full);
    let conninfo = format!("host=h password={secret}");
    let e = s
        .statement(&extended(
            "SELECT dblink_connect($1)",
            &[Some(conninfo.as_bytes())],
            "SELECT 1",
        ))
        .expect("logged");
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains(secret), "{text}");
}

#[test]
fn values_echoed_in_error_messages_are_withheld() {
    let mut s = session(&ProxyConfig::default());
    let e = s
        .statement(&failed(
            extended("SELECT * FROM t WHERE id = $1", &[Some(b"123-45-6789")], ""),
            "22P02",
            "invalid input syntax for type integer: \"123-45-6789\"",
        ))
        .expect("logged");
    assert_eq!(
        e.error.as_deref(),
        Some("invalid input syntax for type integer: \"***\"")
    );
}

#[test]
fn literals_are_kept_or_normalized() {
    let mut s = session(&ProxyConfig::default());
    let e = logged(&mut s, "SELECT * FROM t WHERE name = 'bob'", "SELECT 1");
    assert_eq!(e.sql.as_deref(), Some("SELECT * FROM t WHERE name = 'bob'"));
    let normalize = ProxyConfig {
        literals: pgtrail_core::config::LiteralsPolicy::Normalize,
        ..ProxyConfig::default()
    };
    let mut s = session(&normalize);
    let e = logged(&mut s, "SELECT * FROM t WHERE name = 'bob'", "SELECT 1");
    assert_eq!(e.sql.as_deref(), Some("SELECT * FROM t WHERE name = $1"));
}

/// The simple protocol's texts, new literals each time, share one analysis
/// (the analyzer's shape cache), and each event still has its own text,
/// class and table: a DELETE after cached SELECTs of the same literals is
/// a WRITE.
#[test]
fn texts_differing_in_literals_share_an_analysis_but_not_their_text() {
    let mut s = session(&ProxyConfig::default());
    for aid in [1, 42, 977] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid}");
        let e = logged(&mut s, &sql, "SELECT 1");
        assert_eq!(e.sql.as_deref(), Some(sql.as_str()));
        assert_eq!(e.class.as_deref(), Some("READ"));
    }
    assert_eq!(s.recorder.cache_stats(), (2, 1));
    let e = logged(
        &mut s,
        "DELETE FROM pgbench_accounts WHERE aid = 42",
        "DELETE 1",
    );
    assert_eq!(e.class.as_deref(), Some("WRITE"));
    assert_eq!(e.table.as_deref(), Some("pgbench_accounts"));
    // A quote inside a comment does not hide the rest from the scan.
    let e = logged(
        &mut s,
        "SELECT abalance FROM pgbench_accounts /* ' */ WHERE aid = 1 -- '",
        "SELECT 1",
    );
    assert_eq!(e.class.as_deref(), Some("READ"));
    assert_eq!(s.recorder.cache_stats(), (2, 3));
}

fn key_file(dir: &std::path::Path) -> String {
    let path = dir.join("params.key");
    std::fs::write(&path, b"0123456789abcdef0123456789abcdef\n").expect("key");
    path.to_string_lossy().into_owned()
}

#[test]
fn params_none_hash_full() {
    let sql = "SELECT * FROM t WHERE a = $1 AND b = $2 AND c = $3";
    let values: [Option<&[u8]>; 3] = [Some(b"alice"), None, Some(&[0, 1, 255])];
    let mut record = extended(sql, &values, "SELECT 1");
    record.params.formats = vec![0, 0, 1];

    let mut s = session(&ProxyConfig::default());
    assert_eq!(s.statement(&record).expect("logged").params, None);

    let mut s = session(&ProxyConfig {
        params: ParamsPolicy::Full,
        ..ProxyConfig::default()
    });
    assert_eq!(
        s.statement(&record).expect("logged").params,
        Some(vec![json!("alice"), Value::Null, json!("\\x0001ff")])
    );

    let dir = tempfile::tempdir().expect("dir");
    let hash = ProxyConfig {
        params: ParamsPolicy::Hash,
        params_hash_key_file: Some(key_file(dir.path())),
        ..ProxyConfig::default()
    };
    let mut s = session(&hash);
    let params = s
        .statement(&record)
        .expect("logged")
        .params
        .clone()
        .expect("params");
    let key = params::HashKey::new(b"0123456789abcdef0123456789abcdef");
    assert_eq!(params[0], json!(key.hash(b"alice")));
    assert_eq!(params[1], Value::Null);
    assert_eq!(params[2], json!(key.hash(&[0, 1, 255])));
    // HMAC-SHA-256 as RFC 4231 test case 2 defines it.
    assert_eq!(
        params::HashKey::new(b"Jefe").hash(b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn hash_without_a_key_is_refused() {
    let err = Recorder::new(
        &ProxyConfig {
            params: ParamsPolicy::Hash,
            ..ProxyConfig::default()
        },
        &IdentityConfig::default(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("params_hash_key_file"), "{err}");
    let dir = tempfile::tempdir().expect("dir");
    let short = dir.path().join("short");
    std::fs::write(&short, b"tiny").expect("key");
    let err = Recorder::new(
        &ProxyConfig {
            params: ParamsPolicy::Hash,
            params_hash_key_file: Some(short.to_string_lossy().into_owned()),
            ..ProxyConfig::default()
        },
        &IdentityConfig::default(),
    )
    .expect_err("refused");
    assert!(err.to_string().contains("16 bytes"), "{err}");
}

/// Attacker: whoever reads the trail, looking for a masked column's values
/// in the parameters `full` keeps.
#[test]
fn full_params_bound_to_masked_columns_are_masked() {
    let dir = tempfile::tempdir().expect("dir");
    let config = ProxyConfig {
        params: ParamsPolicy::Full,
        params_hash_key_file: Some(key_file(dir.path())),
        mask: vec!["public.users.email".into()],
        mask_redact: vec!["public.users.ssn".into()],
        ..ProxyConfig::default()
    };
    let key = params::HashKey::new(b"0123456789abcdef0123456789abcdef");
    let mut s = session(&config);
    let e = s
        .statement(&extended(
            "INSERT INTO users (name, email, ssn) VALUES ($1, $2, $3)",
            &[Some(b"Bob"), Some(b"bob@x.org"), Some(b"123-45-6789")],
            "INSERT 0 1",
        ))
        .expect("logged");
    assert_eq!(
        e.params,
        Some(vec![
            json!("Bob"),
            json!(key.hash(b"bob@x.org")),
            json!("***")
        ])
    );
    let e = s
        .statement(&extended(
            "UPDATE users SET ssn = $1 WHERE name = $2",
            &[Some(b"987"), Some(b"Bob")],
            "UPDATE 1",
        ))
        .expect("logged");
    assert_eq!(e.params, Some(vec![json!("***"), json!("Bob")]));
    // A parameter the rule cannot bind, on a masked table: masked.
    let e = s
        .statement(&extended(
            "SELECT * FROM users WHERE ssn IN ($1)",
            &[Some(b"123-45-6789")],
            "SELECT 1",
        ))
        .expect("logged");
    assert_eq!(e.params, Some(vec![json!("***")]));
    // Constants in the text of a statement on a masked table are replaced.
    let e = logged(
        &mut s,
        "INSERT INTO users (name, ssn) VALUES ('Bob', '123-45-6789')",
        "INSERT 0 1",
    );
    assert!(!e.sql.as_deref().unwrap_or("").contains("123-45-6789"));
    // Another table's parameters are kept.
    let e = s
        .statement(&extended(
            "SELECT * FROM orders WHERE ssn = $1",
            &[Some(b"42")],
            "SELECT 1",
        ))
        .expect("logged");
    assert_eq!(e.params, Some(vec![json!("42")]));
}

#[test]
fn claims_set_config_set_local_and_comments() {
    let mut s = session(&ProxyConfig::default());
    let e = logged(
        &mut s,
        "SELECT set_config('pgtrail.user', 'alice', false)",
        "SELECT 1",
    );
    // The statement that sets the user runs under the user before it.
    assert_eq!(e.app_user, None);
    let e = logged(&mut s, "SELECT 1", "SELECT 1");
    assert_eq!(e.app_user.as_deref(), Some("alice"));
    assert_eq!(
        e.provenance.as_ref().expect("p").channels("app_user"),
        [Channel::Setting]
    );

    // SET LOCAL ends at COMMIT.
    let mut begin = simple("BEGIN", 0, "BEGIN");
    begin.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&begin);
    let mut local = simple("SET LOCAL pgtrail.\"user\" = 'bob'", 0, "SET");
    local.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&local);
    let mut inside = simple("SELECT 2", 0, "SELECT 1");
    inside.transaction_status = Some(TransactionStatus::InTransaction);
    assert_eq!(
        s.statement(&inside).expect("logged").app_user.as_deref(),
        Some("bob")
    );
    logged(&mut s, "COMMIT", "COMMIT");
    assert_eq!(
        logged(&mut s, "SELECT 3", "SELECT 1").app_user.as_deref(),
        Some("alice")
    );

    // A comment claims for its statement only.
    let e = logged(&mut s, "SELECT 4 /*app_user='carol'*/", "SELECT 1");
    assert_eq!(e.app_user.as_deref(), Some("carol"));
    assert_eq!(
        e.provenance.as_ref().expect("p").channels("app_user"),
        [Channel::Comment]
    );
    assert_eq!(
        logged(&mut s, "SELECT 5", "SELECT 1").app_user.as_deref(),
        Some("alice")
    );

    // Extended protocol: the value is the bound parameter.
    s.statement(&extended(
        "SELECT set_config('pgtrail.user', $1, false)",
        &[Some(b"dave")],
        "SELECT 1",
    ));
    assert_eq!(
        logged(&mut s, "SELECT 6", "SELECT 1").app_user.as_deref(),
        Some("dave")
    );
}

#[test]
fn a_claim_whose_statement_failed_or_rolled_back_does_not_hold() {
    let mut s = session(&ProxyConfig::default());
    s.statement(&failed(
        simple(
            "SELECT set_config('pgtrail.user', 'mallory', false), 1/0",
            0,
            "",
        ),
        "22012",
        "division by zero",
    ));
    assert_eq!(logged(&mut s, "SELECT 1", "SELECT 1").app_user, None);

    // A multi-statement Query is one implicit transaction.
    let sql = "SET pgtrail.\"user\" = 'mallory'; SELECT 1/0";
    s.prepare(sql);
    let mut first = simple(sql, 0, "SET");
    first.transaction_status = Some(TransactionStatus::Idle);
    s.statement(&first);
    s.statement(&failed(simple(sql, 1, ""), "22012", "division by zero"));
    assert_eq!(logged(&mut s, "SELECT 1", "SELECT 1").app_user, None);

    // SET in a block that rolls back.
    let mut begin = simple("BEGIN", 0, "BEGIN");
    begin.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&begin);
    let mut set = simple("SET pgtrail.\"user\" = 'mallory'", 0, "SET");
    set.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&set);
    logged(&mut s, "ROLLBACK", "ROLLBACK");
    assert_eq!(logged(&mut s, "SELECT 1", "SELECT 1").app_user, None);
}

/// Attacker: an application role (`app`) that claims to be another
/// application user. The claim is recorded as a claim; `db_user` stays the
/// role the server authenticated.
#[test]
fn an_application_role_claiming_another_user_shows_as_a_claim() {
    let mut s = session(&ProxyConfig::default());
    logged(&mut s, "SET pgtrail.\"user\" = 'admin@corp'", "SET");
    let e = logged(&mut s, "DELETE FROM payments", "DELETE 9");
    assert_eq!(e.app_user.as_deref(), Some("admin@corp"));
    assert_eq!(e.db_user.as_deref(), Some("app"));
    let provenance = e.provenance.clone().expect("provenance");
    assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
    assert!(provenance.vouched.contains(&"db_user".to_string()));
    assert!(!provenance.vouched.contains(&"app_user".to_string()));
}

#[test]
fn claimed_context_joins_the_context_under_the_server_keys() {
    let mut s = session(&ProxyConfig::default());
    logged(
        &mut s,
        "SET pgtrail.context = '{\"ticket\": \"T-1\", \"protocol\": \"forged\"}'",
        "SET",
    );
    let e = logged(&mut s, "SELECT 1", "SELECT 1");
    let context = Value::Object(e.context.clone().expect("context"));
    assert_eq!(
        context,
        json!({
            "ticket": "T-1",
            "protocol": "simple",
            "transaction_status": "idle",
            "tx": 2,
            "tx_statement": 0,
            "tx_started_at": "2027-01-15T08:00:00.000000Z",
        })
    );
    assert_eq!(
        e.provenance.clone().expect("p").channels("context"),
        [Channel::Setting]
    );
}

fn rule(action: RuleAction) -> ProxyRule {
    ProxyRule {
        action,
        ..ProxyRule::default()
    }
}

#[test]
fn log_levels() {
    let classes = ProxyConfig {
        log: vec!["write".into(), "ddl".into(), "role".into(), "failed".into()],
        ..ProxyConfig::default()
    };
    let mut s = session(&classes);
    assert!(run(&mut s, "SELECT 1", "SELECT 1").is_none());
    assert!(run(&mut s, "DELETE FROM t", "DELETE 1").is_some());
    assert!(run(&mut s, "CREATE TABLE x (a int)", "CREATE TABLE").is_some());
    assert!(s
        .statement(&failed(
            simple("SELECT 1/0", 0, ""),
            "22012",
            "division by zero"
        ))
        .is_some());
    let none = ProxyConfig {
        log: vec!["none".into()],
        ..ProxyConfig::default()
    };
    let mut s = session(&none);
    assert!(s
        .statement(&failed(simple("SELECT 1/0", 0, ""), "22012", "x"))
        .is_none());
    assert!(!s.logs_session());
    let failed_only = ProxyConfig {
        log: vec!["failed".into()],
        ..ProxyConfig::default()
    };
    let mut s = session(&failed_only);
    assert!(run(&mut s, "DELETE FROM t", "DELETE 1").is_none());
    assert!(s
        .statement(&failed(simple("SELECT 1/0", 0, ""), "22012", "x"))
        .is_some());
}

#[test]
fn unknown_classes_and_app_user_exclusions_are_refused() {
    let bad = ProxyConfig {
        log: vec!["writes".into()],
        ..ProxyConfig::default()
    };
    let err = Recorder::new(&bad, &IdentityConfig::default()).expect_err("refused");
    assert!(err.to_string().contains("writes"), "{err}");
    let mut exclude = rule(RuleAction::Exclude);
    exclude.app_user = vec!["healthcheck".into()];
    let bad = ProxyConfig {
        rules: vec![exclude],
        ..ProxyConfig::default()
    };
    let err = Recorder::new(&bad, &IdentityConfig::default()).expect_err("refused");
    assert!(err.to_string().contains("claim"), "{err}");
    // The config file says the same.
    let err = pgtrail_core::config::Config::from_toml(
        "[proxy]\nlog = [\"read\", \"wirte\"]\n",
        "pgtrail.toml",
    )
    .expect_err("refused");
    assert!(format!("{err:?}").contains("wirte"), "{err:?}");
}

/// The seed examples: log every SELECT touching patients or payments,
/// exclude the health-check role, sample the other reads.
fn seed_rules() -> ProxyConfig {
    let mut include = rule(RuleAction::Include);
    include.table = vec!["public.patients".into(), "payments".into()];
    let mut health = rule(RuleAction::Exclude);
    health.db_user = vec!["healthcheck".into()];
    ProxyConfig {
        log: vec!["all".into()],
        rules: vec![health, include],
        sample_reads: 0.0,
        ..ProxyConfig::default()
    }
}

/// Attacker: an application role reading patients while hoping the
/// include rule on `public.patients` misses it: quoting, a schema-qualified
/// name or a search_path change do not hide the table.
#[test]
fn quoting_qualification_and_search_path_cannot_evade_a_table_rule() {
    let mut s = session(&seed_rules());
    for sql in [
        "SELECT * FROM patients",
        "SELECT * FROM PATIENTS",
        "SELECT * FROM \"patients\"",
        "SELECT * FROM \"public\".\"patients\"",
        "SELECT * FROM Public.Patients",
        "SELECT * FROM (SELECT * FROM public.patients) p",
        "WITH x AS (SELECT 1) SELECT * FROM x, patients",
        "SELECT (SELECT count(*) FROM patients)",
    ] {
        assert!(run(&mut s, sql, "SELECT 1").is_some(), "{sql}");
    }
    // Another schema's patients is another table.
    assert!(run(&mut s, "SELECT * FROM other.patients", "SELECT 1").is_none());
    // search_path: an unqualified name resolves to the path's schema.
    logged(&mut s, "SET search_path = other", "SET");
    assert!(run(&mut s, "SELECT * FROM patients", "SELECT 1").is_none());
    // With public later in the path, patients may be public's: logged.
    logged(&mut s, "SET search_path = other, public", "SET");
    assert!(run(&mut s, "SELECT * FROM patients", "SELECT 1").is_some());
    assert!(run(&mut s, "SELECT * FROM public.patients", "SELECT 1").is_some());
    logged(&mut s, "SET search_path = public", "SET");
    assert!(run(&mut s, "SELECT * FROM patients", "SELECT 1").is_some());
    // A read the rule does not choose is sampled away (sample_reads = 0).
    assert!(run(&mut s, "SELECT * FROM orders", "SELECT 1").is_none());
}

/// Attacker: an application role joining an excluded table to a read it
/// wants hidden. An exclude rule only drops statements on excluded tables alone.
#[test]
fn joining_an_excluded_table_does_not_hide_a_read() {
    let mut exclude = rule(RuleAction::Exclude);
    exclude.table = vec!["heartbeat".into()];
    exclude.class = vec!["read".into()];
    let config = ProxyConfig {
        rules: vec![exclude],
        ..ProxyConfig::default()
    };
    let mut s = session(&config);
    assert!(run(&mut s, "SELECT * FROM heartbeat", "SELECT 1").is_none());
    assert!(run(&mut s, "SELECT * FROM heartbeat, patients", "SELECT 1").is_some());
    // Nor a write: the rule excludes reads.
    assert!(run(&mut s, "DELETE FROM heartbeat", "DELETE 1").is_some());
    // Nor a failure: not named by the rule.
    assert!(s
        .statement(&failed(
            simple("SELECT * FROM heartbeat", 0, ""),
            "42501",
            "permission denied for table heartbeat"
        ))
        .is_some());
}

/// Attacker: an application role hoping sampling drops its writes or its
/// failures: only successful pure reads are sampled.
#[test]
fn sampling_never_drops_a_write_ddl_role_or_failure() {
    let config = ProxyConfig {
        sample_reads: 0.0,
        ..ProxyConfig::default()
    };
    let mut s = session(&config);
    for _ in 0..50 {
        assert!(run(&mut s, "SELECT * FROM t", "SELECT 1").is_none());
        assert!(run(&mut s, "UPDATE t SET a = 1", "UPDATE 1").is_some());
        assert!(run(
            &mut s,
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT 1"
        )
        .is_some());
        assert!(run(&mut s, "DROP TABLE x", "DROP TABLE").is_some());
        assert!(run(&mut s, "GRANT SELECT ON t TO bob", "GRANT").is_some());
        assert!(s
            .statement(&failed(simple("SELECT * FROM t", 0, ""), "42501", "denied"))
            .is_some());
    }
    // A half rate keeps some and drops some, deterministically.
    let half = ProxyConfig {
        sample_reads: 0.5,
        ..ProxyConfig::default()
    };
    let kept = |n| {
        let mut s = session(&half);
        (0..n)
            .filter(|_| run(&mut s, "SELECT * FROM t", "SELECT 1").is_some())
            .count()
    };
    let first = kept(400);
    assert!((120..=280).contains(&first), "{first}");
    assert_eq!(first, kept(400));
}

#[test]
fn an_exclude_rule_on_a_role_also_drops_its_failures_and_sessions() {
    let mut s = recorder(&seed_rules()).session(Arc::new(SessionContext {
        user: Some("healthcheck".into()),
        ..(*context()).clone()
    }));
    assert!(run(&mut s, "SELECT 1", "SELECT 1").is_none());
    assert!(s
        .statement(&failed(simple("SELECT 1/0", 0, ""), "22012", "x"))
        .is_none());
    assert!(!s.logs_session());
    assert!(session(&seed_rules()).logs_session());
}

#[test]
fn session_events() {
    let mut s = session(&ProxyConfig::default());
    let e = s.connected(t0());
    assert_eq!(e.kind, Kind::Session);
    assert_eq!(e.operation.as_deref(), Some("CONNECT"));
    assert!(!e.failed());
    assert_eq!(e.db_user.as_deref(), Some("app"));

    let e = s.login_failed(
        &error("28P01", "password authentication failed for user \"app\""),
        t0(),
    );
    assert_eq!(e.operation.as_deref(), Some("CONNECT"));
    assert_eq!(e.sqlstate.as_deref(), Some("28P01"));
    assert!(e.failed());
    // The server vouched for no role: the login failed.
    let vouched = &e.provenance.as_ref().expect("p").vouched;
    assert!(!vouched.contains(&"db_user".to_string()), "{vouched:?}");

    let stats = SessionStats {
        statements: 12,
        bytes_from_client: 345,
        bytes_to_client: 6789,
        started_at: t0(),
    };
    let e = s.disconnected(&stats, t0() + Duration::from_secs(2));
    assert_eq!(e.operation.as_deref(), Some("DISCONNECT"));
    assert_eq!(e.duration_us, Some(2_000_000));
    assert_eq!(
        Value::Object(e.context.clone().expect("context")),
        json!({"statements": 12, "bytes_from_client": 345, "bytes_to_client": 6789})
    );
}

#[test]
fn function_calls_and_statements_without_text() {
    let mut s = session(&ProxyConfig::default());
    let mut r = StatementRecord::new(Protocol::FunctionCall { oid: 1598 }, None, t0());
    r.transaction_status = Some(TransactionStatus::Idle);
    let e = s.statement(&r).expect("logged");
    assert_eq!(e.class.as_deref(), Some("FUNCTION"));
    assert_eq!(
        e.context.as_ref().and_then(|c| c.get("protocol")),
        Some(&json!("function_call"))
    );
    let r = StatementRecord::new(Protocol::Extended, None, t0());
    assert_eq!(
        s.statement(&r).expect("logged").class.as_deref(),
        Some("UNKNOWN")
    );
}

/// Attacker: a client sending hostile text (huge, NUL bytes, bytes that
/// are not UTF-8 as the wire decodes them): an event, never a panic.
#[test]
fn hostile_text_makes_an_event() {
    let mut s = session(&ProxyConfig::default());
    let huge = format!("SELECT '{}'", "x".repeat(1 << 20));
    let e = logged(&mut s, &huge, "SELECT 1");
    assert_eq!(e.class.as_deref(), Some("READ"));
    for sql in [
        "SELECT 1\0; DROP TABLE t",
        "SELECT '\u{FFFD}\u{FFFD}' FROM t",
        "\0",
        "",
        ";;;",
        "SELECT $$",
        "/* unterminated",
    ] {
        let e = logged(&mut s, sql, "SELECT 1");
        assert!(e.class.is_some(), "{sql:?}");
    }
    // Out-of-range parts of a Query.
    let e = s
        .statement(&simple("SELECT 1", 9, "SELECT 1"))
        .expect("logged");
    assert_eq!(e.class.as_deref(), Some("READ"));
}

#[test]
fn transaction_blocks_inside_one_query() {
    let mut s = session(&ProxyConfig::default());
    // The implicit transaction commits: the claim holds.
    let sql = "SET pgtrail.\"user\" = 'erin'; SELECT 1";
    s.prepare(sql);
    s.statement(&simple(sql, 0, "SET"));
    s.statement(&simple(sql, 1, "SELECT 1"));
    assert_eq!(
        logged(&mut s, "SELECT 2", "SELECT 1").app_user.as_deref(),
        Some("erin")
    );
    // BEGIN inside a Query, left open: SET LOCAL holds until COMMIT.
    let sql = "BEGIN; SET LOCAL pgtrail.\"user\" = 'frank'";
    s.prepare(sql);
    let mut first = simple(sql, 0, "BEGIN");
    first.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&first);
    let mut second = simple(sql, 1, "SET");
    second.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&second);
    let mut inside = simple("SELECT 3", 0, "SELECT 1");
    inside.transaction_status = Some(TransactionStatus::InTransaction);
    assert_eq!(
        s.statement(&inside).expect("logged").app_user.as_deref(),
        Some("frank")
    );
    logged(&mut s, "COMMIT", "COMMIT");
    assert_eq!(
        logged(&mut s, "SELECT 4", "SELECT 1").app_user.as_deref(),
        Some("erin")
    );
    // SET LOCAL outside a block does nothing (Postgres warns).
    logged(&mut s, "SET LOCAL pgtrail.\"user\" = 'gina'", "SET");
    assert_eq!(
        logged(&mut s, "SELECT 5", "SELECT 1").app_user.as_deref(),
        Some("erin")
    );
    // A COMMIT of a failed block answers ROLLBACK: the SET is undone.
    let mut begin = simple("BEGIN", 0, "BEGIN");
    begin.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&begin);
    let mut set = simple("SET pgtrail.\"user\" = 'hank'", 0, "SET");
    set.transaction_status = Some(TransactionStatus::InTransaction);
    s.statement(&set);
    let mut bad = failed(simple("SELECT 1/0", 0, ""), "22012", "division by zero");
    bad.transaction_status = Some(TransactionStatus::Failed);
    s.statement(&bad);
    logged(&mut s, "COMMIT", "ROLLBACK");
    assert_eq!(
        logged(&mut s, "SELECT 6", "SELECT 1").app_user.as_deref(),
        Some("erin")
    );
}

fn tx_of(e: &Event) -> (u64, u64) {
    let c = e.context.as_ref().expect("context");
    let n = |k: &str| c.get(k).and_then(Value::as_u64).expect(k);
    (n("tx"), n("tx_statement"))
}

fn at(mut r: StatementRecord, ms: u64, status: TransactionStatus) -> StatementRecord {
    r.started_at = t0() + Duration::from_millis(ms);
    r.finished_at = r.started_at + Duration::from_micros(500);
    r.transaction_status = Some(status);
    r
}

/// The link's half on the proxy's side: each statement says which of the
/// session's transactions it ran in, where in it, and when that began.
#[test]
fn statements_are_numbered_by_the_transaction_they_ran_in() {
    use TransactionStatus::{Idle, InTransaction};
    let mut s = session(&ProxyConfig::default());
    let mut go = |r: StatementRecord| {
        if let Some(sql) = r.sql.clone() {
            s.prepare(&sql);
        }
        s.statement(&r).expect("logged")
    };
    // Autocommit: one transaction each.
    assert_eq!(
        tx_of(&go(at(
            simple("INSERT INTO t VALUES (1)", 0, "INSERT 0 1"),
            0,
            Idle
        ))),
        (1, 0)
    );
    assert_eq!(
        tx_of(&go(at(simple("SELECT 1", 0, "SELECT 1"), 1, Idle))),
        (2, 0)
    );
    // An explicit block, COMMIT included.
    let begin = go(at(simple("BEGIN", 0, "BEGIN"), 10, InTransaction));
    let insert = go(at(
        simple("INSERT INTO t VALUES (2)", 0, "INSERT 0 1"),
        11,
        InTransaction,
    ));
    let commit = go(at(simple("COMMIT", 0, "COMMIT"), 12, Idle));
    assert_eq!(
        [tx_of(&begin), tx_of(&insert), tx_of(&commit)],
        [(3, 0), (3, 1), (3, 2)]
    );
    let started = |e: &Event| {
        e.context
            .as_ref()
            .and_then(|c| c.get("tx_started_at"))
            .cloned()
    };
    assert_eq!(started(&commit), started(&begin));
    assert_eq!(started(&begin), Some(json!("2027-01-15T08:00:00.010000Z")));
    // A Query of several statements is one implicit transaction.
    let sql = "INSERT INTO t VALUES (3); UPDATE t SET a = 1";
    let first = go(at(simple(sql, 0, "INSERT 0 1"), 20, Idle));
    let second = go(at(simple(sql, 1, "UPDATE 1"), 20, Idle));
    assert_eq!([tx_of(&first), tx_of(&second)], [(4, 0), (4, 1)]);
    // A failed statement inside a block stays in it; ROLLBACK ends it.
    go(at(simple("BEGIN", 0, "BEGIN"), 30, InTransaction));
    let mut bad = failed(simple("SELECT 1/0", 0, ""), "22012", "division by zero");
    bad = at(bad, 31, TransactionStatus::Failed);
    assert_eq!(tx_of(&go(bad)), (5, 1));
    assert_eq!(
        tx_of(&go(at(simple("ROLLBACK", 0, "ROLLBACK"), 32, Idle))),
        (5, 2)
    );
    assert_eq!(
        tx_of(&go(at(simple("SELECT 2", 0, "SELECT 1"), 40, Idle))),
        (6, 0)
    );
}

/// Attacker: an application that claims a transaction of its choosing
/// through `pgtrail.context`, hoping its statements are linked to another
/// transaction's row changes. The proxy's keys are written over the claim.
#[test]
fn a_claimed_context_cannot_set_the_link() {
    let mut s = session(&ProxyConfig::default());
    logged(
        &mut s,
        "SET pgtrail.context = '{\"tx\": 99, \"tx_statement\": 7, \"tx_started_at\": \"2000-01-01T00:00:00Z\"}'",
        "SET",
    );
    let e = logged(&mut s, "SELECT 1", "SELECT 1");
    assert_eq!(tx_of(&e), (2, 0));
    assert_eq!(
        e.context.as_ref().and_then(|c| c.get("tx_started_at")),
        Some(&json!("2027-01-15T08:00:00.000000Z"))
    );
}

/// Attacker: an application role that makes the proxy lose track of a
/// prepared statement (past the bound on names) so its EXECUTE is UNKNOWN,
/// hoping `log = ["write"]` skips it: UNKNOWN is always logged.
#[test]
fn what_cannot_be_classified_is_logged_whatever_the_level() {
    let config = ProxyConfig {
        log: vec!["write".into()],
        ..ProxyConfig::default()
    };
    let mut s = session(&config);
    for i in 0..crate::MAX_NAMES {
        run(&mut s, &format!("PREPARE p{i} AS SELECT {i}"), "PREPARE");
    }
    run(&mut s, "PREPARE wipe AS DELETE FROM payments", "PREPARE");
    let e = run(&mut s, "EXECUTE wipe", "DELETE 9").expect("logged");
    assert_eq!(e.class.as_deref(), Some("UNKNOWN"));
    assert_eq!(e.sql.as_deref(), Some("EXECUTE wipe"));
    // An Execute whose text the proxy never saw, likewise.
    let r = StatementRecord::new(Protocol::Extended, None, t0());
    assert!(s.statement(&r).is_some());
}

/// Attacker: a session with `standard_conforming_strings` off (reported or
/// not yet) hides a DELETE in what reads as a SELECT of a string with it
/// on. Under `log = ["write"]` every part the server reports is a WRITE on
/// the table, marked ambiguous, whichever mode the proxy expected.
#[test]
fn a_delete_hidden_behind_a_backslash_is_a_logged_write() {
    let config = ProxyConfig {
        log: vec!["write".into()],
        ..ProxyConfig::default()
    };
    let sql = r"select '\'' ; delete from pay; -- '";
    for reported in [None, Some("off")] {
        let mut s = session(&config);
        if let Some(value) = reported {
            s.parameter_status("standard_conforming_strings", value);
        }
        // The server read it with the setting off: two statements.
        let mut first = simple(sql, 0, "SELECT 1");
        first.transaction_status = Some(TransactionStatus::InTransaction);
        for (part, record) in [(0, first), (1, simple(sql, 1, "DELETE 3"))] {
            let e = s
                .statement(&record)
                .unwrap_or_else(|| panic!("{reported:?}: part {part} not logged"));
            assert_eq!(e.class.as_deref(), Some("WRITE"), "{reported:?} {part}");
            assert_eq!(e.objects, ["public.pay"], "{reported:?} {part}");
            assert_eq!(e.sql.as_deref(), Some(sql));
            let context = e.context.as_ref().expect("context");
            assert_eq!(
                context.get("ambiguous"),
                Some(&json!("standard_conforming_strings"))
            );
        }
    }
    // A password read both ways: the text is withheld, and so is what the
    // server's error quotes (with the setting on, the password's tail).
    let mut s = session(&ProxyConfig::default());
    let sql = r"alter role app password 'Xq7\'Zk9'";
    let e = s
        .statement(&failed(
            simple(sql, 0, ""),
            "42601",
            "unterminated quoted string at or near \"'Zk9'\"",
        ))
        .expect("logged");
    let text = serde_json::to_string(&e).expect("json");
    assert!(!text.contains("Xq7") && !text.contains("Zk9"), "{text}");
    assert_eq!(e.class.as_deref(), Some("ROLE"));
    // The same text without a backslash reads one way: no mark.
    let mut s = session(&ProxyConfig::default());
    let e = logged(&mut s, "select ''''", "SELECT 1");
    assert!(e
        .context
        .as_ref()
        .is_some_and(|c| !c.contains_key("ambiguous")));
}
