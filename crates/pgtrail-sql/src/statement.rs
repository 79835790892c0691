//! What a statement event says about a statement text: one [`Statement`]
//! per statement of the text, each with its class, command, transaction
//! control, objects, setting changes and claims.
//!
//! One parse per text: pg_query's summary (the parser plus libpg_query's C
//! walk of the raw tree; the protobuf parse tree costs 4–6× more to get
//! into Rust) names each statement's node type and the relations and
//! functions it touches, and the scanner's tokens (already needed for
//! redaction) give the details a summary lacks: COPY's direction, EXPLAIN
//! ANALYZE, SET LOCAL, the transaction command, the names of PREPARE and
//! EXECUTE. A text with several statements is split by the parser first.

use std::ops::Range;

use pg_query::protobuf::summary_result::Context;
use serde::Serialize;

use crate::binds;
use crate::claims::{self, Claim, ClaimScope, ClaimValue, Names, SettingChange};
use crate::class::{self, Class, ClassSet, Level};
use crate::objects::{Access, ObjectRef, SearchPath};
use crate::strings;
use crate::token::{self, Tok};

/// A transaction-control statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Transaction {
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`/`END`; `chain`: `AND CHAIN` (a new transaction starts at once).
    Commit {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `ROLLBACK`/`ABORT`.
    Rollback {
        /// `AND CHAIN`.
        chain: bool,
    },
    /// `SAVEPOINT name`.
    Savepoint(String),
    /// `RELEASE [SAVEPOINT] name`.
    Release(String),
    /// `ROLLBACK TO [SAVEPOINT] name`.
    RollbackTo(String),
    /// `PREPARE TRANSACTION 'gid'` (ends the transaction in this session).
    PrepareTransaction,
    /// `COMMIT PREPARED 'gid'`.
    CommitPrepared,
    /// `ROLLBACK PREPARED 'gid'`.
    RollbackPrepared,
}

/// What DEALLOCATE (or DISCARD ALL) drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deallocate {
    /// One prepared statement.
    Name(String),
    /// All of the session's prepared statements.
    All,
}

/// One statement of a text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Statement {
    /// Byte range of the statement in the text it came from.
    pub span: Range<usize>,
    /// The statement's text, redacted (secrets always; constants when the
    /// analyzer was asked to).
    pub sql: String,
    /// The main class. For `EXECUTE` it is [`Class::Unknown`] until
    /// resolved with [`Statement::runs`].
    pub class: Class,
    /// Every class the statement belongs to (the main one included).
    pub classes: ClassSet,
    /// The command, as Postgres names it (`INSERT`, `CREATE TABLE`, `SET`).
    pub command: String,
    /// Set when the statement is transaction control.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
    /// The relations it touches, as written (sorted, each once per access).
    pub objects: Vec<ObjectRef>,
    /// Functions it calls that are not built in (`schema.name` as written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// `PREPARE name AS …`: the name (class and objects are the prepared statement's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare: Option<String>,
    /// `PREPARE name AS …`: the command of the statement prepared (what an
    /// `EXECUTE name` runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared_command: Option<String>,
    /// `EXECUTE name`: the name of the prepared statement it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execute: Option<String>,
    /// `EXECUTE name (…)`: the literal values of its arguments, which fill
    /// the prepared statement's `$n` in [`Statement::runs`]. Unredacted, so
    /// private and never printed.
    #[serde(skip)]
    execute_args: ExecuteArgs,
    /// `PREPARE name AS …`: the claims the prepared statement makes each
    /// time it is executed (not when prepared).
    #[serde(skip)]
    pub prepared_claims: Vec<Claim>,
    /// `DEALLOCATE` / `DISCARD ALL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deallocate: Option<Deallocate>,
    /// A new `search_path` the statement sets (`Some(None)`: reset to the
    /// server's default), and whether only for the transaction.
    #[serde(skip)]
    pub search_path: Option<(Option<SearchPath>, ClaimScope)>,
    /// The application's claims the statement makes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// The pairs of its sqlcommenter comment (values of secret-named keys redacted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub comment: Vec<(String, String)>,
    /// Which parameter binds which column: `(n, column)` for `$n` (see
    /// the `binds` module for the rule and its limits).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<(u32, String)>,
}

