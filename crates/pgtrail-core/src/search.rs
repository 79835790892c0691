//! The search language of the dashboard's search box and the API's `q=`:
//! `key:value` terms that set [`Filter`] fields, and free words over
//! statement text.
//!
//! ```text
//! user:alice table:public.orders op:update since:yesterday failed
//! db_user:app ip:10.0.0.0/8 -user:reporting "drop table"
//! user:"alice smith" since:"2026-12-06 02:19:01+00" pk:id=42
//! ```
//!
//! A term is split off at whitespace outside double quotes; a quoted value
//! keeps its spaces (`\"` and `\\` inside quotes are a quote and a
//! backslash). Keys are case-insensitive. `-user:x` (or `not_user:x`)
//! leaves out a database role. `failed` alone keeps only failures. Every
//! other word is free text: all its words must be in the statement's SQL
//! (`Filter::search`, split by [`crate::filter::search_words`], so no
//! character is ever query syntax in a store). A word that looks like a key
//! but is not one (`usr:alice`) is refused, so a typo never silently
//! becomes a text search; quote it (`"usr:alice"`) to search for it.
//!
//! Values are only ever values: this module builds a [`Filter`], and the
//! stores bind each field as a parameter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::filter::{parse_class, shown, AddrFilter, FilterError, PkFilter, TableName};
use crate::time::parse_time;
use crate::{Filter, Kind, Source};

/// The longest search string taken, in bytes: far more than anyone types,
/// small enough that a hostile one costs nothing.
pub const MAX_SEARCH_LEN: usize = 4096;

/// The keys of the search language, for help texts and errors.
pub const KEYS: [&str; 16] = [
    "user", "db_user", "not_user", "table", "pk", "op", "kind", "source", "class", "ip", "db",
    "since", "until", "failed", "outcome", "tx",
];

/// Why a search string was refused: which term, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// The whole string is longer than [`MAX_SEARCH_LEN`].
    #[error("the search is too long ({len} bytes; at most {MAX_SEARCH_LEN})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A control character (other than tab and newline, which separate terms).
    #[error("the search holds a control character ({character}) at byte {at}")]
    Control {
        /// The character, escaped.
        character: String,
        /// Its byte offset.
        at: usize,
    },
    /// A double quote that is never closed.
    #[error("unbalanced quote in '{term}': close it with \"")]
    UnbalancedQuote {
        /// The term from its start, as far as shown.
        term: String,
    },
    /// A term with a bad key or value.
    #[error("{term}: {reason}")]
    Term {
        /// The term, as far as shown.
        term: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses a search string into a filter; relative times count back from
/// `now`. `limit` and `before_seq` are left unset: they are the caller's.
pub fn parse_search(input: &str, now: DateTime<Utc>) -> Result<Filter, SearchError> {
    if input.len() > MAX_SEARCH_LEN {
        return Err(SearchError::TooLong { len: input.len() });
    }
    if let Some((at, c)) = input
        .char_indices()
        .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(SearchError::Control {
            character: c.escape_default().collect(),
            at,
        });
    }
    let mut filter = Filter::default();
    let mut words: Vec<String> = Vec::new();
    for raw in terms(input)? {
        match split_key(&raw) {
            Some((negated, key, value)) => apply(&mut filter, &raw, negated, &key, value, now)?,
            None if raw.eq_ignore_ascii_case("failed") => {
                set(&raw, &mut filter.failed, true)?;
            }
            None => words.push(unquote(&raw)),
        }
    }
    let text = words.join(" ");
    if !text.trim().is_empty() {
        filter.search = Some(text);
    }
    Ok(filter)
}

/// The terms of `input`: runs of characters up to whitespace outside
/// double quotes, quotes kept (a key decides what they mean).
fn terms(input: &str) -> Result<Vec<String>, SearchError> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            '\\' if quoted => {
                current.push(c);
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    terms.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if quoted {
        return Err(SearchError::UnbalancedQuote {
            term: shown(&current, 64),
        });
    }
    if !current.is_empty() {
        terms.push(current);
    }
    Ok(terms)
}

