//! The oracle: a randomized workload is captured by pgtrail and by wal2json
//! (Debian `postgresql-15-wal2json`) at once; every change wal2json reports
//! must be in pgtrail's trail, in the same order, with equal values.
//!
//! Values are compared by meaning, using Postgres as the judge where the
//! two speak different dialects: wal2json prints arrays as array literals,
//! pgtrail as JSON arrays, so the test asks Postgres for `array_to_json` of
//! wal2json's literal.

use std::time::{Duration, Instant};

use pgtrail_core::{Event, Kind};
use serde_json::Value;

use crate::common::*;

const SCHEMA: &str = "
    create table o_num (id int primary key, amount numeric(38,10), tags text[], doc jsonb,
                        big text, flag boolean, ratio float8, at timestamptz, note text);
    alter table o_num alter column big set storage external;
    create table o_comp (a int, b text, v bigint, primary key (a, b));
    create table o_nokey (x int, y text);";

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

async fn workload(client: &tokio_postgres::Client, rng: &mut Rng) -> anyhow::Result<()> {
    let texts = [
        "plain",
        "with space",
        "quote\"d",
        "comma,here",
        "back\\slash",
        "",
        "NULL",
        "ünïcode",
    ];
    for tx in 0..150 {
        let mut sql = String::from("begin;\n");
        for _ in 0..(1 + rng.below(4)) {
            let id = rng.below(40);
            let amount = format!(
                "{}{}.{:010}",
                if rng.below(2) == 0 { "-" } else { "" },
                rng.next() % 10_000_000_000_000_000_000,
                rng.next() % 10_000_000_000
            );
            let t1 = texts[rng.below(texts.len() as u64) as usize]
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let t2 = texts[rng.below(texts.len() as u64) as usize]
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let tags = format!("{{\"{t1}\",NULL,\"{t2}\"}}").replace('\'', "''");
            let doc = format!(
                "{{\"k\": {id}, \"s\": \"{}\", \"n\": [1, 2.50, null]}}",
                rng.below(1000)
            );
            let null_or = |v: String, rng: &mut Rng| {
                if rng.below(5) == 0 {
                    "null".to_string()
                } else {
                    v
                }
            };
            let statement = match rng.below(10) {
                0..=3 => format!(
                    "insert into o_num values ({id}, {}, {}, {}, {}, {}, {}, {}, {}) on conflict (id) do update set \
                     amount = excluded.amount, tags = excluded.tags, note = excluded.note;",
                    null_or(format!("'{amount}'"), rng),
                    null_or(format!("'{tags}'"), rng),
                    null_or(format!("'{doc}'"), rng),
                    null_or(format!("repeat(md5('{tx}'), 700)"), rng),
                    null_or(["true", "false"][rng.below(2) as usize].to_string(), rng),
                    null_or(format!("{}.{}e-3", rng.below(1000), rng.below(1000)), rng),
                    null_or(format!("'2024-0{}-1{} 0{}:30:00.5+0{}'", 1 + rng.below(9), rng.below(10), rng.below(10), rng.below(10)), rng),
                    null_or(format!("'note {tx}'"), rng),
                ),
                // An UPDATE that leaves the TOASTed column alone.
                4 | 5 => format!("update o_num set note = 'upd {tx}', amount = amount + 1 where id = {id};"),
                6 => format!("delete from o_num where id = {id};"),
                7 => format!(
                    "insert into o_comp values ({}, 'k{}', {}) on conflict (a, b) do update set v = excluded.v;",
                    id % 5,
                    id % 3,
                    rng.next() % 1_000_000_000_000
                ),
                8 => {
                    if rng.below(10) == 0 {
                        "truncate o_comp;".to_string()
                    } else {
                        format!("delete from o_comp where a = {};", id % 5)
                    }
                }
                _ => format!(
                    "insert into o_nokey values ({id}, '{t}'); update o_nokey set y = 'u' where x = {};",
                    rng.below(40),
                    t = t1.replace('\'', "''")
                ),
            };
            sql.push_str(&statement);
            sql.push('\n');
        }
        sql.push_str("commit;");
        client.batch_execute(&sql).await?;
    }
    Ok(())
}

/// Does pgtrail's `ours` mean the same as wal2json's `theirs` of SQL type `ty`?
async fn same_value(
    client: &tokio_postgres::Client,
    ty: &str,
    theirs: &Value,
    ours: &Value,
) -> anyhow::Result<bool> {
    Ok(match (theirs, ours) {
        (Value::Null, Value::Null) => true,
        (Value::Null, _) | (_, Value::Null) => false,
        (Value::String(text), _) if ty.ends_with("[]") => {
            let json: String = client
                .query_one(
                    &format!("select array_to_json($1::text::{ty})::text"),
                    &[text],
                )
                .await?
                .get(0);
            let expected: Value = serde_json::from_str(&json)?;
            // Numbers compared by their text.
            normalize(&expected) == normalize(ours)
        }
        (Value::String(text), _) if ty == "jsonb" || ty == "json" => {
            serde_json::from_str::<Value>(text)? == *ours
        }
        // pgtrail writes timestamps as to_jsonb does (ISO 8601 with a `T`),
        // wal2json as the type's output: the same instant?
        (Value::String(text), Value::String(our)) if ty.starts_with("timestamp") => client
            .query_one(
                &format!("select $1::text::{ty} = $2::text::{ty}"),
                &[text, our],
            )
            .await?
            .get(0),
        (Value::String(text), Value::String(our)) => text == our,
        (Value::String(text), Value::Number(n)) => text == &n.to_string(),
        (Value::Number(a), Value::Number(b)) => a.to_string() == b.to_string(),
        (Value::Number(a), Value::String(b)) => &a.to_string() == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        _ => false,
    })
}

