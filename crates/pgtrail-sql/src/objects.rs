//! The relations a statement reads, writes or changes, and their schemas.
//!
//! The names come from pg_query's summary (libpg_query walks the whole raw
//! parse tree with Postgres's own `raw_expression_tree_walker`, so a
//! relation in a sub-select of a LIMIT, a VALUES list or a RETURNING clause
//! is found). Two corrections are made here:
//!
//! - The summary drops an unqualified name that matches any CTE name of the
//!   statement, without scoping: `SELECT * FROM patients, (WITH patients AS
//!   (SELECT 1) SELECT * FROM patients) s` would hide a read of the table.
//!   pgtrail reports every CTE name as a possible relation too
//!   ([`ObjectRef::maybe_cte`]): an audit trail may over-report a read,
//!   never hide one.
//! - DECLARE CURSOR's query is not walked by the summary: pgtrail
//!   summarizes the query after `FOR` itself.
//!
//! An unqualified name is resolved against the session's `search_path` by
//! [`ObjectRef::resolve`]. Without the catalog pgtrail cannot know which
//! schema of the path holds the relation; see [`SearchPath`] for the rule.

use serde::Serialize;

/// How a statement uses a relation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Rows are read (SELECT, a join, a sub-select, COPY … TO, the source
    /// of INSERT … SELECT).
    Read,
    /// Rows are written (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY … FROM).
    Write,
    /// The relation itself is created, altered, dropped, locked, vacuumed or
    /// granted on.
    Ddl,
}

/// A relation as the statement names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectRef {
    /// The schema written in the statement, if any.
    pub schema: Option<String>,
    /// The relation's name (folded to lower case unless quoted, as Postgres does).
    pub name: String,
    /// How the statement uses it.
    pub access: Access,
    /// The name is also a CTE name of the statement: it may be the CTE
    /// rather than a relation (see the module documentation).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub maybe_cte: bool,
}

/// How an object's schema was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Written in the statement.
    Qualified,
    /// The caller's resolver (which knows the catalog) said so.
    Catalog,
    /// Assumed from the `search_path` without the catalog (see [`SearchPath`]).
    Assumed,
    /// Nothing to assume from: an empty `search_path`.
    Unresolved,
}

/// A relation with its schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object {
    /// The schema (`None` only when [`Resolution::Unresolved`]).
    pub schema: Option<String>,
    /// The relation's name.
    pub name: String,
    /// How the statement uses it.
    pub access: Access,
    /// How the schema was found.
    pub resolution: Resolution,
    /// See [`ObjectRef::maybe_cte`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub maybe_cte: bool,
}

impl Object {
    /// `schema.name`, each part quoted where Postgres would need it.
    pub fn qualified(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

/// Finds the schema holding a relation, for callers that know the catalog
/// (e.g. a cache of `pg_class` kept by the proxy).
pub trait Resolver {
    /// The schema of the first relation called `name` in `path`'s order, if known.
    fn schema_of(&self, name: &str, path: &SearchPath) -> Option<String>;
}

/// A session's `search_path`, as `SET search_path` or a ParameterStatus
/// message gives it.
///
/// Without the catalog, an unqualified name is assumed to be in the first
/// schema of the path that is not `pg_catalog`, `pg_temp` or `$user`
/// (`public` for the default path `"$user", public`), with two exceptions:
/// a name starting with `pg_` is assumed to be `pg_catalog`'s (which
/// Postgres searches first unless the path names it later). What this
/// cannot know: a relation that exists only in a later schema of the path,
/// in the `$user` schema, or a temporary table (searched before everything
/// else). Callers with the catalog pass a [`Resolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    schemas: Vec<String>,
}

impl Default for SearchPath {
    /// Postgres's default, `"$user", public`.
    fn default() -> Self {
        SearchPath {
            schemas: vec!["$user".into(), "public".into()],
        }
    }
}

impl SearchPath {
    /// Parses a `search_path` value: a comma-separated list of names,
    /// double-quoted where needed (`"$user", public, "My Schema"`).
    /// Unquoted names are folded to lower case.
    pub fn parse(value: &str) -> SearchPath {
        let mut schemas = Vec::new();
        let mut chars = value.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let mut name = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    if c == '"' {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            name.push('"');
                        } else {
                            break;
                        }
                    } else {
                        name.push(c);
                    }
                }
                while chars.peek().is_some_and(|&c| c != ',') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    name.push(c.to_ascii_lowercase());
                    chars.next();
                }
                name = name.trim().to_string();
            }
            if !name.is_empty() {
                schemas.push(name);
            }
            if chars.next().is_none() {
                return SearchPath { schemas };
            }
        }
    }

    /// The schemas in order, as written.
    pub fn schemas(&self) -> &[String] {
        &self.schemas
    }

    /// The schema assumed for an unqualified `name` (see the type's documentation).
    pub fn assumed_schema(&self, name: &str) -> Option<&str> {
        if name.starts_with("pg_") {
            return Some("pg_catalog");
        }
        self.schemas.iter().map(String::as_str).find(|s| {
            !matches!(*s, "$user" | "pg_catalog" | "pg_temp") && !s.starts_with("pg_temp_")
        })
    }
}