/// `(negated, key, value)` of a `key:value` or `-key:value` term whose key
/// is a plain word (letters and `_`) before any quote; `None` for free text.
fn split_key(term: &str) -> Option<(bool, String, &str)> {
    let (negated, rest) = match term.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, term),
    };
    let (key, value) = rest.split_once(':')?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic() || c == '_') {
        return None;
    }
    Some((negated, key.to_ascii_lowercase(), value))
}

/// `value` without its quotes: a quoted stretch's `\"` and `\\` are a quote
/// and a backslash; quotes themselves are dropped.
fn unquote(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    text.push(next);
                }
            }
            c => text.push(c),
        }
    }
    text
}

/// Sets one field from a `key:value` term.
fn apply(
    filter: &mut Filter,
    term: &str,
    negated: bool,
    key: &str,
    raw: &str,
    now: DateTime<Utc>,
) -> Result<(), SearchError> {
    let fail = |reason: String| SearchError::Term {
        term: shown(term, 64),
        reason,
    };
    if !KEYS.contains(&key) {
        return Err(fail(format!(
            "unknown key '{}'; the keys are {} (quote the term to search for it as text)",
            shown(key, 32),
            KEYS.join(", ")
        )));
    }
    let value = unquote(raw);
    if value.trim().is_empty() {
        return Err(fail(format!("{key}: needs a value")));
    }
    let bad = |e: FilterError| fail(e.to_string());
    if negated && !matches!(key, "user" | "db_user") {
        return Err(fail(
            "only -user: (or -db_user:) can be negated: it leaves out a database role".into(),
        ));
    }
    match key {
        "user" if negated => set(term, &mut filter.not_user, Some(value)),
        "db_user" if negated => set(term, &mut filter.not_user, Some(value)),
        "not_user" => set(term, &mut filter.not_user, Some(value)),
        "user" => set(term, &mut filter.user, Some(value)),
        "db_user" => set(term, &mut filter.db_user, Some(value)),
        // Quotes in a table name are identifier quotes (`"My Schema"."t.1"`),
        // as for --table: the raw value goes to the table parser.
        "table" => set(
            term,
            &mut filter.table,
            Some(TableName::parse(raw).map_err(bad)?),
        ),
        "pk" => {
            // A JSON key keeps its quotes; `pk:"id=a b"` loses them.
            let text = if raw.trim_start().starts_with('{') {
                raw.to_string()
            } else {
                value
            };
            set(
                term,
                &mut filter.pk,
                Some(PkFilter::parse(&text).map_err(bad)?),
            )
        }
        "op" => set(
            term,
            &mut filter.operation,
            Some(value.trim().to_uppercase()),
        ),
        "kind" => {
            let kind = value.trim().parse::<Kind>().map_err(fail)?;
            set(term, &mut filter.kind, Some(kind))
        }
        "source" => {
            let source = value.trim().parse::<Source>().map_err(fail)?;
            set(term, &mut filter.source, Some(source))
        }
        "class" => set(
            term,
            &mut filter.class,
            Some(parse_class(&value).map_err(bad)?),
        ),
        "ip" => set(
            term,
            &mut filter.client_addr,
            Some(AddrFilter::parse(&value).map_err(bad)?),
        ),
        "db" => set(term, &mut filter.database, Some(value)),
        "since" | "until" => {
            let at = parse_time(&value, now).map_err(|e| fail(e.to_string()))?;
            let field = if key == "since" {
                &mut filter.since
            } else {
                &mut filter.until
            };
            set(term, field, Some(at))
        }
        "failed" => match value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" => set(term, &mut filter.failed, true),
            _ => Err(fail("write failed alone (or failed:true)".into())),
        },
        "outcome" => match value.trim().to_ascii_lowercase().as_str() {
            "failed" => set(term, &mut filter.failed, true),
            _ => Err(fail(
                "only outcome:failed can be searched for (or failed)".into(),
            )),
        },
        // A transaction by the id the server gave it (the events' `xid`).
        // The proxy's own `PID@TIME` form needs the link's window
        // (`pgtrail log --tx`): a search box term matches stored fields.
        "tx" => match value.trim().parse::<i64>() {
            Ok(xid) if xid > 0 => set(term, &mut filter.xid, Some(xid)),
            _ => Err(fail(
                "tx: takes a transaction id (the xid of a row change or DDL); \
                 for the proxy's PID@TIME use pgtrail log --tx"
                    .into(),
            )),
        },
        _ => Err(fail(format!("{key}: is not supported yet"))),
    }
}

