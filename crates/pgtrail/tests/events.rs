//! One event model on every path: the same rows, written once on a real
//! cluster, captured by the triggers (sealed into the database's own store)
//! and by logical replication (into SQLite), carry the same `pk`, `old` and
//! `new` values — numbers with their exact digits, booleans, text,
//! timestamps in ISO 8601, uuid, bytea, json, jsonb, money, intervals and
//! arrays of these. Where the two paths cannot agree (a `timestamptz`
//! written in another `TimeZone` than UTC) the test asserts the documented
//! form. Every event either path stored, row changes, DDL, an alarm and a
//! quarantine event, validates against `schema/event.schema.json`.

use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use pgtrail_core::{json, Event, Kind};
use serde_json::Value;

use crate::running::{Running, Service};
use crate::support::{pgtrail_in, Run};

const SCHEMA: &str = "
    create table v (
        id int primary key, b bool, i2 smallint, i8 bigint, n numeric(20,4), nn numeric,
        r real, d double precision, t text, vc varchar(10), ts timestamp, tstz timestamptz,
        dt date, tm time, ttz timetz, iv interval, u uuid, ba bytea, j json, jb jsonb,
        m money, ia int[], na numeric[], ta text[], tsa timestamptz[], bla bool[]);
    create table w (id int primary key);
    create role app login;
    grant select, insert, update, delete on v, w to app;";

/// Row 1 and 2 with a value in every column, row 3 all NULL; written by
/// the application in UTC.
const WRITES: &str = "
    set timezone = 'UTC';
    insert into v values
      (1, true, -7, 9223372036854775807, 12.5000, 'NaN', 0.1, 0.30000000000000004,
       'a \"quoted\" text\\with', 'short', '2024-02-29 13:45:00.5', '2024-02-29 13:45:00.123456+02',
       '2024-02-29', '13:45:00', '13:45:00+02', '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
       '\\x00ff', '{\"b\": [1, 2.50], \"a\": null}', '{\"b\": [1, 2.50], \"a\": null}',
       12.34, '{1,NULL,3}', '{1.10,NaN,-0.000}', '{\"a,b\",NULL,plain}',
       '{\"2024-02-29 13:45:00+00\",NULL}', '{t,f,NULL}'),
      (2, false, 0, -1, -0.0001, 'Infinity', '-Infinity', 'NaN', '', 'x', 'infinity', '-infinity',
       '0044-03-15 BC', '00:00:00', '00:00:00-05:30', '-1 mons', '00000000-0000-0000-0000-000000000000',
       '\\x', '[]', '{}', -1, '{}', '{}', '{}', '{}', '{}'),
      (3, null, null, null, null, null, null, null, null, null, null, null,
       null, null, null, null, null, null, null, null, null, null, null, null, null, null);
    update v set n = 99999999999999.9999, nn = 1e-20, tstz = '1999-12-31 23:59:59.999999+00',
                 jb = '{\"k\": 1.0}', ia = '{{1,2},{3,4}}', b = null where id = 1;
    delete from v where id = 2;";

fn pgtrail(s: &Service, args: &[&str]) -> Run {
    pgtrail_in(s.dir.path(), args, &[], None)
}

