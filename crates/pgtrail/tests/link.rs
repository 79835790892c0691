//! One trail across paths, on a real cluster: `pgtrail run` with the proxy
//! and trigger capture of one database (one store: the database's own),
//! statements linked to the row changes their transactions made (`log
//! --tx`, `history`), and the bypass alarm for a write around the proxy.

use std::time::{Duration, Instant};

use pgtrail_core::Event;
use serde_json::Value;

use crate::running::{Running, Service};
use crate::support::pgtrail_in;

fn pgtrail(s: &Service, args: &[&str]) -> crate::support::Run {
    pgtrail_in(s.dir.path(), args, &[], None)
}

fn events(s: &Service, args: &[&str]) -> Vec<Event> {
    let mut all = vec!["log", "--limit", "100000", "--format", "jsonl"];
    all.extend_from_slice(args);
    pgtrail(s, &all).events()
}

/// The address `pgtrail run`'s proxy part listens on.
async fn listening(run: &Running) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(address) = crate::running::address_in(&run.stderr(), "listening on ") {
            return address;
        }
        assert!(Instant::now() < deadline, "not listening: {}", run.stderr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

fn context_str<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.context.as_ref()?.get(key)?.as_str()
}

/// The proxy's id (`PID@TIME`) of the transaction of statement `e`.
fn proxy_tx(e: &Event) -> String {
    format!(
        "{}@{}",
        e.backend_pid.expect("pid"),
        context_str(e, "tx_started_at").expect("tx_started_at")
    )
}

fn sqls(statements: &Value) -> Vec<String> {
    statements
        .as_array()
        .expect("statements")
        .iter()
        .filter_map(|s| s["sql"].as_str().map(str::to_string))
        .collect()
}

