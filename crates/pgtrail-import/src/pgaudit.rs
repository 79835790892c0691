//! pgAudit's `AUDIT:` lines from a server log, as `statement` events.
//!
//! pgAudit writes one message per statement (and per relation with
//! `pgaudit.log_relation`, per sub-statement for a function's or a DO
//! block's statements): `AUDIT: TYPE,STATEMENT_ID,SUBSTATEMENT_ID,CLASS,
//! COMMAND,OBJECT_TYPE,OBJECT_NAME,STATEMENT,PARAMETER[,ROWS]`, CSV-quoted,
//! inside whatever the server's log format wraps around it:
//!
//! - `stderr`: `log_line_prefix` then `SEVERITY:  message`; a message's
//!   later lines start with a tab. Who and where come from the prefix and,
//!   when it lacks them, from `log_connections`' lines for the same pid.
//! - `csvlog` and `jsonlog`: every field of the session in each record.
//!
//! The messages of one statement (same session, statement and
//! sub-statement id) become one event whose `objects` lists every relation.
//! The statement text goes through the shared redactor: pgAudit redacts a
//! password only in the statement that sets it, and logs the whole query
//! string with every statement of a multi-statement query, so another
//! statement's line carries the password in clear.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;

use chrono::{DateTime, FixedOffset, Utc};
use pgtrail_core::{Event, Kind, Source};
use serde_json::{json, Value};

use crate::prefix::{parse_log_time, LinePrefix};
use crate::{claimed_by_the_record, csv, id, ImportError};

/// Records whose ids are told apart from identical ones (see `Reader::seen`).
const SEEN_WINDOW: usize = 100_000;

/// The server log's format (`log_destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `stderr` (also what `syslog` and `eventlog` carry), with a prefix.
    Stderr,
    /// `csvlog`.
    Csvlog,
    /// `jsonlog` (PostgreSQL 15 and later).
    Jsonlog,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stderr" => Ok(LogFormat::Stderr),
            "csvlog" | "csv" => Ok(LogFormat::Csvlog),
            "jsonlog" | "json" => Ok(LogFormat::Jsonlog),
            other => Err(format!(
                "unknown log format {other:?}: stderr, csvlog or jsonlog"
            )),
        }
    }
}

/// How to read a log.
#[derive(Debug, Clone)]
pub struct Options {
    /// The log's format; `None`: told from its first record.
    pub format: Option<LogFormat>,
    /// `log_line_prefix` of a `stderr` log.
    pub prefix: LinePrefix,
    /// Offset of `log_timezone` when it is written as an abbreviation.
    pub utc_offset: Option<FixedOffset>,
    /// Keep bound parameter values (`pgaudit.log_parameter`); off, they are
    /// left out and `context.imported.params` says so.
    pub keep_params: bool,
    /// The file's name, kept in each event's `context.imported`.
    pub origin: String,
}

/// What a read saw, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Log records read.
    pub records: u64,
    /// Of them, pgAudit's.
    pub audit_records: u64,
    /// Events made from those.
    pub events: u64,
}

/// One log record, whatever the format.
#[derive(Debug, Default)]
struct LogRecord {
    line: usize,
    time: Option<String>,
    pid: Option<String>,
    user: Option<String>,
    database: Option<String>,
    /// `host`, `host(port)` or `host:port`.
    remote: Option<String>,
    remote_port: Option<String>,
    application: Option<String>,
    session: Option<String>,
    xid: Option<String>,
    message: String,
    /// The record as written, for its id.
    raw: String,
}

/// What `log_connections` told about a backend, for logs whose prefix
/// does not say who.
#[derive(Debug, Default, Clone)]
struct Session {
    remote: Option<String>,
    remote_port: Option<String>,
    user: Option<String>,
    database: Option<String>,
    application: Option<String>,
    /// The last statement's text, for `<previously logged>` (only the
    /// messages of the same statement and sub-statement say that).
    last_text: Option<((u64, u64), String)>,
}

/// A statement whose messages are still coming.
struct Pending {
    key: (u64, u64),
    event: Event,
}

