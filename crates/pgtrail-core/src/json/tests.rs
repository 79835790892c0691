use serde_json::{json, Value};

use super::*;
use crate::{canonical::CanonicalBody, Event, Kind, Source};

/// The stack of a tokio worker thread.
const WORKER_STACK: usize = 2 << 20;

/// Runs `f` on a thread with a tokio worker's stack.
fn on_worker_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(WORKER_STACK)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no stack overflow");
}

/// JSON text nested `levels` deep, arrays and objects alternating, with the
/// serde marker key and a NUL inside.
fn deep_text(levels: usize) -> String {
    let mut text = String::new();
    for level in 0..levels {
        text.push_str(if level % 2 == 0 { "[1.50," } else { "{\"k\":" });
    }
    text.push_str(r#"{"$serde_json::private::Number":"42","nul":"a\u0000b"}"#);
    for level in (0..levels).rev() {
        text.push(if level % 2 == 0 { ']' } else { '}' });
    }
    text
}

#[test]
fn numbers_keep_their_text() {
    for (text, spelled) in [
        ("0", "0"),
        ("-0", "-0"),
        ("1.50", "1.50"),
        ("1E+400", "1e+400"),
        ("-1e-400", "-1e-400"),
        (
            "0.000000000000000000000000000001",
            "0.000000000000000000000000000001",
        ),
        (
            "123456789012345678901234567890",
            "123456789012345678901234567890",
        ),
        ("12.500", "12.500"),
        ("1E5", "1e+5"),
        ("2e-0", "2e-0"),
        ("1e-07", "1e-07"),
    ] {
        let value = parse(text).expect(text);
        assert_eq!(to_string(&value), spelled, "{text}");
        // The spelling serde_json gave before this reader: hashes stay.
        let serde: Value = serde_json::from_str(text).expect(text);
        assert_eq!(
            serde_json::to_string(&serde).expect("serde"),
            spelled,
            "{text}"
        );
    }
}

#[test]
fn the_serde_marker_key_is_an_ordinary_key() {
    let text = r#"{"$serde_json::private::Number":"42"}"#;
    let value = parse(text).expect("an object");
    assert!(value.is_object(), "read as {value:?}");
    assert_eq!(to_string(&value), text);
    assert_ne!(value, parse("42").expect("a number"));
    // serde_json alone reads it as the number 42: the bug this reader fixes.
    let serde: Value = serde_json::from_str(text).expect("serde");
    assert!(serde.is_number());
}

#[test]
fn strings_decode_every_escape_and_write_as_serde_json_does() {
    let text = r#""q\" b\\ s\/ \b\f\n\r\t \u0000 \u001F \u00e9 \ud83d\ude00 é 😀""#;
    let value = parse(text).expect("a string");
    assert_eq!(
        value,
        Value::String("q\" b\\ s/ \u{8}\u{c}\n\r\t \0 \u{1f} é 😀 é 😀".into())
    );
    assert_eq!(
        to_string(&value),
        serde_json::to_string(&value).expect("serde")
    );
    assert_eq!(parse(&to_string(&value)).expect("again"), value);
}

#[test]
fn the_writer_writes_what_serde_json_writes() {
    let values = [
        json!(null),
        json!([]),
        json!({}),
        json!([[], {}, [[]], {"a": {}}]),
        json!({"b": [1, 2.5, "x", null, true, false], "a": {"z": [], "y": {"x": "\u{7f}\"\\"}}}),
        parse(r#"{"n": -0, "m": 1E+2, "big": 123456789012345678901234567890.000}"#).expect("json"),
    ];
    for value in values {
        assert_eq!(
            to_string(&value),
            serde_json::to_string(&value).expect("serde"),
            "{value:?}"
        );
        assert_eq!(parse(&to_string(&value)).expect("round trip"), value);
    }
}

#[test]
fn whitespace_is_accepted_and_not_kept() {
    let value = parse(" {\n\t\"a\" : [ 1 , { } ] ,\r\"b\":\"\" } ").expect("json");
    assert_eq!(to_string(&value), r#"{"a":[1,{}],"b":""}"#);
}

#[test]
fn invalid_text_is_an_error_not_a_panic() {
    for text in [
        "",
        " ",
        "[",
        "[1,]",
        "{\"a\"}",
        "{\"a\":1,}",
        "{1:2}",
        "01",
        "1.",
        "-",
        "1e",
        "\"\\ud800\"",
        "\"\\udc00\"",
        "\"\\ud800\\u0041\"",
        "\"\\u12\"",
        "\"\\x\"",
        "\"a\nb\"",
        "\"open",
        "tru",
        "nul",
        "[1] 2",
        "{\"a\":1}}",
        "]",
    ] {
        assert!(parse(text).is_err(), "{text:?} was accepted");
    }
}

#[test]
fn repeated_keys_are_refused_by_parse_and_kept_last_by_parse_captured() {
    let text = r#"{"a": [{"x": 1, "y": 2, "x": {"deep": 3}}], "b": 1, "b": 2}"#;
    match parse(text) {
        Err(JsonError::DuplicateKey { path }) => assert_eq!(path, "/a/0/x"),
        other => panic!("expected a duplicate key error, got {other:?}"),
    }
    let parsed = parse_captured(text).expect("captured");
    assert_eq!(
        parsed.value,
        json!({"a": [{"x": {"deep": 3}, "y": 2}], "b": 2})
    );
    assert_eq!(
        parsed.duplicates,
        vec![
            Duplicate {
                path: "/a/0/x".into(),
                dropped: json!(1)
            },
            Duplicate {
                path: "/b".into(),
                dropped: json!(1)
            },
        ]
    );
    let pointer = parse_captured(r#"{"a/b~": {"c": 1, "c": 2}}"#).expect("captured");
    assert_eq!(pointer.duplicates[0].path, "/a~1b~0/c");
}

#[test]
fn deep_values_read_write_compare_copy_and_drop_on_a_worker_stack() {
    on_worker_stack(|| {
        // Far deeper than Postgres accepts (about 5,000 levels by default).
        let text = deep_text(100_000);
        let value = parse(&text).expect("deep JSON");
        assert_eq!(to_string(&value), text);
        let copy = clone(&value);
        assert!(eq(&copy, &value));
        drop_deep(copy);
        let mut other = parse(&text.replace("a\\u0000b", "a\\u0000c")).expect("deep JSON");
        assert!(!eq(&other, &value));
        drop_deep(std::mem::take(&mut other));
        drop_deep(value);
    });
}

#[test]
fn deep_events_encode_serialize_read_back_and_drop_on_a_worker_stack() {
    on_worker_stack(|| {
        let text = format!(r#"{{"doc":{}}}"#, deep_text(10_000));
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        event.new = match parse(&text).expect("deep JSON") {
            Value::Object(object) => Some(object),
            _ => unreachable!("an object"),
        };
        event.params = Some(vec![parse(&deep_text(10_000)).expect("deep JSON")]);
        let body = CanonicalBody::of(&event);
        assert!(body.as_str().contains(&format!(r#""new":{text}"#)));

        let line = serde_json::to_string(&event).expect("serializes");
        let back: Event = serde_json::from_str(&line).expect("reads back");
        assert_eq!(CanonicalBody::of(&back), body);
        let copy = back.clone();
        assert!(copy == event);
        drop(copy);
        drop(back);
        drop(event);
    });
}

#[test]
fn event_bodies_refuse_repeated_keys_and_keep_marker_keys() {
    let mut event = Event::new(Source::Trigger, Kind::RowChange);
    event.new = parse(r#"{"doc": {"$serde_json::private::Number": "42"}}"#)
        .expect("json")
        .as_object()
        .cloned();
    let line = serde_json::to_string(&event).expect("serializes");
    assert!(line.contains(r#""new":{"doc":{"$serde_json::private::Number":"42"}}"#));
    let back: Event = serde_json::from_str(&line).expect("reads back");
    assert_eq!(back, event);
    assert_eq!(CanonicalBody::of(&back), CanonicalBody::of(&event));

    let forged = line.replace(r#""new":{"doc""#, r#""new":{"doc":1,"doc""#);
    let error = serde_json::from_str::<Event>(&forged).expect_err("duplicate refused");
    assert!(
        error.to_string().contains("duplicate key at /doc"),
        "{error}"
    );
}

#[test]
fn depth_and_nul_are_found_at_any_depth() {
    assert_eq!(depth(&json!(1)), 0);
    assert_eq!(depth(&json!([])), 1);
    assert_eq!(depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
    assert!(!has_nul(&json!({"a": ["x"]})));
    assert!(has_nul(&json!({"a": ["x\u{0}"]})));
    assert!(has_nul(&json!({"a\u{0}": 1})));
    assert!(has_nul(&json!("\u{0}")));
    on_worker_stack(|| {
        let value = parse(&deep_text(100_000)).expect("deep JSON");
        assert_eq!(depth(&value), 100_001);
        assert!(has_nul(&value));
        drop_deep(value);
    });
}
