//! The reports compliance reviews ask for, over any store: bulk changes by
//! user in a window, activity outside working hours, DELETE spikes, and
//! who read a row (from the proxy's logged reads). The dashboard's
//! `/reports` page and the API's `/api/v1/reports/…` both answer through
//! these functions, so they agree.
//!
//! Each reads the trail through [`Store::query`] a page at a time, newest
//! first, and keeps only its counts: memory is bounded by the groups it
//! counts, and work by a cap on the events read ([`MAX_SCAN`]); a report
//! that hit the cap says so ([`Scanned::capped`]) and counts only the
//! newest part of its window. The window itself is bounded too
//! ([`MAX_WINDOW_DAYS`]).
//!
//! Parameters are parsed here ([`BulkParams::parse`] and the others), from
//! the text a form or a query string gives: a value that is not what it
//! should be is a [`ParamError`], never query text (every filter goes
//! through [`Filter`], whose fields the stores bind as parameters).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Datelike, Duration, FixedOffset, Timelike, Utc, Weekday};
use pgtrail_core::filter::{PkFilter, TableName};
use pgtrail_core::time::parse_time;
use pgtrail_core::{Event, Filter, Kind, Source};
use serde::Serialize;
use serde_json::Value;

use crate::{Result, Store};

/// The longest window a report reads.
pub const MAX_WINDOW_DAYS: i64 = 92;
/// The most events a report that lists events reads (after hours, who
/// read); past it, the report says it was capped.
pub const MAX_SCAN: usize = 200_000;
/// The most events a report that only counts reads (bulk changes, DELETE
/// spikes: the store counts them in SQL, no event is decoded).
pub const MAX_COUNT: usize = 5_000_000;
/// The most events a report lists one by one (its counts cover them all).
pub const MAX_LISTED: usize = 200;
/// Events read per page.
const PAGE: usize = 2_000;

/// The report names, as the page and the API spell them.
pub const NAMES: [&str; 4] = ["bulk-changes", "after-hours", "delete-spikes", "who-read"];

/// A report parameter that is not valid: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {detail}")]
pub struct ParamError {
    pub parameter: &'static str,
    pub detail: String,
}

fn bad(parameter: &'static str, detail: impl Into<String>) -> ParamError {
    ParamError {
        parameter,
        detail: detail.into(),
    }
}

/// The parameters' text, by name (blank values count as absent).
pub type Texts<'f, 'a> = &'f dyn Fn(&str) -> Option<&'a str>;

fn text<'a>(get: Texts<'_, 'a>, name: &str) -> Option<&'a str> {
    get(name).map(str::trim).filter(|v| !v.is_empty())
}

/// A window of time: `since` (inclusive) to `until` (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    #[serde(with = "pgtrail_core::time::micros")]
    pub since: DateTime<Utc>,
    #[serde(with = "pgtrail_core::time::micros")]
    pub until: DateTime<Utc>,
}

impl Window {
    /// `since` and `until` in any form of `parse_time`; `since` defaults to
    /// `default` before `until`, `until` to `now`. Refused when it is empty,
    /// backwards, or longer than [`MAX_WINDOW_DAYS`].
    pub fn parse(
        get: Texts<'_, '_>,
        now: DateTime<Utc>,
        default: Duration,
    ) -> Result<Self, ParamError> {
        let until = match text(get, "until") {
            Some(t) => parse_time(t, now).map_err(|e| bad("until", e.to_string()))?,
            None => now,
        };
        let since = match text(get, "since") {
            Some(t) => parse_time(t, now).map_err(|e| bad("since", e.to_string()))?,
            None => until - default,
        };
        if since >= until {
            return Err(bad(
                "since",
                "the window is empty: since must be before until",
            ));
        }
        if until - since > Duration::days(MAX_WINDOW_DAYS) {
            return Err(bad(
                "since",
                format!("the window is longer than {MAX_WINDOW_DAYS} days; narrow it"),
            ));
        }
        Ok(Window { since, until })
    }

