//! Revert SQL run on a real cluster gives the old row back, whatever the
//! values hold. The row images are made the way the triggers make them
//! (`row_to_json` of the row), so the round trip is the real one.

use pgtrail_core::event::JsonObject;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::revert;
use pgtrail_testkit::Cluster;

const TABLE: &str = r#"create table "Odd ""Names"".t" (
    id int primary key,
    name text,
    "we""ird" text,
    tags int[],
    doc jsonb,
    amount numeric(20,6),
    data bytea,
    at timestamptz,
    flag bool,
    note text
)"#;
const TABLE_NAME: &str = r#""Odd ""Names"".t""#;

fn image(cluster: &Cluster, db: &str) -> Option<JsonObject> {
    let out = cluster
        .psql(
            db,
            &format!("select row_to_json(r)::text from {TABLE_NAME} r where id = 1"),
        )
        .expect("read row");
    (!out.is_empty()).then(|| {
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("json")
            .as_object()
            .cloned()
            .expect("object")
    })
}

fn event(seq: i64, op: &str, old: Option<JsonObject>, new: Option<JsonObject>) -> Event {
    let mut e = Event::new(Source::Trigger, Kind::RowChange);
    e.seq = Some(seq);
    e.operation = Some(op.into());
    e.schema = Some("public".into());
    e.table = Some("Odd \"Names\".t".into());
    e.pk = serde_json::json!({"id": "1"}).as_object().cloned();
    e.old = old;
    e.new = new;
    e
}

#[tokio::test]
async fn revert_sql_puts_the_old_row_back_on_a_real_cluster() {
    let cluster = Cluster::start().expect("cluster");
    let url = cluster.create_database("revert").await.expect("database");
    let db = url.rsplit('/').next().expect("db name").to_string();
    cluster.psql(&db, TABLE).expect("create table");
    // Hostile text: quotes, backslashes, dollar quotes, newlines, markup.
    cluster
        .psql(
            &db,
            &format!(
                r#"insert into {TABLE_NAME} values (1, E'O''Brien \\ $$x$$ \n "q" <script>', E'\\\\n', '{{1,NULL,3}}',
                   '{{"a": [1, "b\"c"], "d": null}}', 123456.000100, '\x00ff27', '2026-12-06 02:19:01.57915+00', true, null)"#
            ),
        )
        .expect("insert");
    let first = image(&cluster, &db).expect("row");
    let mut events = vec![event(1, "INSERT", None, Some(first.clone()))];

    cluster
        .psql(
            &db,
            &format!(
                "update {TABLE_NAME} set name = 'plain', tags = null, doc = '[]', amount = 0, \
                 data = null, flag = false, note = 'later' where id = 1"
            ),
        )
        .expect("update");
    let second = image(&cluster, &db).expect("row");
    events.push(event(
        2,
        "UPDATE",
        Some(first.clone()),
        Some(second.clone()),
    ));

    // Back to version 1 from version 2: an UPDATE.
    let sql = revert::to_version(&events, 1).expect("revert sql");
    assert!(sql.contains("UPDATE"), "{sql}");
    cluster.psql(&db, &sql).expect("run revert");
    assert_eq!(image(&cluster, &db), Some(first.clone()), "{sql}");

    // The trail goes on: the revert itself, then a delete.
    events.push(event(3, "UPDATE", Some(second), Some(first.clone())));
    cluster
        .psql(&db, &format!("delete from {TABLE_NAME} where id = 1"))
        .expect("delete");
    events.push(event(4, "DELETE", Some(first.clone()), None));
    let sql = revert::to_version(&events, 1).expect("revert sql");
    assert!(sql.contains("INSERT"), "{sql}");
    cluster.psql(&db, &sql).expect("run revert");
    assert_eq!(image(&cluster, &db), Some(first.clone()), "{sql}");

    // Undoing the first transaction (the INSERT) deletes the row.
    let sql = revert::undo_transaction(&events[..1]).expect("undo sql");
    cluster.psql(&db, &sql).expect("run undo");
    assert_eq!(image(&cluster, &db), None, "{sql}");
}