/// EXECUTE's literal arguments (`None` for an expression); Debug shows
/// only how many there are.
#[derive(Clone, Default, PartialEq)]
struct ExecuteArgs(Vec<Option<String>>);

impl std::fmt::Debug for ExecuteArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExecuteArgs({} withheld)", self.0.len())
    }
}

/// What a prepared statement runs, for a statement that may be `EXECUTE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Runs<'a> {
    /// The main class.
    pub class: Class,
    /// Every class.
    pub classes: ClassSet,
    /// The relations.
    pub objects: &'a [ObjectRef],
    /// The claims it makes (for EXECUTE: the prepared statement's, its
    /// `$n` filled from EXECUTE's literal arguments).
    pub claims: Vec<Claim>,
}

impl Statement {
    /// What the statement runs: itself, or for `EXECUTE name` the statement
    /// that `prepared` finds under that name (the session's `PREPARE`d
    /// statements, which the proxy tracks). An `EXECUTE` of a name the
    /// lookup does not know is [`Class::Unknown`].
    pub fn runs<'a>(&'a self, prepared: impl FnOnce(&str) -> Option<&'a Statement>) -> Runs<'a> {
        let Some(name) = &self.execute else {
            return Runs {
                class: self.class,
                classes: self.classes,
                objects: &self.objects,
                claims: self.claims.clone(),
            };
        };
        let args: Vec<Option<&str>> = self.execute_args.0.iter().map(Option::as_deref).collect();
        match prepared(name) {
            Some(p) => Runs {
                class: p.class,
                classes: p.classes,
                objects: &p.objects,
                // EXECUTE's own comment, then what the prepared statement sets.
                claims: self
                    .claims
                    .iter()
                    .cloned()
                    .chain(p.prepared_claims.iter().map(|c| c.with_parameters(&args)))
                    .collect(),
            },
            None => Runs {
                class: Class::Unknown,
                classes: ClassSet::of(Class::Unknown),
                objects: &[],
                claims: self.claims.clone(),
            },
        }
    }
}

/// Everything about one statement text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Whether the parser accepted the text. When it did not, there is one
    /// [`Class::Unknown`] statement for the whole text (Postgres runs none
    /// of a text it cannot parse).
    pub parsed: bool,
    /// The statements, in order.
    pub statements: Vec<Statement>,
    /// The text reads differently with `standard_conforming_strings` on
    /// and off, and the server may have run either reading: every
    /// statement carries both readings' classes and objects, and the whole
    /// text (see the `reading` module).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ambiguous: bool,
    /// Of an ambiguous text: a reading that differs takes a backslash for
    /// the second byte of a character in a client encoding such as SJIS
    /// (`strings::multibyte_suspects`), not only the other
    /// `standard_conforming_strings` mode.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub encoding_ambiguous: bool,
}

impl Analysis {
    /// Why an ambiguous text is: the setting whose value the proxy could
    /// not know, as `context.ambiguous` names it.
    pub fn ambiguity(&self) -> Option<&'static str> {
        match (self.ambiguous, self.encoding_ambiguous) {
            (false, _) => None,
            (true, true) => Some("client_encoding"),
            (true, false) => Some("standard_conforming_strings"),
        }
    }
}

/// Turns a statement's text into what may be stored, given its tokens
/// (positions relative to the text; `None`: scan it again) and whether it
/// parsed.
pub(crate) type Redact<'a> = dyn FnMut(&str, Option<Vec<Tok>>, bool) -> String + 'a;

