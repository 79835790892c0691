//! Redaction of statement text: secrets always, constants on request.

use pg_query::protobuf::Token;
use pg_query::NodeRef;

use crate::literal;
use crate::strings;
use crate::token::Tok;

/// What replaces a secret: a whole literal becomes `'<redacted>'`, a
/// credential inside one `<redacted>`.
pub const REDACTED: &str = "<redacted>";

/// What is stored instead of text that could not even be scanned.
pub const WITHHELD: &str = "/* pgtrail: statement text withheld (it could not be scanned, so its secrets could not be found) */";

/// Nesting of literals whose contents are redacted as statements in turn
/// (a function body holding an EXECUTE of a string holding a password).
const MAX_DEPTH: u8 = 4;

/// What a redaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// The text parsed and held nothing to redact.
    Unchanged,
    /// The text parsed; the secrets (or constants) found were replaced.
    Redacted,
    /// The text did not parse: every string literal was replaced.
    Unparsed,
    /// The text could not be scanned: [`WITHHELD`] stands in its place.
    Withheld,
}

/// `sql` with its secrets replaced (see the crate documentation), and what
/// was done. A text the server may read two ways (a backslash, with
/// `standard_conforming_strings` on or off, see `strings`) is redacted in
/// both, and withheld unless both give the same text: a secret one reading
/// finds is never stored by the other.
pub fn redact_secrets(sql: &str) -> (String, Redaction) {
    in_both_modes(sql, redact_secrets_in_mode, Unreadable::Withholds)
}

/// What [`in_both_modes`] makes of a text the other mode cannot scan.
#[derive(PartialEq)]
enum Unreadable {
    /// Withheld, as any disagreement.
    Withholds,
    /// The readable reading kept: the server can have run only that one
    /// (the constants of a statement that ran: the trigger drainer's
    /// [`Redactor`]).
    KeepsTheReadable,
}

/// `redact` of `sql` in the thread's mode and, when the text may read
/// differently in the other (`strings::mode_matters`), in that one too:
/// [`WITHHELD`] unless both readings give the same text, so what one reading
/// hides is never stored by the other.
fn in_both_modes(
    sql: &str,
    redact: impl Fn(&str) -> (String, Redaction),
    unreadable: Unreadable,
) -> (String, Redaction) {
    let (text, outcome) = redact(sql);
    if !strings::mode_matters(sql) {
        return (text, outcome);
    }
    let (other, other_outcome) = strings::under(strings::current().other(), || redact(sql));
    let keeps_readable = unreadable == Unreadable::KeepsTheReadable;
    match (outcome, other_outcome) {
        (Redaction::Withheld, Redaction::Withheld) => (text, outcome),
        (Redaction::Withheld, _) if keeps_readable => (other, other_outcome),
        (_, Redaction::Withheld) if keeps_readable => (text, outcome),
        _ if other == text => (text, outcome),
        _ => (WITHHELD.to_string(), Redaction::Withheld),
    }
}

/// [`redact_secrets`] in the thread's mode alone.
pub(crate) fn redact_secrets_in_mode(sql: &str) -> (String, Redaction) {
    redact_secrets_at(sql, 0)
}

/// [`redact_secrets`] of a text whose parse outcome the caller already
/// knows (the statement analyzer parsed it): the parser then runs only
/// when a token names a secret, whose place the tree must show.
/// `tokens` are `sql`'s, scanned by the caller (so the text is scanned once).
pub(crate) fn redact_secrets_known(
    sql: &str,
    tokens: Vec<Tok>,
    parsed: bool,
) -> (String, Redaction) {
    redact_secrets_inner(sql, tokens, 0, Some(parsed))
}

fn redact_secrets_at(sql: &str, depth: u8) -> (String, Redaction) {
    let Some(tokens) = crate::token::scan(sql) else {
        return (WITHHELD.to_string(), Redaction::Withheld);
    };
    redact_secrets_inner(sql, tokens, depth, None)
}

