//! What a proof file's `extra` holds for an event of hash version 2: the
//! event without its nonce and without the values the operator withholds,
//! the salt of each value it reveals and the commitment of each value it
//! withholds (`pgtrail_core::canonical::commit`).
//!
//! ```text
//! {"event":{…, "seq":N, "prev_hash":"…"},
//!  "salts":{"new":{"amount":"<hex>",…},"old":{…},"pk":{…}},
//!  "withheld":{"new":{"ssn":"<hex>"},"old":{"ssn":"<hex>"}}}
//! ```
//!
//! One canonical JSON object (keys in byte order, no whitespace), `salts`
//! and `withheld` always present, a part in them only when it has members.
//! From it a verifier rebuilds the event's committed form, whose hash is
//! the event's hash. The nonce never leaves the store: with it, a withheld
//! value's salt could be derived and a low-entropy value guessed.
//! Version 1 events (no nonce) are proven whole: their `extra` is their
//! canonical JSON, as before.

use std::collections::{BTreeMap, BTreeSet};

use pgtrail_core::canonical::canonical_json;
use pgtrail_core::canonical::commit::{self, Digest32, PARTS};
use pgtrail_core::event::JsonObject;
use pgtrail_core::Event;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Part → column → 32 bytes (salts or commitments), in key order.
type Columns = BTreeMap<String, BTreeMap<String, Digest32>>;

/// Why an event cannot be disclosed as asked, or an extra does not hold
/// what it must.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisclosureError {
    /// The operator asked for what cannot be done.
    #[error("{0}")]
    Refused(String),
    /// The extra is not a disclosure in its one form.
    #[error("{0}")]
    Malformed(String),
}

/// A disclosure read from an `extra`: what it shows and what it hashes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The event with the revealed values (no nonce, no withheld value).
    pub event: Event,
    /// The event's hash: SHA-256 of the rebuilt committed form.
    pub hash: [u8; 32],
    /// The withheld fields, as `part.column` (`new.ssn`), in key order.
    pub withheld: Vec<String>,
}

/// The `extra` of `event` (sealed) with the columns `redact` withheld from
/// `pk`, `old` and `new`. A version 1 event is written whole, and cannot
/// be redacted.
pub fn disclose(event: &Event, redact: &[String]) -> Result<Vec<u8>, DisclosureError> {
    let seq = event.seq.unwrap_or_default();
    let Some(salter) = commit::salter_of(event) else {
        if !redact.is_empty() {
            return Err(DisclosureError::Refused(format!(
                "event {seq} was recorded before hash version 2 (it has no nonce), so its \
                 values cannot be withheld one by one: prove it whole, without --redact"
            )));
        }
        return Ok(canonical_json(event));
    };
    let wanted: BTreeSet<&str> = redact.iter().map(String::as_str).collect();
    for column in &wanted {
        let present = PARTS
            .iter()
            .any(|part| commit::part(event, part).is_some_and(|o| o.contains_key(*column)));
        if !present {
            return Err(DisclosureError::Refused(format!(
                "event {seq} has no column '{column}' in its pk, old or new values: \
                 nothing to withhold"
            )));
        }
    }
    let mut shown = event.clone();
    shown.nonce = None;
    shown.hash = None;
    let mut salts = Columns::new();
    let mut withheld = Columns::new();
    for part in PARTS {
        let Some(Some(object)) = commit::part_mut(&mut shown, part) else {
            continue;
        };
        for (column, value) in object.iter() {
            let salt = salter.salt(part, column);
            let (into, digest) = if wanted.contains(column.as_str()) {
                (&mut withheld, commit::commit_value(&salt, value))
            } else {
                (&mut salts, salt)
            };
            into.entry(part.to_string())
                .or_default()
                .insert(column.clone(), digest);
        }
        for column in withheld.get(part).into_iter().flat_map(|c| c.keys()) {
            if let Some(value) = object.remove(column) {
                pgtrail_core::json::drop_deep(value);
            }
        }
    }
    Ok(write(&shown, &salts, &withheld))
}

/// The canonical JSON of a disclosure.
fn write(event: &Event, salts: &Columns, withheld: &Columns) -> Vec<u8> {
    let mut out = b"{\"event\":".to_vec();
    out.extend_from_slice(&canonical_json(event));
    out.extend_from_slice(b",\"salts\":");
    pgtrail_core::json::write_object(&as_object(salts), &mut out);
    out.extend_from_slice(b",\"withheld\":");
    pgtrail_core::json::write_object(&as_object(withheld), &mut out);
    out.push(b'}');
    out
}

fn as_object(columns: &Columns) -> Map<String, Value> {
    columns
        .iter()
        .map(|(part, members)| {
            let members: Map<String, Value> = members
                .iter()
                .map(|(c, d)| (c.clone(), Value::String(hex::encode(d))))
                .collect();
            (part.clone(), Value::Object(members))
        })
        .collect()
}

