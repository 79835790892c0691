//! JSON values as captured: read, written, compared, copied and dropped at
//! any nesting depth, with any keys, number text kept exactly.
//!
//! serde_json alone does not keep captured values faithfully. Its reader
//! stops at 128 levels (Postgres accepts jsonb about 5,000 deep), and with
//! `arbitrary_precision` it reads an object whose only key is its private
//! number marker (`{"$serde_json::private::Number":"42"}`) as the number 42,
//! so two different values read alike. Its writer, `Clone`, `PartialEq` and
//! `Drop` recurse once per level, which overflows a 2 MiB thread a few
//! thousand levels down. So everything here walks values with a heap stack
//! of its own, and the reader builds `serde_json::Value`s itself, where every
//! key is an ordinary key.
//!
//! **Duplicate keys.** A Postgres `json` value (not `jsonb`) may repeat a key;
//! a `Value` object cannot hold both. [`parse`] refuses them: it reads what
//! pgtrail wrote (event bodies, exports), and the canonical form never
//! repeats a key, so a repeated key is a forgery. [`parse_captured`] reads
//! what a database sent: it keeps the last value of each key, as `jsonb` and
//! Postgres's json-to-jsonb conversion do, and returns each value it dropped
//! with its path, so capture can record what the canonical form cannot hold.

mod read;
mod write;

pub(crate) mod fields;

use serde_json::{Map, Value};

pub use read::{parse, parse_captured, Duplicate, JsonError, Parsed};
pub(crate) use write::write_str;
pub use write::{array_to_string, object_to_string, to_string, write, write_array, write_object};

/// Levels below which the std recursive `Clone`/`PartialEq` are used: far
/// from any stack limit, and most values are flat rows.
const SHALLOW: usize = 64;

/// A copy of `value`, at any depth.
pub fn clone(value: &Value) -> Value {
    if within(value, SHALLOW) {
        return value.clone();
    }
    parse(&to_string(value)).expect("the canonical text of a value is valid JSON")
}

/// Whether `a` and `b` are the same value (numbers compared by their text,
/// as serde_json's `PartialEq` does with `arbitrary_precision`), at any depth.
pub fn eq(a: &Value, b: &Value) -> bool {
    if within(a, SHALLOW) && within(b, SHALLOW) {
        return a == b;
    }
    // Objects are sorted maps and numbers keep their text: equal values
    // have equal canonical text, and only they do.
    to_string(a) == to_string(b)
}

/// A copy of an object, at any depth.
pub fn clone_object(members: &Map<String, Value>) -> Map<String, Value> {
    members
        .iter()
        .map(|(key, value)| (key.clone(), clone(value)))
        .collect()
}

/// Whether two objects are the same, at any depth.
pub fn eq_object(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    // Sorted maps: equal objects list the same keys in the same order.
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && eq(va, vb))
}

/// Drops an object at any depth (see [`drop_deep`]).
pub fn drop_object(members: Map<String, Value>) {
    for (_, value) in members {
        if matches!(value, Value::Array(_) | Value::Object(_)) {
            drop_deep(value);
        }
    }
}

/// Drops `value` without recursing once per level (`Value`'s own drop glue
/// does, and overflows the stack on deep values).
pub fn drop_deep(value: Value) {
    let mut stack = Vec::new();
    push_nested(value, &mut stack);
    while let Some(value) = stack.pop() {
        push_nested(value, &mut stack);
    }
}

/// Drops `value`'s children that hold containers via `stack`, the rest here.
fn push_nested(value: Value, stack: &mut Vec<Value>) {
    let nested = |v: &Value| match v {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    };
    match value {
        Value::Array(items) => stack.extend(items.into_iter().filter(nested)),
        Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v).filter(nested)),
        _ => {}
    }
}

/// How deep `value` is nested (a container is one level, a scalar none),
/// walked without recursion.
pub fn depth(value: &Value) -> usize {
    // Most column values are scalars: no stack for them.
    if !matches!(value, Value::Array(_) | Value::Object(_)) {
        return 0;
    }
    let mut deepest = 0;
    let mut stack = vec![(value, 0)];
    while let Some((value, level)) = stack.pop() {
        let children: &mut dyn Iterator<Item = &Value> = match value {
            Value::Array(items) => &mut items.iter(),
            Value::Object(members) => &mut members.values(),
            _ => continue,
        };
        deepest = deepest.max(level + 1);
        stack.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

/// Whether a string or key anywhere in `value` holds NUL, walked without
/// recursion.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => return text.contains('\0'),
        Value::Array(_) | Value::Object(_) => {}
        _ => return false,
    }
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(members) => {
                if members.keys().any(|key| key.contains('\0')) {
                    return true;
                }
                stack.extend(members.values());
            }
            _ => {}
        }
    }
    false
}

/// Whether `value` is nested at most `levels` deep (a container is one
/// level, a scalar none), looking no deeper than that.
pub fn within(value: &Value, levels: usize) -> bool {
    match value {
        Value::Array(items) => levels > 0 && items.iter().all(|v| within(v, levels - 1)),
        Value::Object(map) => levels > 0 && map.values().all(|v| within(v, levels - 1)),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