fn redact_secrets_inner(
    sql: &str,
    tokens: Vec<Tok>,
    depth: u8,
    known: Option<bool>,
) -> (String, Redaction) {
    let mut edits = Edits::default();
    // An option the tree marks as secret is named by a token: without such
    // a token the walk is skipped (the parse still decides the fallback).
    let named = tokens.iter().any(Tok::names_secret);
    let parsed = match known {
        Some(parsed) if !named => parsed,
        _ => crate::strings::parse(sql).is_ok_and(|tree| {
            if named {
                secrets_in_tree(&tree, &tokens, &mut edits);
            }
            true
        }),
    };
    if !parsed {
        for (i, tok) in tokens.iter().enumerate() {
            if tok.is_string() {
                edits.whole(i);
            }
        }
    }
    secrets_by_name(&tokens, &mut edits);
    secrets_in_set_config(&tokens, &mut edits);
    let outcome = match (parsed, edits.is_empty()) {
        (false, _) => Redaction::Unparsed,
        (true, true) => Redaction::Unchanged,
        (true, false) => Redaction::Redacted,
    };
    // Credentials inside the remaining literals and comments.
    let mut changed = false;
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    for (i, tok) in tokens.iter().enumerate() {
        let replacement = if edits.is_whole(i) {
            Some(format!("'{REDACTED}'"))
        } else if tok.is_string() || tok.is_comment() {
            inner_secrets(tok, depth)
        } else {
            None
        };
        if let Some(replacement) = replacement {
            out.push_str(&sql[at..tok.start]);
            out.push_str(&replacement);
            at = tok.end;
            changed = true;
        }
    }
    if !changed {
        return (sql.to_string(), outcome);
    }
    out.push_str(&sql[at..]);
    let outcome = if outcome == Redaction::Unchanged {
        Redaction::Redacted
    } else {
        outcome
    };
    (out, outcome)
}

/// `sql` with every constant (string, number, bit string) replaced by a
/// parameter symbol `$n`, numbered after the parameters already there, and
/// the credentials in its comments replaced. A text with a backslash is
/// redacted in both `standard_conforming_strings` modes, and withheld
/// unless they agree (a literal one reading ends early leaks in the other).
pub fn redact_constants(sql: &str) -> (String, Redaction) {
    in_both_modes(sql, redact_constants_in_mode, Unreadable::Withholds)
}

/// [`redact_constants`] in the thread's mode alone.
pub(crate) fn redact_constants_in_mode(sql: &str) -> (String, Redaction) {
    let Ok(tokens) = crate::token::scan_tokens(sql) else {
        return (WITHHELD.to_string(), Redaction::Withheld);
    };
    let tokens: Vec<Tok> = tokens.iter().filter_map(|t| Tok::new(sql, t)).collect();
    let mut next = tokens
        .iter()
        .filter(|t| t.token == Token::Param)
        .filter_map(|t| t.text.trim_start_matches('$').parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    let mut changed = false;
    for tok in &tokens {
        let replacement = if tok.is_constant() {
            next += 1;
            Some(format!("${next}"))
        } else if tok.is_comment() {
            literal::redact_credentials(tok.text, REDACTED)
        } else {
            None
        };
        if let Some(replacement) = replacement {
            out.push_str(&sql[at..tok.start]);
            out.push_str(&replacement);
            at = tok.end;
            changed = true;
        }
    }
    if !changed {
        return (sql.to_string(), Redaction::Unchanged);
    }
    out.push_str(&sql[at..]);
    (out, Redaction::Redacted)
}

/// A query string that holds a schema change, for an install whose columns
/// are masked: each statement that reads or writes data (a query, DML,
/// `COPY`, `CALL`, `DO`, `EXECUTE`, `CREATE TABLE … AS`) loses its constants,
/// as [`redact_constants`] does, since a masked value can only appear there as
/// a constant; each schema change keeps its text with its secrets redacted,
/// as [`redact_secrets`] does, so a function's body or a column's default
/// stays readable. A text that cannot be split into statements loses every
/// constant. Both `standard_conforming_strings` modes, as
/// [`redact_constants`].
pub fn redact_constants_outside_ddl(sql: &str) -> (String, Redaction) {
    in_both_modes(
        sql,
        redact_constants_outside_ddl_in_mode,
        Unreadable::Withholds,
    )
}

/// [`redact_constants_outside_ddl`] in the thread's mode alone.
fn redact_constants_outside_ddl_in_mode(sql: &str) -> (String, Redaction) {
    let Ok(ranges) = strings::split(sql) else {
        return redact_constants_in_mode(sql);
    };
    let mut out = String::with_capacity(sql.len());
    let mut at = 0;
    let mut outcome = Redaction::Unchanged;
    for range in ranges {
        let start = range.start;
        let piece = &sql[range];
        let (text, redaction) = if touches_data(piece) {
            redact_constants_in_mode(piece)
        } else {
            redact_secrets_in_mode(piece)
        };
        if redaction == Redaction::Withheld {
            return (WITHHELD.to_string(), Redaction::Withheld);
        }
        if redaction != Redaction::Unchanged {
            outcome = Redaction::Redacted;
        }
        out.push_str(&sql[at..start]);
        out.push_str(&text);
        at = start + piece.len();
    }
    out.push_str(&sql[at..]);
    (out, outcome)
}

/// Whether one statement reads or writes rows (so its constants may be
/// data); a statement that does not parse counts as one.
fn touches_data(statement: &str) -> bool {
    use pg_query::NodeEnum as N;
    let Ok(tree) = strings::parse(statement) else {
        return true;
    };
    tree.protobuf.stmts.iter().any(|raw| {
        match raw.stmt.as_ref().and_then(|node| node.node.as_ref()) {
            Some(
                N::SelectStmt(_)
                | N::InsertStmt(_)
                | N::UpdateStmt(_)
                | N::DeleteStmt(_)
                | N::MergeStmt(_)
                | N::CopyStmt(_)
                | N::CallStmt(_)
                | N::DoStmt(_)
                | N::ExecuteStmt(_)
                | N::PrepareStmt(_)
                | N::ExplainStmt(_)
                | N::CreateTableAsStmt(_)
                | N::DeclareCursorStmt(_)
                | N::VariableSetStmt(_),
            ) => true,
            Some(_) => false,
            None => true,
        }
    })
}

/// A value bound to a statement (a Bind parameter), with the credentials of
/// a connection string in it redacted (`password=…`, `scheme://user:secret@…`),
/// as they are in literals of statement text.
pub fn redact_value(value: &str) -> String {
    if !crate::literal::mentions_secret(value) {
        return value.to_string();
    }
    crate::literal::redact_credentials(value, REDACTED).unwrap_or_else(|| value.to_string())
}

/// Redacts statement after statement, remembering the last one: the rows
/// of one statement carry the same text, so a batch mostly repeats it.
#[derive(Debug, Default)]
pub struct Redactor {
    last: Option<(RedactMode, String, String)>,
}

/// Which redaction a [`Redactor`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactMode {
    /// [`redact_secrets`].
    Secrets,
    /// [`redact_constants`] (which leaves no literal, so no secret literal
    /// either).
    Constants,
    /// [`redact_constants_outside_ddl`].
    ConstantsOutsideDdl,
}

