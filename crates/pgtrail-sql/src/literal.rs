//! String literals as the scanner hands them over (`'…'`, `E'…'`, `N'…'`,
//! `$tag$…$tag$`, `U&'…'`), their values, and credentials inside values.

/// How a string literal was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// `'…'` (or `N'…'`), quotes doubled.
    Standard,
    /// `E'…'`, backslash escapes.
    Escape,
    /// `$tag$…$tag$`: the tag including both dollars.
    Dollar(String),
    /// `U&'…'` and anything else: not decoded.
    Other,
}

/// A string literal token's quoting and value; `None` for values this
/// module does not decode (they are then replaced whole when in doubt).
pub(crate) fn decode(token: &str) -> (Quoting, Option<String>) {
    // A plain literal escapes with backslashes when the thread reads in
    // `standard_conforming_strings = off` (see `strings`).
    let escapes = crate::strings::current() == crate::strings::StandardStrings::Off;
    let lower = token.get(..2).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("e'") => (Quoting::Escape, decode_quoted(&token[1..], true)),
        Some("n'") => (Quoting::Standard, decode_quoted(&token[1..], escapes)),
        Some("u&") => (Quoting::Other, None),
        _ if token.starts_with('\'') => (Quoting::Standard, decode_quoted(token, escapes)),
        _ if token.starts_with('$') => {
            let Some(end) = token[1..].find('$') else {
                return (Quoting::Other, None);
            };
            let tag = &token[..end + 2];
            match token
                .strip_prefix(tag)
                .and_then(|rest| rest.strip_suffix(tag))
            {
                Some(body) if token.len() >= 2 * tag.len() => {
                    (Quoting::Dollar(tag.to_string()), Some(body.to_string()))
                }
                _ => (Quoting::Other, None),
            }
        }
        _ => (Quoting::Other, None),
    }
}

/// The literal for `value`, written the way the original was where that is
/// safe (a dollar quote keeps its tag), else as a standard `'…'` literal
/// (`E'…'` for a value with a backslash read in `standard_conforming_strings
/// = off`, so the literal reads the same whatever the setting).
pub(crate) fn encode(quoting: &Quoting, value: &str) -> String {
    match quoting {
        Quoting::Dollar(tag) if !value.contains(tag.as_str()) => format!("{tag}{value}{tag}"),
        _ if value.contains('\\')
            && crate::strings::current() == crate::strings::StandardStrings::Off =>
        {
            format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
        }
        _ => format!("'{}'", value.replace('\'', "''")),
    }
}

/// Decodes `'…'` segments (adjacent segments separated by whitespace with a
/// newline are one literal, as in the scanner).
fn decode_quoted(text: &str, escapes: bool) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    if chars.next() != Some('\'') {
        return None;
    }
    loop {
        let c = chars.next()?;
        match c {
            '\'' if chars.peek() == Some(&'\'') => {
                chars.next();
                out.push('\'');
            }
            '\'' => {
                // End of a segment: another one may follow after a newline.
                let rest: String = chars.collect();
                let trimmed = rest.trim_start();
                if trimmed.is_empty() {
                    return Some(out);
                }
                let gap = &rest[..rest.len() - trimmed.len()];
                if !gap.contains('\n') || !trimmed.starts_with('\'') {
                    return None;
                }
                let next = decode_quoted(trimmed, escapes)?;
                out.push_str(&next);
                return Some(out);
            }
            '\\' if escapes => {
                let e = chars.next()?;
                match e {
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'x' => {
                        let mut digits = String::new();
                        while digits.len() < 2 && chars.peek().is_some_and(char::is_ascii_hexdigit)
                        {
                            digits.push(chars.next()?);
                        }
                        out.push(char::from(u8::from_str_radix(&digits, 16).ok()?));
                    }
                    'u' | 'U' => {
                        let n = if e == 'u' { 4 } else { 8 };
                        let digits: String = (0..n).filter_map(|_| chars.next()).collect();
                        out.push(char::from_u32(u32::from_str_radix(&digits, 16).ok()?)?);
                    }
                    '0'..='7' => {
                        let mut digits = String::from(e);
                        while digits.len() < 3
                            && chars.peek().is_some_and(|c| ('0'..='7').contains(c))
                        {
                            digits.push(chars.next()?);
                        }
                        out.push(char::from(u8::from_str_radix(&digits, 8).ok()?));
                    }
                    other => out.push(other),
                }
            }
            other => out.push(other),
        }
    }
}

/// Option and setting names whose values are secrets.
pub(crate) fn is_secret_name(name: &str) -> bool {
    // Called for every identifier of every statement: no allocation.
    let name = name.trim_matches('"');
    name.len() >= 3
        && (name.eq_ignore_ascii_case("pwd")
            || [
                "password",
                "passwd",
                "secret",
                "token",
                "credential",
                "api_key",
                "apikey",
                "private_key",
            ]
            .iter()
            .any(|word| contains_ignore_case(name, word)))
}

