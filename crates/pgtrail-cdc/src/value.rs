//! From pgoutput's text values to JSON that keeps their meaning.
//!
//! The rule is Postgres's own `to_jsonb`, so a row captured by logical
//! replication reads the same as one captured by the triggers: booleans
//! become `true` / `false`; integers, `numeric` and finite floats become JSON
//! numbers carrying the exact digits Postgres printed (core's JSON keeps
//! number text verbatim, never through an f64), `NaN` and the infinities
//! stay strings; `json` and `jsonb` become the JSON they hold; arrays become
//! JSON arrays of converted elements. Everything else (timestamps, dates,
//! intervals, uuid, bytea as `\x…` hex, money, ranges, enums, geometric and
//! network types, composites) is the text Postgres printed. Domains convert
//! like their base type. Where this text differs from `to_jsonb`'s (it writes
//! timestamps in ISO 8601 with a `T`), see docs/cdc.md, "How values are
//! represented".
//!
//! The replication connection fixes `DateStyle=ISO`, `IntervalStyle=postgres`,
//! `TimeZone=UTC` and `extra_float_digits=3`, so the text is deterministic.

use std::collections::HashMap;

use pgtrail_core::json;
use serde_json::{Number, Value};

/// How a column type's text converts to JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueKind {
    /// `t` / `f` → JSON boolean.
    Bool,
    /// Integer types → JSON number.
    Integer,
    /// `real`, `double precision`, `numeric` → JSON number; NaN and
    /// infinities as strings.
    Float,
    /// `timestamp` → ISO 8601 with a `T`, as `to_jsonb` writes it.
    Timestamp,
    /// `timestamptz` → ISO 8601 with a `T` and the zone as `+HH:MM`.
    TimestampTz,
    /// The parsed JSON document.
    Json,
    /// An array of elements of a kind, split on a delimiter.
    Array {
        /// The element kind.
        element: Box<ValueKind>,
        /// `pg_type.typdelim` of the element type (`,` except for `box`).
        delimiter: char,
    },
    /// The text as Postgres printed it.
    Text,
}

/// One row of `pg_type`, what is needed to classify a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRow {
    /// `oid`
    pub oid: u32,
    /// `typtype`: `b` base, `d` domain, `e` enum, `r` range, `c` composite, …
    pub typtype: char,
    /// `typcategory`: `A` for arrays.
    pub category: char,
    /// `typelem`: element type of an array, else 0.
    pub element: u32,
    /// `typbasetype`: base of a domain, else 0.
    pub base: u32,
    /// `typdelim` of this type (used when it is an array element).
    pub delimiter: char,
}

/// The SQL that lists the `pg_type` rows [`TypeRegistry::load`] needs.
pub const TYPE_ROWS_SQL: &str =
    "select oid::int8, typtype::text, typcategory::text, typelem::int8, \
     typbasetype::int8, typdelim::text from pg_catalog.pg_type";

/// Classifies column types by OID: built-ins are known up front; the rest
/// (arrays of anything, domains, enums, extension types) come from `pg_type`.
#[derive(Debug, Clone)]
pub struct TypeRegistry {
    kinds: HashMap<u32, ValueKind>,
}

impl Default for TypeRegistry {
    fn default() -> Self {
        Self::builtin()
    }
}

fn scalar_kind(oid: u32) -> Option<ValueKind> {
    Some(match oid {
        16 => ValueKind::Bool,
        20 | 21 | 23 | 26 | 28 | 5069 => ValueKind::Integer,
        700 | 701 | 1700 => ValueKind::Float,
        1114 => ValueKind::Timestamp,
        1184 => ValueKind::TimestampTz,
        114 | 3802 => ValueKind::Json,
        _ => return None,
    })
}