    fn filter(&self) -> Filter {
        Filter {
            since: Some(self.since),
            until: Some(self.until),
            ..Filter::default()
        }
    }
}

/// A whole number parameter between `min` and `max`.
fn number(
    get: Texts<'_, '_>,
    name: &'static str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ParamError> {
    let Some(t) = text(get, name) else {
        return Ok(default);
    };
    let n: u64 = t
        .parse()
        .map_err(|_| bad(name, "expected a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(bad(
            name,
            format!("{n} is out of range: between {min} and {max}"),
        ));
    }
    Ok(n)
}

fn table(get: Texts<'_, '_>, name: &'static str) -> Result<Option<TableName>, ParamError> {
    text(get, name)
        .map(|t| TableName::parse(t).map_err(|e| bad(name, e.to_string())))
        .transpose()
}

/// How many events a report read, and whether it stopped at the cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Scanned {
    pub events: u64,
    /// The cap was reached: older events of the window were not read.
    pub capped: bool,
    /// The cap, for the note that says so.
    pub cap: u64,
}

/// Reads the events `filter` matches, newest first, a page at a time, at
/// most `cap`, handing each to `each`.
async fn scan(
    store: &dyn Store,
    mut filter: Filter,
    cap: usize,
    mut each: impl FnMut(&Event),
) -> Result<Scanned> {
    let mut scanned = Scanned {
        cap: cap as u64,
        ..Scanned::default()
    };
    loop {
        let want = PAGE.min(cap.saturating_sub(scanned.events as usize));
        if want == 0 {
            scanned.capped = true;
            return Ok(scanned);
        }
        filter.limit = Some(want);
        let page = store.query(&filter).await?;
        page.iter().for_each(&mut each);
        scanned.events += page.len() as u64;
        match page.last().and_then(|e| e.seq) {
            Some(seq) if page.len() == want => filter.before_seq = Some(seq),
            _ => return Ok(scanned),
        }
    }
}

/// The user of an event that names none.
const UNKNOWN: &str = "(unknown)";

fn actor(event: &Event) -> String {
    event.actor().unwrap_or(UNKNOWN).to_string()
}

/// The events `filter` matches counted by the store
/// ([`Store::activity_counts`], in SQL), at most `cap`.
async fn counted(
    store: &dyn Store,
    filter: &Filter,
    cap: usize,
) -> Result<(Vec<crate::ActivityCount>, Scanned)> {
    let (counts, events) = store.activity_counts(filter, cap).await?;
    let scanned = Scanned {
        events,
        capped: events >= cap as u64,
        cap: cap as u64,
    };
    Ok((counts, scanned))
}

/// A report's listing of one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub seq: Option<i64>,
    #[serde(with = "pgtrail_core::time::micros")]
    pub at: DateTime<Utc>,
    pub user: String,
    pub db_user: Option<String>,
    pub kind: Kind,
    pub source: Source,
    pub table: Option<String>,
    pub operation: Option<String>,
    pub client_addr: Option<String>,
}

impl Line {
    fn of(event: &Event) -> Self {
        Line {
            seq: event.seq,
            at: event.captured_at,
            user: actor(event),
            db_user: event.db_user.clone(),
            kind: event.kind,
            source: event.source,
            table: event.qualified_table(),
            operation: event.operation.clone(),
            client_addr: event.client_addr.clone(),
        }
    }
}

// ---------------------------------------------------------------- bulk changes

/// Bulk changes: who changed more than `threshold` rows of one table with
/// one operation within the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkParams {
    pub window: Window,
    pub threshold: u64,
    pub table: Option<TableName>,
}

