//! Application identity from a sqlcommenter comment.
//!
//! ORMs and drivers (Django, Rails, Spring, Knex, OpenTelemetry, …) can tag
//! each statement with a comment in the sqlcommenter format:
//!
//! ```sql
//! update accounts set plan = 'pro' where id = 7 /*request_id='42',user='alice%40example.com'*/
//! ```
//!
//! Pairs are `key='value'`, comma-separated, keys and values URL-encoded,
//! a quote inside a value escaped as `\'`. The format puts the comment at the
//! end of the statement; some tools put it first, so a leading comment is
//! read when there is no trailing one. A comment that is not entirely in
//! this format is an ordinary comment and is ignored: a parse never guesses.
//!
//! What the comment says is applied by [`apply`]: it names the application
//! user only when no session setting did (a setting is the application's
//! explicit word for the whole transaction), and its pairs join `context`
//! without overwriting keys the context setting already has.

use serde_json::Value;

use crate::event::Channel;
use crate::Event;

/// Pairs read from one comment, at most; a longer comment is not ours.
const MAX_PAIRS: usize = 64;
/// Bytes of comment looked at, at most: a statement may be huge, the
/// comment never is.
const MAX_COMMENT: usize = 16 * 1024;

/// Keys naming the application user when the configuration does not say.
pub const DEFAULT_USER_KEYS: &[&str] = &["user", "app_user"];

/// [`DEFAULT_USER_KEYS`], owned, as configuration holds them.
pub fn default_user_keys() -> Vec<String> {
    DEFAULT_USER_KEYS
        .iter()
        .map(|key| key.to_string())
        .collect()
}

/// The `key='value'` pairs of the statement's sqlcommenter comment, decoded,
/// in the order written; `None` when it has none.
pub fn parse(sql: &str) -> Option<Vec<(String, String)>> {
    trailing_comment(sql)
        .and_then(pairs)
        .or_else(|| leading_comment(sql).and_then(pairs))
}

/// Fills `event.app_user` (if unset) and `event.context` (keys it lacks)
/// from the sqlcommenter comment of `event.sql`. `user_keys` are the keys
/// naming the user, first present wins. Returns whether anything changed.
pub fn apply(event: &mut Event, user_keys: &[impl AsRef<str>]) -> bool {
    match event.sql.as_deref().and_then(parse) {
        Some(pairs) => apply_pairs(event, &pairs, user_keys),
        None => false,
    }
}

/// [`apply`] for pairs already parsed (by [`parse`]) from a statement the
/// event does not carry.
pub fn apply_pairs(
    event: &mut Event,
    pairs: &[(String, String)],
    user_keys: &[impl AsRef<str>],
) -> bool {
    if pairs.is_empty() {
        return false;
    }
    let mut changed = false;
    if event.app_user.is_none() {
        let user = user_keys.iter().find_map(|wanted| {
            pairs
                .iter()
                .find(|(key, value)| key == wanted.as_ref() && !value.is_empty())
        });
        if let Some((_, user)) = user {
            event.app_user = Some(user.clone());
            event.claim("app_user", Channel::Comment);
            changed = true;
        }
    }
    let context = event.context.get_or_insert_with(Default::default);
    let mut added = false;
    for (key, value) in pairs {
        if !context.contains_key(key) {
            context.insert(key.clone(), Value::String(value.clone()));
            added = true;
        }
    }
    if context.is_empty() {
        event.context = None;
    }
    if added {
        event.claim("context", Channel::Comment);
    }
    changed || added
}

/// The body of the comment that ends the statement (before any `;`).
fn trailing_comment(sql: &str) -> Option<&str> {
    let end = sql.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
    let body_end = end.strip_suffix("*/")?;
    // The last opener: a value may not contain `/*` unencoded anyway.
    let start = body_end.rfind("/*")?;
    let body = &body_end[start + 2..];
    (body.len() <= MAX_COMMENT).then_some(body)
}

/// The body of the comment that starts the statement.
fn leading_comment(sql: &str) -> Option<&str> {
    let rest = sql.trim_start().strip_prefix("/*")?;
    let end = rest.find("*/")?;
    let body = &rest[..end];
    (body.len() <= MAX_COMMENT).then_some(body)
}

/// The pairs of a comment body, or `None` if any part of it is not
/// `key='value'`.
fn pairs(body: &str) -> Option<Vec<(String, String)>> {
    let mut rest = body.trim();
    if rest.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    loop {
        let eq = rest.find('=')?;
        let key = decode(rest[..eq].trim())?;
        if key.is_empty() || out.len() == MAX_PAIRS {
            return None;
        }
        let (value, after) = quoted(rest[eq + 1..].trim_start())?;
        out.push((key, decode(&value)?));
        rest = after.trim_start();
        if rest.is_empty() {
            return Some(out);
        }
        rest = rest.strip_prefix(',')?.trim_start();
    }
}