/// Reads a log record by record and hands out events in batches.
pub struct Reader<R> {
    input: R,
    options: Options,
    format: Option<LogFormat>,
    line: usize,
    /// A `stderr` line read ahead (the next record's first line).
    ahead: Option<(usize, String)>,
    sessions: HashMap<String, Session>,
    pending: HashMap<String, Pending>,
    ready: VecDeque<Event>,
    /// Identical records seen lately (their count, and the last one's
    /// position), so their ids differ yet repeat on a second import. Two
    /// records alike share their time to the millisecond, so a window of
    /// recent records is enough and memory stays bounded.
    seen: HashMap<[u8; 32], (u32, u64)>,
    stats: Stats,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    /// A reader of `input`.
    pub fn new(input: R, options: Options) -> Self {
        Reader {
            input,
            format: options.format,
            options,
            line: 0,
            ahead: None,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            ready: VecDeque::new(),
            seen: HashMap::new(),
            stats: Stats::default(),
            done: false,
        }
    }

    /// What was read so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Up to `max` events, in the order their statements finished; empty
    /// at the end of the log.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Event>, ImportError> {
        while self.ready.len() < max && !self.done {
            match self.next_record()? {
                Some(record) => self.take(record)?,
                None => {
                    self.done = true;
                    let mut rest: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
                    rest.sort_by_key(|p| p.event.captured_at);
                    self.ready.extend(rest.into_iter().map(|p| p.event));
                }
            }
        }
        let n = self.ready.len().min(max);
        let batch: Vec<Event> = self.ready.drain(..n).collect();
        self.stats.events += batch.len() as u64;
        Ok(batch)
    }

    fn read_line(&mut self) -> Result<Option<(usize, String)>, ImportError> {
        if let Some(ahead) = self.ahead.take() {
            return Ok(Some(ahead));
        }
        let mut line = String::new();
        let read = self
            .input
            .read_line(&mut line)
            .map_err(|e| ImportError::Malformed {
                place: format!("{} line {}", self.options.origin, self.line + 1),
                reason: format!("cannot read: {e}"),
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        while line.ends_with(['\n', '\r']) {
            line.pop();
        }
        Ok(Some((self.line, line)))
    }

    fn place(&self, line: usize) -> String {
        format!("{} line {line}", self.options.origin)
    }

    fn next_record(&mut self) -> Result<Option<LogRecord>, ImportError> {
        let (line, first) = loop {
            match self.read_line()? {
                None => return Ok(None),
                Some((_, text)) if text.trim().is_empty() => continue,
                Some(found) => break found,
            }
        };
        let format = match self.format {
            Some(format) => format,
            None => {
                let guessed = guess_format(&first);
                self.format = Some(guessed);
                guessed
            }
        };
        let record = match format {
            LogFormat::Stderr => self.stderr_record(line, first)?,
            LogFormat::Csvlog => self.csv_record(line, first)?,
            LogFormat::Jsonlog => self.json_record(line, &first)?,
        };
        self.stats.records += 1;
        Ok(Some(record))
    }

    fn stderr_record(&mut self, line: usize, first: String) -> Result<LogRecord, ImportError> {
        let mut raw = first;
        // Later lines of the same message start with a tab.
        loop {
            match self.read_line()? {
                Some((_, next)) if next.starts_with('\t') => {
                    raw.push('\n');
                    raw.push_str(&next[1..]);
                }
                Some(other) => {
                    self.ahead = Some(other);
                    break;
                }
                None => break,
            }
        }
        let Some((fields, rest)) = self.options.prefix.split(&raw) else {
            return Err(ImportError::Malformed {
                place: self.place(line),
                reason:
                    "the line does not start with the log_line_prefix given (--log-line-prefix)"
                        .into(),
            });
        };
        let (_severity, message) = split_severity(rest).ok_or_else(|| ImportError::Malformed {
            place: self.place(line),
            reason: "no 'SEVERITY:  message' after the log_line_prefix".into(),
        })?;
        let (remote, remote_port) = match fields.remote.as_deref() {
            Some(remote) => split_remote(remote),
            None => (None, None),
        };
        Ok(LogRecord {
            line,
            time: fields.time,
            pid: fields.pid,
            user: fields.user,
            database: fields.database,
            remote,
            remote_port,
            application: fields.application,
            session: fields.session,
            xid: fields.xid,
            message: message.to_string(),
            raw: raw.clone(),
        })
    }

    fn csv_record(&mut self, line: usize, first: String) -> Result<LogRecord, ImportError> {
        let mut raw = first;
        while csv::is_open(&raw) {
            match self.read_line()? {
                Some((_, next)) => {
                    raw.push('\n');
                    raw.push_str(&next);
                }
                None => break,
            }
        }
        let fields = csv::fields(&raw).ok_or_else(|| ImportError::Malformed {
            place: self.place(line),
            reason: "a quoted csvlog field never ends".into(),
        })?;
        if fields.len() < 23 {
            return Err(ImportError::Malformed {
                place: self.place(line),
                reason: format!(
                    "a csvlog record has at least 23 fields, this one {}",
                    fields.len()
                ),
            });
        }
        let get = |i: usize| fields.get(i).filter(|f| !f.is_empty()).cloned();
        let (remote, remote_port) = match get(4) {
            Some(from) => split_remote(&from),
            None => (None, None),
        };
        Ok(LogRecord {
            line,
            time: get(0),
            user: get(1),
            database: get(2),
            pid: get(3),
            remote,
            remote_port,
            session: get(5),
            xid: get(10),
            message: fields[13].clone(),
            application: get(22),
            raw,
        })
    }

    fn json_record(&mut self, line: usize, text: &str) -> Result<LogRecord, ImportError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ImportError::Malformed {
            place: self.place(line),
            reason: format!("not a jsonlog record: {e}"),
        })?;
        let get = |key: &str| match value.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (remote, port) = match get("remote_host") {
            Some(host) => split_remote(&host),
            None => (None, None),
        };
        Ok(LogRecord {
            line,
            time: get("timestamp"),
            pid: get("pid"),
            user: get("user"),
            database: get("dbname"),
            remote,
            remote_port: get("remote_port").or(port),
            application: get("application_name"),
            session: get("session_id"),
            xid: get("txid"),
            message: get("message").unwrap_or_default(),
            raw: text.to_string(),
        })
    }

    /// Takes one record: a session's login or logout, or an AUDIT message.
    fn take(&mut self, record: LogRecord) -> Result<(), ImportError> {
        let backend = record.pid.clone().unwrap_or_default();
        if let Some(rest) = record.message.strip_prefix("connection received: ") {
            let session = Session {
                remote: word(rest, "host="),
                remote_port: word(rest, "port="),
                ..Session::default()
            };
            self.flush(&backend);
            self.sessions.insert(backend, session);
            return Ok(());
        }
        if let Some(rest) = record.message.strip_prefix("connection authorized: ") {
            let session = self.sessions.entry(backend).or_default();
            session.user = word(rest, "user=");
            session.database = word(rest, "database=");
            // The last key: its value may hold spaces.
            session.application = rest
                .find("application_name=")
                .map(|at| rest[at + "application_name=".len()..].to_string())
                .filter(|name| !name.is_empty());
            return Ok(());
        }
        if record.message.starts_with("disconnection: ") {
            self.flush(&backend);
            self.sessions.remove(&backend);
            return Ok(());
        }
        let Some(audit) = record.message.strip_prefix("AUDIT: ") else {
            return Ok(());
        };
        self.stats.audit_records += 1;
        let place = self.place(record.line);
        let fields = csv::fields(audit).ok_or_else(|| ImportError::Malformed {
            place: place.clone(),
            reason: "a quoted field of the AUDIT message never ends".into(),
        })?;
        if !(9..=10).contains(&fields.len()) {
            return Err(ImportError::Malformed {
                place,
                reason: format!(
                    "an AUDIT message has 9 fields (10 with pgaudit.log_rows), this one {}",
                    fields.len()
                ),
            });
        }
        let number = |i: usize| {
            fields[i]
                .parse::<u64>()
                .map_err(|_| ImportError::Malformed {
                    place: place.clone(),
                    reason: format!("AUDIT field {} is not a number: {:?}", i + 1, fields[i]),
                })
        };
        let key = (number(1)?, number(2)?);
        let object = Some(fields[6].clone()).filter(|o| !o.is_empty());

        // Another message of the statement in hand: one more relation.
        if let Some(pending) = self.pending.get_mut(&backend) {
            if pending.key == key {
                if let Some(object) = object {
                    if !pending.event.objects.contains(&object) {
                        pending.event.objects.push(object);
                    }
                }
                return Ok(());
            }
        }
        self.flush(&backend);
        let event = self.statement_event(&record, &fields, key, object)?;
        self.pending.insert(backend, Pending { key, event });
        Ok(())
    }

    fn flush(&mut self, backend: &str) {
        if let Some(pending) = self.pending.remove(backend) {
            self.ready.push_back(pending.event);
        }
    }

    fn statement_event(
        &mut self,
        record: &LogRecord,
        fields: &[String],
        key: (u64, u64),
        object: Option<String>,
    ) -> Result<Event, ImportError> {
        let place = self.place(record.line);
        let time = record
            .time
            .as_deref()
            .ok_or_else(|| ImportError::Malformed {
                place: place.clone(),
                reason: "the record has no time (a log_line_prefix without %m, %t or %n)".into(),
            })?;
        let at: DateTime<Utc> =
            parse_log_time(time, self.options.utc_offset).map_err(|reason| {
                ImportError::Malformed {
                    place: place.clone(),
                    reason,
                }
            })?;
        let backend = record.pid.clone().unwrap_or_default();
        let session = self.sessions.entry(backend.clone()).or_default();

        let statement = &fields[7];
        let text = if statement == "<previously logged>" {
            session
                .last_text
                .as_ref()
                .filter(|(last, _)| *last == key)
                .map(|(_, text)| text.clone())
        } else {
            let (redacted, _) = pgtrail_sql::redact_secrets(statement);
            session.last_text = Some((key, redacted.clone()));
            Some(redacted)
        };

        let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(record.raw.as_bytes()).into();
        let position = self.stats.records;
        if self.seen.len() >= SEEN_WINDOW * 2 {
            self.seen
                .retain(|_, (_, last)| position - *last < SEEN_WINDOW as u64);
        }
        let seen = self.seen.entry(digest).or_insert((0, position));
        *seen = (seen.0 + 1, position);
        let occurrence = seen.0;
        let mut event = Event::at(Source::Import, Kind::Statement, at);
        event.id = id::event_id(&[b"pgaudit", &digest, &occurrence.to_be_bytes()], at);
        event.db_user = record.user.clone().or_else(|| session.user.clone());
        event.database = record.database.clone().or_else(|| session.database.clone());
        event.client_addr = record
            .remote
            .clone()
            .or_else(|| session.remote.clone())
            .filter(|host| host != "[local]");
        event.client_port = record
            .remote_port
            .as_deref()
            .or(session.remote_port.as_deref())
            .and_then(|p| p.parse().ok());
        event.application_name = record
            .application
            .clone()
            .or_else(|| session.application.clone());
        event.backend_pid = record.pid.as_deref().and_then(|p| p.parse().ok());
        event.session_id = record.session.clone();
        event.xid = record
            .xid
            .as_deref()
            .and_then(|x| x.parse::<i64>().ok())
            .filter(|x| *x != 0);
        event.class = Some(fields[3].clone());
        event.command_tag = Some(fields[4].clone());
        event.operation = Some(fields[4].clone());
        event.objects = object.into_iter().collect();
        event.sql = text;
        event.rows = fields.get(9).and_then(|rows| rows.parse().ok());
        let params = &fields[8];
        let params_note = match params.as_str() {
            "<not logged>" => "not logged",
            "<none>" => "none",
            _ if self.options.keep_params => {
                let values = csv::fields(params).unwrap_or_else(|| vec![params.clone()]);
                event.params = Some(values.into_iter().map(Value::String).collect());
                "kept"
            }
            _ => "withheld",
        };
        let imported = json!({
            "from": "pgaudit",
            "file": self.options.origin,
            "line": record.line,
            "audit_type": fields[0],
            "statement_id": key.0,
            "substatement_id": key.1,
            "object_type": fields[5],
            "params": params_note,
        });
        let mut context = serde_json::Map::new();
        context.insert("imported".into(), imported);
        event.context = Some(context);
        event.provenance = Some(claimed_by_the_record(&event));
        Ok(event)
    }
}