impl BulkParams {
    /// `since`, `until` (24 hours by default), `threshold` (rows, 100 by
    /// default), `table` (optional).
    pub fn parse(get: Texts<'_, '_>, now: DateTime<Utc>) -> Result<Self, ParamError> {
        Ok(BulkParams {
            window: Window::parse(get, now, Duration::hours(24))?,
            threshold: number(get, "threshold", 100, 1, 1_000_000_000)?,
            table: table(get, "table")?,
        })
    }
}

/// One user's changes of one table with one operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkRow {
    pub user: String,
    pub table: String,
    pub operation: String,
    pub rows: u64,
    #[serde(with = "pgtrail_core::time::micros")]
    pub first: DateTime<Utc>,
    #[serde(with = "pgtrail_core::time::micros")]
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BulkReport {
    pub params: BulkParams,
    /// Over the threshold, most rows first.
    pub rows: Vec<BulkRow>,
    pub scanned: Scanned,
}

/// The bulk-changes report: row changes (every capture path's) counted by
/// user, table and operation.
pub async fn bulk_changes(
    store: &dyn Store,
    params: &BulkParams,
    cap: usize,
) -> Result<BulkReport> {
    let filter = Filter {
        kind: Some(Kind::RowChange),
        table: params.table.clone(),
        ..params.window.filter()
    };
    let (counts, scanned) = counted(store, &filter, cap).await?;
    let mut groups: HashMap<(String, String, String), BulkRow> = HashMap::new();
    for c in counts {
        let key = (
            c.actor.unwrap_or_else(|| UNKNOWN.into()),
            c.table.unwrap_or_default(),
            c.operation.unwrap_or_default(),
        );
        let row = groups
            .entry(key)
            .or_insert_with_key(|(user, table, op)| BulkRow {
                user: user.clone(),
                table: table.clone(),
                operation: op.clone(),
                rows: 0,
                first: c.first,
                last: c.last,
            });
        row.rows += c.events;
        row.first = row.first.min(c.first);
        row.last = row.last.max(c.last);
    }
    let mut rows: Vec<BulkRow> = groups
        .into_values()
        .filter(|r| r.rows > params.threshold)
        .collect();
    rows.sort_by(|a, b| {
        b.rows
            .cmp(&a.rows)
            .then_with(|| (&a.user, &a.table, &a.operation).cmp(&(&b.user, &b.table, &b.operation)))
    });
    Ok(BulkReport {
        params: params.clone(),
        rows,
        scanned,
    })
}

// ---------------------------------------------------------------- after hours

/// Where working hours are kept: a fixed UTC offset, or a named zone
/// whose offset changes with summer time (the IANA database, built in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    /// `+02:00`, `UTC`.
    Fixed(FixedOffset),
    /// `Europe/Berlin`, `America/New_York`.
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `at`'s weekday (Monday = 0) and hour in this zone.
    pub fn day_and_hour(&self, at: DateTime<Utc>) -> (u32, u32) {
        match self {
            Zone::Fixed(offset) => {
                let local = at.with_timezone(offset);
                (local.weekday().num_days_from_monday(), local.hour())
            }
            Zone::Named(tz) => {
                let local = at.with_timezone(tz);
                (local.weekday().num_days_from_monday(), local.hour())
            }
        }
    }

    /// `at` as local time in this zone, formatted with `format`.
    pub fn format(&self, at: DateTime<Utc>, format: &str) -> String {
        match self {
            Zone::Fixed(offset) => at.with_timezone(offset).format(format).to_string(),
            Zone::Named(tz) => at.with_timezone(tz).format(format).to_string(),
        }
    }
}

/// Working hours: from `start` to `end` o'clock (an `end` before `start`
/// runs past midnight) on `days`, in the zone `zone`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AfterHoursParams {
    pub window: Window,
    pub start: u32,
    pub end: u32,
    /// Working days, Monday = 0.
    pub days: BTreeSet<u32>,
    /// The zone as given back (`+02:00`, `Europe/Berlin`).
    pub tz: String,
    #[serde(skip)]
    pub zone: Zone,
}

