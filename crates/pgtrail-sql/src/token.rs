//! Scanner tokens with their text: what redaction splices at, and what
//! classification reads the details of a statement from (the parser's
//! summary names its kind, the tokens say e.g. COPY's direction).

use pg_query::protobuf::{ScanToken, Token};

use crate::literal;

/// The tokens of `sql`, or `None` when it cannot be scanned.
pub(crate) fn scan(sql: &str) -> Option<Vec<Tok<'_>>> {
    let tokens = scan_tokens(sql).ok()?;
    Some(tokens.iter().filter_map(|t| Tok::new(sql, t)).collect())
}

/// `pg_query::scan_tokens` in the thread's `standard_conforming_strings`
/// mode (see `strings`), except for text without tokens (empty or
/// blank), where libpg_query returns a null token array that pg_query 18.1
/// turns into a slice: undefined behaviour, and an abort of the whole
/// process in debug builds (a client sending an empty Query could stop the
/// proxy). Nothing to scan gives no tokens.
pub(crate) fn scan_tokens(sql: &str) -> pg_query::Result<Vec<ScanToken>> {
    if sql.chars().all(char::is_whitespace) {
        return Ok(Vec::new());
    }
    crate::strings::scan_tokens(sql)
}

/// One scanned token with its text.
pub(crate) struct Tok<'a> {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) token: Token,
    pub(crate) keyword: bool,
    pub(crate) text: &'a str,
}

impl<'a> Tok<'a> {
    pub(crate) fn new(sql: &'a str, token: &ScanToken) -> Option<Self> {
        let start = usize::try_from(token.start).ok()?;
        let end = usize::try_from(token.end).ok()?;
        Some(Tok {
            start,
            end,
            token: Token::try_from(token.token).ok()?,
            keyword: token.keyword_kind != 0,
            text: sql.get(start..end)?,
        })
    }
    pub(crate) fn is_string(&self) -> bool {
        matches!(self.token, Token::Sconst | Token::Usconst)
    }
    pub(crate) fn is_constant(&self) -> bool {
        matches!(
            self.token,
            Token::Sconst
                | Token::Usconst
                | Token::Iconst
                | Token::Fconst
                | Token::Bconst
                | Token::Xconst
        )
    }
    pub(crate) fn is_comment(&self) -> bool {
        matches!(self.token, Token::SqlComment | Token::CComment)
    }
    /// An identifier or keyword naming a secret (`password`, `"api_token"`).
    pub(crate) fn names_secret(&self) -> bool {
        (self.token == Token::Ident || self.keyword) && literal::is_secret_name(self.text)
    }
}

impl Tok<'_> {
    /// Whether this is the keyword `word` (given in upper case).
    pub(crate) fn is_kw(&self, word: &str) -> bool {
        self.keyword && self.text.eq_ignore_ascii_case(word)
    }
    /// Whether this is the punctuation or operator `text`.
    pub(crate) fn is(&self, text: &str) -> bool {
        self.text == text
    }
    /// The name an identifier or keyword stands for: folded to lower case
    /// unless double-quoted (then unquoted). `None` for other tokens and
    /// for `U&"…"` identifiers (not decoded).
    pub(crate) fn name(&self) -> Option<String> {
        if self.keyword {
            return Some(self.text.to_ascii_lowercase());
        }
        if self.token != Token::Ident {
            return None;
        }
        match self.text.strip_prefix('"') {
            Some(quoted) => Some(quoted.strip_suffix('"')?.replace("\"\"", "\"")),
            None if self.text.starts_with(['u', 'U']) && self.text.get(1..2) == Some("&") => None,
            None => Some(self.text.to_ascii_lowercase()),
        }
    }
    /// The value of a string literal token (`None` when not decoded).
    pub(crate) fn string_value(&self) -> Option<String> {
        if !self.is_string() {
            return None;
        }
        literal::decode(self.text).1
    }
}

#[cfg(test)]
mod tests {
    /// A client's empty or blank Query: pg_query 18.1 would make a slice of
    /// libpg_query's null token array (an abort in debug builds).
    #[test]
    fn text_without_tokens_scans_to_nothing() {
        for sql in ["", " ", "\n\t  "] {
            assert_eq!(super::scan(sql).map(|t| t.len()), Some(0), "{sql:?}");
            let _ = crate::redact_secrets(sql);
            let _ = crate::redact_constants(sql);
            let analyzer = crate::Analyzer::new(
                2,
                &pgtrail_core::config::IdentityConfig::default(),
                crate::TextPolicy::Secrets,
            );
            let _ = analyzer.analyze_uncached(sql);
        }
    }
}
