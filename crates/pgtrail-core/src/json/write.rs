//! The writer: a `Value` to compact JSON, byte for byte what
//! `serde_json::to_writer` writes (sorted keys, its string escapes, number
//! text as kept), with a heap stack instead of recursion.

use std::io::Write;

use serde_json::{Map, Value};

/// An array or object being written: the rest of its items.
enum Open<'a> {
    Array(std::slice::Iter<'a, Value>),
    Object(serde_json::map::Iter<'a>),
}

/// Appends the compact JSON of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    walk(Vec::new(), Some(value), out);
}

/// Appends the compact JSON of an object to `out`.
pub fn write_object(members: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut open = Vec::new();
    let next = open_object(members, &mut open, out);
    walk(open, next, out);
}

/// Appends the compact JSON of an array to `out`.
pub fn write_array(items: &[Value], out: &mut Vec<u8>) {
    let mut open = Vec::new();
    let next = open_array(items, &mut open, out);
    walk(open, next, out);
}

/// Writes `[` and returns the first item (the array stays open), or writes
/// `[]`.
fn open_array<'a>(
    items: &'a [Value],
    open: &mut Vec<Open<'a>>,
    out: &mut Vec<u8>,
) -> Option<&'a Value> {
    out.push(b'[');
    let mut items = items.iter();
    let first = items.next();
    match first {
        None => out.push(b']'),
        Some(_) => open.push(Open::Array(items)),
    }
    first
}

/// Writes `{"key":` of the first member and returns its value (the object
/// stays open), or writes `{}`.
fn open_object<'a>(
    members: &'a Map<String, Value>,
    open: &mut Vec<Open<'a>>,
    out: &mut Vec<u8>,
) -> Option<&'a Value> {
    out.push(b'{');
    let mut members = members.iter();
    match members.next() {
        None => {
            out.push(b'}');
            None
        }
        Some((key, value)) => {
            write_str(key, out);
            out.push(b':');
            open.push(Open::Object(members));
            Some(value)
        }
    }
}

/// Writes `next` and the rest of what is `open`.
fn walk<'a>(mut open: Vec<Open<'a>>, mut next: Option<&'a Value>, out: &mut Vec<u8>) {
    loop {
        if let Some(value) = next.take() {
            match value {
                Value::Null => out.extend_from_slice(b"null"),
                Value::Bool(true) => out.extend_from_slice(b"true"),
                Value::Bool(false) => out.extend_from_slice(b"false"),
                // With `arbitrary_precision` a number displays as its text.
                Value::Number(number) => {
                    write!(out, "{number}").expect("writing to memory cannot fail")
                }
                Value::String(text) => write_str(text, out),
                Value::Array(items) => {
                    next = open_array(items, &mut open, out);
                    continue;
                }
                Value::Object(members) => {
                    next = open_object(members, &mut open, out);
                    continue;
                }
            }
        }
        // The last value is written: go on with its parent's next item.
        match open.last_mut() {
            None => return,
            Some(Open::Array(items)) => match items.next() {
                Some(item) => {
                    out.push(b',');
                    next = Some(item);
                }
                None => {
                    out.push(b']');
                    open.pop();
                }
            },
            Some(Open::Object(members)) => match members.next() {
                Some((key, value)) => {
                    out.push(b',');
                    write_str(key, out);
                    out.push(b':');
                    next = Some(value);
                }
                None => {
                    out.push(b'}');
                    open.pop();
                }
            },
        }
    }
}

/// The compact JSON of `value`.
pub fn to_string(value: &Value) -> String {
    let mut out = Vec::with_capacity(128);
    write(value, &mut out);
    String::from_utf8(out).expect("JSON text written from a Value is UTF-8")
}

/// The compact JSON of an object.
pub fn object_to_string(members: &Map<String, Value>) -> String {
    let mut out = Vec::with_capacity(128);
    write_object(members, &mut out);
    String::from_utf8(out).expect("JSON text written from a Value is UTF-8")
}

/// The compact JSON of an array.
pub fn array_to_string(items: &[Value]) -> String {
    let mut out = Vec::with_capacity(64);
    write_array(items, &mut out);
    String::from_utf8(out).expect("JSON text written from a Value is UTF-8")
}

/// A string with serde_json's escapes: only what it escapes needs it.
pub(crate) fn write_str(text: &str, out: &mut Vec<u8>) {
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        serde_json::to_writer(out, text).expect("a string always serializes");
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}
