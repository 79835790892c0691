//! One event as one record in the formats SIEMs and log shippers take.
//!
//! Shared by `pgtrail export --format` and every sink, so a field maps the
//! same way wherever it goes (docs/integrations.md, "Formats", has the
//! mapping of each). One file per format; what they share (an event's
//! outcome, severity, activity and one-line summary) is here.
//!
//! Every encoder is total: whatever the values (newlines, NUL, `|`, `=`,
//! `]`, quotes, backslashes, a megabyte of SQL, a row image nested
//! thousands of levels deep), it writes exactly one well-formed record,
//! escaping by the format's own rules, and never panics. Hostile text stays
//! a value: it cannot end the record, start another, or add a field.

use std::fmt;
use std::str::FromStr;

use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::Checkpoint;
use pgtrail_store::RawEvent;
use serde::{Deserialize, Serialize};

mod cef;
mod csv;
mod ecs;
mod json;
mod ocsf;
pub(crate) mod raw;
mod syslog;

pub use csv::COLUMNS as CSV_COLUMNS;
pub(crate) use json::string as json_string;
pub use syslog::{Facility, SD_ID};

/// pgtrail's version, as the records name it (OCSF `metadata.product`,
/// CEF's header, ECS `agent.version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A record format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event as is, one JSON object per line.
    Jsonl,
    /// OCSF: Datastore Activity (6005), Authentication (3002).
    Ocsf,
    /// Elastic Common Schema with OpenTelemetry `db.*` attributes.
    Ecs,
    /// ArcSight Common Event Format.
    Cef,
    /// RFC 5424 with structured data (framing is the transport's).
    Syslog,
    /// Comma-separated values with a header.
    Csv,
}

impl Format {
    /// Every format, in the order help texts list them.
    pub const ALL: [Format; 6] = [
        Format::Jsonl,
        Format::Ocsf,
        Format::Ecs,
        Format::Cef,
        Format::Syslog,
        Format::Csv,
    ];

    /// The name in configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Ocsf => "ocsf",
            Format::Ecs => "ecs",
            Format::Cef => "cef",
            Format::Syslog => "syslog",
            Format::Csv => "csv",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| FormatError::Unknown(s.to_string()))
    }
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A format name nobody knows.
    #[error("unknown format {0:?}: one of jsonl, ocsf, ecs, cef, syslog, csv")]
    Unknown(String),
    /// An event as stored could not be read (its body is not an event).
    #[error("cannot read event {seq} as stored: {reason}")]
    Stored {
        /// The event's place in the chain.
        seq: i64,
        /// What went wrong.
        reason: String,
    },
    /// The event could not be encoded.
    #[error("cannot write event {seq} as {format}: {reason}")]
    Encode {
        /// The event's place in the chain.
        seq: i64,
        /// The format.
        format: Format,
        /// What went wrong.
        reason: String,
    },
}

/// Writes events (and checkpoints) as records of one format.
#[derive(Debug, Clone)]
pub struct Encoder {
    format: Format,
    host: String,
    facility: Option<Facility>,
}

impl Encoder {
    /// An encoder for `format`, naming this machine as the host (syslog's
    /// HOSTNAME, CEF's `dvchost`, ECS `host.name`).
    pub fn new(format: Format) -> Self {
        Encoder {
            format,
            host: syslog::local_hostname(),
            facility: None,
        }
    }

    /// The same encoder naming `host` instead (characters syslog's
    /// HOSTNAME cannot hold are dropped; an empty name is syslog's `-`).
    pub fn with_host(mut self, host: &str) -> Self {
        self.host = syslog::hostname(host);
        self
    }

    /// The same encoder with one syslog facility for every record (the
    /// default is `local0`, and `auth` for session events: logins, failed
    /// logins, logoffs).
    pub fn with_facility(mut self, facility: Facility) -> Self {
        self.facility = Some(facility);
        self
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes written once before the first record (CSV's header line);
    /// empty for the other formats.
    pub fn header(&self) -> Vec<u8> {
        match self.format {
            Format::Csv => csv::header(),
            _ => Vec::new(),
        }
    }

    /// Appends one record for `event` to `out`: line formats end with a
    /// newline; `syslog` is one RFC 5424 message with no framing (octet
    /// counting or a newline is the transport's). On error nothing is
    /// appended.
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let start = out.len();
        let written = match self.format {
            Format::Jsonl => jsonl(event, out),
            Format::Ocsf => {
                ocsf::event(event, out);
                out.push(b'\n');
                Ok(())
            }
            Format::Ecs => {
                ecs::event(event, &self.host, out);
                out.push(b'\n');
                Ok(())
            }
            Format::Cef => {
                cef::event(event, &self.host, out);
                out.push(b'\n');
                Ok(())
            }
            Format::Syslog => syslog::event(event, &self.host, self.facility, out),
            Format::Csv => {
                csv::event(event, out);
                Ok(())
            }
        };
        written.map_err(|reason| {
            out.truncate(start);
            FormatError::Encode {
                seq: event.seq.unwrap_or_default(),
                format: self.format,
                reason,
            }
        })
    }

    /// Appends one record for an event as stored ([`RawEvent`]): for
    /// `jsonl` the stored body with its seal spliced in, never decoded (the
    /// same bytes as [`Encoder::encode`] of the decoded event) unless that
    /// line would hold a line break; the other formats, and such a body,
    /// decode it first.
    pub fn encode_raw(&self, raw: &RawEvent, out: &mut Vec<u8>) -> Result<(), FormatError> {
        let failed = |reason| FormatError::Stored {
            seq: raw.seq,
            reason,
        };
        if self.format == Format::Jsonl {
            let members = raw::Members::of(&raw.body).map_err(failed)?;
            if raw::jsonl_on_one_line(raw, &members, out) {
                return Ok(());
            }
        }
        self.encode(&raw::decode(raw).map_err(failed)?, out)
    }

    /// Appends one record for a signed checkpoint, in the same format: the
    /// signed note with the `seq`, hash and time it covers, so a witness
    /// can live where the events go.
    pub fn encode_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let start = out.len();
        let written = match self.format {
            Format::Jsonl => checkpoint_json(checkpoint, out).map(|()| out.push(b'\n')),
            Format::Ocsf => ocsf::checkpoint(checkpoint, out).map(|()| out.push(b'\n')),
            Format::Ecs => ecs::checkpoint(checkpoint, &self.host, out).map(|()| out.push(b'\n')),
            Format::Cef => {
                cef::checkpoint(checkpoint, &self.host, out);
                out.push(b'\n');
                Ok(())
            }
            Format::Syslog => syslog::checkpoint(checkpoint, &self.host, self.facility, out),
            Format::Csv => {
                csv::checkpoint(checkpoint, out);
                Ok(())
            }
        };
        written.map_err(|reason| {
            out.truncate(start);
            FormatError::Encode {
                seq: checkpoint.seq,
                format: self.format,
                reason,
            }
        })
    }
}