fn guess_format(first: &str) -> LogFormat {
    if first.starts_with('{') {
        LogFormat::Jsonlog
    } else if first.len() > 24
        && first.as_bytes()[..4].iter().all(u8::is_ascii_digit)
        && first.matches(',').count() >= 22
        && first.contains(",\"")
    {
        LogFormat::Csvlog
    } else {
        LogFormat::Stderr
    }
}

/// `LOG:  message` (two spaces after the colon).
fn split_severity(rest: &str) -> Option<(&str, &str)> {
    let (severity, message) = rest.split_once(":  ")?;
    severity
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        .then_some((severity, message))
}

/// `host(port)` (%r), `host:port` (csvlog), or a host alone.
fn split_remote(remote: &str) -> (Option<String>, Option<String>) {
    if let Some((host, port)) = remote.strip_suffix(')').and_then(|r| r.split_once('(')) {
        return (Some(host.to_string()), Some(port.to_string()));
    }
    match remote.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            (Some(host.to_string()), Some(port.to_string()))
        }
        _ => (Some(remote.to_string()), None),
    }
}

/// The value after `key` in `a=1 b=2`, up to the next space.
fn word(text: &str, key: &str) -> Option<String> {
    let start = text.find(key)? + key.len();
    let value: String = text[start..].chars().take_while(|c| *c != ' ').collect();
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(log: &str) -> Vec<Event> {
        let options = Options {
            format: None,
            prefix: LinePrefix::parse(crate::prefix::DEBIAN).expect("prefix"),
            utc_offset: None,
            keep_params: false,
            origin: "test.log".into(),
        };
        let mut reader = Reader::new(log.as_bytes(), options);
        let events = reader.next_batch(100).expect("reads");
        assert!(reader.next_batch(100).expect("end").is_empty());
        events
    }

    #[test]
    fn one_statement_s_relations_and_audit_types_make_one_event() {
        let events = read(
            "2026-12-06 10:00:00.001 UTC [7] ann@shop LOG:  AUDIT: SESSION,3,1,READ,SELECT,TABLE,public.a,\"select * from a, b\",<not logged>\n\
             2026-12-06 10:00:00.002 UTC [8] bob@shop LOG:  AUDIT: SESSION,1,1,WRITE,INSERT,TABLE,public.c,insert into c values (1),<none>\n\
             2026-12-06 10:00:00.003 UTC [7] ann@shop LOG:  AUDIT: SESSION,3,1,READ,SELECT,TABLE,public.b,<previously logged>,<previously logged>\n\
             2026-12-06 10:00:00.004 UTC [7] ann@shop LOG:  AUDIT: OBJECT,3,1,READ,SELECT,TABLE,public.b,<previously logged>,<previously logged>\n",
        );
        assert_eq!(events.len(), 2, "{events:#?}");
        let select = events
            .iter()
            .find(|e| e.db_user.as_deref() == Some("ann"))
            .expect("ann's");
        assert_eq!(select.objects, ["public.a", "public.b"]);
        assert_eq!(select.sql.as_deref(), Some("select * from a, b"));
        assert_eq!(select.backend_pid, Some(7));
        let params = &select.context.as_ref().expect("context")["imported"]["params"];
        assert_eq!(params, "not logged");
    }

    #[test]
    fn a_password_in_any_statement_text_is_redacted() {
        let events = read(
            "2026-12-06 10:00:00.001 UTC [7] ann@shop LOG:  AUDIT: SESSION,1,1,WRITE,UPDATE,,,\"update t set x = 1; alter role ann password 'hunter2'\",<none>\n",
        );
        let sql = events[0].sql.as_deref().expect("sql");
        assert!(!sql.contains("hunter2"), "{sql}");
        assert!(sql.contains("update t set x = 1"), "{sql}");
    }

    #[test]
    fn a_malformed_audit_message_names_its_line() {
        let options = Options {
            format: Some(LogFormat::Stderr),
            prefix: LinePrefix::parse(crate::prefix::DEFAULT).expect("prefix"),
            utc_offset: None,
            keep_params: false,
            origin: "bad.log".into(),
        };
        let log = "2026-12-06 10:00:00.001 UTC [7] LOG:  checkpoint starting\n\
                   2026-12-06 10:00:00.002 UTC [7] LOG:  AUDIT: SESSION,x,1,READ\n";
        let error = Reader::new(log.as_bytes(), options)
            .next_batch(10)
            .expect_err("malformed");
        assert!(error.to_string().starts_with("bad.log line 2"), "{error}");
    }
}
