//! The reader: JSON text (RFC 8259) to a `Value`, with a heap stack of open
//! arrays and objects instead of recursion.

use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Why a text is not JSON pgtrail can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The text is not JSON.
    #[error("invalid JSON at byte {at}: {expected}")]
    Syntax {
        /// Byte offset of the problem.
        at: usize,
        /// What was expected there.
        expected: &'static str,
    },
    /// An object repeats a key where that is refused (see [`parse`]).
    #[error("duplicate key at {path}: pgtrail never writes a key twice")]
    DuplicateKey {
        /// JSON Pointer (RFC 6901) of the repeated member.
        path: String,
    },
}

/// A member a captured value repeated: the canonical form keeps the last
/// value of a key, this is an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub struct Duplicate {
    /// JSON Pointer (RFC 6901) of the member.
    pub path: String,
    /// The value that the later member replaced.
    pub dropped: Value,
}

/// A captured value and what it repeated.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The value, the last member of each repeated key kept.
    pub value: Value,
    /// The earlier members of repeated keys, in text order.
    pub duplicates: Vec<Duplicate>,
}

/// Reads what pgtrail wrote (event bodies, exports): any depth, any key,
/// number text kept; a repeated key is an error.
pub fn parse(text: &str) -> Result<Value, JsonError> {
    Reader::new(text, false).read().map(|parsed| parsed.value)
}

/// Reads what a database sent: any depth, any key, number text kept; of a
/// repeated key the last value is kept and the earlier ones are returned.
pub fn parse_captured(text: &str) -> Result<Parsed, JsonError> {
    Reader::new(text, true).read()
}