impl Redactor {
    /// `sql` redacted as `mode` says.
    pub fn redact(&mut self, sql: &str, mode: RedactMode) -> String {
        if let Some((last, input, output)) = &self.last {
            if *last == mode && input == sql {
                return output.clone();
            }
        }
        let (output, _) = match mode {
            RedactMode::Secrets => redact_secrets(sql),
            // The trigger drainer's texts ran (they fired the trigger): a
            // reading the server could not scan is not the one it ran.
            RedactMode::Constants => {
                in_both_modes(sql, redact_constants_in_mode, Unreadable::KeepsTheReadable)
            }
            RedactMode::ConstantsOutsideDdl => in_both_modes(
                sql,
                redact_constants_outside_ddl_in_mode,
                Unreadable::KeepsTheReadable,
            ),
        };
        self.last = Some((mode, sql.to_string(), output.clone()));
        output
    }

    /// Redacts an optional statement text in place.
    pub fn redact_in_place(&mut self, sql: &mut Option<String>, mode: RedactMode) {
        if let Some(text) = sql.as_mut() {
            *text = self.redact(text, mode);
        }
    }
}

/// Secrets the parse tree places: the values of options named like a
/// password (`PASSWORD '…'` of roles, `OPTIONS (password '…')` of servers
/// and user mappings, in CREATE and ALTER, `SET`/`ADD` alike) are replaced
/// whole; a subscription's conninfo keeps all but its credentials (done by
/// [`inner_secrets`], which every literal goes through).
fn secrets_in_tree(tree: &pg_query::ParseResult, tokens: &[Tok], edits: &mut Edits) {
    for (node, ..) in tree.protobuf.nodes() {
        if let NodeRef::DefElem(def) = node {
            if def.arg.is_some() && literal::is_secret_name(&def.defname) {
                if let Some(i) = constant_at(tokens, def.arg_location) {
                    edits.whole(i);
                }
            }
        }
    }
}

/// The constant token starting at `location` (a byte offset), if any.
fn constant_at(tokens: &[Tok], location: i32) -> Option<usize> {
    let location = usize::try_from(location).ok()?;
    tokens
        .iter()
        .position(|t| t.start == location)
        .filter(|&i| tokens[i].is_constant())
}

