//! `log_line_prefix`: what the server writes before each `stderr` log
//! message, read back into the fields it holds.
//!
//! The prefix is a template (`%m [%p] %q%u@%d `); each escape is a field
//! whose end is found at the literal text that follows it. Escapes with
//! nothing literal after them but the end of the prefix end at the first
//! space. `%q` ends the prefix of lines from processes without a session
//! (the checkpointer, say), so everything after it is optional.

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};

/// Fields a prefix can hold (the escapes pgtrail reads; others are skipped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixFields {
    /// `%m`, `%t` or `%n`.
    pub time: Option<String>,
    /// `%p`.
    pub pid: Option<String>,
    /// `%u`.
    pub user: Option<String>,
    /// `%d`.
    pub database: Option<String>,
    /// `%r` (`host(port)`) or `%h`.
    pub remote: Option<String>,
    /// `%a`.
    pub application: Option<String>,
    /// `%c`.
    pub session: Option<String>,
    /// `%l`.
    pub line: Option<String>,
    /// `%x`.
    pub xid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Field(char),
    /// `%q`: the rest is only on lines of session processes.
    SessionOnly,
}

/// A parsed `log_line_prefix`.
#[derive(Debug, Clone)]
pub struct LinePrefix {
    tokens: Vec<Token>,
}

/// Postgres's default `log_line_prefix` (since 10), and Debian's package's.
pub const DEFAULT: &str = "%m [%p] ";
/// Debian's and Ubuntu's packaged clusters.
pub const DEBIAN: &str = "%m [%p] %q%u@%d ";

impl LinePrefix {
    /// Reads a `log_line_prefix` setting; an escape pgtrail cannot find the
    /// end of (two fields with nothing between) is an error.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            // A padding width (`%-10u`) changes only spaces: skip it.
            let mut next = chars.next();
            while matches!(next, Some('-' | '0'..='9')) {
                next = chars.next();
            }
            match next {
                Some('%') => literal.push('%'),
                Some('q') => {
                    flush(&mut tokens, &mut literal);
                    tokens.push(Token::SessionOnly);
                }
                Some(escape) => {
                    flush(&mut tokens, &mut literal);
                    if matches!(tokens.last(), Some(Token::Field(_))) {
                        return Err(format!(
                            "log_line_prefix {spec:?}: %{escape} follows another escape with nothing between them, so where one ends cannot be told"
                        ));
                    }
                    tokens.push(Token::Field(escape));
                }
                None => literal.push('%'),
            }
        }
        flush(&mut tokens, &mut literal);
        Ok(LinePrefix { tokens })
    }

    /// The prefix's fields and the rest of `line`; `None` when the line
    /// does not start with this prefix.
    pub fn split<'a>(&self, line: &'a str) -> Option<(PrefixFields, &'a str)> {
        let full = self.match_tokens(&self.tokens, line);
        full.or_else(|| {
            let cut = self.tokens.iter().position(|t| *t == Token::SessionOnly)?;
            self.match_tokens(&self.tokens[..cut], line)
        })
    }

    fn match_tokens<'a>(&self, tokens: &[Token], line: &'a str) -> Option<(PrefixFields, &'a str)> {
        let mut fields = PrefixFields::default();
        let mut rest = line;
        let tokens: Vec<&Token> = tokens
            .iter()
            .filter(|t| **t != Token::SessionOnly)
            .collect();
        for (index, token) in tokens.iter().enumerate() {
            match token {
                Token::Literal(text) => rest = rest.strip_prefix(text.as_str())?,
                Token::Field(escape) => {
                    let end = match tokens.get(index + 1) {
                        Some(Token::Literal(next)) => rest.find(next.as_str())?,
                        _ => rest.find(' ').unwrap_or(rest.len()),
                    };
                    let value = &rest[..end];
                    set(&mut fields, *escape, value);
                    rest = &rest[end..];
                }
                Token::SessionOnly => {}
            }
        }
        Some((fields, rest))
    }
}

fn flush(tokens: &mut Vec<Token>, literal: &mut String) {
    if !literal.is_empty() {
        tokens.push(Token::Literal(std::mem::take(literal)));
    }
}

