//! Statement classes in pgAudit's vocabulary, as a table over the parser's
//! statement node types.
//!
//! pgAudit classifies by the server's `log_statement` level of a statement
//! (`GetCommandLogLevel`: `mod`, `ddl` or `all`) and then by node type:
//! `mod` is WRITE; `ddl` is DDL except the role statements, which are ROLE;
//! of the rest SELECT, COPY TO, DECLARE CURSOR and PREPARE are READ, DO is
//! FUNCTION, SET/RESET is MISC_SET and everything else MISC. The level of
//! SELECT INTO and CREATE TABLE AS is `ddl`, of COPY FROM `mod`, of EXPLAIN
//! ANALYZE and PREPARE the level of the statement inside. Where pgtrail
//! departs from pgAudit it says so: EXECUTE is classified by what the
//! prepared statement runs (pgAudit: MISC), CALL is FUNCTION (pgAudit logs
//! it as MISC and the procedure's execution as FUNCTION), and a SELECT
//! whose WITH holds an INSERT/UPDATE/DELETE/MERGE is WRITE (pgAudit's
//! statement line says READ; its per-relation lines say WRITE).

use serde::{Deserialize, Serialize};

/// A statement class (pgAudit's `pgaudit.log` classes, plus UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Class {
    /// SELECT, COPY … TO, DECLARE CURSOR.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY … FROM.
    Write,
    /// DO, CALL, and (as an extra class) calls of functions that are not
    /// built in.
    Function,
    /// GRANT, REVOKE, CREATE/ALTER/DROP ROLE, user mappings, default privileges.
    Role,
    /// CREATE, ALTER, DROP and the other schema changes.
    Ddl,
    /// Everything else: VACUUM, CHECKPOINT, DISCARD, LISTEN, transaction control, …
    Misc,
    /// SET and RESET.
    MiscSet,
    /// Text the parser rejected (recorded all the same).
    Unknown,
}

impl Class {
    /// Every class, in pgAudit's order.
    pub const ALL: [Class; 8] = [
        Class::Read,
        Class::Write,
        Class::Function,
        Class::Role,
        Class::Ddl,
        Class::Misc,
        Class::MiscSet,
        Class::Unknown,
    ];

    /// The name as pgAudit writes it (`READ`, `MISC_SET`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "READ",
            Class::Write => "WRITE",
            Class::Function => "FUNCTION",
            Class::Role => "ROLE",
            Class::Ddl => "DDL",
            Class::Misc => "MISC",
            Class::MiscSet => "MISC_SET",
            Class::Unknown => "UNKNOWN",
        }
    }

    /// The class named `name` (any case, as `pgaudit.log` and pgtrail's
    /// `[proxy] log` write it).
    pub fn parse(name: &str) -> Option<Class> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of classes: a statement's main class and the others it also
/// belongs to (a SELECT calling a user function is READ and FUNCTION).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClassSet(u8);