fn normalize(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Number(n) => Value::String(n.to_string()),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_wal2json_sees_is_in_the_trail_with_equal_values() -> anyhow::Result<()> {
    let db = TestDb::new("cdc_oracle", SCHEMA).await?;
    let mut options = db.setup_options();
    options.actor = false;
    db.setup(&options).await?;
    let w2j_slot = format!("{}_w2j", db.slot);
    // Servers from the November 2026 minor releases (15.20, …) decode only
    // with the plugins `output_plugin_libraries` lists (pgoutput and
    // test_decoding by default); older ones have no such setting. The
    // check reads the server's configuration, not the session's.
    let restricted = db
        .client
        .query_opt(
            "select 1 from pg_catalog.pg_settings where name = 'output_plugin_libraries'",
            &[],
        )
        .await?
        .is_some();
    if restricted {
        db.client
            .batch_execute(
                "alter system set output_plugin_libraries = 'pgoutput', 'test_decoding', 'wal2json'",
            )
            .await?;
        db.client
            .batch_execute("select pg_catalog.pg_reload_conf()")
            .await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !db
            .client
            .query_one("show output_plugin_libraries", &[])
            .await?
            .get::<_, String>(0)
            .contains("wal2json")
        {
            assert!(
                Instant::now() < deadline,
                "the configuration was not reloaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    db.client
        .execute(
            "select pg_create_logical_replication_slot($1, 'wal2json')",
            &[&w2j_slot],
        )
        .await?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());

    let seed = 0x05ee_d0f0_ac1e;
    workload(&db.client, &mut Rng(seed)).await?;

    // Let pgtrail catch up with everything written.
    let target: String = db
        .client
        .query_one("select pg_current_wal_insert_lsn()::text", &[])
        .await?
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !db
        .client
        .query_one(
            "select confirmed_flush_lsn >= $1::text::pg_lsn from pg_replication_slots where slot_name = $2",
            &[&target, &db.slot],
        )
        .await?
        .get::<_, bool>(0)
    {
        assert!(Instant::now() < deadline, "pgtrail did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await?;

    let rows = db
        .client
        .query(
            "select data from pg_logical_slot_get_changes($1, null, null, 'format-version', '2', \
             'include-transaction', 'false', 'include-types', 'true')",
            &[&w2j_slot],
        )
        .await?;
    let theirs: Vec<Value> = rows
        .iter()
        .map(|r| serde_json::from_str::<Value>(r.get::<_, &str>(0)))
        .collect::<Result<_, _>>()?;
    let theirs: Vec<&Value> = theirs
        .iter()
        .filter(|c| ["I", "U", "D", "T"].contains(&c["action"].as_str().unwrap_or("")))
        .filter(|c| c["table"].as_str().is_some_and(|t| t.starts_with("o_")))
        .collect();
    let ours: Vec<Event> = all_events(store.as_ref())
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::RowChange)
        .collect();
    assert!(
        theirs.len() > 200,
        "the workload made changes: {}",
        theirs.len()
    );
    assert_eq!(
        ours.len(),
        theirs.len(),
        "one event per change (seed {seed:#x})"
    );

    let mut compared = 0;
    for (i, (change, event)) in theirs.iter().zip(&ours).enumerate() {
        let ctx = format!("change {i} (seed {seed:#x}): wal2json {change} vs pgtrail {event:?}");
        let op = match change["action"].as_str() {
            Some("I") => "INSERT",
            Some("U") => "UPDATE",
            Some("D") => "DELETE",
            _ => "TRUNCATE",
        };
        assert_eq!(event.operation.as_deref(), Some(op), "{ctx}");
        assert_eq!(event.table.as_deref(), change["table"].as_str(), "{ctx}");
        // wal2json gives an UPDATE's identity from the new row when the key did not change
        // (no old tuple in the WAL); pgtrail then has no old image, and the key is in `new`.
        let identity_image = if event.old.is_some() {
            &event.old
        } else {
            &event.new
        };
        for (field, image) in [("columns", &event.new), ("identity", identity_image)] {
            let Some(columns) = change[field].as_array() else {
                continue;
            };
            let image = image
                .as_ref()
                .unwrap_or_else(|| panic!("pgtrail lacks the {field} image: {ctx}"));
            for column in columns {
                let name = column["name"].as_str().expect("name");
                let ty = column["type"].as_str().expect("type");
                let ours = image
                    .get(name)
                    .unwrap_or_else(|| panic!("column {name} missing: {ctx}"));
                assert!(
                    same_value(&db.client, ty, &column["value"], ours).await?,
                    "column {name} ({ty}) differs: {ctx}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 1000, "compared {compared} values");
    Ok(())
}
