//! Connection strings as libpq reads them: a URL
//! (`postgres://user@host:port/db?sslmode=verify-full`) or key=value pairs
//! (`host=db dbname=shop sslmode=require`), then the `PG*` environment for
//! what the string leaves out. A value in the string wins over the
//! environment, as in libpq.

use std::collections::BTreeMap;

use crate::ConnectError;

/// Keys pgtrail understands, with the environment variable libpq reads for each.
const KEYS: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("port", Some("PGPORT")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("dbname", Some("PGDATABASE")),
    ("passfile", Some("PGPASSFILE")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("application_name", Some("PGAPPNAME")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("fallback_application_name", None),
    ("options", None),
];

/// libpq keys pgtrail does not implement: named in the error, never ignored,
/// since each changes how a connection is secured or routed.
const UNSUPPORTED: &[&str] = &[
    "hostaddr",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslnegotiation",
    "gssencmode",
    "krbsrvname",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "channel_binding",
    "requirepeer",
];

/// The parameters of one connection string, after the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Params(BTreeMap<&'static str, String>);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in &self.0 {
            let shown = if *key == "password" { "***" } else { value };
            map.entry(key, &shown);
        }
        map.finish()
    }
}

impl Params {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Parses `conninfo`, then fills what it leaves out from `env`.
    pub(crate) fn parse(
        conninfo: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectError> {
        let text = conninfo.trim();
        let pairs = if let Some(rest) = text
            .strip_prefix("postgresql://")
            .or_else(|| text.strip_prefix("postgres://"))
        {
            parse_url(rest)?
        } else if text.contains("://") {
            return Err(invalid(
                "a connection URL starts with postgres:// or postgresql://",
            ));
        } else {
            parse_pairs(text)?
        };
        let mut params = Params::default();
        for (key, value) in pairs {
            let key = known_key(&key)?;
            params.0.insert(key, value);
        }
        for (key, var) in KEYS {
            if let (None, Some(var)) = (params.get(key), var) {
                if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                    params.0.insert(key, value);
                }
            }
        }
        Ok(params)
    }
}

fn known_key(key: &str) -> Result<&'static str, ConnectError> {
    if let Some((known, _)) = KEYS.iter().find(|(k, _)| *k == key) {
        return Ok(known);
    }
    if UNSUPPORTED.contains(&key) {
        return Err(invalid(format!(
            "connection parameter '{key}' is not supported by pgtrail"
        )));
    }
    Err(invalid(format!("unknown connection parameter '{key}'")))
}

fn invalid(reason: impl Into<String>) -> ConnectError {
    ConnectError::Invalid {
        reason: reason.into(),
    }
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`, after the scheme.
fn parse_url(rest: &str) -> Result<Vec<(String, String)>, ConnectError> {
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut pairs = Vec::new();
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_string(), decode(user)?));
            }
            if let Some(password) = password {
                pairs.push(("password".to_string(), decode(password)?));
            }
            hostspec
        }
        None => authority,
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for one in hostspec.split(',') {
            let (host, port) = split_host_port(one)?;
            hosts.push(decode(host)?);
            ports.push(port.to_string());
        }
        pairs.push(("host".to_string(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        pairs.push(("dbname".to_string(), decode(path)?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("URL parameter '{pair}' has no '='")))?;
        pairs.push((decode(key)?, decode(value)?));
    }
    Ok(pairs)
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(spec: &str) -> Result<(&str, &str), ConnectError> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(format!("unclosed '[' in host '{spec}'")))?;
        let port = match after {
            "" => "",
            _ => after
                .strip_prefix(':')
                .ok_or_else(|| invalid(format!("unexpected text after ']' in '{spec}'")))?,
        };
        return Ok((host, port));
    }
    Ok(spec.split_once(':').unwrap_or((spec, "")))
}

/// Percent-decoding of one URL component.
fn decode(text: &str) -> Result<String, ConnectError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("invalid percent-encoding in the URL"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("the URL decodes to invalid UTF-8"))
}

/// `key=value key2='quoted \' value'`.
fn parse_pairs(text: &str) -> Result<Vec<(String, String)>, ConnectError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(format!(
                "missing '=' after '{key}' in the connection string (a URL starts with postgres://)"
            )));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(invalid(format!("unterminated quoted value of '{key}'"))),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Params {
        Params::parse(text, &no_env).expect(text)
    }

    #[test]
    fn urls() {
        let p = parse(
            "postgres://al%40ce:p%3Aw@db.example:5433/shop?sslmode=verify-full&application_name=x",
        );
        assert_eq!(p.get("user"), Some("al@ce"));
        assert_eq!(p.get("password"), Some("p:w"));
        assert_eq!(p.get("host"), Some("db.example"));
        assert_eq!(p.get("port"), Some("5433"));
        assert_eq!(p.get("dbname"), Some("shop"));
        assert_eq!(p.get("sslmode"), Some("verify-full"));
        assert!(!format!("{p:?}").contains("p:w"), "no password in Debug");

        let p = parse("postgresql://[::1]:6000,h2/db");
        assert_eq!(p.get("host"), Some("::1,h2"));
        assert_eq!(p.get("port"), Some("6000,"));

        let p = parse("postgres:///shop?host=/var/run/postgresql");
        assert_eq!(p.get("host"), Some("/var/run/postgresql"));
        assert_eq!(p.get("dbname"), Some("shop"));
        assert_eq!(parse("postgres://").get("host"), None);
    }

    #[test]
    fn key_value_pairs() {
        let p = parse(r"host=h port = 1 dbname='my db' password='it\'s' user=a\ b");
        assert_eq!(p.get("host"), Some("h"));
        assert_eq!(p.get("port"), Some("1"));
        assert_eq!(p.get("dbname"), Some("my db"));
        assert_eq!(p.get("password"), Some("it's"));
        assert_eq!(p.get("user"), Some("a b"));
    }

    #[test]
    fn the_string_wins_over_the_environment() {
        let env = |var: &str| match var {
            "PGUSER" => Some("env_user".to_string()),
            "PGPASSWORD" => Some("env_pw".to_string()),
            "PGSSLMODE" => Some("require".to_string()),
            "PGOPTIONS" => Some("-c x=1".to_string()),
            _ => None,
        };
        let p = Params::parse("postgres://url_user@h/db?sslmode=disable", &env).expect("valid");
        assert_eq!(p.get("user"), Some("url_user"));
        assert_eq!(p.get("password"), Some("env_pw"));
        assert_eq!(p.get("sslmode"), Some("disable"));
        assert_eq!(
            p.get("options"),
            None,
            "pgtrail fixes its own session options"
        );
    }

    #[test]
    fn unknown_and_unsupported_keys_are_errors() {
        for (text, expected) in [
            (
                "postgres://h/db?sslmod=require",
                "unknown connection parameter 'sslmod'",
            ),
            ("host=h sslcert=c.pem", "'sslcert' is not supported"),
            ("mysql://h/db", "postgres://"),
            ("host", "missing '='"),
            ("postgres://h/db?x", "has no '='"),
            ("postgres://h/%zz", "percent-encoding"),
            ("dbname='open", "unterminated"),
        ] {
            let error = Params::parse(text, &no_env).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