/// Analyzes `sql`. `redact` turns a statement's text into what may be stored.
pub(crate) fn analyze(sql: &str, names: &Names, redact: &mut Redact<'_>) -> Analysis {
    let Some(tokens) = token::scan(sql) else {
        return unknown(sql, &[], names, redact);
    };
    let several = tokens
        .iter()
        .skip_while(|t| !t.is(";"))
        .any(|t| !t.is(";") && !t.is_comment());
    let pieces: Vec<Range<usize>> = if several {
        match strings::split(sql) {
            Ok(pieces) => pieces,
            Err(_) => return unknown(sql, &tokens, names, redact),
        }
    } else {
        std::iter::once(0..sql.len()).collect()
    };
    let mut statements = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let toks: Vec<&Tok> = tokens
            .iter()
            .filter(|t| t.start >= piece.start && t.end <= piece.end)
            .collect();
        let text = &sql[piece.clone()];
        let Ok(summary) = strings::summary(text) else {
            return unknown(sql, &tokens, names, redact);
        };
        statements.push(statement(sql, piece, &toks, &summary, names, redact));
    }
    Analysis {
        parsed: true,
        statements,
        ambiguous: false,
        encoding_ambiguous: false,
    }
}

/// The one statement of a text the parser rejected.
fn unknown(sql: &str, tokens: &[Tok], names: &Names, redact: &mut Redact<'_>) -> Analysis {
    let toks: Vec<&Tok> = tokens.iter().collect();
    let comment = claims::comment_pairs(&toks);
    let command = toks
        .iter()
        .find(|t| !t.is_comment())
        .filter(|t| t.keyword)
        .map(|t| t.text.to_ascii_uppercase())
        .unwrap_or_default();
    Analysis {
        parsed: false,
        statements: vec![Statement {
            span: trimmed(sql, 0..sql.len()),
            sql: redact(sql, None, false),
            class: Class::Unknown,
            classes: ClassSet::of(Class::Unknown),
            command,
            transaction: None,
            objects: Vec::new(),
            functions: Vec::new(),
            prepare: None,
            prepared_command: None,
            execute: None,
            execute_args: ExecuteArgs::default(),
            prepared_claims: Vec::new(),
            deallocate: None,
            search_path: None,
            claims: claims::claims(names, &[], &comment),
            comment,
            binds: Vec::new(),
        }],
        ambiguous: false,
        encoding_ambiguous: false,
    }
}

pub(crate) fn trimmed(sql: &str, span: Range<usize>) -> Range<usize> {
    let text = &sql[span.clone()];
    let start = span.start + (text.len() - text.trim_start().len());
    let end = span.start
        + text
            .trim_end_matches(|c: char| c.is_whitespace() || c == ';')
            .len();
    start..end.max(start)
}

