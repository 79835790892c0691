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

/// Parses a point in time: RFC 3339 (`2026-01-31T12:00:00Z`), a date
/// (`2026-01-31`, midnight UTC), `now`, or a duration ago (`2h`, `7d`).
pub fn parse_time(input: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, TimeError> {
    let s = input.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(truncate_micros(now));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(truncate_micros(t.with_timezone(&Utc)));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        let ago = parse_duration(s)?;
        return now
            .checked_sub_signed(ago)
            .map(truncate_micros)
            .ok_or(TimeError {
                input: input.to_string(),
                reason: "too far in the past",
            });
    }
    Err(TimeError {
        input: input.to_string(),
        reason: "expected RFC 3339 (2026-01-31T12:00:00Z), a date (2026-01-31), or a duration ago (2h, 7d)",
    })
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
            "yesterday",
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
}