/// Whether `haystack` contains `needle` (lower case ASCII), ignoring ASCII case.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Whether a value may hold a credential [`redact_credentials`] looks for,
/// or a statement whose secrets a nested redaction would find.
pub(crate) fn mentions_secret(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("://")
        || lower.contains("pwd")
        || [
            "passw",
            "secret",
            "token",
            "credential",
            "api_key",
            "apikey",
            "private_key",
        ]
        .iter()
        .any(|word| lower.contains(word))
}

/// `text` with the credentials of connection strings replaced: the value of
/// `password=` (and `pwd=`) pairs, quoted or not, and the password of a
/// URI's user information (`scheme://user:secret@host`). `None` when
/// nothing was found.
pub(crate) fn redact_credentials(text: &str, marker: &str) -> Option<String> {
    let mut spans = key_value_spans(text, marker);
    spans.extend(uri_password_spans(text));
    if spans.is_empty() {
        return None;
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(marker);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Byte spans of the values of `password=` / `pwd=` pairs.
/// Values already replaced by `marker` (by a redaction of the literals
/// inside) are left alone.
fn key_value_spans(text: &str, marker: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    for key in ["password", "pwd"] {
        let mut from = 0;
        while let Some(found) = lower[from..].find(key) {
            let start = from + found;
            from = start + key.len();
            let boundary = start == 0
                || matches!(
                    bytes[start - 1],
                    b' ' | b'\t' | b'\n' | b'\r' | b'?' | b'&' | b';' | b'\'' | b'"' | b'(' | b','
                );
            if !boundary {
                continue;
            }
            let mut i = from;
            while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes.get(i) != Some(&b'=') {
                continue;
            }
            i += 1;
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
                i += 1;
            }
            let in_uri_query = start > 0 && matches!(bytes[start - 1], b'?' | b'&');
            let value_start = i;
            if text[i..].starts_with(marker) {
                continue;
            }
            if bytes.get(i) == Some(&b'\'') {
                // libpq quoting: '…' with \' and \\ escapes.
                i += 1;
                while i < bytes.len() && bytes[i] != b'\'' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(bytes.len());
            } else {
                while i < bytes.len()
                    && !bytes[i].is_ascii_whitespace()
                    && !(in_uri_query && matches!(bytes[i], b'&' | b'#'))
                {
                    i += 1;
                }
            }
            if i > value_start {
                spans.push((value_start, i));
            }
        }
    }
    spans
}

/// Byte spans of the passwords in `scheme://user:password@host` URIs.
fn uri_password_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let authority_start = from + found + 3;
        from = authority_start;
        let authority_end = text[authority_start..]
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '\'')
            .map_or(text.len(), |n| authority_start + n);
        let authority = &text[authority_start..authority_end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        if let Some(colon) = authority[..at].find(':') {
            spans.push((authority_start + colon + 1, authority_start + at));
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_decode_in_every_quoting() {
        assert_eq!(decode("'it''s'").1.as_deref(), Some("it's"));
        assert_eq!(
            decode("E'a\\'b\\n\\x41\\101\\u00e9'").1.as_deref(),
            Some("a'b\nAAé")
        );
        assert_eq!(decode("$x$a'b$x$").1.as_deref(), Some("a'b"));
        assert_eq!(decode("$$ $$").1.as_deref(), Some(" "));
        assert_eq!(decode("'a'\n  'b'").1.as_deref(), Some("ab"));
        assert_eq!(decode("U&'\\0041'").1, None);
    }

    #[test]
    fn credentials_are_found_in_conninfo_and_uris() {
        let m = "<redacted>";
        assert_eq!(
            redact_credentials("host=h password=s3cret user=u", m).as_deref(),
            Some("host=h password=<redacted> user=u")
        );
        assert_eq!(
            redact_credentials("host=h PASSWORD = 'a b\\' c' dbname=x", m).as_deref(),
            Some("host=h PASSWORD = <redacted> dbname=x")
        );
        assert_eq!(
            redact_credentials("postgres://u:s3cret@h:5432/db?sslmode=require", m).as_deref(),
            Some("postgres://u:<redacted>@h:5432/db?sslmode=require")
        );
        assert_eq!(
            redact_credentials(
                "postgresql://h/db?user=u&password=s3cret&sslmode=require",
                m
            )
            .as_deref(),
            Some("postgresql://h/db?user=u&password=<redacted>&sslmode=require")
        );
        assert_eq!(redact_credentials("postgres://u@h/db host=x", m), None);
        assert_eq!(redact_credentials("password_hint=x passwords", m), None);
    }
}