/// One parsed statement.
fn statement(
    sql: &str,
    piece: Range<usize>,
    toks: &[&Tok],
    summary: &pg_query::SummaryResult,
    names: &Names,
    redact: &mut Redact<'_>,
) -> Statement {
    let code: Vec<&Tok> = toks.iter().copied().filter(|t| !t.is_comment()).collect();
    let types = &summary.statement_types;
    let node = types.first().map(String::as_str).unwrap_or("");
    let has = |ctx: Context| summary.tables.iter().any(|t| t.context == ctx);

    let mut prepare = None;
    let mut execute = None;
    let mut deallocate = None;
    let mut transaction = None;
    let mut copy_from = false;
    // The node whose class the statement takes: PREPARE and EXPLAIN
    // ANALYZE take the class of the statement they carry.
    let mut classified = node;
    match node {
        "PrepareStmt" => {
            prepare = code.get(1).and_then(|t| t.name());
            classified = types.get(1).map(String::as_str).unwrap_or("");
        }
        "ExplainStmt" if explain_analyzes(&code) => {
            classified = types.get(1).map(String::as_str).unwrap_or("");
        }
        "ExecuteStmt" => execute = code.get(1).and_then(|t| t.name()),
        "DeallocateStmt" => {
            deallocate = match code.get(1) {
                Some(t) if t.is_kw("PREPARE") => code.get(2),
                other => other,
            }
            .map(|t| match t.name() {
                Some(n) if n == "all" && t.keyword => Deallocate::All,
                Some(n) => Deallocate::Name(n),
                None => Deallocate::All,
            });
        }
        "DiscardStmt" if code.get(1).is_some_and(|t| t.is_kw("ALL")) => {
            deallocate = Some(Deallocate::All);
        }
        "TransactionStmt" => transaction = transaction_of(&code),
        _ => {}
    }
    if classified == "CopyStmt" {
        copy_from = copy_direction_is_from(&code);
    }

    // The class, as a table over node types (see `class`).
    let (class, mut classes) = match classified {
        "ExecuteStmt" => (Class::Unknown, ClassSet::of(Class::Unknown)),
        "SelectStmt" if has(Context::Ddl) => {
            (Class::Ddl, [Class::Ddl, Class::Read].into_iter().collect())
        }
        "SelectStmt" if has(Context::Dml) => (
            Class::Write,
            [Class::Write, Class::Read].into_iter().collect(),
        ),
        "CopyStmt" if copy_from => (Class::Write, ClassSet::of(Class::Write)),
        "CopyStmt" if has(Context::Dml) => (
            Class::Write,
            [Class::Write, Class::Read].into_iter().collect(),
        ),
        "CreateTableAsStmt" => {
            let mut set: ClassSet = [Class::Ddl, Class::Read].into_iter().collect();
            if has(Context::Dml) {
                set.insert(Class::Write);
            }
            (Class::Ddl, set)
        }
        _ => {
            let class = match class::level(classified) {
                Level::Mod => Class::Write,
                Level::Ddl if class::is_role_statement(classified) => Class::Role,
                Level::Ddl
                    if matches!(classified, "RenameStmt" | "DropStmt" | "AlterOwnerStmt")
                        && names_a_role(&code) =>
                {
                    Class::Role
                }
                Level::Ddl => Class::Ddl,
                Level::All => class::other_class(classified),
            };
            let mut set = ClassSet::of(class);
            // A data-modifying CTE in an INSERT/UPDATE/DELETE is WRITE anyway.
            if class == Class::Read && has(Context::Dml) {
                set.insert(Class::Write);
            }
            (class, set)
        }
    };
    let functions: Vec<String> = {
        let mut f: Vec<String> = summary
            .functions
            .iter()
            .filter(|f| f.context == Context::Call)
            .filter(|f| !class::is_builtin_function(f.schema_name.as_deref(), &f.function_name))
            .map(|f| f.name.clone())
            .collect();
        f.sort();
        f.dedup();
        f
    };
    if !functions.is_empty() && !matches!(class, Class::Ddl | Class::Role | Class::Unknown) {
        classes.insert(Class::Function);
    }

    let objects = objects_of(sql, node, copy_from, &code, summary);
    let changes = claims::setting_changes(&code);
    let search_path = search_path_change(node, &changes);
    let mut changes = changes;
    if deallocate == Some(Deallocate::All) && node == "DiscardStmt" {
        // DISCARD ALL is also RESET ALL.
        changes.push(SettingChange {
            name: Some("all".into()),
            value: ClaimValue::Reset,
            channel: claims::ClaimChannel::Set,
            scope: ClaimScope::Session,
        });
    }
    let comment = claims::comment_pairs(toks);
    // A prepared statement's settings take effect when it is executed.
    let (claims, prepared_claims) = if node == "PrepareStmt" {
        (
            claims::claims(names, &[], &comment),
            claims::claims(names, &changes, &[]),
        )
    } else {
        (claims::claims(names, &changes, &comment), Vec::new())
    };
    let execute_args = ExecuteArgs(if execute.is_some() {
        claims::execute_args(&code)
    } else {
        Vec::new()
    });
    let span = trimmed(sql, piece);
    let binds = binds::binds(classified, &code);
    let command = command_of(node, &code, has(Context::Ddl), deallocate.is_some());
    // PREPARE name [(types)] AS statement: the statement's own tag.
    let prepared_command = prepare.as_ref().and_then(|_| {
        let mut depth = 0i32;
        let at = code.iter().position(|t| {
            match t.text {
                "(" => depth += 1,
                ")" => depth -= 1,
                _ => {}
            }
            depth == 0 && t.is_kw("AS")
        })?;
        let inner = code.get(at + 1..)?;
        Some(command_of(classified, inner, has(Context::Ddl), false))
    });
    // The statement's tokens, positioned in its own text, for the redactor.
    let own: Vec<Tok> = toks
        .iter()
        .filter(|t| t.start >= span.start && t.end <= span.end)
        .map(|t| Tok {
            start: t.start - span.start,
            end: t.end - span.start,
            token: t.token,
            keyword: t.keyword,
            text: t.text,
        })
        .collect();
    Statement {
        sql: redact(&sql[span.clone()], Some(own), true),
        span,
        class,
        classes,
        command,
        transaction,
        objects,
        functions,
        prepare,
        prepared_command,
        execute,
        execute_args,
        prepared_claims,
        deallocate,
        search_path,
        claims,
        comment,
        binds,
    }
}