impl ObjectRef {
    /// The object with its schema: as written, else from `resolver`, else
    /// assumed from `path`.
    pub fn resolve(&self, path: &SearchPath, resolver: Option<&dyn Resolver>) -> Object {
        let (schema, resolution) = match &self.schema {
            Some(schema) => (Some(schema.clone()), Resolution::Qualified),
            None => match resolver.and_then(|r| r.schema_of(&self.name, path)) {
                Some(schema) => (Some(schema), Resolution::Catalog),
                None => match path.assumed_schema(&self.name) {
                    Some(schema) => (Some(schema.to_string()), Resolution::Assumed),
                    None => (None, Resolution::Unresolved),
                },
            },
        };
        Object {
            schema,
            name: self.name.clone(),
            access: self.access,
            resolution,
            maybe_cte: self.maybe_cte,
        }
    }
}

/// `name` double-quoted unless it is a plain lower-case identifier.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_paths_parse_as_postgres_writes_them() {
        assert_eq!(
            SearchPath::parse("\"$user\", public").schemas(),
            ["$user", "public"]
        );
        assert_eq!(
            SearchPath::parse(" App ,\"My \"\"Schema\"\"\", pg_catalog").schemas(),
            ["app", "My \"Schema\"", "pg_catalog"]
        );
        assert_eq!(SearchPath::parse("").schemas(), [] as [String; 0]);
    }

    #[test]
    fn unqualified_names_take_the_first_real_schema() {
        let path = SearchPath::default();
        assert_eq!(path.assumed_schema("patients"), Some("public"));
        assert_eq!(path.assumed_schema("pg_class"), Some("pg_catalog"));
        let path = SearchPath::parse("pg_catalog, pg_temp, clinic, public");
        assert_eq!(path.assumed_schema("patients"), Some("clinic"));
        assert_eq!(SearchPath::parse("\"$user\"").assumed_schema("x"), None);
    }

    struct Catalog;
    impl Resolver for Catalog {
        fn schema_of(&self, name: &str, _: &SearchPath) -> Option<String> {
            (name == "audit_me").then(|| "secret_schema".to_string())
        }
    }

    #[test]
    fn a_resolver_overrides_the_assumption() {
        let r = ObjectRef {
            schema: None,
            name: "audit_me".into(),
            access: Access::Read,
            maybe_cte: false,
        };
        let o = r.resolve(&SearchPath::default(), Some(&Catalog));
        assert_eq!(
            (o.schema.as_deref(), o.resolution),
            (Some("secret_schema"), Resolution::Catalog)
        );
        let o = r.resolve(&SearchPath::default(), None);
        assert_eq!(
            (o.schema.as_deref(), o.resolution),
            (Some("public"), Resolution::Assumed)
        );
        assert_eq!(o.qualified(), "public.audit_me");
        let q = ObjectRef {
            schema: Some("Odd".into()),
            name: "t".into(),
            access: Access::Write,
            maybe_cte: false,
        };
        assert_eq!(
            q.resolve(&SearchPath::parse(""), None).qualified(),
            "\"Odd\".t"
        );
    }
}