impl TypeRegistry {
    /// Built-in scalar types and their common arrays; enough without a catalog.
    pub fn builtin() -> Self {
        let mut kinds = HashMap::new();
        for oid in [
            16, 20, 21, 23, 26, 28, 5069, 700, 701, 1700, 1114, 1184, 114, 3802,
        ] {
            if let Some(kind) = scalar_kind(oid) {
                kinds.insert(oid, kind);
            }
        }
        let arrays: [(u32, u32); 27] = [
            (1000, 16),
            (1016, 20),
            (1005, 21),
            (1007, 23),
            (1028, 26),
            (1021, 700),
            (1022, 701),
            (199, 114),
            (3807, 3802),
            (1231, 1700),
            (1009, 25),
            (1015, 1043),
            (1014, 1042),
            (1001, 17),
            (2951, 2950),
            (1115, 1114),
            (1185, 1184),
            (1182, 1082),
            (1183, 1083),
            (1270, 1266),
            (1187, 1186),
            (1041, 869),
            (651, 650),
            (1002, 18),
            (1003, 19),
            (791, 790),
            (143, 142),
        ];
        for (array, element) in arrays {
            let element = scalar_kind(element).unwrap_or(ValueKind::Text);
            kinds.insert(
                array,
                ValueKind::Array {
                    element: Box::new(element),
                    delimiter: ',',
                },
            );
        }
        TypeRegistry { kinds }
    }

    /// Adds every type of `rows` (all of `pg_type`), resolving domains to
    /// their base types and arrays to their element types.
    pub fn load(&mut self, rows: &[TypeRow]) {
        let by_oid: HashMap<u32, &TypeRow> = rows.iter().map(|r| (r.oid, r)).collect();
        for row in rows {
            let kind = resolve(row.oid, &by_oid, 0);
            self.kinds.insert(row.oid, kind);
        }
    }

    /// How values of type `oid` convert; unknown types stay text.
    pub fn kind(&self, oid: u32) -> &ValueKind {
        self.kinds.get(&oid).unwrap_or(&ValueKind::Text)
    }

    /// Whether `oid` is known (else the caller may reload `pg_type`).
    pub fn knows(&self, oid: u32) -> bool {
        self.kinds.contains_key(&oid)
    }
}

fn resolve(oid: u32, rows: &HashMap<u32, &TypeRow>, depth: u8) -> ValueKind {
    if let Some(kind) = scalar_kind(oid) {
        return kind;
    }
    let Some(row) = rows.get(&oid) else {
        return ValueKind::Text;
    };
    if depth > 8 {
        return ValueKind::Text;
    }
    if row.typtype == 'd' && row.base != 0 {
        return resolve(row.base, rows, depth + 1);
    }
    if row.category == 'A' && row.element != 0 {
        let delimiter = rows.get(&row.element).map_or(',', |e| e.delimiter);
        return ValueKind::Array {
            element: Box::new(resolve(row.element, rows, depth + 1)),
            delimiter,
        };
    }
    ValueKind::Text
}

/// Converts one text value of kind `kind` to JSON.
pub fn to_json(kind: &ValueKind, text: &str) -> Value {
    match kind {
        ValueKind::Bool => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        ValueKind::Integer | ValueKind::Float => number(text),
        ValueKind::Timestamp => Value::String(iso_8601(text, false)),
        ValueKind::TimestampTz => Value::String(iso_8601(text, true)),
        // Core's reader: any depth, any key, numbers as written. A `json`
        // value that repeats a key cannot be an object here without losing
        // a member: it is kept as its text, as is anything not JSON.
        ValueKind::Json => match json::parse_captured(text) {
            Ok(parsed) if parsed.duplicates.is_empty() => parsed.value,
            _ => Value::String(text.to_string()),
        },
        ValueKind::Array { element, delimiter } => match parse_array(text, *delimiter) {
            Some(items) => array_to_json(&items, element),
            None => Value::String(text.to_string()),
        },
        ValueKind::Text => Value::String(text.to_string()),
    }
}

/// A JSON number with exactly `text`'s digits, or the text if it is not a
/// JSON number (NaN, Infinity).
fn number(text: &str) -> Value {
    match text.parse::<Number>() {
        Ok(n) => Value::Number(n),
        Err(_) => Value::String(text.to_string()),
    }
}