/// `EXPLAIN ANALYZE …`, `EXPLAIN (ANALYZE[, …]) …` (not `ANALYZE false|off|0`).
fn explain_analyzes(code: &[&Tok]) -> bool {
    let is_analyze = |t: &Tok| t.is_kw("ANALYZE") || t.is_kw("ANALYSE");
    match code.get(1) {
        Some(t) if is_analyze(t) => true,
        Some(t) if t.is("(") => {
            let mut depth = 0;
            for (k, tok) in code.iter().enumerate().skip(1) {
                match tok.text {
                    "(" => depth += 1,
                    ")" => {
                        depth -= 1;
                        if depth == 0 {
                            return false;
                        }
                    }
                    _ if depth == 1 && is_analyze(tok) => {
                        let off = code.get(k + 1).is_some_and(|v| {
                            v.is_kw("FALSE")
                                || v.is_kw("OFF")
                                || v.text == "0"
                                || v.string_value().is_some_and(|s| {
                                    matches!(
                                        s.to_ascii_lowercase().as_str(),
                                        "false" | "off" | "0" | "f" | "n" | "no"
                                    )
                                })
                        });
                        return !off;
                    }
                    _ => {}
                }
            }
            false
        }
        _ => false,
    }
}

/// `COPY … FROM` (the first top-level FROM or TO after COPY decides).
fn copy_direction_is_from(code: &[&Tok]) -> bool {
    let mut depth = 0i32;
    for tok in code.iter().skip(1) {
        match tok.text {
            "(" => depth += 1,
            ")" => depth -= 1,
            _ if depth == 0 && tok.is_kw("FROM") => return true,
            _ if depth == 0 && tok.is_kw("TO") => return false,
            _ => {}
        }
    }
    false
}

/// `ALTER ROLE|USER|GROUP …` or `DROP ROLE|USER|GROUP …` (not `USER MAPPING`).
fn names_a_role(code: &[&Tok]) -> bool {
    code.get(1)
        .is_some_and(|t| t.is_kw("ROLE") || t.is_kw("USER") || t.is_kw("GROUP"))
        && !code.get(2).is_some_and(|t| t.is_kw("MAPPING"))
}

fn transaction_of(code: &[&Tok]) -> Option<Transaction> {
    let first = code.first()?;
    let chain = code
        .windows(2)
        .any(|w| w[0].is_kw("AND") && w[1].is_kw("CHAIN"))
        && !code
            .windows(3)
            .any(|w| w[0].is_kw("AND") && w[1].is_kw("NO") && w[2].is_kw("CHAIN"));
    let last_name = || {
        code.iter()
            .rev()
            .find_map(|t| if t.is(";") { None } else { t.name() })
            .unwrap_or_default()
    };
    let second = code.get(1);
    Some(if first.is_kw("BEGIN") || first.is_kw("START") {
        Transaction::Begin
    } else if first.is_kw("COMMIT") || first.is_kw("END") {
        if second.is_some_and(|t| t.is_kw("PREPARED")) {
            Transaction::CommitPrepared
        } else {
            Transaction::Commit { chain }
        }
    } else if first.is_kw("ROLLBACK") || first.is_kw("ABORT") {
        if second.is_some_and(|t| t.is_kw("PREPARED")) {
            Transaction::RollbackPrepared
        } else if code.iter().any(|t| t.is_kw("TO")) {
            Transaction::RollbackTo(last_name())
        } else {
            Transaction::Rollback { chain }
        }
    } else if first.is_kw("SAVEPOINT") {
        Transaction::Savepoint(last_name())
    } else if first.is_kw("RELEASE") {
        Transaction::Release(last_name())
    } else if first.is_kw("PREPARE") {
        Transaction::PrepareTransaction
    } else {
        return None;
    })
}