/// An array or object being read.
enum Open {
    Array(Vec<Value>),
    /// The members so far and the key of the member being read.
    Object(Map<String, Value>, String),
}

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    keep_last: bool,
    duplicates: Vec<Duplicate>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, keep_last: bool) -> Self {
        Reader {
            text,
            bytes: text.as_bytes(),
            at: 0,
            keep_last,
            duplicates: Vec::new(),
        }
    }

    fn error(&self, expected: &'static str) -> JsonError {
        JsonError::Syntax {
            at: self.at,
            expected,
        }
    }

    fn read(mut self) -> Result<Parsed, JsonError> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            // A value starts here: a scalar, or an array or object to open.
            self.skip_whitespace();
            let mut value = match self.peek() {
                Some(b'[') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        Value::Array(Vec::new())
                    } else {
                        open.push(Open::Array(Vec::new()));
                        continue;
                    }
                }
                Some(b'{') => {
                    self.at += 1;
                    self.skip_whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        Value::Object(Map::new())
                    } else {
                        let key = self.key()?;
                        open.push(Open::Object(Map::new(), key));
                        continue;
                    }
                }
                _ => self.scalar()?,
            };
            // The value is complete: add it to what is open, closing every
            // array and object it completes.
            loop {
                // One lookup per member: a repeated key is found where the
                // member goes in.
                let repeated = match open.last_mut() {
                    None => {
                        self.skip_whitespace();
                        if self.at != self.bytes.len() {
                            return Err(self.error("the end of the text"));
                        }
                        return Ok(Parsed {
                            value,
                            duplicates: self.duplicates,
                        });
                    }
                    Some(Open::Array(items)) => {
                        items.push(value);
                        None
                    }
                    Some(Open::Object(members, key)) => match members.entry(std::mem::take(key)) {
                        Entry::Vacant(slot) => {
                            slot.insert(value);
                            None
                        }
                        Entry::Occupied(mut slot) if self.keep_last => {
                            let dropped = std::mem::replace(slot.get_mut(), value);
                            Some((slot.key().clone(), Some(dropped)))
                        }
                        Entry::Occupied(slot) => Some((slot.key().clone(), None)),
                    },
                };
                if let Some((key, dropped)) = repeated {
                    let path = pointer(&open, &key);
                    match dropped {
                        Some(dropped) => self.duplicates.push(Duplicate { path, dropped }),
                        None => return Err(JsonError::DuplicateKey { path }),
                    }
                }
                self.skip_whitespace();
                let close = match (open.last_mut(), self.peek()) {
                    (Some(_), Some(b',')) => {
                        self.at += 1;
                        false
                    }
                    (Some(Open::Array(_)), Some(b']')) | (Some(Open::Object(..)), Some(b'}')) => {
                        self.at += 1;
                        true
                    }
                    (Some(Open::Array(_)), _) => return Err(self.error("',' or ']'")),
                    _ => return Err(self.error("',' or '}'")),
                };
                if !close {
                    if let Some(Open::Object(_, key)) = open.last_mut() {
                        self.skip_whitespace();
                        *key = self.key()?;
                    }
                    break;
                }
                value = match open.pop() {
                    Some(Open::Array(items)) => Value::Array(items),
                    Some(Open::Object(members, _)) => Value::Object(members),
                    None => unreachable!("a parent was open"),
                };
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// `"key"` and the `:` after it.
    fn key(&mut self) -> Result<String, JsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("a key"));
        }
        let key = self.string()?;
        self.skip_whitespace();
        if self.peek() != Some(b':') {
            return Err(self.error("':'"));
        }
        self.at += 1;
        Ok(key)
    }

    fn scalar(&mut self) -> Result<Value, JsonError> {
        match self.peek() {
            Some(b'"') => self.string().map(Value::String),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number().map(Value::Number),
            _ => Err(self.error("a value")),
        }
    }

    fn literal(&mut self, word: &'static str, value: Value) -> Result<Value, JsonError> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.error(word))
        }
    }

    /// A number, its digits kept as written (`1.50`, `-0`), its exponent
    /// spelled as serde_json always spelled it (`1E5` -> `1e+5`, `1e-07`
    /// stays): events hashed before this reader existed went through
    /// serde_json, and the same input must keep giving the same bytes.
    fn number(&mut self) -> Result<Number, JsonError> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("a digit after '.'"));
            }
            self.digits();
        }
        let mut text = self.text[start..self.at].to_string();
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            text.push('e');
            match self.peek() {
                Some(b'-') => {
                    self.at += 1;
                    text.push('-');
                }
                Some(b'+') => {
                    self.at += 1;
                    text.push('+');
                }
                _ => text.push('+'),
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("a digit in the exponent"));
            }
            let digits = self.at;
            self.digits();
            text.push_str(&self.text[digits..self.at]);
        }
        // The grammar is checked above, so the text is a valid number.
        Ok(Number::from_string_unchecked(text))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }

    /// A string from its opening quote; escapes decoded (`\u0000` too).
    fn string(&mut self) -> Result<String, JsonError> {
        self.at += 1;
        let start = self.at;
        // Most strings have no escape: one slice.
        loop {
            match self.peek() {
                Some(b'"') => {
                    let text = self.text[start..self.at].to_string();
                    self.at += 1;
                    return Ok(text);
                }
                Some(b'\\') => break,
                Some(0..=0x1f) => return Err(self.error("no control character in a string")),
                Some(_) => self.at += 1,
                None => return Err(self.error("the end of the string")),
            }
        }
        let mut out = self.text[start..self.at].to_string();
        loop {
            let run = self.at;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[run..self.at]);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.error("an escape")),
                    };
                    self.at += 1;
                    out.push(escaped);
                }
                Some(_) => return Err(self.error("no control character in a string")),
                None => return Err(self.error("the end of the string")),
            }
        }
    }

    /// The character of `XXXX` (after `\u`), a surrogate pair taken whole.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xd800..=0xdbff => {
                if !self.bytes[self.at..].starts_with(b"\\u") {
                    return Err(self.error("a low surrogate after a high one"));
                }
                self.at += 2;
                let second = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&second) {
                    return Err(self.error("a low surrogate after a high one"));
                }
                0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
            }
            0xdc00..=0xdfff => return Err(self.error("a high surrogate before a low one")),
            code => code,
        };
        char::from_u32(code).ok_or_else(|| self.error("a Unicode scalar value"))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("four hex digits"))?;
        let mut code = 0;
        for &digit in digits {
            let value = (digit as char)
                .to_digit(16)
                .ok_or_else(|| self.error("four hex digits"))?;
            code = code * 16 + value;
        }
        self.at += 4;
        Ok(code)
    }
}

/// The JSON Pointer of member `key` of the innermost open object.
fn pointer(open: &[Open], key: &str) -> String {
    let mut path = String::new();
    let mut push = |token: &str| {
        path.push('/');
        path.push_str(&token.replace('~', "~0").replace('/', "~1"));
    };
    for frame in &open[..open.len() - 1] {
        match frame {
            Open::Array(items) => push(&items.len().to_string()),
            Open::Object(_, key) => push(key),
        }
    }
    push(key);
    path
}
