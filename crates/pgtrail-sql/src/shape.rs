//! The shape of a statement text: the text with the values of its
//! constants scanned out. Clients on the simple protocol (`pgbench -M
//! simple`, ORMs that inline values) send the same statement with new
//! literals each time; texts of one shape share one parse in the
//! analyzer's cache (see `cache`).
//!
//! Two texts may share a shape only if everything the analyzer keeps from
//! a parse other than the stored text is the same for both: the class,
//! command, objects, functions, binds, comment and claims. So the key is
//! the text verbatim (whitespace, comments, identifiers, operators,
//! parameters) with only each constant's value replaced by a marker of its
//! token kind, and a text has a shape only when
//!
//! - its first word is SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES
//!   or TABLE (statements whose analysis never reads a constant's value:
//!   not SET, EXPLAIN, COPY, EXECUTE, DDL…), and it calls no `set_config`
//!   (its literal arguments are claims);
//! - it is one statement (only whitespace, comments and `;` after a `;`),
//!   so the one statement's span is the whole text, trimmed;
//! - every constant is one this scanner reads exactly as Postgres's does
//!   and whose value the grammar never looks at: a standard `'…'` string,
//!   a `$tag$…$tag$` string, an integer of at most 9 digits (an Iconst
//!   whatever its digits: 10 could overflow into a numeric) or a plain
//!   decimal `1.5`. An integer right after `float (` stays verbatim
//!   (`float(54)` is a syntax error where `float(53)` is not), as do
//!   longer integers.
//!
//! Anything this scanner is not sure of gives no shape, and the text is
//! analyzed by the full parse: `E'…'`, `B'…'`, `X'…'`, `N'…'` and `U&`
//! strings or identifiers, exponents, `0x1F`, `1_000`, `1.`, `.5`, an
//! unterminated quote or comment, a NUL byte, a backslash anywhere (it
//! reads differently when `standard_conforming_strings` is off), a text
//! without constants (the exact-text cache already answers it).

/// Marker of a string constant (a NUL never occurs in a statement text, and
/// a text holding one has no shape).
const STRING: &str = "\0s";
/// Marker of an integer constant of at most 9 digits.
const INTEGER: &str = "\0i";
/// Marker of a decimal constant (`1.5`).
const DECIMAL: &str = "\0d";

/// The first words of the statements that may have a shape.
const SHAPED: &[&str] = &[
    "select", "insert", "update", "delete", "merge", "with", "values", "table",
];

/// The shape of `sql` (see the module documentation), or `None`.
pub(crate) fn key(sql: &str) -> Option<String> {
    let b = sql.as_bytes();
    // A backslash may read differently with `standard_conforming_strings`
    // off (see `strings`): such a text is parsed in each mode, never shaped.
    if b.contains(&0) || crate::strings::mode_matters(sql) {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut constants = 0usize;
    let mut first = true;
    let mut ended = false;
    // Whether the last code token was `float`, and the last two `float (`.
    let mut last_float = false;
    let mut float_open = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() || c == b'\x0b' {
            i += 1;
            out.push_str(&sql[start..i]);
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = b[i..]
                .iter()
                .position(|&x| x == b'\n' || x == b'\r')
                .map_or(b.len(), |n| i + n);
            out.push_str(&sql[start..i]);
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i = block_comment_end(b, i)?;
            out.push_str(&sql[start..i]);
            continue;
        }
        // A code token: the first is a word; after a `;` only another
        // `;` may follow.
        if (first && !is_ident_start(c)) || (ended && c != b';') {
            return None;
        }
        let (was_float, precision) = (last_float, float_open);
        last_float = false;
        float_open = false;
        if c == b'\'' {
            i = quoted_end(b, i, b'\'')?;
            out.push_str(STRING);
            constants += 1;
        } else if c == b'"' {
            i = quoted_end(b, i, b'"')?;
            let name = sql[start + 1..i - 1].replace("\"\"", "\"");
            if name == "set_config" {
                return None;
            }
            out.push_str(&sql[start..i]);
        } else if is_ident_start(c) {
            while i < b.len() && is_ident_char(b[i]) {
                i += 1;
            }
            let word = &sql[start..i];
            // `E'…'`, `N'…'`, `date'…'`; `U&'…'`, `U&"…"`.
            if b.get(i) == Some(&b'\'')
                || (word.eq_ignore_ascii_case("u") && b.get(i) == Some(&b'&'))
            {
                return None;
            }
            if word.eq_ignore_ascii_case("set_config")
                || (first && !SHAPED.iter().any(|w| word.eq_ignore_ascii_case(w)))
            {
                return None;
            }
            last_float = word.eq_ignore_ascii_case("float");
            out.push_str(word);
        } else if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let mut decimal = false;
            if b.get(i) == Some(&b'.') {
                if !b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                    return None; // `1.`, `1..`, `1.e5`
                }
                decimal = true;
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // Trailing junk, an exponent, `1_000`, `0x1F`, `1.5.2`.
            if b.get(i).is_some_and(|&x| is_ident_char(x) || x == b'.') {
                return None;
            }
            if decimal {
                out.push_str(DECIMAL);
                constants += 1;
            } else if i - start <= 9 && !precision {
                out.push_str(INTEGER);
                constants += 1;
            } else {
                out.push_str(&sql[start..i]);
            }
        } else if c == b'$' {
            i = dollar_end(b, i)?;
            if b.get(start + 1).is_some_and(u8::is_ascii_digit) {
                out.push_str(&sql[start..i]); // a parameter, `$1`
            } else {
                out.push_str(STRING);
                constants += 1;
            }
        } else if c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            return None; // `.5`
        } else {
            // Punctuation or one operator character (a comment may start
            // right after it, as in Postgres's scanner).
            i += 1;
            if c == b';' {
                ended = true;
            }
            float_open = was_float && c == b'(';
            out.push_str(&sql[start..i]);
        }
        first = false;
    }
    (constants > 0).then_some(out)
}

