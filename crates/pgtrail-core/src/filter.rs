//! What readers ask the store for: a [`Filter`] over events, or one row
//! ([`RowRef`]). Parsing of the command-line forms lives here too, so the CLI,
//! the HTTP API and tests all accept the same syntax.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::JsonObject;
use crate::{Kind, Source};

/// Why a filter argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A `--pk` value that is not `col=value[,col=value…]` or a JSON object.
    #[error("invalid key '{input}': {reason}")]
    Pk {
        /// What the user typed.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A table name that is empty or has too many dots.
    #[error("invalid table '{input}': expected TABLE or SCHEMA.TABLE")]
    Table {
        /// What the user typed.
        input: String,
    },
    /// A statement class that is not one of [`CLASSES`].
    #[error("unknown class '{input}': expected one of READ, WRITE, FUNCTION, ROLE, DDL, MISC, MISC_SET, UNKNOWN")]
    Class {
        /// What the user typed.
        input: String,
    },
    /// A client address that is neither an IP address nor a CIDR block.
    #[error("invalid address '{input}': expected an IP address (10.1.2.3, ::1) or a CIDR block (10.0.0.0/8)")]
    Address {
        /// What the user typed.
        input: String,
    },
}

/// `input` as an error message shows it: at most `max` characters, control
/// characters escaped, so a hostile argument cannot flood or garble a log
/// or a page.
pub fn shown(input: &str, max: usize) -> String {
    let mut text = String::new();
    for c in input.chars().take(max) {
        if c.is_control() {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    if input.chars().nth(max).is_some() {
        text.push('…');
    }
    text
}

/// The statement classes a filter takes (pgAudit's, and UNKNOWN for a
/// statement the parser rejected).
pub const CLASSES: [&str; 8] = [
    "READ", "WRITE", "FUNCTION", "ROLE", "DDL", "MISC", "MISC_SET", "UNKNOWN",
];

/// A class, upper-cased; a misspelt class is refused rather than silently
/// matching nothing.
pub fn parse_class(input: &str) -> Result<String, FilterError> {
    let upper = input.trim().to_ascii_uppercase();
    if CLASSES.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(FilterError::Class {
            input: shown(input, 64),
        })
    }
}

/// A table, optionally qualified by its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableName {
    /// The schema; `None` matches the table in any schema.
    pub schema: Option<String>,
    /// The table name, unquoted.
    pub table: String,
}

impl TableName {
    /// Parses `table`, `schema.table`, or double-quoted identifiers (`"My Schema"."t.1"`).
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let err = || FilterError::Table {
            input: input.to_string(),
        };
        let mut parts = Vec::new();
        let mut current = String::new();
        let mut quoted = false;
        let mut chars = input.trim().chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '"' if quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    current.push('"');
                }
                '"' => quoted = !quoted,
                '.' if !quoted => parts.push(std::mem::take(&mut current)),
                c => current.push(c),
            }
        }
        if quoted {
            return Err(err());
        }
        parts.push(current);
        if parts.iter().any(String::is_empty) {
            return Err(err());
        }
        match parts.as_slice() {
            [table] => Ok(TableName {
                schema: None,
                table: table.clone(),
            }),
            [schema, table] => Ok(TableName {
                schema: Some(schema.clone()),
                table: table.clone(),
            }),
            _ => Err(err()),
        }
    }
}

impl TableName {
    /// The name under which stores index a relation a statement touched:
    /// each part always double-quoted (`"patients"`, `"public"."patients"`),
    /// so a bare name and a qualified one can never be the same text,
    /// whatever characters the names hold.
    pub fn index_name(&self) -> String {
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        match &self.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(&self.table)),
            None => quote(&self.table),
        }
    }
}

