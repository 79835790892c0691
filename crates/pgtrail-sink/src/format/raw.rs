//! `jsonl` written from an event as stored ([`RawEvent`]) without decoding
//! it: the stored body's top-level members, each value copied byte for
//! byte, put in the order `Event` serializes its fields, with `seq`,
//! `prev_hash` and `hash` added at theirs. The line is the one
//! [`super::Encoder::encode`] writes for the decoded event (a test holds
//! the two to each other), at the cost of one pass over the body's bytes.
//!
//! A member `Event` does not know (a body someone edited, or a field newer
//! than this reader) is passed on as it is, right after the member it
//! follows in the body: sinks never "fix" an event; `verify` says what is
//! wrong with it.

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use pgtrail_core::Event;
use pgtrail_store::RawEvent;
use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The body's top-level members, in stored order: each key's text (as
/// written between its quotes) and its value's JSON text.
pub(crate) struct Members<'a> {
    members: Vec<(&'a str, &'a str)>,
}

impl<'a> Members<'a> {
    /// Splits a JSON object into its top-level members. Values are not
    /// parsed, only delimited (strings, nesting); a body that is not an
    /// object is an error.
    pub(crate) fn of(body: &'a str) -> Result<Self, String> {
        let bytes = body.as_bytes();
        let not = |what: &str, at: usize| {
            format!("the stored body is not a JSON object: {what} at byte {at}")
        };
        let mut at = skip_space(bytes, 0);
        if bytes.get(at) != Some(&b'{') {
            return Err(not("no '{'", at));
        }
        at = skip_space(bytes, at + 1);
        let mut members = Vec::with_capacity(24);
        if bytes.get(at) == Some(&b'}') {
            return trailing(bytes, at + 1)
                .map(|()| Members { members })
                .map_err(|e| not(e, at));
        }
        loop {
            if bytes.get(at) != Some(&b'"') {
                return Err(not("no key", at));
            }
            let key_end = string_end(bytes, at).ok_or_else(|| not("an unterminated key", at))?;
            let key = &body[at + 1..key_end - 1];
            at = skip_space(bytes, key_end);
            if bytes.get(at) != Some(&b':') {
                return Err(not("no ':'", at));
            }
            let start = skip_space(bytes, at + 1);
            let end = value_end(bytes, start).ok_or_else(|| not("an unterminated value", start))?;
            members.push((key, body[start..end].trim_end()));
            at = skip_space(bytes, end);
            match bytes.get(at) {
                Some(b',') => at = skip_space(bytes, at + 1),
                Some(b'}') => {
                    return trailing(bytes, at + 1)
                        .map(|()| Members { members })
                        .map_err(|e| not(e, at));
                }
                _ => return Err(not("no ',' or '}'", at)),
            }
        }
    }

    /// The JSON text of member `key`'s value.
    pub(crate) fn get(&self, key: &str) -> Option<&'a str> {
        self.members
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| *value)
    }

    /// Member `key`'s value when it is a string without escapes (an id, a
    /// kind, a time), without its quotes.
    pub(crate) fn plain_str(&self, key: &str) -> Option<&'a str> {
        let value = self.get(key)?.strip_prefix('"')?.strip_suffix('"')?;
        (!value.contains('\\')).then_some(value)
    }

    /// The event's `captured_at`.
    pub(crate) fn captured_at(&self) -> Option<DateTime<Utc>> {
        let text = self.plain_str("captured_at")?;
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Appends the event's `jsonl` line from its stored body, as [`jsonl`]
/// does, unless that line would hold a line break: then appends nothing
/// and returns false. The splice only delimits values, so a body edited in
/// the store file could carry a line break (as JSON whitespace, or inside
/// a "scalar" the splice does not parse), which a reader of lines would
/// take as a second record: a forged event in a tailed file, an action of
/// its own in a `_bulk` body. Such an event goes through the decoder.
pub(crate) fn jsonl_on_one_line(raw: &RawEvent, members: &Members<'_>, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    jsonl(raw, members, out);
    let end = out.len() - usize::from(out.last() == Some(&b'\n'));
    if out[start..end].iter().any(|&b| b == b'\n' || b == b'\r') {
        out.truncate(start);
        return false;
    }
    true
}

/// Appends the `jsonl` line of `raw` (whose body `members` split) to `out`.
pub(crate) fn jsonl(raw: &RawEvent, members: &Members<'_>, out: &mut Vec<u8>) {
    let ranks = field_ranks();
    // Each member's place: its field's, or (unknown) just after the member
    // before it; ties keep the body's order (a stable sort).
    let mut placed: Vec<(usize, &str, &str)> = Vec::with_capacity(members.members.len() + 3);
    let mut place = 0;
    for &(key, value) in &members.members {
        place = ranks.get(key).map_or(place | 1, |rank| 2 * rank);
        placed.push((place, key, value));
    }
    let seq = raw.seq.to_string();
    let prev_hash = json_string(&raw.prev_hash);
    let hash = json_string(&raw.hash);
    for (key, value) in [
        ("seq", seq.as_str()),
        ("prev_hash", &prev_hash),
        ("hash", &hash),
    ] {
        if let Some(rank) = ranks.get(key) {
            placed.push((2 * rank, key, value));
        }
    }
    placed.sort_by_key(|(rank, _, _)| *rank);
    out.push(b'{');
    for (i, (_, key, value)) in placed.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

/// `raw` decoded, for formats that need its fields.
pub(crate) fn decode(raw: &RawEvent) -> Result<Event, String> {
    let mut event: Event =
        serde_json::from_str(&raw.body).map_err(|e| format!("its body is not an event: {e}"))?;
    event.seq = Some(raw.seq);
    event.prev_hash = Some(raw.prev_hash.clone());
    event.hash = Some(raw.hash.clone());
    Ok(event)
}

fn json_string(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len() + 2);
    super::json::string(&mut out, text);
    // Escaping a `str` leaves it UTF-8: no lossy pass, no second copy.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Each field of `Event` and its place in the order serde writes them (the
/// order of the struct), read from `Event`'s own `Deserialize` once, so a
/// field added to `Event` is placed without a list here to keep up.
fn field_ranks() -> &'static HashMap<&'static str, usize> {
    static RANKS: OnceLock<HashMap<&'static str, usize>> = OnceLock::new();
    RANKS.get_or_init(|| {
        let mut fields = FieldNames(&[]);
        // Always an error: FieldNames stops at the list of fields.
        let _ = Event::deserialize(&mut fields);
        fields
            .0
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, i))
            .collect()
    })
}

/// A `Deserializer` that only records the field names a struct asks for.
struct FieldNames(&'static [&'static str]);

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only the field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("only the field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Nothing but white space after the object.
fn trailing(bytes: &[u8], at: usize) -> Result<(), &'static str> {
    match skip_space(bytes, at) == bytes.len() {
        true => Ok(()),
        false => Err("text after the object"),
    }
}

/// Just past the string that starts (with its quote) at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Just past the value that starts at `at`: a string, an object or array
/// (to its matching end; depth counted, not recursed), or a scalar (to the
/// next ',', '}' or ']').
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = at;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' | b'}' | b']' if depth == 0 => return (i > at).then_some(i),
            _ => {}
        }
        i += 1;
    }
    (depth == 0 && i > at).then_some(i)
}
