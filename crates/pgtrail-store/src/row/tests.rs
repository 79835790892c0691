use super::*;
use chrono::TimeZone;
use pgtrail_core::Source;
use serde_json::json;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, 1, 12, minute, 0)
        .single()
        .expect("valid time")
}

fn obj(v: Value) -> Option<JsonObject> {
    v.as_object().cloned()
}

fn change(op: &str, minute: u32, user: &str, old: Value, new: Value) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, at(minute));
    e.operation = Some(op.into());
    e.table = Some("users".into());
    e.pk = obj(json!({"id": "1"}));
    e.app_user = Some(user.into());
    e.old = obj(old);
    e.new = obj(new);
    e
}

fn story() -> Vec<Event> {
    vec![
        change(
            "INSERT",
            0,
            "alice",
            Value::Null,
            json!({"id": 1, "name": "bob", "email": "b@x"}),
        ),
        change(
            "UPDATE",
            10,
            "carol",
            json!({"id": 1, "name": "bob", "email": "b@x"}),
            json!({"id": 1, "name": "robert", "email": "b@x"}),
        ),
        // A CDC-style update whose old image holds only the key.
        change(
            "UPDATE",
            20,
            "dave",
            json!({"id": 1}),
            json!({"id": 1, "name": "robert", "email": "r@x"}),
        ),
        change(
            "DELETE",
            30,
            "erin",
            json!({"id": 1, "name": "robert", "email": "r@x"}),
            Value::Null,
        ),
    ]
}

#[test]
fn history_is_newest_first_with_only_real_changes() {
    let h = history(&story());
    assert_eq!(h.len(), 4);
    assert_eq!(h[0].event.operation.as_deref(), Some("DELETE"));
    let email = &h[1].changes;
    assert_eq!(
        email.len(),
        1,
        "partial old image must not show unchanged columns: {email:?}"
    );
    assert_eq!(email[0].column, "email");
    assert_eq!(
        (email[0].old.clone(), email[0].new.clone()),
        (Some(json!("b@x")), Some(json!("r@x")))
    );
    assert_eq!(h[2].changes[0].column, "name");
    assert_eq!(h[3].changes.len(), 3, "insert shows every column");
}

#[test]
fn as_of_replays_to_the_moment() {
    let events = story();
    assert!(matches!(
        as_of(&events, at(0) - chrono::Duration::seconds(1)),
        AsOf::NotYetExisting { first: Some(_) }
    ));
    match as_of(&events, at(15)) {
        AsOf::Existing { values, last } => {
            assert_eq!(values.get("name"), Some(&json!("robert")));
            assert_eq!(last.app_user.as_deref(), Some("carol"));
        }
        other => panic!("expected the row, got {other:?}"),
    }
    match as_of(&events, at(45)) {
        AsOf::Deleted { by } => assert_eq!(by.app_user.as_deref(), Some("erin")),
        other => panic!("expected deleted, got {other:?}"),
    }
}

#[test]
fn blame_names_who_set_each_value() {
    let mut events = story();
    events.pop();
    let lines = blame(&events).expect("row exists");
    let who = |column: &str| {
        lines
            .iter()
            .find(|l| l.column == column)
            .and_then(|l| l.event.app_user.clone())
            .expect("column blamed")
    };
    assert_eq!(who("id"), "alice");
    assert_eq!(who("name"), "carol");
    assert_eq!(who("email"), "dave");
    assert!(
        blame(&story()).is_none(),
        "deleted rows have no current state"
    );
}

#[test]
fn blame_covers_a_column_added_later() {
    let mut events = story();
    events.pop();
    // ALTER TABLE … ADD COLUMN phone; then an update that leaves phone NULL.
    events.push(change(
        "UPDATE",
        40,
        "frank",
        json!({"id": 1, "name": "robert", "email": "r@x", "phone": null}),
        json!({"id": 1, "name": "bobby", "email": "r@x", "phone": null}),
    ));
    let lines = blame(&events).expect("row exists");
    let phone = lines
        .iter()
        .find(|l| l.column == "phone")
        .expect("phone is blamed");
    assert_eq!(phone.event.app_user.as_deref(), Some("frank"));
    assert_eq!(phone.value, Value::Null);
}

/// A row inserted by an older pgtrail (logical replication wrote `numeric`
/// as a string) and updated by a newer one (a JSON number with the same
/// digits, the whole new image as logical replication sends it): the
/// unchanged amount is no change in history, keeps its first setter in
/// blame, and reads as the same value as of any moment.
#[test]
fn numeric_as_string_then_as_number_is_one_value() {
    let number = |text: &str| -> Value { serde_json::from_str(text).expect("a JSON number") };
    let events = vec![
        change(
            "INSERT",
            0,
            "alice",
            Value::Null,
            json!({"id": 1, "name": "bob", "amount": "12.50", "rates": ["1.10", "NaN"]}),
        ),
        change(
            "UPDATE",
            10,
            "carol",
            json!({"id": 1}),
            json!({"id": 1, "name": "robert", "amount": number("12.50"),
                   "rates": [number("1.10"), "NaN"]}),
        ),
    ];
    let h = history(&events);
    let columns: Vec<&str> = h[0].changes.iter().map(|c| c.column.as_str()).collect();
    assert_eq!(columns, ["name"], "{:?}", h[0].changes);

    let lines = blame(&events).expect("row exists");
    let who = |column: &str| {
        lines
            .iter()
            .find(|l| l.column == column)
            .and_then(|l| l.event.app_user.clone())
            .expect("column blamed")
    };
    assert_eq!(who("amount"), "alice");
    assert_eq!(who("rates"), "alice");
    assert_eq!(who("name"), "carol");

    for minute in [5, 15] {
        match as_of(&events, at(minute)) {
            AsOf::Existing { values, .. } => {
                let amount = values.get("amount").expect("amount");
                assert!(
                    pgtrail_core::diff::same_value(amount, &number("12.50")),
                    "{amount}"
                );
            }
            other => panic!("expected the row, got {other:?}"),
        }
    }
}