impl AfterHoursParams {
    /// `since`, `until` (7 days by default), `hours` (`08-18` by default:
    /// from 08:00 to 18:00), `days` (`mon-fri` by default, or a list:
    /// `mon,tue,sat`), `tz` (a UTC offset, `UTC` by default: `+02:00`,
    /// `-0530`, `Z`; or an IANA zone name: `Europe/Berlin`).
    pub fn parse(get: Texts<'_, '_>, now: DateTime<Utc>) -> Result<Self, ParamError> {
        let window = Window::parse(get, now, Duration::days(7))?;
        let (start, end) = hours(text(get, "hours").unwrap_or("08-18"))?;
        let days = days(text(get, "days").unwrap_or("mon-fri"))?;
        let (tz, zone) = zone(text(get, "tz").unwrap_or("UTC"))?;
        Ok(AfterHoursParams {
            window,
            start,
            end,
            days,
            tz,
            zone,
        })
    }

    /// Whether `at` is inside working hours.
    pub fn working(&self, at: DateTime<Utc>) -> bool {
        let (day, hour) = self.zone.day_and_hour(at);
        let in_hours = if self.start <= self.end {
            (self.start..self.end).contains(&hour)
        } else {
            hour >= self.start || hour < self.end
        };
        // Hours past midnight belong to the day the shift started.
        let shift_day = if self.start > self.end && hour < self.end {
            (day + 6) % 7
        } else {
            day
        };
        in_hours && self.days.contains(&shift_day)
    }
}

fn hours(t: &str) -> Result<(u32, u32), ParamError> {
    let err = || bad("hours", "expected two whole hours from 0 to 24, as 08-18");
    let (a, b) = t.split_once('-').ok_or_else(err)?;
    let hour = |s: &str| {
        let s = s.trim();
        let s = s.strip_suffix(":00").unwrap_or(s);
        s.parse::<u32>().ok().filter(|h| *h <= 24)
    };
    let (start, end) = (hour(a).ok_or_else(err)?, hour(b).ok_or_else(err)?);
    if start == end || (start == 24 && end == 0) {
        return Err(bad(
            "hours",
            "working hours must not be empty or the whole day",
        ));
    }
    Ok((start % 24, end.min(24)))
}

fn weekday(t: &str) -> Option<u32> {
    let day: Weekday = t.trim().parse().ok()?;
    Some(day.num_days_from_monday())
}

fn days(t: &str) -> Result<BTreeSet<u32>, ParamError> {
    let err = || bad("days", "expected days as mon-fri or mon,tue,sat");
    let mut set = BTreeSet::new();
    for part in t.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (weekday(a).ok_or_else(err)?, weekday(b).ok_or_else(err)?);
                let mut d = a;
                loop {
                    set.insert(d);
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => {
                set.insert(weekday(part).ok_or_else(err)?);
            }
        }
    }
    Ok(set)
}

/// A zone: an IANA name (`Europe/Berlin`: its summer time followed), or a
/// fixed UTC offset (see [`offset`]).
fn zone(t: &str) -> Result<(String, Zone), ParamError> {
    if t.contains('/') {
        let tz: chrono_tz::Tz = t.parse().map_err(|_| {
            bad(
                "tz",
                "expected an IANA time zone such as Europe/Berlin, or a UTC offset such as +02:00",
            )
        })?;
        return Ok((tz.name().to_string(), Zone::Named(tz)));
    }
    let (text, offset) = offset(t)?;
    Ok((text, Zone::Fixed(offset)))
}

