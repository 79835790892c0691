//! End to end: writes in Postgres become events in a SQLite store, with
//! values, keys, actors and DDL as a user would read them.

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn row_changes_arrive_with_values_keys_and_actor() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_basic",
        "create type mood as enum ('happy', 'sad');
         create domain positive as int check (value > 0);
         create table accounts (
             id int primary key, owner text, balance numeric(38,10), tags text[], doc jsonb,
             seen timestamptz, happy mood, qty positive, raw bytea, uid uuid, span int4range, ratio float8);
         create table pairs (a int, b text, note text, primary key (a, b));
         create table loose (x int, y text);",
    )
    .await?;
    let report = db.setup(&db.setup_options()).await?;
    assert!(report.slot_created);
    assert_eq!(report.identity_full_for_keyless, ["public.loose"]);
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), db.capture_options());

    db.client
        .batch_execute(
            "begin;
             set local pgtrail.\"user\" = 'alice';
             set local pgtrail.context = '{\"request_id\": \"r-1\"}';
             insert into accounts values (1, 'ann', 12345678901234567890.0123456789, '{a,\"b c\",NULL}',
                 '{\"k\": [1, 2.50]}', '2024-02-29 13:45:00.123456+02', 'happy', 7, '\\x00ff',
                 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1,5)', 0.1);
             commit;
             update accounts set balance = 1.5, owner = null where id = 1;
             insert into pairs values (1, 'x', 'first');
             delete from pairs where a = 1 and b = 'x';
             insert into loose values (1, 'y');
             update loose set y = 'z';",
        )
        .await?;
    let events = wait_for_events(store.as_ref(), 6).await;
    running.stop().await?;
    assert_eq!(events.len(), 6, "{events:#?}");

    let insert = &events[0];
    assert_eq!(
        (insert.table.as_deref(), insert.operation.as_deref()),
        (Some("accounts"), Some("INSERT"))
    );
    assert_eq!(insert.app_user.as_deref(), Some("alice"));
    assert_eq!(insert.db_user.as_deref(), Some("postgres"));
    assert_eq!(
        insert.context.as_ref().expect("context")["request_id"],
        "r-1"
    );
    assert!(insert.backend_pid.is_some());
    assert_eq!(serde_json::to_value(&insert.pk)?, json!({"id": "1"}));
    let mut new = serde_json::to_value(insert.new.as_ref().expect("new image"))?;
    // jsonb keeps the number's text exactly (2.50, not 2.5).
    assert_eq!(serde_json::to_string(&new["doc"])?, r#"{"k":[1,2.50]}"#);
    new["doc"] = json!("checked");
    assert_eq!(
        new,
        json!({
            "id": 1, "owner": "ann", "balance": "12345678901234567890.0123456789",
            "tags": ["a", "b c", null], "doc": "checked",
            "seen": "2024-02-29 11:45:00.123456+00", "happy": "happy", "qty": 7,
            "raw": "\\x00ff", "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "span": "[1,5)", "ratio": 0.1
        })
    );
    assert!(insert.xid.is_some() && insert.lsn.is_some() && insert.committed_at.is_some());
    assert_eq!(insert.tx_seq, Some(0));

    let update = &events[1];
    assert_eq!(update.operation.as_deref(), Some("UPDATE"));
    assert_eq!(
        update.app_user, None,
        "SET LOCAL ended with its transaction"
    );
    assert_eq!(
        update.new.as_ref().expect("new")["owner"],
        serde_json::Value::Null
    );
    assert_eq!(update.new.as_ref().expect("new")["balance"], "1.5000000000");

    let (pair_insert, pair_delete) = (&events[2], &events[3]);
    assert_eq!(
        serde_json::to_value(&pair_insert.pk)?,
        json!({"a": "1", "b": "x"})
    );
    assert_eq!(
        serde_json::to_value(&pair_delete.pk)?,
        json!({"a": "1", "b": "x"})
    );
    assert_eq!(pair_delete.operation.as_deref(), Some("DELETE"));

    let loose_update = &events[5];
    assert_eq!(loose_update.pk, None, "a table without a key has no pk");
    assert_eq!(loose_update.old.as_ref().expect("full old image")["y"], "y");
    assert_eq!(loose_update.changed, ["y"]);
    Ok(())
}