/// A `'…'` value with `\'` (and `\\`) unescaped, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('\'')?;
    let mut value = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' => return Some((value, &inner[i + 1..])),
            c => value.push(c),
        }
    }
    None // unterminated
}

/// URL-decodes `text` (`%XX`; sqlcommenter writes spaces as `%20`).
/// `None` if an escape is malformed or the result is not UTF-8.
fn decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_string());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Kind, Source};

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_trailing_comment_decoding_keys_and_values() {
        let sql = "update t set a = 1 where id = 7 \
                   /*action='update%20plan',request_id='r-42',user='alice%40example.com'*/;\n";
        assert_eq!(
            parse(sql),
            Some(owned(&[
                ("action", "update plan"),
                ("request_id", "r-42"),
                ("user", "alice@example.com"),
            ]))
        );
    }

    #[test]
    fn reads_a_leading_comment_when_there_is_no_trailing_one() {
        let sql = "/* user='bob' */ select 1";
        assert_eq!(parse(sql), Some(owned(&[("user", "bob")])));
    }

    #[test]
    fn unescapes_quotes_in_values() {
        assert_eq!(
            parse(r"select 1 /*note='it\'s',path='a\\b'*/"),
            Some(owned(&[("note", "it's"), ("path", r"a\b")]))
        );
    }

    #[test]
    fn ordinary_and_malformed_comments_are_not_read() {
        for sql in [
            "select 1",
            "select 1 /* just a note */",
            "select 1 /**/",
            "select 1 /*user=bob*/",          // unquoted
            "select 1 /*user='bob*/",         // unterminated
            "select 1 /*user='bob' x='y'*/",  // no comma
            "select 1 /*='bob'*/",            // no key
            "select 1 /*user='%zz'*/",        // bad escape
            "select 1 /*user='%ff%fe'*/",     // not UTF-8
            "select '/*user=''x''*/' from t", // inside a literal, not at the end
        ] {
            assert_eq!(parse(sql), None, "{sql}");
        }
    }

    #[test]
    fn hostile_input_is_bounded() {
        let many: Vec<String> = (0..=MAX_PAIRS).map(|i| format!("k{i}='v'")).collect();
        assert_eq!(parse(&format!("select 1 /*{}*/", many.join(","))), None);
        let huge = format!("select 1 /*user='{}'*/", "a".repeat(MAX_COMMENT));
        assert_eq!(parse(&huge), None);
        // Unicode around the escapes never splits a character.
        assert_eq!(parse("select 1 /*u='é%'*/"), None);
        assert_eq!(
            parse("select 1 /*u='é%C3%A9'*/"),
            Some(owned(&[("u", "éé")]))
        );
    }

    fn event_with_sql(sql: &str) -> Event {
        let mut e = Event::new(Source::Trigger, Kind::RowChange);
        e.sql = Some(sql.into());
        e
    }

    #[test]
    fn apply_fills_the_user_and_the_context() {
        let mut e = event_with_sql("delete from t /*request_id='r1',user='carol'*/");
        assert!(apply(&mut e, DEFAULT_USER_KEYS));
        assert_eq!(e.app_user.as_deref(), Some("carol"));
        assert_eq!(
            Value::Object(e.context.clone().expect("a context")),
            json!({"request_id": "r1", "user": "carol"})
        );
    }

    #[test]
    fn apply_never_overrides_the_session_settings() {
        let mut e = event_with_sql("delete from t /*request_id='r1',tenant='x',user='mallory'*/");
        e.app_user = Some("alice".into());
        e.context = json!({"tenant": "acme"}).as_object().cloned();
        assert!(apply(&mut e, DEFAULT_USER_KEYS));
        assert_eq!(e.app_user.as_deref(), Some("alice"));
        assert_eq!(
            Value::Object(e.context.clone().expect("a context")),
            json!({"request_id": "r1", "tenant": "acme", "user": "mallory"})
        );
    }

    #[test]
    fn apply_uses_the_configured_user_keys_in_order() {
        let mut e = event_with_sql("select 1 /*app_user='dave',user='db-pool'*/");
        apply(&mut e, &["app_user", "user"]);
        assert_eq!(e.app_user.as_deref(), Some("dave"));
        let mut e = event_with_sql("select 1 /*request_id='r9'*/");
        apply(&mut e, DEFAULT_USER_KEYS);
        assert_eq!(e.app_user, None);
    }

    #[test]
    fn apply_without_a_comment_changes_nothing() {
        let mut e = event_with_sql("select 1 /* plain */");
        let before = e.clone();
        assert!(!apply(&mut e, DEFAULT_USER_KEYS));
        assert_eq!(e, before);
        let mut e = Event::new(Source::Cdc, Kind::RowChange);
        assert!(!apply(&mut e, DEFAULT_USER_KEYS));
        assert_eq!(e.context, None);
    }
}
