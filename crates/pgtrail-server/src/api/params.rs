//! The query parameters of the API, read strictly: an unknown or repeated
//! parameter, an over-long value or a bad one is a 400 naming it. The
//! event filters are the CLI's and the search box's: each value goes
//! through the same parser in `pgtrail_core` (`parse_search` for `q=`,
//! `TableName`, `PkFilter`, `parse_time`, `parse_class`, `AddrFilter`), and
//! a field set both in `q=` and by its own parameter is refused, not
//! silently overridden.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use pgtrail_core::filter::{parse_class, AddrFilter, PkFilter, TableName};
use pgtrail_core::search::{parse_search, MAX_SEARCH_LEN};
use pgtrail_core::time::parse_time;
use pgtrail_core::{Filter, Kind, Source};

use super::problem::Problem;

/// The longest value of any parameter but `q` (which has the search
/// language's own bound), in bytes.
pub const MAX_VALUE_LEN: usize = 1024;

/// Events per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// The most events one page holds; more is an export.
pub const MAX_LIMIT: usize = 1000;

/// The parameters that filter events, as `pgtrail log` and the search box
/// take them.
pub const FILTER_PARAMS: [&str; 16] = [
    "q", "user", "not_user", "db_user", "table", "pk", "op", "kind", "source", "class", "ip", "db",
    "failed", "since", "until", "before",
];

/// A request's query parameters, each name once.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) =
            Query::<Vec<(String, String)>>::try_from_uri(&parts.uri).map_err(|e| {
                Problem::bad_parameter("query", format!("cannot read the query string: {e}"))
            })?;
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let max = if name == "q" {
                MAX_SEARCH_LEN
            } else {
                MAX_VALUE_LEN
            };
            if value.len() > max {
                return Err(Problem::bad_parameter(
                    &name,
                    format!("the value is {} bytes long; at most {max}", value.len()),
                ));
            }
            if map.contains_key(&name) {
                return Err(Problem::bad_parameter(
                    &name,
                    "given twice; a filter takes one value of each",
                ));
            }
            map.insert(name, value);
        }
        Ok(Params(map))
    }
}

impl Params {
    /// Refuses any parameter not in `allowed` (a typo never silently
    /// widens a search).
    pub fn only(&self, allowed: &[&str]) -> Result<(), Problem> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(Problem::bad_parameter(
                unknown,
                format!(
                    "unknown parameter; this endpoint takes {}",
                    allowed.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name` parsed by `parse`, its error becoming a 400.
    pub fn parsed<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Problem> {
        self.get(name)
            .map(|v| parse(v).map_err(|e| Problem::bad_parameter(name, e.to_string())))
            .transpose()
    }

    /// `limit`: between 1 and `max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, Problem> {
        let limit = self
            .parsed("limit", |v| {
                v.parse::<usize>()
                    .map_err(|_| "expected a whole number of events".to_string())
            })?
            .unwrap_or(default);
        if limit == 0 || limit > max {
            return Err(Problem::bad_parameter(
                "limit",
                format!("{limit} is out of range: between 1 and {max}"),
            ));
        }
        Ok(limit)
    }

    /// The events filter the parameters describe, relative times counted
    /// back from `now`. `limit` is left to the caller.
    pub fn filter(&self, now: DateTime<Utc>) -> Result<Filter, Problem> {
        let mut filter = match self.get("q") {
            Some(q) => {
                parse_search(q, now).map_err(|e| Problem::bad_parameter("q", e.to_string()))?
            }
            None => Filter::default(),
        };
        let time = |v: &str| parse_time(v, now);
        set(&mut filter.user, "user", self.parsed("user", text)?)?;
        set(
            &mut filter.not_user,
            "not_user",
            self.parsed("not_user", text)?,
        )?;
        set(
            &mut filter.db_user,
            "db_user",
            self.parsed("db_user", text)?,
        )?;
        set(
            &mut filter.table,
            "table",
            self.parsed("table", TableName::parse)?,
        )?;
        set(&mut filter.pk, "pk", self.parsed("pk", PkFilter::parse)?)?;
        set(
            &mut filter.operation,
            "op",
            self.parsed("op", |v| text(v).map(|op| op.trim().to_uppercase()))?,
        )?;
        set(
            &mut filter.kind,
            "kind",
            self.parsed("kind", |v| v.trim().parse::<Kind>())?,
        )?;
        set(
            &mut filter.source,
            "source",
            self.parsed("source", |v| v.trim().parse::<Source>())?,
        )?;
        set(
            &mut filter.class,
            "class",
            self.parsed("class", parse_class)?,
        )?;
        set(
            &mut filter.client_addr,
            "ip",
            self.parsed("ip", AddrFilter::parse)?,
        )?;
        set(&mut filter.database, "db", self.parsed("db", text)?)?;
        set(&mut filter.since, "since", self.parsed("since", time)?)?;
        set(&mut filter.until, "until", self.parsed("until", time)?)?;
        if let Some(failed) = self.parsed("failed", boolean)? {
            if filter.failed && !failed {
                return Err(Problem::bad_parameter(
                    "failed",
                    "false here, but q= asks for failures",
                ));
            }
            filter.failed = failed;
        }
        filter.before_seq = self.parsed("before", cursor)?;
        Ok(filter)
    }
}

/// Sets a filter field from its own parameter, refusing a second value for
/// a field `q=` already set.
fn set<T: PartialEq>(field: &mut Option<T>, name: &str, value: Option<T>) -> Result<(), Problem> {
    let Some(value) = value else { return Ok(()) };
    if field.as_ref().is_some_and(|set| *set != value) {
        return Err(Problem::bad_parameter(
            name,
            format!("given both here and in q= with another value; a search takes one {name}"),
        ));
    }
    *field = Some(value);
    Ok(())
}

/// A free-text value: not empty.
fn text(value: &str) -> Result<String, &'static str> {
    if value.trim().is_empty() {
        return Err("needs a value");
    }
    Ok(value.to_string())
}

/// `true`/`false` (and `1`/`0`, `yes`/`no`).
pub fn boolean(value: &str) -> Result<bool, &'static str> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false"),
    }
}

/// A cursor: the `seq` the next page starts below (a positive number).
pub fn cursor(value: &str) -> Result<i64, &'static str> {
    match value.trim().parse::<i64>() {
        Ok(seq) if seq > 0 => Ok(seq),
        _ => Err("expected the positive seq of the last event of the previous page (its `next`)"),
    }
}
