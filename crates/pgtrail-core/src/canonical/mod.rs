//! The canonical JSON of an event and the hash that chains it.
//!
//! Canonical form: the event serialized with every object's keys in byte
//! order (serde_json's default map is sorted), no whitespace, unset fields
//! left out, and `hash` itself removed. Numbers keep the exact text they
//! arrived with (serde_json's `arbitrary_precision`), so a `numeric` value is
//! never rounded through a float. The hash is SHA-256 of those bytes, in hex:
//! Postgres's `sha256()` can recompute it in SQL.
//!
//! An event with a `nonce` (every event made since hash version 2) is
//! hashed over its **committed form** instead, where each `pk`/`old`/`new`
//! value is a salted commitment (see [`commit`]), so a proof can withhold a
//! value; an event without one (version 1) is hashed as above.
//!
//! There is one writer of that form, [`CanonicalBody`] (see `writer`); the
//! functions here and both stores go through it.

pub mod commit;
mod writer;

use crate::Event;

pub use writer::CanonicalBody;

/// A SHA-256 digest in lowercase hex (64 characters).
pub type Hash = String;

/// The `prev_hash` of the first event of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bytes that are hashed: the event without `hash`, canonically encoded.
pub fn canonical_json(event: &Event) -> Vec<u8> {
    let body = CanonicalBody::of(event);
    let mut out = Vec::with_capacity(body.as_str().len() + 96);
    body.write_sealed(event.seq, event.prev_hash.as_deref(), |piece| {
        out.extend_from_slice(piece)
    });
    out
}

/// The hash (hex) of `event` with the seal fields it carries: SHA-256 of
/// its canonical JSON (version 1) or of its committed form (version 2).
pub fn event_hash(event: &Event) -> Hash {
    let hash = CanonicalBody::of(event).hash_with(event.seq, event.prev_hash.as_deref());
    crate::hex::encode(&hash)
}

/// The bytes a version 2 event's hash is over, after `commit::V2_PREFIX`:
/// its committed form with the seal fields it carries, built from the
/// definition (`commit::committed_event`) rather than the sealing path's
/// single pass. `None` for an event without a nonce.
pub fn committed_json(event: &Event) -> Option<Vec<u8>> {
    let salter = commit::salter_of(event)?;
    let committed = commit::committed_event(event, |part, column, value| {
        commit::commit_value(&salter.salt(part, column), value)
    });
    Some(canonical_json(&committed))
}