/// A fixed UTC offset: `UTC`, `Z`, `+02:00`, `-0530`, `+5`.
fn offset(t: &str) -> Result<(String, FixedOffset), ParamError> {
    let err = || {
        bad(
            "tz",
            "expected a UTC offset such as +02:00, -05:30 or UTC, or an IANA time zone such as Europe/Berlin",
        )
    };
    if t.eq_ignore_ascii_case("utc") || t == "Z" || t.eq_ignore_ascii_case("gmt") {
        return Ok(("UTC".into(), FixedOffset::east_opt(0).ok_or_else(err)?));
    }
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(err()),
    };
    let (h, m) = match rest.split_once(':') {
        Some((h, m)) => (h, m),
        None if rest.len() == 4 => rest.split_at(2),
        None => (rest, "0"),
    };
    let digits = |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || !digits(m) {
        return Err(err());
    }
    let (h, m): (i32, i32) = (h.parse().map_err(|_| err())?, m.parse().map_err(|_| err())?);
    if h > 14 || m > 59 {
        return Err(err());
    }
    let seconds = sign * (h * 3600 + m * 60);
    let offset = FixedOffset::east_opt(seconds).ok_or_else(err)?;
    Ok((offset.to_string(), offset))
}

/// One user's events outside working hours.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserCount {
    pub user: String,
    pub events: u64,
    #[serde(with = "pgtrail_core::time::micros")]
    pub first: DateTime<Utc>,
    #[serde(with = "pgtrail_core::time::micros")]
    pub last: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AfterHoursReport {
    pub params: AfterHoursParams,
    /// Most events first.
    pub users: Vec<UserCount>,
    /// The newest of them, at most [`MAX_LISTED`].
    pub events: Vec<Line>,
    pub scanned: Scanned,
}

/// What people do: row changes, schema changes, statements and logins
/// (not pgtrail's own alarms, snapshots or access records).
fn activity(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::RowChange | Kind::Ddl | Kind::Statement | Kind::Session
    )
}

/// The after-hours report: people's events outside working hours, by user.
pub async fn after_hours(
    store: &dyn Store,
    params: &AfterHoursParams,
    cap: usize,
) -> Result<AfterHoursReport> {
    let mut users: HashMap<String, UserCount> = HashMap::new();
    let mut events = Vec::new();
    let scanned = scan(store, params.window.filter(), cap, |e| {
        if !activity(e.kind) || params.working(e.captured_at) {
            return;
        }
        let user = actor(e);
        let count = users.entry(user.clone()).or_insert(UserCount {
            user,
            events: 0,
            first: e.captured_at,
            last: e.captured_at,
        });
        count.events += 1;
        count.first = count.first.min(e.captured_at);
        count.last = count.last.max(e.captured_at);
        if events.len() < MAX_LISTED {
            events.push(Line::of(e));
        }
    })
    .await?;
    let mut users: Vec<UserCount> = users.into_values().collect();
    users.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.user.cmp(&b.user)));
    Ok(AfterHoursReport {
        params: params.clone(),
        users,
        events,
        scanned,
    })
}

// ---------------------------------------------------------------- DELETE spikes

/// DELETE spikes: hours in which a table lost at least `min` rows and more
/// than `multiple` times its usual hourly rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpikeParams {
    pub window: Window,
    pub multiple: u64,
    pub min: u64,
    pub table: Option<TableName>,
}

impl SpikeParams {
    /// `since`, `until` (7 days by default), `multiple` (3 by default, 2 to
    /// 1000), `min` (deletes in the hour, 10 by default), `table` (optional).
    pub fn parse(get: Texts<'_, '_>, now: DateTime<Utc>) -> Result<Self, ParamError> {
        Ok(SpikeParams {
            window: Window::parse(get, now, Duration::days(7))?,
            multiple: number(get, "multiple", 3, 2, 1000)?,
            min: number(get, "min", 10, 1, 1_000_000_000)?,
            table: table(get, "table")?,
        })
    }
}

/// One hour of one table with a spike.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spike {
    pub table: String,
    /// The hour's start (UTC).
    #[serde(with = "pgtrail_core::time::micros")]
    pub hour: DateTime<Utc>,
    pub deletes: u64,
    /// The table's mean DELETEs per hour over the window's other hours.
    pub usual_per_hour: f64,
    /// The users who deleted in that hour, most first.
    pub users: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpikeReport {
    pub params: SpikeParams,
    /// Most deletes first.
    pub spikes: Vec<Spike>,
    /// Tables with any DELETE in the window.
    pub tables: u64,
    pub scanned: Scanned,
}

