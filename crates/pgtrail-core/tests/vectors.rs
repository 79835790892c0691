//! Hashes that never drift: fixed events (every kind, and awkward values:
//! numbers with many digits and exponents, unicode, escapes, control
//! characters, nested JSON, empty arrays and objects) with the canonical
//! bytes and the hash they had when the file was written. Stores keep these
//! hashes forever, so a change to the canonical form that alters any of them
//! would make `verify` fail on every existing store: it must fail here first.
//!
//! `vectors.json`: `event` is the event's JSON as a store hands it to the
//! reader (keys unsorted, spaces, numbers as written), `canonical` the bytes
//! that are hashed, `hash` their SHA-256. Never edit the expected values to
//! make this test pass.

use pgtrail_core::canonical::{canonical_json, event_hash, CanonicalBody};
use pgtrail_core::Event;
use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Deserialize)]
struct Vector {
    name: String,
    event: String,
    canonical: String,
    hash: String,
}

fn vectors() -> Vec<Vector> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    let text = std::fs::read_to_string(path).expect("vectors.json is checked in");
    serde_json::from_str(&text).expect("vectors.json parses")
}

#[test]
fn canonical_bytes_and_hashes_are_what_they_always_were() {
    let vectors = vectors();
    assert!(vectors.len() >= 13);
    for v in &vectors {
        let event: Event = serde_json::from_str(&v.event)
            .unwrap_or_else(|e| panic!("{}: the event parses: {e}", v.name));
        assert_eq!(
            String::from_utf8(canonical_json(&event)).expect("utf8"),
            v.canonical,
            "{}: canonical bytes",
            v.name
        );
        assert_eq!(event_hash(&event), v.hash, "{}: hash", v.name);
        assert_eq!(
            hex::encode(Sha256::digest(v.canonical.as_bytes())),
            v.hash,
            "{}: the hash is SHA-256 of the canonical bytes",
            v.name
        );
        // The store's path: the body without the seal, sealed in pieces.
        let body = CanonicalBody::of(&event);
        let seq = event.seq.expect("vectors are sealed");
        let prev = event.prev_hash.as_deref().expect("vectors are sealed");
        assert_eq!(
            hex::encode(body.sealed_hash(seq, prev)),
            v.hash,
            "{}: sealed hash",
            v.name
        );
        // The canonical form is a fixed point: read back, it encodes the same.
        let back: Event = serde_json::from_str(&v.canonical).expect("canonical parses");
        assert_eq!(back, event, "{}", v.name);
        assert_eq!(canonical_json(&back), v.canonical.as_bytes(), "{}", v.name);
    }
}

#[test]
fn every_event_kind_has_a_vector() {
    let vectors = vectors();
    for kind in [
        "row_change",
        "ddl",
        "statement",
        "session",
        "snapshot",
        "alarm",
        "quarantine",
    ] {
        assert!(
            vectors
                .iter()
                .any(|v| v.canonical.contains(&format!("\"kind\":\"{kind}\""))),
            "no vector of kind {kind}"
        );
    }
}

/// Writes `vectors.json` from `PGTRAIL_VECTOR_INPUTS` (a list of `{name,
/// event}`): only to add vectors, never to change existing ones.
#[test]
#[ignore = "writes the vectors file; run by hand to add vectors"]
fn write_vectors() {
    let inputs = std::env::var("PGTRAIL_VECTOR_INPUTS").expect("PGTRAIL_VECTOR_INPUTS");
    let inputs: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(inputs).expect("inputs")).expect("json");
    let out: Vec<serde_json::Value> = inputs
        .into_iter()
        .map(|input| {
            let text = input["event"].as_str().expect("event text");
            let event: Event = serde_json::from_str(text).expect("event");
            let canonical = String::from_utf8(canonical_json(&event)).expect("utf8");
            serde_json::json!({
                "name": input["name"],
                "event": text,
                "canonical": canonical,
                "hash": event_hash(&event),
            })
        })
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
    if std::path::Path::new(path).exists() {
        for old in vectors() {
            let kept = out.iter().any(|new| {
                new["name"] == old.name.as_str()
                    && new["canonical"] == old.canonical.as_str()
                    && new["hash"] == old.hash.as_str()
            });
            assert!(kept, "{}: existing vectors never change", old.name);
        }
    }
    let text = serde_json::to_string_pretty(&out).expect("json");
    std::fs::write(path, format!("{text}\n")).expect("write");
}