/// Links `event` into a chain: sets `seq` and `prev_hash`, then `hash`.
pub fn seal(event: &mut Event, seq: i64, prev_hash: &str) {
    let hash = CanonicalBody::of(event).sealed_hash(seq, prev_hash);
    event.seq = Some(seq);
    event.prev_hash = Some(prev_hash.to_string());
    event.hash = Some(crate::hex::encode(&hash));
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::{json, Value};

    use super::*;
    use crate::{Kind, Source};
    use sha2::{Digest, Sha256};

    /// The canonical form as it was first defined: through a `Value`.
    fn reference_json(event: &Event) -> Vec<u8> {
        let mut value = serde_json::to_value(event).expect("an Event serializes");
        value.as_object_mut().expect("an object").remove("hash");
        serde_json::to_vec(&value).expect("a value serializes")
    }

    fn sample() -> Event {
        let mut e = Event::new(Source::Trigger, Kind::RowChange);
        e.table = Some("accounts".into());
        e.new = serde_json::from_str(r#"{"zeta": 1, "alpha": "x", "amount": 12.50}"#)
            .expect("valid JSON");
        e
    }

    fn full() -> Event {
        let mut e = Event::at(Source::Cdc, Kind::RowChange, Utc::now());
        let obj = |v: Value| v.as_object().cloned();
        e.db_user = Some("app".into());
        e.app_user = Some("o'brien \"the\" \\ admin 東京".into());
        e.client_addr = Some("10.0.0.1".into());
        e.client_port = Some(5432);
        e.application_name = Some("api".into());
        e.backend_pid = Some(77);
        e.session_id = Some("s1".into());
        e.context = obj(json!({"z": 1, "a": {"y": [1.50, null]}}));
        e.claim("context", crate::event::Channel::Setting);
        e.claim("context", crate::event::Channel::Comment);
        e.claim("app_user", crate::event::Channel::Comment);
        e.vouch_server_fields();
        e.database = Some("shop".into());
        e.schema = Some("public".into());
        e.table = Some("t".into());
        e.operation = Some("UPDATE".into());
        e.objects = vec!["public.t".into()];
        e.pk = obj(json!({"id": "1"}));
        e.old = obj(json!({"id": 1, "n": 0.10}));
        e.new = serde_json::from_str(r#"{"id": 1, "n": 123456789012345678901234567890.5}"#)
            .expect("json");
        e.changed = vec!["n".into()];
        e.partial = vec!["blob".into()];
        e.sql = Some("update t set n = $1\n\t-- ✓".into());
        e.params = Some(vec![json!("x"), Value::Null]);
        e.command_tag = Some("UPDATE 1".into());
        e.class = Some("WRITE".into());
        e.rows = Some(1);
        e.duration_us = Some(12);
        e.sqlstate = Some("00000".into());
        e.error = Some("none".into());
        e.xid = Some(1 << 40);
        e.lsn = Some("0/16B3748".into());
        e.committed_at = Utc.timestamp_micros(1_700_000_000_000_001).single();
        e.tx_seq = Some(0);
        e
    }

    /// Checks every entry point against the reference, unsealed and sealed.
    fn assert_matches_reference(event: &Event, seq: i64, prev: &str) {
        let unsealed = event.clone().unsealed();
        let body = CanonicalBody::of(event);
        assert_eq!(
            body.as_str().as_bytes(),
            reference_json(&unsealed).as_slice()
        );
        assert_eq!(canonical_json(&unsealed), reference_json(&unsealed));

        let mut sealed = unsealed.clone();
        seal(&mut sealed, seq, prev);
        let expected = reference_json(&sealed);
        assert_eq!(
            String::from_utf8_lossy(&canonical_json(&sealed)),
            String::from_utf8_lossy(&expected)
        );
        let hash = reference_hash(&sealed);
        assert_eq!(sealed.hash.as_deref(), Some(hash.as_str()));
        assert_eq!(event_hash(&sealed), hash);
        assert_eq!(hex::encode(body.sealed_hash(seq, prev)), hash);
        assert_eq!(body.is_committed(), event.nonce.is_some());
        if let Some(committed) = committed_json(&sealed) {
            let preimage = [commit::V2_PREFIX, committed.as_slice()].concat();
            assert_eq!(hex::encode(Sha256::digest(&preimage)), hash);
        }

        let back: Event = serde_json::from_str(body.as_str()).expect("body parses");
        assert_eq!(back, unsealed);
    }

    /// The hash as hash version 2 defines it, through a `Value` and the
    /// `hmac` crate: v1 without a nonce, else over the committed form.
    fn reference_hash(event: &Event) -> String {
        use hmac::{Hmac, Mac};
        let mut value = serde_json::to_value(event).expect("an Event serializes");
        let object = value.as_object_mut().expect("an object");
        object.remove("hash");
        let Some(nonce) = object.remove("nonce") else {
            return hex::encode(Sha256::digest(reference_json(event)));
        };
        let nonce = hex::decode(nonce.as_str().expect("a string")).expect("hex");
        for part in ["pk", "old", "new"] {
            let Some(Value::Object(members)) = object.get_mut(part) else {
                continue;
            };
            for (column, value) in members.iter_mut() {
                let mut mac = Hmac::<Sha256>::new_from_slice(&nonce).expect("key");
                mac.update(format!("{part}\0{column}").as_bytes());
                let salt = mac.finalize().into_bytes();
                let json = serde_json::to_vec(value).expect("a value serializes");
                let c = Sha256::new()
                    .chain_update(salt)
                    .chain_update(json)
                    .finalize();
                *value = Value::String(hex::encode(c));
            }
        }
        let committed = serde_json::to_vec(&value).expect("a value serializes");
        hex::encode(Sha256::digest(
            [b"pgtrail-event-v2\n".as_slice(), &committed].concat(),
        ))
    }

    #[test]
    fn keys_are_sorted_and_numbers_keep_their_text() {
        let text = String::from_utf8(canonical_json(&sample())).expect("utf8");
        let alpha = text.find("\"alpha\"").expect("alpha");
        let zeta = text.find("\"zeta\"").expect("zeta");
        assert!(alpha < zeta, "{text}");
        assert!(text.contains("\"amount\":12.50"), "{text}");
        assert!(!text.contains(' '), "no whitespace: {text}");
    }

    #[test]
    fn hash_ignores_the_hash_field_but_covers_everything_else() {
        let mut e = sample();
        seal(&mut e, 1, GENESIS_HASH);
        let sealed = e.hash.clone().expect("sealed");
        assert_eq!(event_hash(&e), sealed);
        e.app_user = Some("mallory".into());
        assert_ne!(event_hash(&e), sealed);
    }

    #[test]
    fn hash_survives_a_json_round_trip() {
        let mut e = sample();
        seal(&mut e, 7, GENESIS_HASH);
        let text = serde_json::to_string(&e).expect("serialize");
        let back: Event = serde_json::from_str(&text).expect("parse");
        assert_eq!(event_hash(&back), e.hash.clone().expect("sealed"));
    }

    #[test]
    fn matches_the_reference_fully_populated() {
        assert_matches_reference(&full(), 42, &"ab".repeat(32));
        assert_matches_reference(&full(), i64::MIN, GENESIS_HASH);
        let mut v1 = full();
        v1.nonce = None;
        assert_matches_reference(&v1, 42, &"ab".repeat(32));
    }

    #[test]
    fn new_events_are_version_2_and_the_nonce_is_not_in_the_committed_form() {
        let mut e = full();
        let nonce = e.nonce.clone().expect("a new event has a nonce");
        assert!(commit::nonce_bytes(&nonce).is_some(), "{nonce}");
        assert_ne!(Event::new(Source::Proxy, Kind::Session).nonce, e.nonce);
        seal(&mut e, 1, GENESIS_HASH);
        let committed = String::from_utf8(committed_json(&e).expect("v2")).expect("utf8");
        assert!(
            !committed.contains(&nonce) && !committed.contains("nonce"),
            "{committed}"
        );
        assert!(
            !committed.contains("123456789012345678901234567890.5"),
            "{committed}"
        );
        assert!(canonical_json(&e)
            .windows(32)
            .any(|w| w == nonce.as_bytes()));
        // The stored body keeps the nonce and the real values.
        assert!(CanonicalBody::of(&e)
            .as_str()
            .contains(&format!(",\"nonce\":\"{nonce}\",")));
    }

    #[test]
    fn stripping_or_changing_the_nonce_changes_the_hash() {
        let mut e = full();
        seal(&mut e, 3, GENESIS_HASH);
        let sealed = e.hash.clone().expect("sealed");
        assert_eq!(event_hash(&e), sealed);
        let mut stripped = e.clone();
        stripped.nonce = None;
        assert_ne!(event_hash(&stripped), sealed, "a downgrade to v1");
        let mut other = e.clone();
        other.nonce = Some("0".repeat(32));
        assert_ne!(event_hash(&other), sealed);
        let mut edited = e.clone();
        if let Some(new) = edited.new.as_mut() {
            new.insert("id".into(), json!(2));
        }
        assert_ne!(event_hash(&edited), sealed);
        // A committed form passed off as a v1 event with hex values: the
        // v1 hash of it is not the v2 hash.
        let forged: Event =
            serde_json::from_slice(&committed_json(&e).expect("v2")).expect("event");
        assert_ne!(event_hash(&forged), sealed);
    }

    #[test]
    fn a_nonce_is_read_only_in_its_one_spelling() {
        let e = full();
        let text = serde_json::to_string(&e).expect("json");
        let nonce = e.nonce.clone().expect("nonce");
        assert_eq!(serde_json::from_str::<Event>(&text).expect("reads"), e);
        for bad in [
            nonce.to_uppercase(),
            nonce[1..].to_string(),
            format!("{nonce}0"),
            "x".repeat(32),
        ] {
            let changed = text.replace(&nonce, &bad);
            let err = serde_json::from_str::<Event>(&changed).expect_err("refused");
            assert!(err.to_string().contains("nonce"), "{err}");
        }
    }

    #[test]
    fn matches_the_reference_with_each_field_left_out() {
        // Clearing one optional field at a time moves every splice point.
        let value = serde_json::to_value(full()).expect("json");
        let keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
        for key in keys {
            if ["id", "source", "kind", "captured_at"].contains(&key.as_str()) {
                continue;
            }
            let mut v = value.clone();
            v.as_object_mut().expect("object").remove(&key);
            let event: Event = serde_json::from_value(v).expect("still an event");
            assert_matches_reference(&event, 1, GENESIS_HASH);
        }
        let minimal = Event::at(Source::Proxy, Kind::Session, Utc::now());
        assert_matches_reference(&minimal, i64::MAX, GENESIS_HASH);
    }

    #[test]
    fn matches_the_reference_on_awkward_strings() {
        let awkward = [
            "",
            "\"quoted\" and \\backslashed\\ and \\\"both\\\"",
            "\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1b}\u{1f} control",
            "\u{7f} del, \u{80} c1, \u{2028}\u{2029} separators",
            "non-BMP 𝄞 😀, combining e\u{301}, rtl \u{202e}abc",
            "</script> & <b> 'single'",
        ];
        for text in awkward {
            let mut e = full();
            e.app_user = Some(text.into());
            e.sql = Some(format!("select '{text}'"));
            e.objects = vec![text.into(), "b".into()];
            let mut map = serde_json::Map::new();
            map.insert(text.into(), json!(text));
            map.insert(format!("{text}\u{0}"), json!([text, {text: null}]));
            e.new = Some(map.clone());
            e.context = Some(map);
            assert_matches_reference(&e, 3, GENESIS_HASH);
        }
    }

    #[test]
    fn matches_the_reference_on_number_spellings() {
        let numbers = r#"{"a": 0, "b": -0, "c": 1e400, "d": 1E-7, "e": -12.500,
            "f": 18446744073709551616, "g": -9223372036854775809, "h": 0.1,
            "i": 123456789012345678901234567890.000000000000000000001, "j": 2.5e+3}"#;
        let mut e = full();
        e.old = serde_json::from_str(numbers).expect("json");
        e.params = Some(vec![serde_json::from_str("1.10").expect("json"), json!(-7)]);
        e.rows = Some(i64::MAX);
        e.duration_us = Some(i64::MIN);
        e.client_port = Some(i32::MIN);
        let text = String::from_utf8(canonical_json(&e)).expect("utf8");
        // Digits are kept as written (serde_json's parser only normalizes
        // how an exponent is spelled: `1E-7` is read as `1e-7`).
        assert!(text.contains("\"e\":-12.500,"), "{text}");
        assert!(
            text.contains("\"i\":123456789012345678901234567890.000000000000000000001"),
            "{text}"
        );
        assert_matches_reference(&e, 0, GENESIS_HASH);
    }

    #[test]
    fn seal_fields_the_event_carries_are_spliced_or_left_out() {
        // canonical_json and event_hash take seq and prev_hash from the
        // event, each possibly unset (verify sees whatever was stored).
        let mut e = full();
        for (seq, prev) in [
            (None, None),
            (Some(5), None),
            (None, Some("f".repeat(64))),
            (Some(-1), Some("not \"hex\"\n".to_string())),
        ] {
            e.seq = seq;
            e.prev_hash = prev;
            e.hash = Some("e".repeat(64));
            assert_eq!(canonical_json(&e), reference_json(&e));
            assert_eq!(event_hash(&e), reference_hash(&e));
        }
    }

    #[test]
    fn the_body_ignores_incoming_seal_fields() {
        let mut e = full();
        e.seq = Some(9);
        e.prev_hash = Some("f".repeat(64));
        e.hash = Some("e".repeat(64));
        let body = CanonicalBody::of(&e);
        assert_eq!(body, CanonicalBody::of(&e.clone().unsealed()));
        assert!(!body.as_str().contains("ffff") && !body.as_str().contains("\"seq\""));
    }
}
