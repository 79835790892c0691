//! `standard_conforming_strings`: how the server reads a plain `'…'`
//! literal. On (the default since PostgreSQL 9.1), a backslash in it is a
//! backslash; off, it escapes the next character, as in `E'…'`, so
//! `select '\'' ; delete from t; -- '` is one SELECT of a string when on
//! and a SELECT then a DELETE when off. Any role may turn it off for its
//! session, so a text is read in the session's mode, and a text that
//! could read differently is read both ways (see `cache`).
//!
//! The mode is per thread, as the setting is per backend in Postgres:
//! [`under`] sets it for a closure, and every call into pg_query in this
//! crate goes through this module ([`scan_tokens`], [`split`], [`summary`],
//! [`parse`]) and reads it. pg_query's parse functions take the mode as an
//! option. Its scanner takes none: it reads libpg_query's thread-local
//! `standard_conforming_strings`, which only a parse sets (from its
//! options) and, when the parse fails, leaves as the options said. That is
//! the one way to set it without `unsafe` code (the workspace forbids it),
//! so [`scan_tokens`] in `off` mode first makes a parse in `off` mode fail,
//! and the next scan in `on` mode first runs an empty parse in `on` mode.
//! The unit tests below fail if a libpg_query release changes this.

use std::cell::Cell;
use std::ops::Range;

use pg_query::protobuf::ScanToken;
use pg_query::ParserOptions;
use serde::Serialize;

/// The value of `standard_conforming_strings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StandardStrings {
    /// `on`: a backslash in `'…'` is a backslash.
    #[default]
    On,
    /// `off`: a backslash in `'…'` escapes the next character.
    Off,
}

impl StandardStrings {
    /// The mode a setting's value names (`on`/`off` as the server reports
    /// it; any spelling of a boolean Postgres accepts), `None` otherwise.
    pub fn from_setting(value: &str) -> Option<StandardStrings> {
        match value.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" | "t" | "y" => Some(StandardStrings::On),
            "off" | "false" | "no" | "0" | "f" | "n" => Some(StandardStrings::Off),
            _ => None,
        }
    }

    /// The other mode.
    pub fn other(self) -> StandardStrings {
        match self {
            StandardStrings::On => StandardStrings::Off,
            StandardStrings::Off => StandardStrings::On,
        }
    }
}

/// Whether `sql` can read differently in the two modes. Only a backslash
/// inside a plain `'…'` (or `N'…'`) literal is read differently (`E'…'`,
/// dollar quotes, identifiers and comments read the same in both; a
/// `U&'…'` literal is an error when off, so such a text runs nothing):
/// a text without a backslash reads the same.
pub fn mode_matters(sql: &str) -> bool {
    sql.as_bytes().contains(&b'\\')
}

/// The byte offsets of the backslashes in `sql` that may not be
/// backslashes at all. In the client encodings SJIS, BIG5, GBK, GB18030
/// and JOHAB a character's second byte may be 0x5C; the server converts
/// the text to its own encoding before reading it, so that byte is part of
/// a character there, while the proxy, which gets the text decoded as
/// UTF-8 (what is not UTF-8 replaced), sees a backslash after a non-ASCII
/// character (U+FFFD, or a character the two bytes before happen to make
/// in UTF-8). In an `E'…'` literal that backslash would escape the quote
/// that ends the literal for the server. The session's encoding cannot
/// settle it: like `standard_conforming_strings`, a SET earlier in the
/// same pipeline changes it before the proxy hears (see `cache`).
pub fn multibyte_suspects(sql: &str) -> Vec<usize> {
    let mut suspects = Vec::new();
    let mut previous_ascii = true;
    for (at, c) in sql.char_indices() {
        if c == '\\' && !previous_ascii {
            suspects.push(at);
        }
        previous_ascii = c.is_ascii();
    }
    suspects
}

thread_local! {
    static MODE: Cell<StandardStrings> = const { Cell::new(StandardStrings::On) };
}

/// The mode this thread reads text in.
pub(crate) fn current() -> StandardStrings {
    MODE.with(Cell::get)
}

/// Runs `f` with this thread reading text in `mode` (restored afterwards,
/// even if `f` panics).
pub(crate) fn under<T>(mode: StandardStrings, f: impl FnOnce() -> T) -> T {
    struct Restore(StandardStrings);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MODE.with(|m| m.replace(mode)));
    f()
}

fn options() -> ParserOptions {
    match current() {
        StandardStrings::On => ParserOptions::DEFAULT,
        StandardStrings::Off => ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS,
    }
}

thread_local! {
    /// Whether libpg_query's global may be `off` (it is `on` at start).
    static SCANNER_OFF: Cell<bool> = const { Cell::new(false) };
}

/// Sets libpg_query's scanner global for this thread to `mode`, through a
/// parse (see the module documentation).
fn set_scanner_mode(mode: StandardStrings) {
    match mode {
        StandardStrings::Off => {
            // An unterminated quote: an error inside the parser, after it
            // set the global from the options.
            let _ = pg_query::parse("'", ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS);
            SCANNER_OFF.with(|s| s.set(true));
        }
        StandardStrings::On if SCANNER_OFF.with(Cell::get) => {
            let _ = pg_query::parse("", ParserOptions::DEFAULT);
            SCANNER_OFF.with(|s| s.set(false));
        }
        StandardStrings::On => {}
    }
}