/// The DELETE-spikes report, over row changes (TRUNCATE is not a DELETE).
pub async fn delete_spikes(
    store: &dyn Store,
    params: &SpikeParams,
    cap: usize,
) -> Result<SpikeReport> {
    let filter = Filter {
        kind: Some(Kind::RowChange),
        operation: Some("DELETE".into()),
        table: params.table.clone(),
        ..params.window.filter()
    };
    let (counts, scanned) = counted(store, &filter, cap).await?;
    // (table, hour) -> (deletes, by user); table -> deletes.
    let mut hours: HashMap<(String, i64), (u64, HashMap<String, u64>)> = HashMap::new();
    let mut totals: HashMap<String, u64> = HashMap::new();
    for c in counts {
        let table = c.table.unwrap_or_default();
        let slot = hours.entry((table.clone(), c.hour)).or_default();
        slot.0 += c.events;
        *slot
            .1
            .entry(c.actor.unwrap_or_else(|| UNKNOWN.into()))
            .or_default() += c.events;
        *totals.entry(table).or_default() += c.events;
    }
    let window = params.window;
    let span = (window.until - window.since).num_seconds();
    let window_hours = (span + 3599).div_euclid(3600).max(1) as f64;
    let mut spikes = Vec::new();
    for ((table, hour), (deletes, users)) in hours {
        let total = totals.get(&table).copied().unwrap_or(deletes);
        let others = (window_hours - 1.0).max(1.0);
        let usual = (total - deletes) as f64 / others;
        if deletes < params.min || (deletes as f64) <= params.multiple as f64 * usual {
            continue;
        }
        let mut users: Vec<(String, u64)> = users.into_iter().collect();
        users.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        spikes.push(Spike {
            table,
            hour: DateTime::from_timestamp(hour * 3600, 0).unwrap_or(window.since),
            deletes,
            usual_per_hour: (usual * 100.0).round() / 100.0,
            users,
        });
    }
    spikes.sort_by(|a, b| {
        b.deletes
            .cmp(&a.deletes)
            .then_with(|| (&a.table, a.hour).cmp(&(&b.table, b.hour)))
    });
    Ok(SpikeReport {
        params: params.clone(),
        spikes,
        tables: totals.len() as u64,
        scanned,
    })
}

// ---------------------------------------------------------------- who read this row

/// Who read a row: the proxy's logged reads (class READ) of `table`,
/// and for each, whether its text or parameters name the row's key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhoReadParams {
    pub window: Window,
    pub table: TableName,
    pub pk: Option<PkFilter>,
}

impl WhoReadParams {
    /// `table` (required), `pk` (`id=42`, optional), `since`, `until` (30
    /// days by default).
    pub fn parse(get: Texts<'_, '_>, now: DateTime<Utc>) -> Result<Self, ParamError> {
        let window = Window::parse(get, now, Duration::days(30))?;
        let table = table(get, "table")?.ok_or_else(|| bad("table", "name the table read"))?;
        let pk = text(get, "pk")
            .map(|t| PkFilter::parse(t).map_err(|e| bad("pk", e.to_string())))
            .transpose()?;
        Ok(WhoReadParams { window, table, pk })
    }
}

/// Whether a read names the row's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mention {
    /// Every key value appears in the statement's text, as a whole word.
    Text,
    /// Every key value is one of the statement's parameters (or in the
    /// text and the parameters together).
    Params,
    /// Not every key value is named: it may still have read the row (a
    /// scan, a join, a range).
    No,
    /// No key was asked about, or the parameters are withheld from the
    /// caller's role and the text does not name it.
    Unknown,
}