/// Whether `extra` is a disclosure (a version 2 proof) rather than a
/// version 1 event: an object with an `event` member, which no event has.
pub fn is_disclosure(extra: &[u8]) -> bool {
    extra.starts_with(b"{\"event\":")
}

/// Reads a disclosure strictly (its one canonical spelling, every revealed
/// value with its salt, no column both revealed and withheld) and rebuilds
/// the event's hash from it.
pub fn open(extra: &[u8]) -> Result<Opened, DisclosureError> {
    let malformed = |reason: &str| DisclosureError::Malformed(reason.to_string());
    let text = std::str::from_utf8(extra).map_err(|_| malformed("the extra is not UTF-8"))?;
    let value = pgtrail_core::json::parse(text)
        .map_err(|e| DisclosureError::Malformed(format!("the extra is not JSON: {e}")))?;
    let Value::Object(mut members) = value else {
        return Err(malformed("the extra is not a JSON object"));
    };
    let keys: Vec<&str> = members.keys().map(String::as_str).collect();
    if keys != ["event", "salts", "withheld"] {
        return Err(malformed(
            "the extra's members are not exactly event, salts and withheld",
        ));
    }
    let event_text = members
        .remove("event")
        .map(|e| pgtrail_core::json::to_string(&e))
        .unwrap_or_default();
    let event: Event = serde_json::from_str(&event_text).map_err(|e| {
        DisclosureError::Malformed(format!("the extra's event is not an event: {e}"))
    })?;
    if event.nonce.is_some() || event.hash.is_some() {
        return Err(malformed("the extra's event carries its nonce or its hash"));
    }
    let salts = columns(members.get("salts"), "salts")?;
    let withheld = columns(members.get("withheld"), "withheld")?;
    if write(&event, &salts, &withheld) != extra {
        return Err(malformed(
            "the extra is not the canonical JSON of the disclosure it holds",
        ));
    }

    let mut full = event.clone();
    for part in PARTS {
        let shown = commit::part(&event, part);
        let shown_columns: Vec<&String> = shown.map(|o| o.keys().collect()).unwrap_or_default();
        let salted: Vec<&String> = salts
            .get(part)
            .map(|c| c.keys().collect())
            .unwrap_or_default();
        if shown_columns != salted {
            return Err(DisclosureError::Malformed(format!(
                "the salts of {part} are not exactly one per value it shows"
            )));
        }
        let Some(hidden) = withheld.get(part) else {
            continue;
        };
        if hidden
            .keys()
            .any(|c| shown.is_some_and(|o| o.contains_key(c)))
        {
            return Err(DisclosureError::Malformed(format!(
                "a column of {part} is both shown and withheld"
            )));
        }
        // A placeholder where each withheld value was: its commitment is given.
        let Some(Some(object)) = commit::part_mut(&mut full, part) else {
            return Err(DisclosureError::Malformed(format!(
                "values of {part} are withheld, but the event has no {part}"
            )));
        };
        object.extend(hidden.keys().map(|c| (c.clone(), Value::Null)));
    }
    let committed = commit::committed_event(&full, |part, column, value| {
        match withheld.get(part).and_then(|c| c.get(column)) {
            Some(commitment) => *commitment,
            // Every shown value has a salt (checked above).
            None => salts
                .get(part)
                .and_then(|c| c.get(column))
                .map(|salt| commit::commit_value(salt, value))
                .unwrap_or_default(),
        }
    });
    let mut hasher = Sha256::new();
    hasher.update(commit::V2_PREFIX);
    hasher.update(canonical_json(&committed));
    let withheld = withheld
        .iter()
        .flat_map(|(part, columns)| columns.keys().map(move |c| format!("{part}.{c}")))
        .collect();
    Ok(Opened {
        event,
        hash: hasher.finalize().into(),
        withheld,
    })
}

/// `salts` or `withheld`: parts of [`PARTS`], each a non-empty object of
/// 64 lowercase hex characters.
fn columns(value: Option<&Value>, what: &str) -> Result<Columns, DisclosureError> {
    let malformed = |reason: String| DisclosureError::Malformed(format!("{what}: {reason}"));
    let Some(Value::Object(parts)) = value else {
        return Err(malformed("not a JSON object".into()));
    };
    let mut out = Columns::new();
    for (part, members) in parts {
        if !PARTS.contains(&part.as_str()) {
            return Err(malformed(format!("'{part}' is not pk, old or new")));
        }
        let members: &JsonObject = match members {
            Value::Object(m) if !m.is_empty() => m,
            _ => return Err(malformed(format!("{part} is not a non-empty object"))),
        };
        let mut digests = BTreeMap::new();
        for (column, digest) in members {
            let digest = digest
                .as_str()
                .and_then(commit::digest_from_hex)
                .ok_or_else(|| malformed(format!("{part}.{column} is not 64 lowercase hex")))?;
            digests.insert(column.clone(), digest);
        }
        out.insert(part.clone(), digests);
    }
    Ok(out)
}