/// `pg_query::scan_tokens` in this thread's mode.
pub(crate) fn scan_tokens(sql: &str) -> pg_query::Result<Vec<ScanToken>> {
    set_scanner_mode(current());
    pg_query::scan_tokens(sql)
}

/// `pg_query::summary` in this thread's mode.
pub(crate) fn summary(sql: &str) -> pg_query::Result<pg_query::SummaryResult> {
    after_parse(pg_query::summary(sql, options(), -1))
}

/// `pg_query::parse` in this thread's mode.
pub(crate) fn parse(sql: &str) -> pg_query::Result<pg_query::ParseResult> {
    after_parse(pg_query::parse(sql, options()))
}

/// The byte ranges of `sql`'s statements, as the parser splits them in
/// this thread's mode (`pg_query::split_with_parser` knows only `on`).
pub(crate) fn split(sql: &str) -> pg_query::Result<Vec<Range<usize>>> {
    let offset = |p: &str| p.as_ptr() as usize - sql.as_ptr() as usize;
    if current() == StandardStrings::On {
        let pieces = pg_query::split_with_parser(sql)?;
        return Ok(pieces
            .iter()
            .map(|p| offset(p)..offset(p) + p.len())
            .collect());
    }
    let tree = parse(sql)?;
    let mut pieces = Vec::with_capacity(tree.protobuf.stmts.len());
    for stmt in &tree.protobuf.stmts {
        let start = usize::try_from(stmt.stmt_location)
            .unwrap_or(0)
            .min(sql.len());
        // A length of 0 is "to the end of the text", as in the parser's split.
        let end = match usize::try_from(stmt.stmt_len) {
            Ok(0) | Err(_) => sql.len(),
            Ok(len) => (start + len).min(sql.len()),
        };
        pieces.push(start..end);
    }
    Ok(pieces)
}

/// Notes that a parse in `off` mode may have left libpg_query's global
/// `off` (it does when the parse fails).
fn after_parse<T>(result: T) -> T {
    if current() == StandardStrings::Off {
        SCANNER_OFF.with(|s| s.set(true));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = r"select '\'' ; delete from t; -- '";

    fn statements(mode: StandardStrings, sql: &str) -> Vec<String> {
        under(mode, || {
            split(sql)
                .unwrap_or_default()
                .into_iter()
                .map(|r| sql[r].trim().to_string())
                .collect()
        })
    }

    #[test]
    fn the_scanner_and_the_split_follow_the_mode() {
        let tokens = |mode| under(mode, || scan_tokens(HOSTILE).map(|t| t.len()).ok());
        // On: `select` and one string to the end; off: `select '\''`,
        // `;`, `delete from t`, `;` and the comment.
        assert_eq!(tokens(StandardStrings::On), Some(2));
        assert_eq!(tokens(StandardStrings::Off), Some(8));
        assert_eq!(statements(StandardStrings::On, HOSTILE), vec![HOSTILE]);
        assert_eq!(
            statements(StandardStrings::Off, HOSTILE),
            vec![r"select '\''", "delete from t"]
        );
        // The thread is back in its own mode afterwards.
        assert_eq!(current(), StandardStrings::On);
    }

    /// libpg_query leaves its global `off` after a failed parse in `off`
    /// mode: the next scan in `on` mode must not read in `off`. Also the
    /// test that libpg_query still works as the module relies on.
    #[test]
    fn a_failed_parse_in_off_mode_leaves_the_scanner_on() {
        // What this module relies on, straight from pg_query.
        let _ = pg_query::parse("'", ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS);
        assert_eq!(
            pg_query::scan_tokens(HOSTILE).map(|t| t.len()).ok(),
            Some(8)
        );
        let _ = pg_query::parse("", ParserOptions::DEFAULT);
        assert_eq!(
            pg_query::scan_tokens(HOSTILE).map(|t| t.len()).ok(),
            Some(2)
        );
        // And this module's own reset after a failed parse in `off` mode.
        under(StandardStrings::Off, || {
            assert!(parse("select '\\").is_err())
        });
        let tokens = scan_tokens(r"select 'a\' , 'b'").unwrap_or_default();
        assert_eq!(tokens.len(), 4, "{tokens:?}");
        assert_eq!(statements(StandardStrings::On, HOSTILE), vec![HOSTILE]);
    }

    #[test]
    fn settings_name_the_mode() {
        assert_eq!(
            StandardStrings::from_setting("off"),
            Some(StandardStrings::Off)
        );
        assert_eq!(
            StandardStrings::from_setting(" ON"),
            Some(StandardStrings::On)
        );
        assert_eq!(StandardStrings::from_setting("maybe"), None);
        assert!(mode_matters(HOSTILE));
        assert!(!mode_matters("select 'a''b'"));
    }
}
