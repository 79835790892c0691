//! The canonical JSON of an event and the hash that chains it.
//!
//! Canonical form: the event serialized with every object's keys in byte
//! order (serde_json's default map is sorted), no whitespace, unset fields
//! left out, and `hash` itself removed. Numbers keep the exact text they
//! arrived with (serde_json's `arbitrary_precision`), so a `numeric` value is
//! never rounded through a float. The hash is SHA-256 of those bytes, in hex:
//! Postgres's `sha256()` can recompute it in SQL.

use sha2::{Digest, Sha256};

use crate::Event;

/// A SHA-256 digest in lowercase hex (64 characters).
pub type Hash = String;

/// The `prev_hash` of the first event of a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bytes that are hashed: the event without `hash`, canonically encoded.
pub fn canonical_json(event: &Event) -> Vec<u8> {
    let mut value = serde_json::to_value(event).expect("an Event always serializes to JSON");
    if let Some(object) = value.as_object_mut() {
        object.remove("hash");
    }
    serde_json::to_vec(&value).expect("a JSON value always serializes")
}

/// SHA-256 (hex) of the canonical JSON of `event`.
pub fn event_hash(event: &Event) -> Hash {
    hex::encode(Sha256::digest(canonical_json(event)))
}

/// Links `event` into a chain: sets `seq` and `prev_hash`, then `hash`.
pub fn seal(event: &mut Event, seq: i64, prev_hash: &str) {
    event.seq = Some(seq);
    event.prev_hash = Some(prev_hash.to_string());
    event.hash = None;
    event.hash = Some(event_hash(event));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Source};

    fn sample() -> Event {
        let mut e = Event::new(Source::Trigger, Kind::RowChange);
        e.table = Some("accounts".into());
        e.new = serde_json::from_str(r#"{"zeta": 1, "alpha": "x", "amount": 12.50}"#)
            .expect("valid JSON");
        e
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
}