/// The net under the tree: a name like `password` followed by a literal
/// (`PASSWORD 'x'`, `"password" 'x'`), or by `=` / `TO` / `:=` and then an
/// expression (`SET app.api_token = 'x'`, `password := 'x'` in a function
/// body, `SET password = md5('x')`): the expression's constants, up to the
/// next `,` or `;` outside parentheses, are replaced.
fn secrets_by_name(tokens: &[Tok], edits: &mut Edits) {
    let code: Vec<usize> = (0..tokens.len())
        .filter(|&i| !tokens[i].is_comment())
        .collect();
    for (k, &i) in code.iter().enumerate() {
        let tok = &tokens[i];
        if !tok.names_secret() {
            continue;
        }
        let Some(&next) = code.get(k + 1) else {
            continue;
        };
        if tokens[next].is_constant() {
            edits.whole(next);
            continue;
        }
        let assigns = matches!(tokens[next].text, "=" | ":=") || tokens[next].token == Token::To;
        if !assigns {
            continue;
        }
        let mut depth = 0i32;
        for &j in &code[k + 2..] {
            match tokens[j].text {
                "(" => depth += 1,
                ")" if depth == 0 => break,
                ")" => depth -= 1,
                "," | ";" if depth == 0 => break,
                _ if tokens[j].is_constant() => edits.whole(j),
                _ => {}
            }
        }
    }
}

/// `set_config('app.api_token', '…', …)`: the value argument's constants,
/// when the setting's name (a literal) names a secret.
fn secrets_in_set_config(tokens: &[Tok], edits: &mut Edits) {
    let code: Vec<usize> = (0..tokens.len())
        .filter(|&i| !tokens[i].is_comment())
        .collect();
    for (k, &i) in code.iter().enumerate() {
        if !tokens[i].text.eq_ignore_ascii_case("set_config") {
            continue;
        }
        let at = |n: usize| code.get(k + n).map(|&j| &tokens[j]);
        let names_secret = at(2)
            .filter(|t| t.is_string())
            .and_then(|t| literal::decode(t.text).1)
            .is_some_and(|name| literal::is_secret_name(&name));
        if !(at(1).is_some_and(|t| t.text == "(") && names_secret) {
            continue;
        }
        // From the comma after the name to the next top-level comma.
        let mut depth = 0i32;
        let mut started = false;
        for &j in &code[k + 3..] {
            match tokens[j].text {
                "," if depth == 0 && !started => started = true,
                "(" => depth += 1,
                ")" if depth == 0 => break,
                ")" => depth -= 1,
                "," if depth == 0 => break,
                _ if started && tokens[j].is_constant() => edits.whole(j),
                _ => {}
            }
        }
    }
}

/// A literal's or comment's text with the credentials inside it redacted,
/// if it holds any: conninfo and URI credentials, and (for literals that
/// mention a secret) the secrets of the statement the literal may hold,
/// found by redacting its value as a statement in turn.
fn inner_secrets(tok: &Tok, depth: u8) -> Option<String> {
    if !literal::mentions_secret(tok.text) {
        return None;
    }
    if tok.is_comment() {
        return literal::redact_credentials(tok.text, REDACTED);
    }
    let (quoting, value) = literal::decode(tok.text);
    let Some(value) = value else {
        // Not decoded (U&'…'): replaced whole, as it mentions a secret.
        return Some(format!("'{REDACTED}'"));
    };
    if depth >= MAX_DEPTH {
        return Some(format!("'{REDACTED}'"));
    }
    // The value as a statement first (its own literals redacted precisely),
    // then as a connection string.
    let (nested, outcome) = redact_secrets_at(&value, depth + 1);
    let nested = match outcome {
        Redaction::Withheld => value.clone(),
        _ => nested,
    };
    let new_value = literal::redact_credentials(&nested, REDACTED).unwrap_or(nested);
    if new_value == value {
        return None;
    }
    Some(literal::encode(&quoting, &new_value))
}

/// Token replacements decided so far: whole-literal ones.
#[derive(Default)]
struct Edits {
    whole: Vec<usize>,
}

impl Edits {
    fn whole(&mut self, i: usize) {
        if !self.whole.contains(&i) {
            self.whole.push(i);
        }
    }
    fn is_whole(&self, i: usize) -> bool {
        self.whole.contains(&i)
    }
    fn is_empty(&self) -> bool {
        self.whole.is_empty()
    }
}

#[cfg(test)]
mod outside_ddl_tests {
    use super::*;

    #[test]
    fn schema_changes_keep_their_text_and_data_statements_lose_constants() {
        let (text, _) = redact_constants_outside_ddl(
            "create function f() returns int language sql as $$ select 1 $$;\n\
             insert into people values (1, '123-45-6789'); alter role a password 'pw'",
        );
        assert_eq!(
            text,
            "create function f() returns int language sql as $$ select 1 $$;\n\
             insert into people values ($1, $2); alter role a password '<redacted>'"
        );
        let (text, _) =
            redact_constants_outside_ddl("create table t as select '123-45-6789' as ssn");
        assert!(!text.contains("123-45-6789"), "{text}");
        let (text, _) = redact_constants_outside_ddl("create table t (x int; insert '123-45-6789'");
        assert!(
            !text.contains("123-45-6789"),
            "unsplittable text loses every constant: {text}"
        );
    }
}