/// One logged read of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Read {
    pub line: Line,
    pub sql: Option<String>,
    /// Rows the statement returned, as the server said.
    pub rows: Option<i64>,
    pub failed: bool,
    pub mentions: Mention,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhoReadReport {
    pub params: WhoReadParams,
    /// Reads that name the key first, then newest first; at most [`MAX_LISTED`].
    pub reads: Vec<Read>,
    /// Reads of the table in the window, counted in full.
    pub total: u64,
    /// Of them, reads whose text or parameters name the key.
    pub naming_key: u64,
    pub scanned: Scanned,
}

/// `value` appears in `text` as a whole word: not inside a longer
/// identifier or number (`42` is not in `420` or `x42`).
fn names(text: &str, value: &str) -> bool {
    if value.is_empty() {
        return false;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(value).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + value.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

fn key_values(pk: &PkFilter) -> Vec<String> {
    pk.0.values()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => pgtrail_core::json::to_string(other),
        })
        .collect()
}

fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pgtrail_core::json::to_string(other),
    }
}

/// What a statement says about the key `values`; `with_params`: the
/// caller may see parameters (they are not looked at otherwise).
fn mention(event: &Event, values: &[String], with_params: bool) -> Mention {
    if values.is_empty() {
        return Mention::Unknown;
    }
    let sql = event.sql.as_deref().unwrap_or("");
    let params: Vec<String> = match (with_params, &event.params) {
        (true, Some(p)) => p.iter().map(param_text).collect(),
        _ => Vec::new(),
    };
    let in_text = |v: &String| names(sql, v);
    let in_params = |v: &String| params.iter().any(|p| p == v);
    if values.iter().all(in_text) {
        return Mention::Text;
    }
    if values.iter().all(|v| in_text(v) || in_params(v)) {
        return Mention::Params;
    }
    if !with_params && event.params.as_ref().is_some_and(|p| !p.is_empty()) {
        return Mention::Unknown;
    }
    Mention::No
}