/// Postgres's ISO text of a timestamp (`2024-02-29 13:45:00.5+00`, as the
/// replication session prints it with `DateStyle=ISO`) in the form its
/// `to_jsonb` writes (`2024-02-29T13:45:00.5+00:00`): a `T` between date and
/// time, and a zone of whole hours with its minutes. `infinity` and
/// `-infinity` stay as they are; a ` BC` suffix is kept.
fn iso_8601(text: &str, zoned: bool) -> String {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return text.to_string();
    }
    let (stamp, era) = match text.strip_suffix(" BC") {
        Some(stamp) => (stamp, " BC"),
        None => (text, ""),
    };
    let mut out = stamp.replacen(' ', "T", 1);
    if zoned {
        // The zone starts at the last sign after the `T`: `+HH[:MM[:SS]]`.
        let time_start = out.find('T').map_or(0, |t| t + 1);
        if let Some(sign) = out[time_start..].rfind(['+', '-']) {
            if out.len() - (time_start + sign) == 3 {
                out.push_str(":00");
            }
        }
    }
    out.push_str(era);
    out
}

fn array_to_json(items: &[ArrayItem], element: &ValueKind) -> Value {
    Value::Array(
        items
            .iter()
            .map(|item| match item {
                ArrayItem::Null => Value::Null,
                ArrayItem::Value(text) => to_json(element, text),
                ArrayItem::Nested(inner) => array_to_json(inner, element),
            })
            .collect(),
    )
}

/// One element of a parsed array literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayItem {
    /// `NULL`
    Null,
    /// An element's text, quotes and escapes removed.
    Value(String),
    /// A sub-array (multi-dimensional arrays).
    Nested(Vec<ArrayItem>),
}

/// Parses Postgres's array output (`{1,2}`, `{"a b",NULL}`, `{{1},{2}}`,
/// `[0:1]={1,2}`). Returns `None` if the text is not an array literal.
pub fn parse_array(text: &str, delimiter: char) -> Option<Vec<ArrayItem>> {
    let mut rest = text.trim();
    if rest.starts_with('[') {
        // Explicit bounds, printed when a lower bound is not 1; JSON keeps the elements.
        let eq = rest.find('=')?;
        rest = &rest[eq + 1..];
    }
    let mut chars = rest.chars().peekable();
    let items = parse_level(&mut chars, delimiter, 1)?;
    chars.next().is_none().then_some(items)
}

/// Postgres arrays have at most 6 dimensions (`MAXDIM`); text nested deeper
/// is not an array it printed, and refusing it keeps the recursion bounded.
const MAX_DIMENSIONS: usize = 6;

