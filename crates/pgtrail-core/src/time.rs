//! Time in pgtrail: microsecond precision everywhere (what Postgres keeps),
//! one text form in JSON, and the time arguments users type.

use chrono::{DateTime, Datelike, Duration, SubsecRound, Timelike, Utc};

/// Why a time or duration argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time '{input}': {reason}")]
pub struct TimeError {
    /// What the user typed.
    pub input: String,
    /// What was wrong with it.
    pub reason: &'static str,
}

/// Drops sub-microsecond digits, so a time survives a round trip through Postgres.
pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// The one text form of a timestamp in events: RFC 3339, UTC, six fraction digits.
///
/// Every event is hashed over this text, so it must never change. It is
/// written digit by digit: chrono's `format` interprets its pattern on every
/// call, which cost ~0.7 µs of the ~10 µs an event takes from the WAL to the
/// store. Years outside 0–9999 and leap seconds, where chrono's rules are
/// subtle (a sign, a 60th second), still go through chrono.
pub fn format_micros(t: &DateTime<Utc>) -> String {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return t.format(FORMAT).to_string();
    }
    let mut digits = [0u8; 26];
    let mut put = |at: usize, width: usize, mut value: u32| {
        for slot in digits[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year.unsigned_abs());
    put(5, 2, t.month());
    put(8, 2, t.day());
    put(11, 2, t.hour());
    put(14, 2, t.minute());
    put(17, 2, t.second());
    put(20, 6, nanos / 1_000);
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        digits[at] = separator;
    }
    let mut text = String::with_capacity(27);
    text.push_str(std::str::from_utf8(&digits).expect("digits and separators are ASCII"));
    text.push('Z');
    text
}

/// chrono's spelling of [`format_micros`], for what it does not write itself.
const FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Parses a duration such as `90s`, `15m`, `2h`, `7d`, `2w` or `400d`.
pub fn parse_duration(input: &str) -> Result<Duration, TimeError> {
    let err = |reason| TimeError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| err("a duration needs a unit: s, m, h, d or w (e.g. 2h, 7d)"))?;
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| err("a duration starts with a whole number (e.g. 2h, 7d)"))?;
    let secs_per_unit = match unit {
        "s" | "sec" | "secs" => 1,
        "m" | "min" | "mins" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(err("unknown unit: use s, m, h, d or w (e.g. 2h, 7d)")),
    };
    n.checked_mul(secs_per_unit)
        .and_then(Duration::try_seconds)
        .ok_or_else(|| err("duration is too large"))
}

/// What [`parse_time`] accepts, for error messages and help texts.
pub const TIME_FORMS: &str = "RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), \
psql's timestamptz (2026-01-31 12:00:00.5+00, +05:30), a duration ago (2h, 7d, 3 days ago), \
now, today, yesterday, or last hour/day/week/month";