/// The event as is, one line.
fn jsonl(event: &Event, out: &mut Vec<u8>) -> Result<(), String> {
    serde_json::to_writer(&mut *out, event).map_err(|error| error.to_string())?;
    out.push(b'\n');
    Ok(())
}

/// `{"checkpoint":{…}}`: the checkpoint as the store keeps it, under a key
/// no event has (events refuse unknown fields), so a reader of a mixed
/// stream tells the two apart by the first key.
fn checkpoint_json(checkpoint: &Checkpoint, out: &mut Vec<u8>) -> Result<(), String> {
    out.extend_from_slice(b"{\"checkpoint\":");
    serde_json::to_writer(&mut *out, checkpoint).map_err(|error| error.to_string())?;
    out.push(b'}');
    Ok(())
}

/// Whether an event records success, failure, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    fn of(event: &Event) -> Self {
        if event.failed() {
            Outcome::Failure
        } else {
            match event.kind {
                Kind::Alarm | Kind::Quarantine => Outcome::Unknown,
                _ => Outcome::Success,
            }
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// How much an event matters, one scale for every format (each maps it to
/// its own numbers; docs/integrations.md has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// The ordinary trail.
    Info,
    /// A statement that failed.
    Low,
    /// A failed login; a value quarantined.
    Medium,
    /// An alarm: the trail may be incomplete.
    High,
}

impl Level {
    fn of(event: &Event) -> Self {
        match event.kind {
            Kind::Alarm => Level::High,
            Kind::Quarantine => Level::Medium,
            Kind::Session if event.failed() => Level::Medium,
            _ if event.failed() => Level::Low,
            _ => Level::Info,
        }
    }
}

/// What an event did to the data, in OCSF's activity vocabulary (ECS's
/// `event.type` is derived from it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    Read,
    Update,
    Query,
    Write,
    Create,
    Delete,
    Logon,
    Logoff,
    Other,
}

impl Activity {
    fn of(event: &Event) -> Self {
        let operation = event
            .operation
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase();
        let first = operation.split_whitespace().next().unwrap_or("");
        match event.kind {
            Kind::Session => match first {
                "CONNECT" => Activity::Logon,
                "DISCONNECT" => Activity::Logoff,
                _ => Activity::Other,
            },
            Kind::Snapshot => Activity::Read,
            Kind::Access => Activity::Query,
            Kind::Alarm | Kind::Quarantine => Activity::Other,
            Kind::RowChange | Kind::Ddl | Kind::Statement => match first {
                "SELECT" | "FETCH" | "SHOW" => Activity::Query,
                "COPY" if event.class.as_deref() == Some("READ") => Activity::Query,
                "INSERT" => Activity::Create,
                "UPDATE" | "ALTER" | "COMMENT" | "GRANT" | "REVOKE" => Activity::Update,
                "DELETE" | "TRUNCATE" | "DROP" => Activity::Delete,
                "CREATE" => Activity::Create,
                "MERGE" | "COPY" => Activity::Write,
                _ => Activity::Other,
            },
        }
    }
}

/// One line saying what happened: `UPDATE public.users`, `login failed`,
/// `alarm capture_disabled on public.users`. Header fields (CEF's name)
/// use it; at most 200 characters.
pub(crate) fn summary(event: &Event) -> String {
    let operation = event.operation.as_deref();
    let mut text = match (event.kind, Activity::of(event)) {
        (Kind::Session, Activity::Logon) if event.failed() => "login failed".to_string(),
        (Kind::Session, Activity::Logon) => "login".to_string(),
        (Kind::Session, Activity::Logoff) => "logout".to_string(),
        (Kind::Alarm, _) => format!("alarm {}", operation.unwrap_or("")),
        (Kind::Quarantine, _) => "value quarantined".to_string(),
        (Kind::Access, _) => format!("trail read {}", operation.unwrap_or("")),
        (kind, _) => operation.unwrap_or(kind.as_str()).to_string(),
    };
    if let Some(table) = event.qualified_table() {
        text.push_str(if event.kind == Kind::Alarm {
            " on "
        } else {
            " "
        });
        text.push_str(&table);
    }
    if event.failed() && event.kind != Kind::Session {
        text.push_str(" failed");
    }
    cut(&text, 200)
}

/// `text` cut to at most `max` characters.
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

/// Milliseconds since the epoch (OCSF `time`, CEF `rt`).
pub(crate) fn millis(t: &chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}