/// Identifier characters as Postgres's scanner has them (any byte of a
/// multibyte character counts as a letter).
fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// The end of the `'…'` string or `"…"` identifier opening at `i` (the
/// quote doubled inside); `None` when unterminated.
fn quoted_end(b: &[u8], mut i: usize, quote: u8) -> Option<usize> {
    i += 1;
    loop {
        let n = b[i..].iter().position(|&x| x == quote)?;
        i += n + 1;
        if b.get(i) != Some(&quote) {
            return Some(i);
        }
        i += 1;
    }
}

/// The end of the comment opening at `i` (comments nest); `None` when
/// unterminated.
fn block_comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The end of the parameter (`$1`) or dollar-quoted string (`$tag$…$tag$`)
/// opening at `i`; `None` for anything else or an unterminated string.
fn dollar_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        // `$1abc` is trailing junk.
        return (!b.get(j).is_some_and(|&x| is_ident_char(x))).then_some(j);
    }
    if b.get(j).is_some_and(|&x| is_ident_start(x)) {
        while j < b.len() && (is_ident_start(b[j]) || b[j].is_ascii_digit()) {
            j += 1;
        }
    }
    if b.get(j) != Some(&b'$') {
        return None;
    }
    let tag = &b[i..=j];
    let body = j + 1;
    let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + close + tag.len())
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn literals_are_scanned_out_and_the_rest_kept() {
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 42;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = \0i;")
        );
        assert_eq!(
            key("select 'it''s', $x$a'b$x$, 1.5 /* 'no */ -- '\nfrom t").as_deref(),
            Some("select \0s, \0s, \0d /* 'no */ -- '\nfrom t")
        );
        assert_eq!(
            key("select * from a1 where x = $1 and y = 2").as_deref(),
            Some("select * from a1 where x = $1 and y = \0i")
        );
        // Long integers and float's precision stay verbatim.
        assert_eq!(
            key("select 1234567890, 1::float(53)").as_deref(),
            Some("select 1234567890, \0i::float(53)")
        );
    }

    #[test]
    fn whatever_is_unsure_or_unshaped_has_no_shape() {
        for sql in [
            "select E'a\\'b'",
            "select N'x'",
            "select B'101'",
            "select X'1f'",
            "select U&'\\0041'",
            "select U&\"a\" from t where x = 1",
            "select 1e5",
            "select 0x1f",
            "select 1_000",
            "select 1.",
            "select .5",
            "select 1.5.2",
            "select $1abc, 1",
            "select 'open",
            "select 1 /* open",
            "select $a$ open",
            "select 1; delete from t",
            "SET search_path = 'x'",
            "explain analyze select 1",
            "select set_config('pgtrail.user', 'x', true)",
            "select \"set_config\"('pgtrail.user', 'x', true)",
            "\"select\" 1",
            "(select 1)",
            "select * from t",
            "select 1\0",
            // A backslash reads differently with standard_conforming_strings off.
            "select 'a\\'' ; delete from t where 1 = 1 -- '",
            "select 'a\\b' where 1 = 1",
            "select 1 -- \\",
        ] {
            assert_eq!(key(sql), None, "{sql:?}");
        }
    }
}