/// The names under which stores index a statement's `objects` (each
/// `schema.table` as the proxy writes it): every object's qualified
/// [`TableName::index_name`] and its bare one, so `--table patients`
/// finds it in any schema and `--table public.patients` only in `public`.
/// Sorted and without repeats. An object that is not a table name (never
/// written by pgtrail) is indexed by its whole text as a bare name.
pub fn object_index_names(objects: &[String]) -> Vec<String> {
    let mut names = Vec::with_capacity(objects.len() * 2);
    for name in object_tables(objects) {
        if name.schema.is_some() {
            names.push(name.index_name());
        }
        names.push(
            TableName {
                schema: None,
                table: name.table,
            }
            .index_name(),
        );
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// A statement's `objects` as table names (sorted, without repeats): how
/// the SQLite store indexes them. An object that is not a table name
/// (never written by pgtrail) is its whole text as a bare name.
pub fn object_tables(objects: &[String]) -> Vec<TableName> {
    let mut tables: Vec<TableName> = objects
        .iter()
        .map(|object| {
            TableName::parse(object).unwrap_or_else(|_| TableName {
                schema: None,
                table: object.clone(),
            })
        })
        .collect();
    tables.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
    tables.dedup();
    tables
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// A primary-key value to look up: column names to their values as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PkFilter(pub JsonObject);

impl PkFilter {
    /// Parses `id=42`, `a=1,b=x` (composite key), or a JSON object such as
    /// `{"id":"42"}`. Values are compared as text, the way events store keys.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let err = |reason| FilterError::Pk {
            input: input.to_string(),
            reason,
        };
        let s = input.trim();
        let mut map = JsonObject::new();
        if s.starts_with('{') {
            let value: Value =
                serde_json::from_str(s).map_err(|_| err("not a valid JSON object"))?;
            let object = value.as_object().ok_or_else(|| err("not a JSON object"))?;
            for (k, v) in object {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(err("key values must be strings, numbers or booleans")),
                };
                map.insert(k.clone(), Value::String(text));
            }
        } else {
            for part in s.split(',') {
                let (column, value) = part
                    .split_once('=')
                    .ok_or_else(|| err("expected COLUMN=VALUE, e.g. id=42 or a=1,b=x"))?;
                let column = column.trim();
                if column.is_empty() {
                    return Err(err("a column name is empty"));
                }
                if map
                    .insert(column.to_string(), Value::String(value.to_string()))
                    .is_some()
                {
                    return Err(err("a column is named twice"));
                }
            }
        }
        if map.is_empty() {
            return Err(err("no key columns given"));
        }
        Ok(PkFilter(map))
    }

    /// The canonical text of the key (sorted keys, compact): how stores index it.
    pub fn canonical(&self) -> String {
        canonical_pk(&self.0)
    }
}

/// The canonical text of a key object, as stores index it (core's writer:
/// a key column may hold deep JSON).
pub fn canonical_pk(pk: &JsonObject) -> String {
    crate::json::object_to_string(pk)
}

/// One row of one table: what `history`, `as-of` and `blame` look at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowRef {
    /// The table.
    pub table: TableName,
    /// The row's key.
    pub pk: PkFilter,
}

/// A search over events. Every set field must match; unset fields match all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    /// Only events on this table: a row change or DDL of it, or a statement
    /// whose target it is or that touched it anywhere (its `objects`).
    pub table: Option<TableName>,
    /// Only events on the row with this key (usually with `table`).
    pub pk: Option<PkFilter>,
    /// Only events by this user: matches the application user or the database role.
    pub user: Option<String>,
    /// Leave out events of this database role. Only the role the server
    /// authenticated counts: an application's claimed user never hides an
    /// event (a claim of the excluded name is still returned).
    #[serde(default)]
    pub not_user: Option<String>,
    /// Only this operation (INSERT, UPDATE, SELECT, CREATE TABLE, …), case-insensitive.
    pub operation: Option<String>,
    /// Only statements of this class (READ, WRITE, FUNCTION, ROLE, DDL,
    /// MISC, MISC_SET, UNKNOWN), case-insensitive.
    #[serde(default)]
    pub class: Option<String>,
    /// Only this kind of event.
    pub kind: Option<Kind>,
    /// Only events from this capture path.
    pub source: Option<Source>,
    /// Only events captured at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events captured before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only failures: a statement or login with an error or a SQLSTATE
    /// outside class 00 ([`crate::Event::failed`]).
    pub failed: bool,
    /// Only events whose SQL text contains all these words.
    pub search: Option<String>,
    /// At most this many events (newest first).
    pub limit: Option<usize>,
    /// Only events of this database role (the role the server
    /// authenticated; unlike `user`, never the application's claimed user).
    #[serde(default)]
    pub db_user: Option<String>,
    /// Only events from this client address or CIDR block.
    #[serde(default)]
    pub client_addr: Option<AddrFilter>,
    /// Only events in this database.
    #[serde(default)]
    pub database: Option<String>,
    /// Only events with a `seq` lower than this: the cursor of the next
    /// page, newest first (the last `seq` of the previous page).
    #[serde(default)]
    pub before_seq: Option<i64>,
    /// Only events of this server backend (`backend_pid`, as the server
    /// reported it): what links a proxy statement to its row changes.
    #[serde(default)]
    pub backend_pid: Option<i32>,
    /// Only events of this transaction id (`xid`).
    #[serde(default)]
    pub xid: Option<i64>,
}

/// A client address to match: one address, or a CIDR block of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrFilter {
    /// The address, or the block's first address (host bits cleared).
    pub addr: std::net::IpAddr,
    /// The length of the block's prefix: 32 (IPv4) or 128 (IPv6) for one address.
    pub prefix: u8,
}

