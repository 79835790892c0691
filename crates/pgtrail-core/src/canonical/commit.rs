//! Hash version 2: each row value committed to on its own, so a proof can
//! withhold a value and still verify.
//!
//! An event with a `nonce` (every event made since) is hashed as version 2.
//! For each member `(part, column, value)` of its `pk`, `old` and `new`:
//!
//! ```text
//! salt       = HMAC-SHA256(key = the 16 nonce bytes, part ‖ 0x00 ‖ column)
//! commitment = SHA-256(salt ‖ the value's canonical JSON)
//! ```
//!
//! The **committed form** is the event's canonical JSON (one writer,
//! `CanonicalBody`) without `nonce` and with every such value replaced by
//! its commitment in lowercase hex, as a JSON string; the hash is
//! `SHA-256("pgtrail-event-v2\n" ‖ committed form)`. The prefix keeps v1 and
//! v2 preimages apart (a v1 preimage starts with `{`). A proof reveals a
//! value with its salt, or withholds it with its commitment; the nonce never
//! leaves the store, so a withheld value's salt cannot be derived and a
//! low-entropy value (a boolean, a salary) cannot be guessed from its
//! commitment. Events without a nonce (version 1) hash exactly as before.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::JsonObject;
use crate::Event;

/// What a version 2 preimage starts with.
pub const V2_PREFIX: &[u8] = b"pgtrail-event-v2\n";

/// The parts of an event whose values are committed to one by one, named as
/// in the salt (and in a proof file), in the order the canonical form
/// writes them.
pub const PARTS: [&str; 3] = ["new", "old", "pk"];

/// A value's salt or commitment: 32 bytes.
pub type Digest32 = [u8; 32];

/// The 16 bytes of a nonce, if `text` is its one spelling: exactly 32
/// lowercase hex characters.
pub fn nonce_bytes(text: &str) -> Option<[u8; 16]> {
    lower_hex::<16>(text)
}

/// The 32 bytes of a salt, commitment or hash spelled as 64 lowercase hex
/// characters (the only spelling a proof file may use).
pub fn digest_from_hex(text: &str) -> Option<Digest32> {
    lower_hex::<32>(text)
}

fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
        *byte = digit(pair[0]) << 4 | digit(pair[1]);
    }
    Some(out)
}

/// Derives the salts of one event: the HMAC key state is set up once and
/// cloned per value.
#[derive(Clone)]
pub struct Salter(Hmac<Sha256>);

impl Salter {
    /// The salter of the event with this nonce.
    pub fn new(nonce: &[u8; 16]) -> Self {
        Salter(Hmac::new_from_slice(nonce).expect("HMAC takes a key of any length"))
    }

    /// The salt of `part`'s `column`.
    pub fn salt(&self, part: &str, column: &str) -> Digest32 {
        let mut mac = self.0.clone();
        mac.update(part.as_bytes());
        mac.update(&[0]);
        mac.update(column.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The commitment to a value: SHA-256 of its salt and its canonical JSON.
pub fn commitment(salt: &Digest32, value_json: &[u8]) -> Digest32 {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(value_json);
    hasher.finalize().into()
}

/// The commitment to `value` under `salt`.
pub fn commit_value(salt: &Digest32, value: &Value) -> Digest32 {
    let mut json = Vec::with_capacity(32);
    crate::json::write(value, &mut json);
    commitment(salt, &json)
}

/// The event's salter, when it is version 2.
pub fn salter_of(event: &Event) -> Option<Salter> {
    event
        .nonce
        .as_deref()
        .and_then(nonce_bytes)
        .map(|nonce| Salter::new(&nonce))
}

/// The event's part named `part` (one of [`PARTS`]).
pub fn part<'a>(event: &'a Event, part: &str) -> Option<&'a JsonObject> {
    match part {
        "new" => event.new.as_ref(),
        "old" => event.old.as_ref(),
        "pk" => event.pk.as_ref(),
        _ => None,
    }
}

/// The event's part named `part`, to change.
pub fn part_mut<'a>(event: &'a mut Event, part: &str) -> Option<&'a mut Option<JsonObject>> {
    match part {
        "new" => Some(&mut event.new),
        "old" => Some(&mut event.old),
        "pk" => Some(&mut event.pk),
        _ => None,
    }
}

/// The committed form's event, built from the definition: `event` without
/// its nonce, each value of `pk`/`old`/`new` replaced by `commitment_of`'s
/// hex. Its canonical JSON (as a version 1 body) is the committed form.
/// The sealing path writes the same bytes in one pass (`CanonicalBody`);
/// a proof's verifier rebuilds them through here.
pub fn committed_event(
    event: &Event,
    mut commitment_of: impl FnMut(&str, &str, &Value) -> Digest32,
) -> Event {
    let mut committed = event.clone();
    committed.nonce = None;
    for name in PARTS {
        if let Some(Some(object)) = part_mut(&mut committed, name) {
            let replaced: Map<String, Value> = object
                .iter()
                .map(|(column, value)| {
                    let c = commitment_of(name, column, value);
                    (column.clone(), Value::String(crate::hex::encode(&c)))
                })
                .collect();
            crate::json::drop_object(std::mem::replace(object, replaced));
        }
    }
    committed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_and_commitments_follow_the_definition() {
        // HMAC-SHA256 by hand (RFC 2104): the key padded to 64 bytes.
        let nonce: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
        let mut key = [0u8; 64];
        key[..16].copy_from_slice(&nonce);
        let pad = |b: u8| key.iter().map(|k| k ^ b).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(b"new\0ssn")
            .finalize();
        let expected: Digest32 = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .into();
        let salter = Salter::new(&nonce);
        assert_eq!(salter.salt("new", "ssn"), expected);
        assert_ne!(salter.salt("old", "ssn"), expected);
        assert_ne!(salter.salt("new", "ss"), salter.salt("new", "ssn"));

        let value: Value = serde_json::from_str("12.50").expect("json");
        let c = commit_value(&expected, &value);
        let by_hand: Digest32 = Sha256::new()
            .chain_update(expected)
            .chain_update(b"12.50")
            .finalize()
            .into();
        assert_eq!(c, by_hand);
    }

    #[test]
    fn hex_has_one_spelling() {
        assert!(nonce_bytes(&"0a".repeat(16)).is_some());
        assert!(nonce_bytes(&"0A".repeat(16)).is_none());
        assert!(nonce_bytes(&"0a".repeat(15)).is_none());
        assert!(nonce_bytes(&format!("{}0", "0a".repeat(16))).is_none());
        assert!(nonce_bytes(&format!("{}g0", "0a".repeat(15))).is_none());
        assert_eq!(digest_from_hex(&"ff".repeat(32)), Some([0xff; 32]));
        assert!(digest_from_hex(&"fF".repeat(32)).is_none());
    }
}
