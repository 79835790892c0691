//! Which parameter (`$n`) of a statement is bound to which column, for
//! masking parameter values the way row images mask columns.
//!
//! The rule, on the scanner's tokens:
//! - `INSERT INTO t (a, b, …) VALUES ($1, $2, …)[, (…)]`: the k-th value of
//!   each row binds the k-th column, when the value is `$n` alone
//!   (optionally cast: `$1::text`);
//! - `col = $n` and `$n = col` anywhere (UPDATE's `SET col = $n`, WHERE and
//!   ON clauses, `t.col = $n`), also with `<>`, `!=`, `<`, `>`, `<=`, `>=`.
//!
//! Not followed (the parameter binds no known column): an INSERT without a
//! column list, a value inside an expression (`lower($1)`, `$1 || 'x'`),
//! `IN ($1, $2)`, `= ANY($1)`, `LIKE $1`, function arguments. Callers treat
//! such a parameter of a statement on a masked table as masked.

use pg_query::protobuf::Token;

use crate::token::Tok;

const COMPARISONS: [&str; 7] = ["=", "<>", "!=", "<", ">", "<=", ">="];

/// The `(parameter number, column name)` pairs of a statement's code tokens.
pub(crate) fn binds(node: &str, code: &[&Tok]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if node == "InsertStmt" {
        insert_values(code, &mut out);
    }
    for (i, tok) in code.iter().enumerate() {
        if !COMPARISONS.iter().any(|c| tok.is(c)) {
            continue;
        }
        let param_after = code.get(i + 1).and_then(|t| param(t));
        let column_before = i.checked_sub(1).and_then(|k| code.get(k)).and_then(|t| {
            // Not `$1 = $2`, not `f(x) = $1` (`)` has no name).
            (t.token == Token::Ident || t.keyword)
                .then(|| t.name())
                .flatten()
        });
        if let (Some(n), Some(column)) = (param_after, column_before) {
            // `x = $1 + 1` or `x = $1 || y`: the column is not bound to $1.
            if ends_value(code.get(i + 2).copied(), code.get(i + 3).copied()) {
                out.push((n, column));
            }
            continue;
        }
        let param_before = i
            .checked_sub(1)
            .and_then(|k| code.get(k))
            .and_then(|t| param(t));
        let column_after = code.get(i + 1).and_then(|t| {
            (t.token == Token::Ident || t.keyword)
                .then(|| t.name())
                .flatten()
        });
        if let (Some(n), Some(mut column)) = (param_before, column_after) {
            // `$1 = t.col`: the last name of the qualified one.
            let mut k = i + 2;
            while code.get(k).is_some_and(|t| t.is(".")) {
                match code.get(k + 1).and_then(|t| t.name()) {
                    Some(next) => column = next,
                    None => break,
                }
                k += 2;
            }
            let preceded = i
                .checked_sub(2)
                .and_then(|k| code.get(k))
                .is_none_or(|t| !COMPARISONS.iter().any(|c| t.is(c)) && !is_arith(t));
            if preceded && !code.get(k).is_some_and(|t| t.is("(")) {
                out.push((n, column));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn param(tok: &Tok) -> Option<u32> {
    (tok.token == Token::Param)
        .then(|| tok.text.trim_start_matches('$').parse().ok())
        .flatten()
}

fn is_arith(tok: &Tok) -> bool {
    ["+", "-", "*", "/", "%", "^", "||"]
        .iter()
        .any(|o| tok.is(o))
}

/// Whether the value `$n` ends before `next` (a cast `::type` is allowed).
fn ends_value(next: Option<&Tok>, after: Option<&Tok>) -> bool {
    match next {
        None => true,
        Some(t) if t.is("::") => after.is_some(),
        Some(t) => !is_arith(t) && !t.is("[") && !t.is("."),
    }
}

/// `INSERT INTO t [AS a] (cols) VALUES (…), (…)`.
fn insert_values(code: &[&Tok], out: &mut Vec<(u32, String)>) {
    let Some(into) = code.iter().position(|t| t.is_kw("INTO")) else {
        return;
    };
    let Some(open) = code[into..]
        .iter()
        .position(|t| t.is("("))
        .map(|p| p + into)
    else {
        return;
    };
    // Only names, dots, AS and an alias between INTO and the column list.
    if !code[into + 1..open]
        .iter()
        .all(|t| t.is(".") || t.token == Token::Ident || t.keyword)
    {
        return;
    }
    let mut columns = Vec::new();
    let mut k = open + 1;
    loop {
        let Some(name) = code.get(k).and_then(|t| t.name()) else {
            return;
        };
        columns.push(name);
        match code.get(k + 1) {
            Some(t) if t.is(",") => k += 2,
            Some(t) if t.is(")") => {
                k += 2;
                break;
            }
            _ => return,
        }
    }
    if !code.get(k).is_some_and(|t| t.is_kw("VALUES")) {
        return;
    }
    k += 1;
    // Each row: `( v, v, … )` then `,` or the end of the list.
    while code.get(k).is_some_and(|t| t.is("(")) {
        let mut depth = 0usize;
        let mut value: Vec<&Tok> = Vec::new();
        let mut index = 0usize;
        k += 1;
        while let Some(t) = code.get(k) {
            k += 1;
            match t.text {
                "(" | "[" => depth += 1,
                ")" if depth == 0 => {
                    bind_value(&value, index, &columns, out);
                    break;
                }
                ")" | "]" => depth -= 1,
                "," if depth == 0 => {
                    bind_value(&value, index, &columns, out);
                    value.clear();
                    index += 1;
                    continue;
                }
                _ => {}
            }
            value.push(t);
        }
        if code.get(k).is_some_and(|t| t.is(",")) {
            k += 1;
        } else {
            break;
        }
    }
}

fn bind_value(value: &[&Tok], index: usize, columns: &[String], out: &mut Vec<(u32, String)>) {
    let plain = match value {
        [p] => param(p),
        [p, cast, ..] if cast.is("::") => param(p),
        _ => None,
    };
    if let (Some(n), Some(column)) = (plain, columns.get(index)) {
        out.push((n, column.clone()));
    }
}

#[cfg(test)]
mod tests {
    use crate::{Analyzer, TextPolicy};
    use pgtrail_core::config::IdentityConfig;

    fn binds(sql: &str) -> Vec<(u32, String)> {
        let analyzer = Analyzer::new(2, &IdentityConfig::default(), TextPolicy::Secrets);
        analyzer.analyze_uncached(sql).statements[0].binds.clone()
    }

    fn pairs(list: &[(u32, &str)]) -> Vec<(u32, String)> {
        list.iter().map(|(n, c)| (*n, c.to_string())).collect()
    }

    #[test]
    fn insert_values_bind_by_position() {
        assert_eq!(
            binds("INSERT INTO app.users (name, \"SSN\") VALUES ($1, $2::text), ($3, $4)"),
            pairs(&[(1, "name"), (2, "SSN"), (3, "name"), (4, "SSN")])
        );
        // No column list, or an expression: nothing bound.
        assert_eq!(binds("INSERT INTO users VALUES ($1, $2)"), pairs(&[]));
        assert_eq!(
            binds("INSERT INTO users (name, ssn) VALUES (lower($1), $2 || 'x')"),
            pairs(&[])
        );
    }

    #[test]
    fn comparisons_and_set_bind_the_named_column() {
        assert_eq!(
            binds("UPDATE users SET ssn = $1, name = $2 WHERE u.id = $3 AND $4 = users.email"),
            pairs(&[(1, "ssn"), (2, "name"), (3, "id"), (4, "email")])
        );
        assert_eq!(
            binds("SELECT * FROM users WHERE ssn = $1::text"),
            pairs(&[(1, "ssn")])
        );
        // Arithmetic and lists are not followed.
        assert_eq!(
            binds("SELECT * FROM t WHERE a = $1 + 1 OR b IN ($2, $3) OR c = ANY($4)"),
            pairs(&[])
        );
    }
}
