//! Where a store is, in a form safe to print and log: its URL or libpq
//! key=value string with any password replaced by `***`.
//!
//! Kept apart from [`crate::open`] so that the backends, which name their
//! location in errors, and the dispatch that opens them do not depend on
//! each other.

/// The URL with any password replaced by `***`, safe to print and log.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_pairs(url);
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let mut redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    };
    // libpq also accepts password=… as a query parameter.
    if let Some(start) = redacted.find("password=") {
        let value_start = start + "password=".len();
        let value_end = redacted[value_start..]
            .find('&')
            .map_or(redacted.len(), |i| value_start + i);
        redacted.replace_range(value_start..value_end, "***");
    }
    redacted
}

/// `password=…` of a libpq key=value string (quoted or not) as `***`.
fn redact_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("password") {
        let (before, from) = rest.split_at(at + "password".len());
        out.push_str(before);
        let after_key = from.trim_start();
        let Some(value) = after_key.strip_prefix('=') else {
            rest = from;
            continue;
        };
        let value = value.trim_start();
        out.push_str("=***");
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            1 + end
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        rest = &value[end.min(value.len())..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn key_value_passwords_never_survive() {
        assert_eq!(
            redact_url("host=h password=s3cret dbname=d"),
            "host=h password=*** dbname=d"
        );
        assert_eq!(
            redact_url("host=h password = 'it\\'s secret' user=u"),
            "host=h password=*** user=u"
        );
        assert_eq!(redact_url("host=h dbname=d"), "host=h dbname=d");
    }

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=s3cret&sslmode=disable"),
            "postgres://u@h/db?password=***&sslmode=disable"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite:x.db"), "sqlite:x.db");
    }
}