/// Parses a point in time, in the words people use:
/// - RFC 3339 (`2026-01-31T12:00:00Z`, `2026-01-31T13:00:00+01:00`);
/// - what psql prints for a timestamptz (`2026-12-06 02:19:01.57915+00`,
///   `+05:30`, `-08`), with a space or a `T`; without an offset, UTC;
/// - a date (`2026-01-31`: midnight UTC);
/// - `now`, `today` and `yesterday` (midnight UTC), `last hour`, `last day`,
///   `last week` (7 days before `now`) and `last month` (30 days);
/// - a duration before `now`: `2h`, `7d`, `90 min`, `3 days ago`.
///
/// Everything is truncated to microseconds, as events are.
pub fn parse_time(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    let err = |reason| TimeError {
        input: shown(input),
        reason,
    };
    let s = input.trim();
    if s.len() > 64 {
        return Err(err("too long to be a time"));
    }
    let words: Vec<String> = s
        .split(|c: char| c.is_whitespace() || c == '_' || c == '-')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let midnight = |t: DateTime<Utc>| t.date_naive().and_hms_opt(0, 0, 0).map(|m| m.and_utc());
    match words.as_slice() {
        ["now"] => return Ok(truncate_micros(now)),
        ["today"] => return midnight(now).ok_or(err("out of range")),
        ["yesterday"] => {
            return midnight(now)
                .and_then(|m| m.checked_sub_signed(Duration::days(1)))
                .ok_or(err("out of range"))
        }
        ["last", unit] => {
            let ago = match *unit {
                "hour" => Duration::hours(1),
                "day" => Duration::days(1),
                "week" => Duration::days(7),
                "month" => Duration::days(30),
                _ => return Err(err("expected last hour, last day, last week or last month")),
            };
            return now
                .checked_sub_signed(ago)
                .map(truncate_micros)
                .ok_or(err("too far in the past"));
        }
        _ => {}
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(truncate_micros(t.with_timezone(&Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    if let Some(t) = parse_timestamptz(s) {
        return Ok(truncate_micros(t));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        let amount = s.strip_suffix(" ago").unwrap_or(s);
        let compact: String = amount.split_whitespace().collect();
        let ago = parse_duration(&compact).map_err(|e| err(e.reason))?;
        return now
            .checked_sub_signed(ago)
            .map(truncate_micros)
            .ok_or(err("too far in the past"));
    }
    Err(err(
        "expected RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), psql's \
         timestamptz (2026-01-31 12:00:00+00), a duration ago (2h, 7d), today, \
         yesterday or last week",
    ))
}

/// `input` as an error message shows it: at most 64 characters, control
/// characters escaped, so a hostile argument cannot flood or garble a log.
fn shown(input: &str) -> String {
    crate::filter::shown(input, 64)
}

/// A timestamp as psql prints a timestamptz (`2026-12-06 02:19:01.57915+00`,
/// `+05:30`, `-08`, historical `+00:53:28`), or the same with a `T`, a `Z`,
/// ` UTC`, or no offset at all (UTC). Seconds and fraction are optional.
fn parse_timestamptz(s: &str) -> Option<DateTime<Utc>> {
    // The date is 10 bytes; an offset's sign comes after it.
    let (date_time, offset_secs) = if let Some(rest) = s
        .strip_suffix('Z')
        .or_else(|| s.strip_suffix('z'))
        .or_else(|| s.strip_suffix(" UTC"))
    {
        (rest, 0)
    } else {
        match s.get(10..).and_then(|tail| tail.rfind(['+', '-'])) {
            Some(at) => {
                let at = at + 10;
                let sign = if s.as_bytes()[at] == b'-' { -1 } else { 1 };
                (s[..at].trim_end(), sign * offset_seconds(&s[at + 1..])?)
            }
            None => (s, 0),
        }
    };
    let date_time = date_time.replacen('T', " ", 1);
    let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|form| chrono::NaiveDateTime::parse_from_str(&date_time, form).ok())?;
    naive
        .and_utc()
        .checked_sub_signed(Duration::seconds(offset_secs))
}

/// `HH`, `HH:MM`, `HHMM` or `HH:MM:SS` of an offset, in seconds.
fn offset_seconds(text: &str) -> Option<i64> {
    let digits = |t: &str| -> Option<i64> {
        (t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let parts: Vec<&str> = if text.len() == 4 && !text.contains(':') {
        vec![&text[..2], &text[2..]]
    } else {
        text.split(':').collect()
    };
    let (h, m, sec) = match parts.as_slice() {
        [h] => (digits(h)?, 0, 0),
        [h, m] => (digits(h)?, digits(m)?, 0),
        [h, m, s] => (digits(h)?, digits(m)?, digits(s)?),
        _ => return None,
    };
    (h <= 15 && m < 60 && sec < 60).then_some(h * 3600 + m * 60 + sec)
}

/// Serde for a required timestamp in the one text form.
pub mod micros {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the timestamp as RFC 3339 with six fraction digits.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_micros(t))
    }

    /// Reads any RFC 3339 timestamp and truncates it to microseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| super::truncate_micros(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp '{text}': {e}")))
    }
}

/// Serde for an optional timestamp in the one text form.
pub mod micros_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the timestamp as RFC 3339 with six fraction digits.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::micros::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional RFC 3339 timestamp, truncated to microseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|text| {
            DateTime::parse_from_rfc3339(&text)
                .map(|t| super::truncate_micros(t.with_timezone(&Utc)))
                .map_err(|e| serde::de::Error::custom(format!("invalid timestamp '{text}': {e}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(
            parse_time("2h", now()).expect("ok").to_rfc3339(),
            "2026-03-10T10:00:00+00:00"
        );
        assert_eq!(
            parse_time("7d", now()).expect("ok").to_rfc3339(),
            "2026-03-03T12:00:00+00:00"
        );
    }

    #[test]
    fn absolute_times_and_dates() {
        let t = parse_time("2026-01-31T12:00:00.1234567+01:00", now()).expect("ok");
        assert_eq!(format_micros(&t), "2026-01-31T11:00:00.123456Z");
        let d = parse_time("2026-01-31", now()).expect("ok");
        assert_eq!(format_micros(&d), "2026-01-31T00:00:00.000000Z");
    }

    #[test]
    fn format_micros_writes_what_chrono_writes() {
        // Random instants over the whole range chrono supports, plus the
        // edges: the fast path must never change a byte of a hashed event.
        let mut state: u64 = 0x5eed;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut instants: Vec<DateTime<Utc>> = (0..20_000)
            .map(|_| {
                let seconds = (next() % 400_000_000_000) as i64 - 200_000_000_000;
                let nanos = (next() % 1_000_000_000) as u32;
                DateTime::from_timestamp(seconds, nanos).expect("in chrono's range")
            })
            .collect();
        for text in [
            "0000-01-01T00:00:00Z",
            "0001-02-03T04:05:06.000007Z",
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:00:00.5Z",
            "9999-12-31T23:59:59.999999999Z",
        ] {
            instants.push(
                DateTime::parse_from_rfc3339(text)
                    .expect("valid")
                    .with_timezone(&Utc),
            );
        }
        for year in [-1, 10_000] {
            let outside = chrono::NaiveDate::from_ymd_opt(year, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .expect("in chrono's range");
            instants.push(outside.and_utc());
        }
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
            .expect("a leap second")
            .and_utc();
        instants.push(leap);
        for t in instants {
            assert_eq!(format_micros(&t), t.format(FORMAT).to_string(), "{t:?}");
        }
    }

    #[test]
    fn bad_times_say_what_is_expected() {
        for bad in [
            "tomorrow",
            "2x",
            "h2",
            "",
            "2026-13-01",
            "99999999999999999999d",
        ] {
            let e = parse_time(bad, now()).expect_err(bad);
            assert!(e.to_string().contains("invalid time"), "{e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("400d").expect("ok"), Duration::days(400));
        assert!(parse_duration("400").is_err());
        assert!(parse_duration("4y").is_err());
    }

    fn at(text: &str) -> String {
        format_micros(&parse_time(text, now()).unwrap_or_else(|e| panic!("{text}: {e}")))
    }

    #[test]
    fn psql_timestamptz_output() {
        assert_eq!(
            at("2026-12-06 02:19:01.57915+00"),
            "2026-12-06T02:19:01.579150Z"
        );
        assert_eq!(
            at("2026-12-06 07:49:01+05:30"),
            "2026-12-06T02:19:01.000000Z"
        );
        assert_eq!(
            at("2026-12-05 18:19:01.5-08"),
            "2026-12-06T02:19:01.500000Z"
        );
        assert_eq!(
            at("2026-12-06 02:19:01+0000"),
            "2026-12-06T02:19:01.000000Z"
        );
        assert_eq!(
            at("1890-01-01 00:53:28+00:53:28"),
            "1890-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            at("2026-12-06 02:19:01.1234567+00"),
            "2026-12-06T02:19:01.123456Z"
        );
        // Without an offset, UTC; a T or a space; minutes only.
        assert_eq!(at("2026-12-06 02:19:01"), "2026-12-06T02:19:01.000000Z");
        assert_eq!(at("2026-12-06T02:19"), "2026-12-06T02:19:00.000000Z");
        assert_eq!(at("2026-12-06 02:19:01 UTC"), "2026-12-06T02:19:01.000000Z");
        assert_eq!(at("2026-12-06 02:19:01Z"), "2026-12-06T02:19:01.000000Z");
    }

    #[test]
    fn words_people_use() {
        assert_eq!(at("now"), "2026-03-10T12:00:00.000000Z");
        assert_eq!(at("today"), "2026-03-10T00:00:00.000000Z");
        assert_eq!(at("Yesterday"), "2026-03-09T00:00:00.000000Z");
        assert_eq!(at("last week"), "2026-03-03T12:00:00.000000Z");
        assert_eq!(at("last_week"), at("last week"));
        assert_eq!(at("last  hour"), "2026-03-10T11:00:00.000000Z");
        assert_eq!(at("last day"), "2026-03-09T12:00:00.000000Z");
        assert_eq!(at("last month"), "2026-02-08T12:00:00.000000Z");
        assert_eq!(at("3 days ago"), "2026-03-07T12:00:00.000000Z");
        assert_eq!(at("90 min"), "2026-03-10T10:30:00.000000Z");
        assert_eq!(at("2h ago"), "2026-03-10T10:00:00.000000Z");
    }

    #[test]
    fn hostile_times_are_refused_with_a_reason() {
        let huge = "9".repeat(1 << 20);
        for bad in [
            "last year",
            "2026-12-06 02:19:01+24",
            "2026-12-06 02:19:01+05:3",
            "2026-12-06 02:19:61+00",
            "2026-02-30",
            "'; drop table events; --",
            "2026-12-06\u{0}",
            "\u{7}now",
            huge.as_str(),
            "-2h",
            "ago",
            "last",
        ] {
            let e = parse_time(bad, now()).expect_err(bad);
            assert!(e.to_string().starts_with("invalid time"), "{e}");
            assert!(e.to_string().len() < 400, "the input is echoed whole");
        }
    }
}
