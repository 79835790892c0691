//! `pgtrail status` reports quarantine events: an application role puts NUL
//! in a sqlcommenter user, which a Postgres text column cannot hold; the
//! drainer keeps the change as a quarantine event, later rows are sealed,
//! `verify` passes and `status` shows the count and the newest.

use crate::running::Service;
use crate::support::pgtrail_in;

#[tokio::test]
async fn status_reports_quarantined_events() {
    let s = Service::new(
        "quarantine",
        "create table t (id int primary key, v text);
         create role app login;
         grant select, insert, update on t to app;",
    )
    .await;
    let pgtrail = |args: &[&str]| pgtrail_in(s.dir.path(), args, &[], None);
    pgtrail(&["install", "--db", &s.url]).ok();
    pgtrail(&["track", "--db", &s.url, "--sql", "public.t"]).ok();

    let status = pgtrail(&["status", "--db", &s.url, "--format", "json"]).json();
    let triggers = |status: &serde_json::Value| {
        status["quarantine"]
            .as_array()
            .and_then(|all| all.iter().find(|q| q["holds"] == "triggers"))
            .cloned()
            .expect("the sealed store is reported")
    };
    assert_eq!(triggers(&status)["count"], 0);

    let (app, connection) = tokio_postgres::connect(
        &s.url.replacen("postgres@", "app@", 1),
        tokio_postgres::NoTls,
    )
    .await
    .expect("app connects");
    tokio::spawn(connection);
    app.batch_execute("insert into t values (1, 'a') /*user='mal%00lory'*/")
        .await
        .expect("insert");
    app.batch_execute("insert into t values (2, 'b')")
        .await
        .expect("a later row");
    pgtrail(&["drain", "--db", &s.url]).ok();

    let status = pgtrail(&["status", "--db", &s.url, "--format", "json"]).json();
    let quarantine = triggers(&status);
    assert_eq!(quarantine["count"], 1, "{quarantine}");
    let newest = &quarantine["newest"];
    assert_eq!(newest["table"], "public.t");
    assert!(
        newest["reason"]
            .as_str()
            .is_some_and(|r| r.contains("NUL") && r.contains("app_user")),
        "{newest}"
    );
    assert!(newest["source_position"]
        .as_str()
        .is_some_and(|p| p.starts_with("xid ")));
    let text = pgtrail(&["status", "--db", &s.url, "--format", "table"]);
    text.ok();
    assert!(
        text.stdout.contains("1 event(s) kept as raw bytes"),
        "{}",
        text.stdout
    );

    let log = pgtrail(&["--store", &s.url, "log", "--table", "t", "--format", "json"]);
    let events: Vec<serde_json::Value> = serde_json::Deserializer::from_str(log.ok())
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("JSON");
    // JSON Lines, or one array.
    let count: usize = events
        .iter()
        .map(|v| v.as_array().map_or(1, Vec::len))
        .sum();
    assert_eq!(count, 2, "both rows are in the trail: {events:?}");
    pgtrail(&["--store", &s.url, "verify"]).ok();
}
