use super::*;
use pgtrail_core::{Kind, Source};
use serde_json::json;

fn obj(v: Value) -> Option<JsonObject> {
    v.as_object().cloned()
}

fn change(seq: i64, op: &str, old: Value, new: Value) -> Event {
    let mut e = Event::new(Source::Trigger, Kind::RowChange);
    e.seq = Some(seq);
    e.operation = Some(op.into());
    e.schema = Some("public".into());
    e.table = Some("users".into());
    e.pk = obj(json!({"id": "1"}));
    e.old = obj(old);
    e.new = obj(new);
    e
}

fn story() -> Vec<Event> {
    vec![
        change(1, "INSERT", Value::Null, json!({"id": 1, "name": "bob"})),
        change(
            2,
            "UPDATE",
            json!({"id": 1, "name": "bob"}),
            json!({"id": 1, "name": "robert"}),
        ),
    ]
}

#[test]
fn literals_escape_quotes_and_backslashes_whatever_the_server_setting() {
    assert_eq!(literal("plain"), "'plain'");
    assert_eq!(literal("O'Brien"), "'O''Brien'");
    assert_eq!(literal(r"C:\dir"), r"E'C:\\dir'");
    assert_eq!(
        literal(r"\'; drop table x; --"),
        r"E'\\''; drop table x; --'"
    );
    // Dollar quotes and newlines mean nothing inside a quoted literal.
    assert_eq!(literal("$$ a\nb $$"), "'$$ a\nb $$'");
}

#[test]
fn revert_to_an_earlier_version_updates_only_the_columns_that_differ() {
    let sql = to_version(&story(), 1).expect("sql");
    assert!(sql.starts_with("-- Written by pgtrail"), "{sql}");
    assert!(
        sql.contains("UPDATE \"public\".\"users\" AS t\n  SET \"name\" = v.\"name\"\n"),
        "{sql}"
    );
    assert!(
        sql.contains(r#"'{"name":"bob"}'::pg_catalog.jsonb"#),
        "{sql}"
    );
    assert!(sql.contains(r#"'{"id":1}'::pg_catalog.jsonb"#), "{sql}");
    assert!(sql.contains("WHERE t.\"id\" = k.\"id\""), "{sql}");
}

#[test]
fn revert_to_the_newest_version_does_nothing() {
    let sql = to_version(&story(), 2).expect("sql");
    assert!(sql.contains("Nothing to do"), "{sql}");
    assert!(!sql.contains("UPDATE"), "{sql}");
}

#[test]
fn revert_of_a_deleted_row_inserts_it_again() {
    let mut events = story();
    events.push(change(
        3,
        "DELETE",
        json!({"id": 1, "name": "robert"}),
        Value::Null,
    ));
    let sql = to_version(&events, 2).expect("sql");
    assert!(
        sql.contains("INSERT INTO \"public\".\"users\" (\"id\", \"name\")\n  SELECT \"id\", \"name\" FROM pg_catalog.jsonb_populate_record(NULL::\"public\".\"users\", '{\"id\":1,\"name\":\"robert\"}'::pg_catalog.jsonb);"),
        "{sql}"
    );
}

#[test]
fn revert_to_a_delete_deletes_the_row_that_came_back() {
    let mut events = story();
    events.push(change(
        3,
        "DELETE",
        json!({"id": 1, "name": "robert"}),
        Value::Null,
    ));
    events.push(change(
        4,
        "INSERT",
        Value::Null,
        json!({"id": 1, "name": "again"}),
    ));
    let sql = to_version(&events, 3).expect("sql");
    assert!(
        sql.contains("DELETE FROM \"public\".\"users\" AS t\n"),
        "{sql}"
    );
}

#[test]
fn undoing_a_transaction_inverts_each_change_newest_first() {
    let mut insert = change(7, "INSERT", Value::Null, json!({"id": 2, "name": "new"}));
    insert.pk = obj(json!({"id": "2"}));
    let update = change(
        8,
        "UPDATE",
        json!({"id": 1, "name": "bob"}),
        json!({"id": 1, "name": "robert"}),
    );
    let sql = undo_transaction(&[insert, update]).expect("sql");
    let update_at = sql.find("UPDATE").expect("update");
    let delete_at = sql.find("DELETE FROM").expect("delete of the inserted row");
    assert!(update_at < delete_at, "newest first: {sql}");
    assert!(sql.contains(r#"'{"name":"bob"}'"#), "{sql}");
    assert!(sql.contains(r#"'{"id":2}'"#), "{sql}");
    assert!(
        sql.contains("BEGIN;\n") && sql.ends_with("COMMIT;\n"),
        "{sql}"
    );
}

#[test]
fn an_update_without_old_values_cannot_be_undone() {
    let update = change(8, "UPDATE", Value::Null, json!({"id": 1, "name": "x"}));
    assert_eq!(undo_transaction(&[update]), Err(RevertError::NoOldImage(8)));
    assert_eq!(undo_transaction(&[]), Err(RevertError::Empty));
    assert_eq!(
        to_version(&story(), 99),
        Err(RevertError::NoSuchVersion(99))
    );
}

#[test]
fn hostile_values_and_names_stay_inside_their_literal_and_identifier() {
    let hostile = "x'); DROP TABLE users; -- \\ $$ \"\n";
    let mut events = story();
    events[0].new = obj(json!({"id": 1, "name": hostile, "we\"ird": hostile}));
    events[1].new = obj(json!({"id": 1, "name": "robert", "we\"ird": "other"}));
    events[1].table = Some("us\"ers".into());
    events[0].table = Some("us\"ers".into());
    let sql = to_version(&events, 1).expect("sql");
    assert!(sql.contains("\"public\".\"us\"\"ers\""), "{sql}");
    // The only literal is E'…' with every quote doubled and every backslash doubled.
    let body = sql.split_once("E'").expect("an E literal").1;
    assert!(!sql.contains("DROP TABLE users; --'"), "{sql}");
    assert!(body.contains("x''); DROP TABLE"), "{sql}");
    // Remove the escaped quotes: what is left ends the literal exactly once.
    let unescaped = body.replace("''", "");
    let end = unescaped.find('\'').expect("literal ends");
    assert!(unescaped[end..].starts_with("'::pg_catalog.jsonb"), "{sql}");
    assert!(sql.contains("\"we\"\"ird\" = v.\"we\"\"ird\""), "{sql}");
}