/// The relations, with their access: the summary's contexts, then what a
/// statement's kind says (TRUNCATE and COPY FROM write), then every CTE
/// name as a possible relation, then DECLARE's query.
fn objects_of(
    sql: &str,
    node: &str,
    copy_from: bool,
    code: &[&Tok],
    summary: &pg_query::SummaryResult,
) -> Vec<ObjectRef> {
    let mut objects: Vec<ObjectRef> = summary
        .tables
        .iter()
        .map(|t| {
            let mut access = match t.context {
                Context::Dml => Access::Write,
                Context::Ddl => Access::Ddl,
                _ => Access::Read,
            };
            if node == "TruncateStmt" || (node == "CopyStmt" && copy_from) {
                access = Access::Write;
            }
            ObjectRef {
                schema: (!t.schema_name.is_empty()).then(|| t.schema_name.clone()),
                name: t.table_name.clone(),
                access,
                maybe_cte: false,
            }
        })
        .collect();
    for cte in &summary.cte_names {
        objects.push(ObjectRef {
            schema: None,
            name: cte.clone(),
            access: Access::Read,
            maybe_cte: true,
        });
    }
    if node == "DeclareCursorStmt" {
        let mut depth = 0i32;
        let query = code.iter().find(|t| {
            match t.text {
                "(" => depth += 1,
                ")" => depth -= 1,
                _ => {}
            }
            depth == 0 && t.is_kw("FOR")
        });
        if let Some(start) = query.and_then(|t| code.iter().find(|n| n.start > t.start)) {
            let end = code.last().map_or(start.end, |t| t.end);
            if let Ok(inner) = strings::summary(&sql[start.start..end]) {
                objects.extend(objects_of(sql, "SelectStmt", false, &[], &inner));
            }
        }
    }
    // libpg_query 18.1's walk stops at a RETURNING clause (its list of the
    // nodes Postgres's walker takes predates Postgres 18's ReturningClause):
    // each RETURNING list is summarized as a SELECT of its own.
    if !code.is_empty() {
        for returning in returning_lists(code) {
            let text = format!("SELECT {}", &sql[returning]);
            if let Ok(inner) = strings::summary(&text) {
                objects.extend(objects_of(sql, "SelectStmt", false, &[], &inner));
            }
        }
    }
    // A name reported both as a relation and as a CTE: keep the relation.
    objects.sort();
    objects.dedup();
    let plain: Vec<(Option<String>, String, Access)> = objects
        .iter()
        .filter(|o| !o.maybe_cte)
        .map(|o| (o.schema.clone(), o.name.clone(), o.access))
        .collect();
    objects
        .retain(|o| !o.maybe_cte || !plain.contains(&(o.schema.clone(), o.name.clone(), o.access)));
    objects
}