/// Every event of the store at `url` as the JSON `log` prints, oldest first.
fn stored(s: &Service, url: &str) -> Vec<Value> {
    let run = pgtrail(
        s,
        &[
            "--store", url, "log", "--limit", "100000", "--format", "jsonl",
        ],
    );
    let mut events: Vec<Value> = run
        .ok()
        .lines()
        .map(|line| json::parse(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    events.reverse();
    events
}

fn event(value: &Value) -> Event {
    serde_json::from_value(value.clone()).expect("an event")
}

fn validator() -> jsonschema::Validator {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../schema/event.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("schema file is checked in");
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles")
}

/// Waits until the slot confirmed all WAL written so far.
async fn wait_until_confirmed(s: &Service, run: &Running) {
    let target: String = s
        .client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let confirmed: Option<bool> = s
            .client
            .query_one(
                "select bool_and(confirmed_flush_lsn >= $1::text::pg_lsn) from pg_replication_slots",
                &[&target],
            )
            .await
            .expect("slots")
            .get(0);
        if confirmed == Some(true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "capture did not catch up: {}",
            run.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Row changes of table `v`, with the key's `id`.
fn changes_of_v(events: &[Value]) -> Vec<Event> {
    events
        .iter()
        .map(event)
        .filter(|e| e.kind == Kind::RowChange && e.table.as_deref() == Some("v"))
        .collect()
}

fn instant(value: &Value) -> DateTime<FixedOffset> {
    let text = value.as_str().expect("a timestamptz string");
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_record_the_same_values_and_every_event_fits_the_schema() {
    let s = Service::new("events", SCHEMA).await;
    let sqlite = format!("sqlite:{}", s.store_file().display());
    pgtrail(&s, &["install", "--db", &s.url]).ok();
    pgtrail(
        &s,
        &["track", "--db", &s.url, "--sql", "public.v", "public.w"],
    )
    .ok();
    pgtrail(
        &s,
        &[
            "--store",
            &sqlite,
            "replicate",
            "--db",
            &s.url,
            "--setup",
            "--tables",
            "public.v",
            "--replica-identity",
            "full",
            "--actor",
            "--no-stream",
        ],
    )
    .ok();
    std::fs::write(
        s.dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{sqlite}\"\n[replication]\ndb = \"{}\"\nbatch_wait_ms = 10\n",
            s.url
        ),
    )
    .expect("config");
    let run = s.start(&[]);

    let (app, connection) = tokio_postgres::connect(
        &s.url.replacen("postgres@", "app@", 1),
        tokio_postgres::NoTls,
    )
    .await
    .expect("app connects");
    tokio::spawn(connection);
    app.batch_execute(WRITES)
        .await
        .expect("the application writes");
    // The same instant written in another TimeZone.
    app.batch_execute(
        "set timezone = 'Asia/Kolkata';
         insert into v (id, tstz, tsa) values (4, '2024-02-29 13:45:00+00', '{\"2024-02-29 13:45:00+00\"}');",
    )
    .await
    .expect("a row in Kolkata time");
    // A quarantine event (NUL in the sqlcommenter user: the Postgres store's
    // text column cannot hold it), DDL, and an alarm (a capture trigger
    // dropped by the table's owner).
    app.batch_execute("insert into v (id) values (5) /*user='mal%00lory'*/")
        .await
        .expect("insert");
    s.client
        .batch_execute(
            "alter table v add column extra int;
             drop trigger pgtrail_capture_insert on w;",
        )
        .await
        .expect("ddl");
    pgtrail(&s, &["drain", "--db", &s.url]).ok();
    wait_until_confirmed(&s, &run).await;
    run.stop().await;

    let by_triggers = stored(&s, &s.url);
    let by_replication = stored(&s, &sqlite);

    // Every event either path stored fits the schema.
    let schema = validator();
    for value in by_triggers.iter().chain(&by_replication) {
        let errors: Vec<String> = schema.iter_errors(value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
    let kinds = |events: &[Value]| -> Vec<Kind> {
        let mut kinds: Vec<Kind> = events.iter().map(|v| event(v).kind).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        kinds.dedup();
        kinds
    };
    assert_eq!(
        kinds(&by_triggers),
        [Kind::Alarm, Kind::Ddl, Kind::Quarantine, Kind::RowChange],
        "the trigger path's kinds"
    );
    assert_eq!(
        kinds(&by_replication),
        [Kind::Ddl, Kind::RowChange],
        "the logical replication path's kinds"
    );

    // Row 5 was quarantined on the trigger path (its actor holds NUL);
    // compare the rest, change by change.
    let triggers = changes_of_v(&by_triggers);
    let replication: Vec<Event> = changes_of_v(&by_replication)
        .into_iter()
        .filter(|e| e.pk.as_ref().and_then(|pk| pk.get("id")) != Some(&Value::from("5")))
        .collect();
    let ops = |events: &[Event]| -> Vec<(String, Value)> {
        events
            .iter()
            .map(|e| {
                (
                    e.operation.clone().unwrap_or_default(),
                    Value::Object(e.pk.clone().unwrap_or_default()),
                )
            })
            .collect()
    };
    assert_eq!(ops(&triggers), ops(&replication), "the same changes");

    let mut compared = 0;
    for (t, r) in triggers.iter().zip(&replication) {
        let id = t.pk.as_ref().and_then(|pk| pk.get("id")).cloned();
        // The trigger path keeps an UPDATE's changed columns only; logical
        // replication (REPLICA IDENTITY FULL) the whole rows. Every value
        // the trigger path has must be the replication path's.
        for (side, theirs, ours) in [("new", &t.new, &r.new), ("old", &t.old, &r.old)] {
            let Some(theirs) = theirs else { continue };
            let ours = ours
                .as_ref()
                .unwrap_or_else(|| panic!("row {id:?}: logical replication has no {side}"));
            if t.operation.as_deref() != Some("UPDATE") {
                let mut a: Vec<&String> = theirs.keys().collect();
                let mut b: Vec<&String> = ours.keys().collect();
                a.sort();
                b.sort();
                assert_eq!(a, b, "row {id:?} {side}: the same columns");
            }
            for (column, value) in theirs {
                let other = ours.get(column).unwrap_or_else(|| {
                    panic!("row {id:?} {side}.{column}: missing from logical replication")
                });
                let zoned = matches!(column.as_str(), "tstz" | "tsa");
                if id == Some(Value::from("4")) && zoned && !value.is_null() {
                    // Documented difference: the trigger path writes the
                    // writer's offset, logical replication UTC; the same
                    // instant.
                    let (theirs, ours) = match (value, other) {
                        (Value::Array(a), Value::Array(b)) => (a[0].clone(), b[0].clone()),
                        _ => (value.clone(), other.clone()),
                    };
                    assert_eq!(instant(&theirs), instant(&ours), "row 4 {side}.{column}");
                    assert!(
                        theirs.as_str().is_some_and(|t| t.ends_with("+05:30"))
                            && ours.as_str().is_some_and(|t| t.ends_with("+00:00")),
                        "row 4 {side}.{column}: {theirs} (triggers) vs {ours} (replication)"
                    );
                } else {
                    assert!(
                        json::eq(value, other),
                        "row {id:?} {side}.{column}: {} (triggers) vs {} (replication)",
                        json::to_string(value),
                        json::to_string(other)
                    );
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 90, "compared {compared} values");

    // The numeric forms, spelled out: exact digits as JSON numbers, NaN
    // and infinities as strings.
    let first = &replication[0];
    let new = first.new.as_ref().expect("new");
    for (column, text) in [
        ("n", "12.5000"),
        ("nn", r#""NaN""#),
        ("i8", "9223372036854775807"),
        ("d", "0.30000000000000004"),
        ("na", r#"[1.10,"NaN",0.000]"#),
        ("ts", r#""2024-02-29T13:45:00.5""#),
        ("tstz", r#""2024-02-29T11:45:00.123456+00:00""#),
        ("m", r#""$12.34""#),
        ("iv", r#""1 day 02:03:04""#),
    ] {
        assert_eq!(json::to_string(&new[column]), text, "{column}");
    }
}