/// The proxy and trigger capture side by side: every statement through the
/// proxy finds its rows and back; a write around the proxy is an alarm,
/// a claimed link is not taken, an exempt role writes unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_and_row_changes_are_one_trail_and_a_write_around_the_proxy_is_an_alarm() {
    let s = Service::new(
        "link",
        "create table t (id int primary key, v text);
         create function put(i int) returns void language sql
             as $$ insert into t values (i, 'from a function') $$;
         create role migrator login;
         grant all on t to migrator;",
    )
    .await;
    pgtrail(&s, &["install", "--db", &s.url]).ok();
    pgtrail(&s, &["track", "--db", &s.url, "public.t"]).ok();
    let upstream = format!("{}?sslmode=disable", s.cluster.url("postgres"));
    std::fs::write(
        s.dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n[triggers]\ndb = \"{url}\"\ndrain_interval_ms = 100\n\
             [proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"{upstream}\"\nspool_dir = \"{spool}\"\n\
             bypass_roles = [\"migrator\"]\n",
            url = s.url,
            spool = s.dir.path().join("spool").display(),
        ),
    )
    .expect("config");
    let run = s.start(&[]);
    let address = listening(&run).await;
    let through = |db: &str| format!("postgres://postgres@{address}/{db}");

    // Through the proxy: an autocommit INSERT, a block that updates and
    // reads, a row written inside a function, a rolled-back block.
    let app = connect(&through(&s.db)).await;
    let app_pid = pid(&app).await;
    app.batch_execute("insert into t values (1, 'a')")
        .await
        .expect("insert");
    app.batch_execute("begin").await.expect("begin");
    app.batch_execute("update t set v = 'b' where id = 1")
        .await
        .expect("update");
    app.query("select v from t where id = 1", &[])
        .await
        .expect("select");
    app.batch_execute("commit").await.expect("commit");
    app.batch_execute("select put(2)").await.expect("function");
    app.batch_execute("begin; insert into t values (9, 'undone'); rollback")
        .await
        .expect("rolled back");

    // Attacker: an application that claims another transaction's link.
    let claimer = connect(&through(&s.db)).await;
    claimer
        .batch_execute(
            "set pgtrail.context = '{\"tx\": 2, \"tx_statement\": 1, \"tx_started_at\": \"2000-01-01T00:00:00.000000Z\"}'; \
             insert into t values (3, 'claimed')",
        )
        .await
        .expect("claimed");

    // Attacker: an application role writing around the proxy.
    let direct = s.cluster.connect(&s.db).await.expect("direct");
    let direct_pid = pid(&direct).await;
    direct
        .batch_execute(
            "insert into t values (4, 'around'); update t set v = 'around again' where id = 4",
        )
        .await
        .expect("direct write");
    // A migration role, exempt.
    let migrator = connect(&s.cluster.url(&s.db).replacen("postgres@", "migrator@", 1)).await;
    migrator
        .batch_execute("insert into t values (5, 'migration')")
        .await
        .expect("migrator write");

    // Everything sealed and judged.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let alarms = events(&s, &["--kind", "alarm"]);
        let rows = events(&s, &["--source", "trigger", "--kind", "row_change"]);
        if rows.len() >= 7 && !alarms.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows {rows:?}, alarms {alarms:?}: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop((app, claimer, direct, migrator));
    // A last round for anything the migrator's or a proxy row could raise.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alarms: Vec<Event> = events(&s, &["--kind", "alarm"])
        .into_iter()
        .filter(|a| a.operation.as_deref() == Some("write_bypassed_proxy"))
        .collect();
    assert_eq!(
        alarms.len(),
        1,
        "one transaction around the proxy: {alarms:#?}"
    );
    let alarm = &alarms[0];
    assert_eq!(alarm.backend_pid, Some(direct_pid));
    assert_eq!(alarm.table.as_deref(), Some("t"));
    assert_eq!(alarm.db_user.as_deref(), Some("postgres"));

    let statements = events(&s, &["--kind", "statement", "--source", "proxy"]);
    let statement = |sql: &str| {
        statements
            .iter()
            .find(|e| e.sql.as_deref() == Some(sql))
            .unwrap_or_else(|| panic!("no statement {sql}: {statements:#?}"))
    };

    // From the proxy's side: the block, its rows.
    let update = statement("update t set v = 'b' where id = 1");
    assert_eq!(update.backend_pid, Some(app_pid));
    let block = pgtrail(&s, &["log", "--tx", &proxy_tx(update), "--format", "json"]).json();
    assert_eq!(
        sqls(&block["statements"]),
        [
            "begin",
            "update t set v = 'b' where id = 1",
            "select v from t where id = 1",
            "commit"
        ]
    );
    let changes = block["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 1, "{block:#}");
    assert_eq!(changes[0]["event"]["operation"], "UPDATE");
    assert_eq!(changes[0]["statement_seq"].as_i64(), update.seq);
    let xid = changes[0]["event"]["xid"].as_i64().expect("xid");

    // From the server's side: the same transaction by its xid.
    let by_xid = pgtrail(&s, &["log", "--tx", &xid.to_string(), "--format", "json"]).json();
    assert_eq!(sqls(&by_xid["statements"]), sqls(&block["statements"]));
    assert_eq!(
        by_xid["proxy_tx"][0].as_str(),
        Some(proxy_tx(update).as_str())
    );
    let text = pgtrail(&s, &["log", "--tx", &xid.to_string(), "--format", "table"])
        .ok()
        .to_string();
    assert!(
        text.contains(&format!("transaction xid {xid}, backend {app_pid}")),
        "{text}"
    );

    // A row written inside a function: the statement that called it.
    let call = statement("select put(2)");
    let in_function = pgtrail(&s, &["log", "--tx", &proxy_tx(call), "--format", "json"]).json();
    assert_eq!(
        in_function["changes"][0]["statement_seq"].as_i64(),
        call.seq
    );

    // Rolled back: its statements, no row anywhere.
    let undone = statement("insert into t values (9, 'undone')");
    let rolled = pgtrail(&s, &["log", "--tx", &proxy_tx(undone), "--format", "json"]).json();
    assert_eq!(sqls(&rolled["statements"]).len(), 3, "{rolled:#}");
    assert!(
        rolled["changes"].as_array().is_some_and(Vec::is_empty),
        "{rolled:#}"
    );
    assert!(
        rolled["xids"].as_array().is_some_and(Vec::is_empty),
        "{rolled:#}"
    );

    // The claim: the statement carries the proxy's own numbering, and the
    // claimed transaction does not take its row.
    let claimed = statement("insert into t values (3, 'claimed')");
    assert_ne!(
        context_str(claimed, "tx_started_at"),
        Some("2000-01-01T00:00:00.000000Z")
    );
    assert_eq!(
        claimed
            .context
            .as_ref()
            .and_then(|c| c.get("tx"))
            .and_then(Value::as_u64),
        Some(1),
        "one Query, the session's first transaction: {claimed:#?}"
    );
    let own = pgtrail(&s, &["log", "--tx", &proxy_tx(claimed), "--format", "json"]).json();
    assert_eq!(own["changes"][0]["event"]["new"]["v"], "claimed");
    assert!(!block.to_string().contains("'claimed'"));

    // The write around the proxy: its rows, no statement.
    let around = pgtrail(
        &s,
        &[
            "log",
            "--tx",
            &alarm.xid.expect("xid").to_string(),
            "--format",
            "json",
        ],
    )
    .json();
    assert!(sqls(&around["statements"]).is_empty(), "{around:#}");
    assert_eq!(around["changes"].as_array().map(Vec::len), Some(2));

    // History: beside each change of row 1, the statement that made it.
    let history = pgtrail(&s, &["history", "public.t", "id=1", "--format", "json"]).json();
    let beside: Vec<Option<&str>> = history
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["statement"]["sql"].as_str())
        .collect();
    assert_eq!(
        beside,
        [
            Some("update t set v = 'b' where id = 1"),
            Some("insert into t values (1, 'a')")
        ]
    );
    let text = pgtrail(&s, &["history", "public.t", "id=4", "--format", "table"])
        .ok()
        .to_string();
    assert!(!text.contains("statement #"), "{text}");

    run.stop().await;
    pgtrail(&s, &["verify"]).ok();
}