/// The byte ranges of the expressions of every `RETURNING` clause (after
/// Postgres 18's optional `WITH (OLD AS o, NEW AS n)`), each up to the
/// parenthesis that closes the statement it belongs to.
fn returning_lists(code: &[&Tok]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for (k, tok) in code.iter().enumerate() {
        if !tok.is_kw("RETURNING") {
            continue;
        }
        let mut i = k + 1;
        if code.get(i).is_some_and(|t| t.is_kw("WITH"))
            && code.get(i + 1).is_some_and(|t| t.is("("))
        {
            let mut d = 0i32;
            while let Some(t) = code.get(i) {
                i += 1;
                match t.text {
                    "(" => d += 1,
                    ")" => {
                        d -= 1;
                        if d == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        let Some(first) = code.get(i) else { continue };
        let mut d = 0i32;
        let mut end = first.start;
        for t in &code[i..] {
            match t.text {
                "(" => d += 1,
                ")" if d == 0 => break,
                ")" => d -= 1,
                ";" if d == 0 => break,
                _ => {}
            }
            end = t.end;
        }
        if end > first.start {
            out.push(first.start..end);
        }
    }
    out
}

fn search_path_change(
    node: &str,
    changes: &[SettingChange],
) -> Option<(Option<SearchPath>, ClaimScope)> {
    let change = changes.iter().rev().find(|c| {
        c.name.as_deref() == Some("search_path")
            || (node == "VariableSetStmt" && c.name.as_deref() == Some("all"))
    })?;
    Some(match &change.value {
        ClaimValue::Set(value) => (Some(SearchPath::parse(value)), change.scope),
        // Unknown: the path is no longer known; treat as the default.
        _ => (None, change.scope),
    })
}

/// The command tag Postgres would give the statement (for the common
/// statements exactly; for the rarer DDL, the verb and the object type).
fn command_of(node: &str, code: &[&Tok], into: bool, all: bool) -> String {
    let word = |i: usize| {
        code.get(i)
            .map(|t| t.text.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let fixed = match node {
        "SelectStmt" if into => "SELECT INTO",
        "SelectStmt" => "SELECT",
        "InsertStmt" => "INSERT",
        "UpdateStmt" => "UPDATE",
        "DeleteStmt" => "DELETE",
        "MergeStmt" => "MERGE",
        "TruncateStmt" => "TRUNCATE TABLE",
        "CopyStmt" => "COPY",
        "ExplainStmt" => "EXPLAIN",
        "PrepareStmt" => "PREPARE",
        "ExecuteStmt" => "EXECUTE",
        "DeallocateStmt" if all => "DEALLOCATE ALL",
        "DeallocateStmt" => "DEALLOCATE",
        "DeclareCursorStmt" => "DECLARE CURSOR",
        "ClosePortalStmt" => "CLOSE CURSOR",
        "DoStmt" => "DO",
        "CallStmt" => "CALL",
        "VariableShowStmt" => "SHOW",
        "CheckPointStmt" => "CHECKPOINT",
        "ListenStmt" => "LISTEN",
        "UnlistenStmt" => "UNLISTEN",
        "NotifyStmt" => "NOTIFY",
        "LockStmt" => "LOCK TABLE",
        "LoadStmt" => "LOAD",
        "ReindexStmt" => "REINDEX",
        "ClusterStmt" => "CLUSTER",
        "ConstraintsSetStmt" => "SET CONSTRAINTS",
        "RefreshMatViewStmt" => "REFRESH MATERIALIZED VIEW",
        "CommentStmt" => "COMMENT",
        "SecLabelStmt" => "SECURITY LABEL",
        "AlterDefaultPrivilegesStmt" => "ALTER DEFAULT PRIVILEGES",
        "ReassignOwnedStmt" => "REASSIGN OWNED",
        "DropOwnedStmt" => "DROP OWNED",
        "ImportForeignSchemaStmt" => "IMPORT FOREIGN SCHEMA",
        "AlterSystemStmt" => "ALTER SYSTEM",
        "CreateTableAsStmt" if code.iter().any(|t| t.is_kw("MATERIALIZED")) => {
            "CREATE MATERIALIZED VIEW"
        }
        "CreateTableAsStmt" => "CREATE TABLE AS",
        _ => "",
    };
    if !fixed.is_empty() {
        return fixed.to_string();
    }
    match node {
        "VariableSetStmt" => word(0), // SET or RESET
        "FetchStmt" | "VacuumStmt" => word(0),
        "DiscardStmt" => format!("DISCARD {}", word(1)),
        "GrantStmt" => word(0), // GRANT or REVOKE
        "GrantRoleStmt" => format!("{} ROLE", word(0)),
        "TransactionStmt" => transaction_tag(code),
        _ => ddl_tag(code),
    }
}

fn transaction_tag(code: &[&Tok]) -> String {
    let first = code
        .first()
        .map(|t| t.text.to_ascii_uppercase())
        .unwrap_or_default();
    let second_is = |w: &str| code.get(1).is_some_and(|t| t.is_kw(w));
    match first.as_str() {
        "START" => "START TRANSACTION".into(),
        "END" => "COMMIT".into(),
        "ABORT" => "ROLLBACK".into(),
        "PREPARE" => "PREPARE TRANSACTION".into(),
        "COMMIT" if second_is("PREPARED") => "COMMIT PREPARED".into(),
        "ROLLBACK" if second_is("PREPARED") => "ROLLBACK PREPARED".into(),
        other => other.to_string(),
    }
}

/// `VERB [modifiers] OBJECT-TYPE` from the tokens (`CREATE UNIQUE INDEX` →
/// `CREATE INDEX`, `ALTER USER` → `ALTER ROLE`).
fn ddl_tag(code: &[&Tok]) -> String {
    const MODIFIERS: &[&str] = &[
        "OR",
        "REPLACE",
        "UNIQUE",
        "TEMP",
        "TEMPORARY",
        "UNLOGGED",
        "GLOBAL",
        "LOCAL",
        "TRUSTED",
        "PROCEDURAL",
        "RECURSIVE",
        "DEFAULT",
        "CONSTRAINT",
    ];
    const PHRASES: &[&[&str]] = &[
        &["MATERIALIZED", "VIEW"],
        &["FOREIGN", "DATA", "WRAPPER"],
        &["FOREIGN", "TABLE"],
        &["EVENT", "TRIGGER"],
        &["USER", "MAPPING"],
        &["ACCESS", "METHOD"],
        &["TEXT", "SEARCH", "CONFIGURATION"],
        &["TEXT", "SEARCH", "DICTIONARY"],
        &["TEXT", "SEARCH", "PARSER"],
        &["TEXT", "SEARCH", "TEMPLATE"],
        &["OPERATOR", "CLASS"],
        &["OPERATOR", "FAMILY"],
        &["LARGE", "OBJECT"],
    ];
    const NOUNS: &[&str] = &[
        "TABLE",
        "INDEX",
        "VIEW",
        "SEQUENCE",
        "FUNCTION",
        "PROCEDURE",
        "ROUTINE",
        "SCHEMA",
        "ROLE",
        "USER",
        "GROUP",
        "DATABASE",
        "EXTENSION",
        "TYPE",
        "DOMAIN",
        "TRIGGER",
        "RULE",
        "POLICY",
        "PUBLICATION",
        "SUBSCRIPTION",
        "SERVER",
        "COLLATION",
        "CONVERSION",
        "OPERATOR",
        "AGGREGATE",
        "CAST",
        "TABLESPACE",
        "STATISTICS",
        "TRANSFORM",
        "LANGUAGE",
    ];
    let Some(verb) = code.first() else {
        return String::new();
    };
    let verb = verb.text.to_ascii_uppercase();
    let mut i = 1;
    while code
        .get(i)
        .is_some_and(|t| t.keyword && MODIFIERS.iter().any(|m| t.is_kw(m)))
        // DEFAULT PRIVILEGES is a phrase of its own.
        && !code.get(i + 1).is_some_and(|t| t.is_kw("PRIVILEGES"))
    {
        i += 1;
    }
    for phrase in PHRASES {
        let matches = phrase
            .iter()
            .enumerate()
            .all(|(k, w)| code.get(i + k).is_some_and(|t| t.is_kw(w)));
        if matches {
            return format!("{verb} {}", phrase.join(" "));
        }
    }
    match code.get(i) {
        Some(t) if t.keyword && NOUNS.iter().any(|n| t.is_kw(n)) => {
            let noun = t.text.to_ascii_uppercase();
            let noun = if noun == "USER" || noun == "GROUP" {
                "ROLE".to_string()
            } else {
                noun
            };
            format!("{verb} {noun}")
        }
        _ => verb,
    }
}