/// Sets a field once: a second value for it is refused, since a filter
/// holds one (`user:a user:b` matches nothing, and saying so is kinder).
fn set<T: PartialEq + Default>(term: &str, field: &mut T, value: T) -> Result<(), SearchError> {
    if *field != T::default() {
        return Err(SearchError::Term {
            term: shown(term, 64),
            reason: "this filter is given twice; a search takes one of each".into(),
        });
    }
    *field = value;
    Ok(())
}

/// How many of the events a filter matches, per value of the fields a
/// search narrows by: who (the actor: application user, else database
/// role), which table, which operation, which capture path, and whether it
/// failed. Each list is the top values by count (ties by value), at most
/// the `top` asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facets {
    /// Events counted.
    pub counted: u64,
    /// False when the count stopped at the store's bound ([`FACET_BOUND`]):
    /// the counts are then of the newest `counted` matching events only.
    pub complete: bool,
    /// Per actor ([`crate::Event::actor`]).
    pub users: Vec<FacetCount>,
    /// Per table, `schema.table` (or `table` without a schema).
    pub tables: Vec<FacetCount>,
    /// Per operation (INSERT, SELECT, CREATE TABLE, …).
    pub operations: Vec<FacetCount>,
    /// Per capture path.
    pub sources: Vec<FacetCount>,
    /// `ok` and `failed` ([`crate::Event::failed`]).
    pub outcomes: Vec<FacetCount>,
}

/// One value of a facet and how many events have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FacetCount {
    /// The value, as a search term takes it (`user:`, `table:`, `op:`, …).
    pub value: String,
    /// Events with it.
    pub count: u64,
}

/// The most matching events a store reads to count facets when no summary
/// answers the question: a facet request costs at most this, whatever the
/// filter (the answer says when it stopped there).
pub const FACET_BOUND: usize = 200_000;

/// The facets the facet names ([`Facets`]'s lists) are stored under.
pub const FACET_NAMES: [&str; 5] = ["user", "table", "operation", "source", "outcome"];

impl Facets {
    /// Facets from `(facet, value, count)` triples (facet one of
    /// [`FACET_NAMES`]; others are ignored), each list cut to the `top`.
    pub fn from_counts(
        counts: impl IntoIterator<Item = (String, String, u64)>,
        counted: u64,
        complete: bool,
        top: usize,
    ) -> Facets {
        let mut facets = Facets {
            counted,
            complete,
            ..Facets::default()
        };
        for (facet, value, count) in counts {
            let list = match facet.as_str() {
                "user" => &mut facets.users,
                "table" => &mut facets.tables,
                "operation" => &mut facets.operations,
                "source" => &mut facets.sources,
                "outcome" => &mut facets.outcomes,
                _ => continue,
            };
            if count > 0 {
                list.push(FacetCount { value, count });
            }
        }
        for list in [
            &mut facets.users,
            &mut facets.tables,
            &mut facets.operations,
            &mut facets.sources,
            &mut facets.outcomes,
        ] {
            list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
            list.truncate(top);
        }
        facets
    }

    /// The facet values of one event, `(facet, value)`: what stores count.
    pub fn of_event(event: &crate::Event) -> Vec<(&'static str, String)> {
        let mut values = Vec::with_capacity(5);
        if let Some(actor) = event.actor() {
            values.push(("user", actor.to_string()));
        }
        if let Some(table) = event.qualified_table() {
            values.push(("table", table));
        }
        if let Some(op) = &event.operation {
            // ASCII only, as both stores' SQL uppercases it (the summaries
            // are recounted in SQL): Unicode's would make "ß" "SS".
            values.push(("operation", op.to_ascii_uppercase()));
        }
        values.push(("source", event.source.as_str().to_string()));
        values.push((
            "outcome",
            if event.failed() { "failed" } else { "ok" }.into(),
        ));
        values
    }
}

#[cfg(test)]
mod tests;