impl ClassSet {
    /// The set holding `class` alone.
    pub fn of(class: Class) -> ClassSet {
        ClassSet(class.bit())
    }
    /// Adds `class`.
    pub fn insert(&mut self, class: Class) {
        self.0 |= class.bit();
    }
    /// Whether `class` is in the set.
    pub fn contains(self, class: Class) -> bool {
        self.0 & class.bit() != 0
    }
    /// Whether the two sets share a class.
    pub fn intersects(self, other: ClassSet) -> bool {
        self.0 & other.0 != 0
    }
    /// The classes in the set, in pgAudit's order.
    pub fn iter(self) -> impl Iterator<Item = Class> {
        Class::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Class> for ClassSet {
    fn from_iter<I: IntoIterator<Item = Class>>(iter: I) -> Self {
        let mut set = ClassSet::default();
        for class in iter {
            set.insert(class);
        }
        set
    }
}

impl Serialize for ClassSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// The server's `log_statement` level of a node type (`GetCommandLogLevel`),
/// before the refinements that need the statement's details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Changes data.
    Mod,
    /// Changes the schema.
    Ddl,
    /// Anything else.
    All,
}

/// The level of the statement node type `node` (pg_query's names, e.g.
/// `InsertStmt`). The statements that carry another one (PREPARE, EXPLAIN)
/// and those whose level depends on a detail (COPY, SELECT INTO) are
/// refined by the caller.
pub(crate) fn level(node: &str) -> Level {
    match node {
        "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" | "TruncateStmt" => Level::Mod,
        "ViewStmt"
        | "IndexStmt"
        | "RuleStmt"
        | "CompositeTypeStmt"
        | "CommentStmt"
        | "SecLabelStmt"
        | "ClusterStmt"
        | "RefreshMatViewStmt"
        | "ReassignOwnedStmt"
        | "DropOwnedStmt"
        | "ImportForeignSchemaStmt"
        | "CreatedbStmt"
        | "DropdbStmt"
        | "GrantStmt"
        | "GrantRoleStmt"
        | "DefineStmt"
        | "RenameStmt"
        | "CreateTableAsStmt" => Level::Ddl,
        _ if node.starts_with("Create")
            || node.starts_with("Alter")
            || node.starts_with("Drop") =>
        {
            Level::Ddl
        }
        _ => Level::All,
    }
}

/// Whether pgAudit puts a `ddl`-level node type in ROLE.
pub(crate) fn is_role_statement(node: &str) -> bool {
    matches!(
        node,
        "CreateRoleStmt"
            | "AlterRoleStmt"
            | "AlterRoleSetStmt"
            | "DropRoleStmt"
            | "GrantStmt"
            | "GrantRoleStmt"
            | "CreateUserMappingStmt"
            | "AlterUserMappingStmt"
            | "AlterDefaultPrivilegesStmt"
    )
}

/// The class of an `all`-level node type.
pub(crate) fn other_class(node: &str) -> Class {
    match node {
        "SelectStmt" | "CopyStmt" | "DeclareCursorStmt" => Class::Read,
        "DoStmt" | "CallStmt" => Class::Function,
        "VariableSetStmt" => Class::MiscSet,
        _ => Class::Misc,
    }
}

/// Functions of `pg_catalog` commonly called unqualified: a call of one of
/// these does not make a statement FUNCTION (pg_catalog is searched first,
/// so an unqualified name resolves there unless a `search_path` names
/// pg_catalog later). Without the catalog pgtrail cannot know the rest.
pub(crate) fn is_builtin_function(schema: Option<&str>, name: &str) -> bool {
    if schema == Some("pg_catalog") {
        return true;
    }
    schema.is_none()
        && matches!(
            name,
            "count"
                | "sum"
                | "avg"
                | "min"
                | "max"
                | "array_agg"
                | "string_agg"
                | "json_agg"
                | "jsonb_agg"
                | "json_object_agg"
                | "jsonb_object_agg"
                | "bool_and"
                | "bool_or"
                | "every"
                | "now"
                | "clock_timestamp"
                | "statement_timestamp"
                | "transaction_timestamp"
                | "timezone"
                | "date_trunc"
                | "date_part"
                | "extract"
                | "age"
                | "to_char"
                | "to_date"
                | "to_timestamp"
                | "to_number"
                | "make_date"
                | "make_interval"
                | "lower"
                | "upper"
                | "length"
                | "char_length"
                | "octet_length"
                | "substr"
                | "substring"
                | "position"
                | "strpos"
                | "replace"
                | "trim"
                | "btrim"
                | "ltrim"
                | "rtrim"
                | "concat"
                | "concat_ws"
                | "format"
                | "left"
                | "right"
                | "split_part"
                | "lpad"
                | "rpad"
                | "regexp_replace"
                | "regexp_match"
                | "regexp_matches"
                | "abs"
                | "round"
                | "ceil"
                | "ceiling"
                | "floor"
                | "trunc"
                | "random"
                | "greatest"
                | "least"
                | "coalesce"
                | "nullif"
                | "array_length"
                | "cardinality"
                | "unnest"
                | "generate_series"
                | "row_number"
                | "rank"
                | "dense_rank"
                | "lag"
                | "lead"
                | "first_value"
                | "last_value"
                | "jsonb_build_object"
                | "json_build_object"
                | "jsonb_build_array"
                | "json_build_array"
                | "to_json"
                | "to_jsonb"
                | "jsonb_set"
                | "row_to_json"
                | "md5"
                | "encode"
                | "decode"
                | "gen_random_uuid"
                | "current_setting"
                | "pg_backend_pid"
                | "version"
                | "current_database"
                | "current_schema"
                | "has_table_privilege"
                | "pg_typeof"
                | "quote_ident"
                | "quote_literal"
                | "nextval"
                | "currval"
                | "setval"
                | "lastval"
                | "set_config"
        )
}