/// The who-read report. `with_params`: whether statement parameters may be
/// looked at for the key (not for a viewer, who never sees them).
pub async fn who_read(
    store: &dyn Store,
    params: &WhoReadParams,
    with_params: bool,
    cap: usize,
) -> Result<WhoReadReport> {
    let filter = Filter {
        kind: Some(Kind::Statement),
        source: Some(Source::Proxy),
        class: Some("READ".into()),
        table: Some(params.table.clone()),
        ..params.window.filter()
    };
    let values = params.pk.as_ref().map(key_values).unwrap_or_default();
    let (mut named, mut others) = (Vec::new(), Vec::new());
    let (mut total, mut naming_key) = (0u64, 0u64);
    let scanned = scan(store, filter, cap, |e| {
        total += 1;
        let mentions = mention(e, &values, with_params);
        let read = || Read {
            line: Line::of(e),
            sql: e.sql.clone(),
            rows: e.rows,
            failed: e.failed(),
            mentions,
        };
        if matches!(mentions, Mention::Text | Mention::Params) {
            naming_key += 1;
            if named.len() < MAX_LISTED {
                named.push(read());
            }
        } else if others.len() < MAX_LISTED {
            others.push(read());
        }
    })
    .await?;
    named.extend(others);
    named.truncate(MAX_LISTED);
    Ok(WhoReadReport {
        params: params.clone(),
        reads: named,
        total,
        naming_key,
        scanned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn get<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn windows_are_bounded_and_forwards() {
        for (since, until) in [
            ("2026-03-09", "2026-03-01"),
            ("2020-01-01", "now"),
            ("now", "now"),
        ] {
            let pairs = [("since", since), ("until", until)];
            assert!(
                Window::parse(&get(&pairs), now(), Duration::days(1)).is_err(),
                "{since}..{until}"
            );
        }
        let pairs = [("since", "-5d")];
        assert!(Window::parse(&get(&pairs), now(), Duration::days(1)).is_err());
        let pairs = [("since", "7d")];
        let w = Window::parse(&get(&pairs), now(), Duration::days(1)).expect("7d");
        assert_eq!(w.until - w.since, Duration::days(7));
    }

    #[test]
    fn offsets_and_hours_parse_strictly() {
        for ok in ["UTC", "Z", "+02:00", "-0530", "+5"] {
            assert!(offset(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Europe/Paris",
            "+25:00",
            "'; DROP TABLE x; --",
            "",
            "+",
            "+1:2:3",
            "+02:60",
        ] {
            assert!(offset(bad).is_err(), "{bad}");
        }
        assert_eq!(hours("08-18").expect("hours"), (8, 18));
        assert_eq!(hours("22-6").expect("hours"), (22, 6));
        for bad in ["8", "8-8", "-1-5", "8-25", "a-b"] {
            assert!(hours(bad).is_err(), "{bad}");
        }
        assert_eq!(days("mon-fri").expect("days").len(), 5);
        assert_eq!(days("fri-mon").expect("days").len(), 4);
        assert!(days("funday").is_err());
    }

    #[test]
    fn a_named_zone_follows_summer_time() {
        let pairs = [("hours", "08-18"), ("tz", "Europe/Berlin")];
        let p = AfterHoursParams::parse(&get(&pairs), now()).expect("params");
        assert_eq!(p.tz, "Europe/Berlin");
        let at = |month, day, h, m| {
            Utc.with_ymd_and_hms(2026, month, day, h, m, 0)
                .single()
                .expect("time")
        };
        // Wednesday 2026-07-15, 06:30 UTC: 08:30 in Berlin's summer (+02:00).
        assert!(p.working(at(7, 15, 6, 30)));
        // Wednesday 2026-01-14, 06:30 UTC: 07:30 in Berlin's winter (+01:00).
        assert!(!p.working(at(1, 14, 6, 30)));
        // A fixed +01:00 gets July wrong, which is why names are taken.
        let fixed = [("hours", "08-18"), ("tz", "+01:00")];
        let p = AfterHoursParams::parse(&get(&fixed), now()).expect("params");
        assert!(!p.working(at(7, 15, 6, 30)));
        for bad in ["Europe/Nowhere", "Berlin/Europe", "../etc/passwd"] {
            assert!(zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn working_hours_follow_the_offset_and_the_night_shift() {
        let pairs = [("hours", "09-17"), ("tz", "+02:00")];
        let p = AfterHoursParams::parse(&get(&pairs), now()).expect("params");
        // Tuesday 2026-03-10: 07:30 UTC is 09:30 at +02:00.
        let at = |h, m| {
            Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0)
                .single()
                .expect("time")
        };
        assert!(p.working(at(7, 30)));
        assert!(!p.working(at(6, 30)));
        assert!(!p.working(at(15, 30)));
        // Saturday.
        let sat = Utc
            .with_ymd_and_hms(2026, 3, 14, 10, 0, 0)
            .single()
            .expect("time");
        assert!(!p.working(sat));
        let night = [("hours", "22-06"), ("days", "mon-fri")];
        let p = AfterHoursParams::parse(&get(&night), now()).expect("params");
        assert!(p.working(at(23, 0)));
        // 02:00 on Saturday belongs to Friday's shift.
        let sat_early = Utc
            .with_ymd_and_hms(2026, 3, 14, 2, 0, 0)
            .single()
            .expect("time");
        assert!(p.working(sat_early));
        assert!(!p.working(at(12, 0)));
    }

    #[test]
    fn a_key_is_named_only_as_a_whole_word() {
        assert!(names("SELECT * FROM t WHERE id = 42", "42"));
        assert!(names("... WHERE id='42'", "42"));
        assert!(!names("SELECT * FROM t WHERE id = 420", "42"));
        assert!(!names("SELECT * FROM t WHERE x42 = 1", "42"));
        assert!(!names("SELECT 1", ""));
    }
}