impl AddrFilter {
    /// Parses `10.1.2.3`, `::1`, `10.0.0.0/8` or `2001:db8::/32`. Host bits
    /// set in a block (`10.1.2.3/8`) are cleared, as Postgres's `cidr` refuses
    /// and `inet` keeps: the block is what was meant.
    pub fn parse(input: &str) -> Result<Self, FilterError> {
        let err = || FilterError::Address {
            input: shown(input, 64),
        };
        let s = input.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| err())?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => full,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= full)
                .ok_or_else(err)?,
            Some(_) => return Err(err()),
        };
        Ok(AddrFilter {
            addr: network(addr, prefix),
            prefix,
        })
    }

    /// True for a filter of one address (no block).
    pub fn is_single(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether an event's `client_addr` (as Postgres prints an `inet`:
    /// `10.1.2.3`, `::1`, perhaps with a `/32`) is in this block. Text
    /// that is not an address is in no block.
    pub fn contains(&self, client_addr: &str) -> bool {
        match host_addr(client_addr) {
            Some(addr) => {
                addr.is_ipv4() == self.addr.is_ipv4() && network(addr, self.prefix) == self.addr
            }
            None => false,
        }
    }
}

/// The address an event's `client_addr` names, as every `ip:` reads it:
/// the text before any `/` (`10.1.2.3/32` is `10.1.2.3`); `None` for text
/// that is not an address (a host name, a zone id), which is in no block.
pub fn host_addr(client_addr: &str) -> Option<std::net::IpAddr> {
    let host = client_addr.split('/').next().unwrap_or_default();
    host.parse().ok()
}

impl std::fmt::Display for AddrFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// `addr` with the bits after the first `prefix` cleared.
fn network(addr: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            std::net::IpAddr::V4((u32::from(v4) & mask).into())
        }
        std::net::IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            std::net::IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Splits a search string into words the way both stores index SQL text:
/// runs of letters, digits and `_`. Everything else separates words, so no
/// character in a search string is ever interpreted as query syntax.
pub fn search_words(search: &str) -> Vec<String> {
    search
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pk_forms() {
        assert_eq!(
            PkFilter::parse("id=42").expect("ok").canonical(),
            r#"{"id":"42"}"#
        );
        assert_eq!(
            PkFilter::parse("b=x,a=1").expect("ok").canonical(),
            r#"{"a":"1","b":"x"}"#
        );
        assert_eq!(
            PkFilter::parse(r#"{"id": 42}"#).expect("ok").canonical(),
            r#"{"id":"42"}"#
        );
        assert_eq!(
            PkFilter::parse("note=a=b").expect("ok").canonical(),
            r#"{"note":"a=b"}"#
        );
        for bad in ["42", "", "=4", "a=1,a=2", "{", "[1]", r#"{"a":[1]}"#] {
            assert!(PkFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn table_forms() {
        let t = TableName::parse("public.users").expect("ok");
        assert_eq!(
            (t.schema.as_deref(), t.table.as_str()),
            (Some("public"), "users")
        );
        let t = TableName::parse(r#""My Schema"."t.1""#).expect("ok");
        assert_eq!(
            (t.schema.as_deref(), t.table.as_str()),
            (Some("My Schema"), "t.1")
        );
        assert_eq!(TableName::parse("users").expect("ok").schema, None);
        for bad in ["", "a.b.c", ".x", "\"open"] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names_are_indexed_bare_and_qualified_without_ambiguity() {
        let objects = [
            "public.patients".to_string(),
            "billing.patients".to_string(),
            r#""My Schema"."t.1""#.to_string(),
        ];
        assert_eq!(
            object_index_names(&objects),
            [
                r#""My Schema"."t.1""#,
                r#""billing"."patients""#,
                r#""patients""#,
                r#""public"."patients""#,
                r#""t.1""#,
            ]
        );
        // A table whose name holds a dot and quotes is not a qualified name.
        let odd = TableName {
            schema: None,
            table: r#"public"."patients"#.into(),
        };
        assert_ne!(
            odd.index_name(),
            TableName::parse("public.patients")
                .expect("ok")
                .index_name()
        );
    }

    #[test]
    fn addresses_and_blocks() {
        let one = AddrFilter::parse("10.1.2.3").expect("ok");
        assert!(one.is_single());
        assert!(one.contains("10.1.2.3") && one.contains("10.1.2.3/32"));
        assert!(!one.contains("10.1.2.4"));
        let block = AddrFilter::parse("10.1.2.3/8").expect("ok");
        assert_eq!(block.to_string(), "10.0.0.0/8");
        assert!(block.contains("10.200.0.1") && !block.contains("11.0.0.1"));
        assert!(!block.contains("::ffff:10.0.0.1") && !block.contains("[local]"));
        let all = AddrFilter::parse("0.0.0.0/0").expect("ok");
        assert!(all.contains("192.168.1.1") && !all.contains("::1"));
        let v6 = AddrFilter::parse("2001:db8::/32").expect("ok");
        assert!(v6.contains("2001:db8:1::7") && !v6.contains("2001:db9::1"));
        assert!(AddrFilter::parse("::1").expect("ok").contains("::1"));
        for bad in [
            "",
            "10.1.2",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "x/8",
            "'; --",
        ] {
            assert!(AddrFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn search_words_drop_syntax() {
        assert_eq!(
            search_words(r#"UPDATE "accounts" OR* (x) NEAR/3"#),
            ["update", "accounts", "or", "x", "near", "3"]
        );
        assert!(search_words("\" ( ) * :").is_empty());
    }
}
