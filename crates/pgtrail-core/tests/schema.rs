//! The checked-in JSON Schema (`schema/event.schema.json`) describes every
//! field an event can have, and rejects what pgtrail would never write.
//! Events captured from a real cluster by each path (triggers, logical
//! replication: row changes, DDL, alarms, quarantine) are validated against
//! it in `crates/pgtrail/tests/events.rs`.

use pgtrail_core::canonical::seal;
use pgtrail_core::event::Channel;
use pgtrail_core::{Event, Kind, Source, GENESIS_HASH};
use serde_json::{json, Value};

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

fn every_field() -> Event {
    let mut e = Event::new(Source::Cdc, Kind::RowChange);
    e.db_user = Some("app".into());
    e.app_user = Some("alice@example.com".into());
    e.client_addr = Some("127.0.0.1".into());
    e.client_port = Some(5555);
    e.application_name = Some("api".into());
    e.backend_pid = Some(77);
    e.session_id = Some("s1".into());
    e.context = json!({"request_id": "r1"}).as_object().cloned();
    e.claim("app_user", Channel::Setting);
    e.claim("context", Channel::Comment);
    e.vouch_server_fields();
    e.database = Some("shop".into());
    e.schema = Some("public".into());
    e.table = Some("users".into());
    e.operation = Some("UPDATE".into());
    e.objects = vec!["public.users".into()];
    e.pk = json!({"id": "1"}).as_object().cloned();
    // numeric as a JSON number with its exact digits, as captured.
    let amount = |text: &str| -> Value { serde_json::from_str(text).expect("a number") };
    e.old = json!({"id": 1, "amount": amount("1.50")})
        .as_object()
        .cloned();
    e.new = json!({"id": 1, "amount": amount("2.50")})
        .as_object()
        .cloned();
    e.changed = vec!["amount".into()];
    e.partial = vec!["blob".into()];
    e.sql = Some("update users set amount = $1".into());
    e.params = Some(vec![json!("2.50")]);
    e.command_tag = Some("UPDATE 1".into());
    e.rows = Some(1);
    e.duration_us = Some(120);
    e.sqlstate = Some("00000".into());
    e.error = None;
    e.xid = Some(1234);
    e.lsn = Some("0/16B3748".into());
    e.committed_at = Some(e.captured_at);
    e.tx_seq = Some(0);
    seal(&mut e, 1, GENESIS_HASH);
    e
}

#[test]
fn every_kind_of_event_validates() {
    let v = validator();
    let mut events = vec![every_field()];
    for (source, kind) in [
        (Source::Trigger, Kind::Ddl),
        (Source::Proxy, Kind::Statement),
        (Source::Proxy, Kind::Session),
        (Source::Cdc, Kind::Snapshot),
    ] {
        events.push(Event::new(source, kind));
    }
    for event in events {
        let value = serde_json::to_value(&event).expect("serialize");
        let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
}

#[test]
fn the_schema_rejects_what_pgtrail_never_writes() {
    let v = validator();
    let good = serde_json::to_value(every_field()).expect("serialize");
    let mutations: [(&str, Value); 7] = [
        (
            "provenance",
            json!({"claimed": {"app_user": ["telepathy"]}}),
        ),
        ("provenance", json!({"vouched": ["app_user"]})),
        ("source", json!("mystery")),
        ("captured_at", json!("yesterday")),
        ("pk", json!({"id": 1})),
        ("hash", json!("not-a-hash")),
        ("surprise", json!(true)),
    ];
    for (field, value) in mutations {
        let mut bad = good.clone();
        bad[field] = value;
        assert!(!v.is_valid(&bad), "{field} should be rejected");
    }
}