fn parse_level(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delimiter: char,
    depth: usize,
) -> Option<Vec<ArrayItem>> {
    if depth > MAX_DIMENSIONS || chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(items);
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.peek()? {
            '{' => items.push(ArrayItem::Nested(parse_level(chars, delimiter, depth + 1)?)),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                items.push(ArrayItem::Value(value));
            }
            _ => {
                let mut value = String::new();
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '}' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        value.push(chars.next()?);
                    } else {
                        value.push(c);
                    }
                }
                let value = value.trim_end().to_string();
                items.push(if value.eq_ignore_ascii_case("NULL") {
                    ArrayItem::Null
                } else {
                    ArrayItem::Value(value)
                });
            }
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next()? {
            c if c == delimiter => continue,
            '}' => return Some(items),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn convert(oid: u32, text: &str) -> String {
        serde_json::to_string(&to_json(TypeRegistry::builtin().kind(oid), text))
            .expect("serializes")
    }

    #[test]
    fn builtin_types_keep_their_meaning() {
        let cases: &[(u32, &str, &str)] = &[
            (16, "t", "true"),
            (16, "f", "false"),
            (23, "-42", "-42"),
            (20, "9223372036854775807", "9223372036854775807"),
            (701, "0.30000000000000004", "0.30000000000000004"),
            (701, "NaN", r#""NaN""#),
            (700, "-Infinity", r#""-Infinity""#),
            (
                1700,
                "12345678901234567890.0123456789",
                "12345678901234567890.0123456789",
            ),
            (790, "$1.00", r#""$1.00""#),
            (
                1184,
                "2024-02-29 13:45:00.123456+00",
                r#""2024-02-29T13:45:00.123456+00:00""#,
            ),
            (
                1184,
                "2024-02-29 13:45:00+05:30",
                r#""2024-02-29T13:45:00+05:30""#,
            ),
            (
                1184,
                "0044-03-15 12:00:00+00 BC",
                r#""0044-03-15T12:00:00+00:00 BC""#,
            ),
            (1184, "infinity", r#""infinity""#),
            (1114, "2024-02-29 13:45:00", r#""2024-02-29T13:45:00""#),
            (1114, "-infinity", r#""-infinity""#),
            (
                1115,
                r#"{"2024-02-29 13:45:00",NULL}"#,
                r#"["2024-02-29T13:45:00",null]"#,
            ),
            (1082, "2024-02-29", r#""2024-02-29""#),
            (
                2950,
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#,
            ),
            (17, "\\x00ff", r#""\\x00ff""#),
            (
                3802,
                r#"{"b": [1, 2.50], "a": null}"#,
                r#"{"a":null,"b":[1,2.50]}"#,
            ),
            (114, "not json", r#""not json""#),
            (3904, "[1,5)", r#""[1,5)""#),
            (1007, "{1,NULL,3}", "[1,null,3]"),
            (1700, "12.50", "12.50"),
            (1700, "-0.000", "-0.000"),
            (1700, "NaN", r#""NaN""#),
            (1700, "Infinity", r#""Infinity""#),
            (1231, "{1.10,NaN}", r#"[1.10,"NaN"]"#),
            (
                1009,
                r#"{"a,b","c\"d",NULL,"NULL",plain}"#,
                r#"["a,b","c\"d",null,"NULL","plain"]"#,
            ),
            (1007, "{{1,2},{3,4}}", "[[1,2],[3,4]]"),
            (1007, "[0:1]={7,8}", "[7,8]"),
            (1000, "{}", "[]"),
            (3807, r#"{"{\"k\": 1}"}"#, r#"[{"k":1}]"#),
        ];
        for (oid, text, expected) in cases {
            assert_eq!(convert(*oid, text), *expected, "type {oid}, text {text}");
        }
    }

    #[test]
    fn domains_enums_and_arrays_resolve_through_pg_type() {
        let row = |oid, typtype, category, element, base| TypeRow {
            oid,
            typtype,
            category,
            element,
            base,
            delimiter: ',',
        };
        let mut registry = TypeRegistry::builtin();
        registry.load(&[
            row(1700, 'b', 'N', 0, 0),
            row(23, 'b', 'N', 0, 0),
            row(50000, 'd', 'N', 0, 23),    // domain over int4
            row(50001, 'b', 'A', 50000, 0), // array of that domain
            row(50002, 'e', 'E', 0, 0),     // enum
            row(50003, 'b', 'A', 50002, 0), // array of the enum
            row(50004, 'd', 'N', 0, 1700),  // domain over numeric
        ]);
        assert_eq!(to_json(registry.kind(50000), "5"), json!(5));
        assert_eq!(to_json(registry.kind(50001), "{5,6}"), json!([5, 6]));
        assert_eq!(to_json(registry.kind(50002), "happy"), json!("happy"));
        assert_eq!(
            to_json(registry.kind(50003), "{happy,sad}"),
            json!(["happy", "sad"])
        );
        assert_eq!(
            serde_json::to_string(&to_json(registry.kind(50004), "1.50")).expect("serializes"),
            "1.50"
        );
        assert_eq!(registry.kind(99999), &ValueKind::Text);
    }

    #[test]
    fn box_arrays_use_their_delimiter() {
        assert_eq!(
            parse_array("{(1,1),(0,0);(2,2),(1,1)}", ';'),
            Some(vec![
                ArrayItem::Value("(1,1),(0,0)".into()),
                ArrayItem::Value("(2,2),(1,1)".into())
            ])
        );
        assert_eq!(parse_array("{1,2", ','), None);
        assert_eq!(parse_array("1,2", ','), None);
    }
}