fn set(fields: &mut PrefixFields, escape: char, value: &str) {
    let value = (!value.is_empty() && value != "[unknown]").then(|| value.to_string());
    match escape {
        'm' | 't' | 'n' => fields.time = value,
        'p' => fields.pid = value,
        'u' => fields.user = value,
        'd' => fields.database = value,
        'r' | 'h' => fields.remote = value,
        'a' => fields.application = value,
        'c' => fields.session = value,
        'l' => fields.line = value,
        'x' => fields.xid = value,
        _ => {}
    }
}

/// A time as the server logs it (`%m`: `2026-12-06 18:20:46.038 UTC`,
/// `%t` without milliseconds, `%n` seconds since the epoch). The zone is
/// `log_timezone`'s abbreviation: UTC/GMT or a numeric offset are read as
/// such; another abbreviation (`CET`, `EST`: ambiguous across the world)
/// needs `offset`, the zone's offset from UTC that the operator names.
pub fn parse_log_time(text: &str, offset: Option<FixedOffset>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(epoch) = text.parse::<f64>() {
        let micros = (epoch * 1_000_000.0).round() as i64;
        return DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| format!("time {text:?} is out of range"));
    }
    let (local, zone) = match text.rsplit_once(' ') {
        Some((local, zone)) if !zone.contains(':') || zone.starts_with(['+', '-']) => (local, zone),
        _ => (text, ""),
    };
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f")
        .map_err(|_| format!("time {text:?} is not what log_line_prefix's %m or %t writes"))?;
    let zone_offset = match zone {
        "" | "UTC" | "GMT" | "Z" | "UCT" => FixedOffset::east_opt(0),
        numeric if numeric.starts_with(['+', '-']) => parse_offset(numeric),
        other => match offset {
            Some(offset) => Some(offset),
            None => {
                return Err(format!(
                    "time {text:?} is in zone {other:?}, which an abbreviation cannot name for sure: give its offset (--log-utc-offset +01:00)"
                ))
            }
        },
    }
    .ok_or_else(|| format!("time {text:?} has an offset pgtrail cannot read"))?;
    zone_offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("time {text:?} does not exist in its zone"))
}

/// `+01`, `+0100`, `+01:00`, `-05:30`.
pub fn parse_offset(text: &str) -> Option<FixedOffset> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = text[1..].chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (
            digits[..2].parse::<i32>().ok()?,
            digits[2..].parse::<i32>().ok()?,
        ),
        _ => return None,
    };
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_prefix_reads_time_pid_user_and_database() {
        let prefix = LinePrefix::parse(DEBIAN).expect("prefix");
        let (fields, rest) = prefix
            .split("2026-12-06 18:20:46.038 UTC [31868] alice@shop LOG:  AUDIT: x")
            .expect("matches");
        assert_eq!(fields.time.as_deref(), Some("2026-12-06 18:20:46.038 UTC"));
        assert_eq!(fields.pid.as_deref(), Some("31868"));
        assert_eq!(fields.user.as_deref(), Some("alice"));
        assert_eq!(fields.database.as_deref(), Some("shop"));
        assert_eq!(rest, "LOG:  AUDIT: x");
        // A checkpointer's line stops at %q.
        let (fields, rest) = prefix
            .split("2026-12-06 18:20:46.038 UTC [12] LOG:  checkpoint starting")
            .expect("matches");
        assert_eq!(fields.user, None);
        assert_eq!(rest, "LOG:  checkpoint starting");
        assert!(LinePrefix::parse("%u%d").is_err());
    }

    #[test]
    fn log_times_in_utc_offsets_and_named_zones() {
        let utc = parse_log_time("2026-12-06 18:20:46.038 UTC", None).expect("utc");
        assert_eq!(utc.to_rfc3339(), "2026-12-06T18:20:46.038+00:00");
        let offset = parse_log_time("2026-12-06 19:20:46 +01", None).expect("offset");
        assert_eq!(offset.to_rfc3339(), "2026-12-06T18:20:46+00:00");
        assert!(parse_log_time("2026-12-06 19:20:46 CET", None).is_err());
        let named =
            parse_log_time("2026-12-06 19:20:46 CET", parse_offset("+01:00")).expect("named");
        assert_eq!(named, offset);
        let epoch = parse_log_time("1765045246.038", None).expect("epoch");
        assert_eq!(epoch.timestamp_millis(), 1_765_045_246_038);
    }
}
