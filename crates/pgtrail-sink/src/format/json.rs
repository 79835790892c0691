//! A small JSON writer for the records built here (OCSF, ECS, the
//! checkpoint record): members written in the order given, strings escaped
//! as serde_json escapes them, and captured values (row images, context,
//! parameters) written through `pgtrail_core::json`, which never recurses,
//! so a row image nested thousands of levels deep cannot overflow the stack.

use serde_json::{Map, Value};

/// An open JSON object; [`Obj::end`] closes it.
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    /// Opens an object at the end of `out`.
    pub(crate) fn open(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Obj { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(b':');
    }

    /// `"key":"value"`.
    pub(crate) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        string(self.out, value);
    }

    /// `"key":"value"` when there is a value.
    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.str(key, value);
        }
    }

    /// `"key":n`.
    pub(crate) fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    /// `"key":n` when there is a number.
    pub(crate) fn opt_int(&mut self, key: &str, value: Option<i64>) {
        if let Some(value) = value {
            self.int(key, value);
        }
    }

    /// `"key":true|false`.
    pub(crate) fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// `"key":["a","b"]` (left out when empty).
    pub(crate) fn strs<S: AsRef<str>>(&mut self, key: &str, values: &[S]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        strings(self.out, values);
    }

    /// A captured JSON object, written without recursion.
    pub(crate) fn object_value(&mut self, key: &str, value: Option<&Map<String, Value>>) {
        if let Some(value) = value {
            self.key(key);
            pgtrail_core::json::write_object(value, self.out);
        }
    }

    /// Captured JSON values as an array, written without recursion.
    pub(crate) fn array_value(&mut self, key: &str, value: Option<&[Value]>) {
        if let Some(value) = value {
            self.key(key);
            pgtrail_core::json::write_array(value, self.out);
        }
    }

    /// JSON text that is already written (from serde_json), as the value.
    pub(crate) fn raw(&mut self, key: &str, json: &[u8]) {
        self.key(key);
        self.out.extend_from_slice(json);
    }

    /// A nested object that `fill` writes.
    pub(crate) fn object(&mut self, key: &str, fill: impl FnOnce(&mut Obj<'_>)) {
        self.key(key);
        let mut inner = Obj::open(self.out);
        fill(&mut inner);
        inner.end();
    }

    /// Closes the object.
    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

/// A JSON string.
pub(crate) fn string(out: &mut Vec<u8>, value: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A JSON array of strings.
pub(crate) fn strings<S: AsRef<str>>(out: &mut Vec<u8>, values: &[S]) {
    out.push(b'[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, value.as_ref());
    }
    out.push(b']');
}

/// Rewrites JSON text so that it is ASCII only: every character past
/// U+007F becomes a `\uXXXX` escape (two, for a surrogate pair). Such
/// characters only occur inside strings, where the escape means the same.
pub(crate) fn ascii_only(json: &[u8], out: &mut Vec<u8>) {
    match std::str::from_utf8(json) {
        Ok(text) if text.is_ascii() => out.extend_from_slice(json),
        Ok(text) => {
            for c in text.chars() {
                if c.is_ascii() {
                    out.push(c as u8);
                } else {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                    }
                }
            }
        }
        // serde_json writes UTF-8 only; kept as is if that ever changed.
        Err(_) => out.extend_from_slice(json),
    }
}
