//! One RFC 5424 syslog message per record, without framing (the transport
//! adds it: octet counting over TCP and TLS, one datagram over UDP):
//!
//! `<PRI>1 TIMESTAMP HOSTNAME pgtrail PROCID MSGID [pgtrail@32473 …] MSG`
//!
//! - PRI: the facility (`local0` by default, `auth` for session events;
//!   one for all with [`super::Encoder::with_facility`]) times 8 plus a
//!   severity from the event: 6 informational, 4 warning for a failure
//!   (statement or login) or a quarantined value, 1 alert for an alarm.
//! - TIMESTAMP: when the event was captured, to the microsecond, UTC.
//! - PROCID: the pgtrail process; MSGID: the event's kind (`checkpoint`
//!   for a checkpoint).
//! - STRUCTURED-DATA: one element, SD-ID [`SD_ID`], with the event's
//!   identity fields (`id`, `seq`, `source`, `kind`, `operation`, `db_user`,
//!   `app_user`, `client_addr`, `database`, `table`, `sqlstate`, `hash`).
//!   In PARAM-VALUE `"`, `\` and `]` are escaped with `\`, as RFC 5424
//!   requires; control characters (line breaks included, which would split
//!   a record on transports framed by newlines) become U+FFFD: these are
//!   an index, the exact values are in MSG.
//! - MSG: the event as JSON (the `jsonl` record without its newline) in
//!   ASCII: every character past U+007F is a `\uXXXX` escape, so MSG needs
//!   no BOM and means the same whatever a relay thinks its charset is, and
//!   holds no raw control character.
//!
//! Size: a message is as long as its event (a 1 MB statement makes a 1 MB
//! message). TCP and TLS carry any size; over UDP a message must fit a
//! datagram (RFC 5426: 480 octets always, 2048 should be), which is the
//! transport's business.

use std::str::FromStr;

use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::Checkpoint;
use serde::{Deserialize, Serialize};

use super::{json, Level};

/// The SD-ID of pgtrail's structured data element. 32473 is the private
/// enterprise number RFC 5612 reserves for documentation and examples:
/// a placeholder until pgtrail has a number of its own.
pub const SD_ID: &str = "pgtrail@32473";

/// A syslog facility (RFC 5424, table 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Facility {
    /// 1: user-level messages.
    User,
    /// 3: system daemons.
    Daemon,
    /// 4: security/authorization messages.
    Auth,
    /// 10: security/authorization messages (private).
    Authpriv,
    /// 13: log audit.
    Audit,
    /// 16–23: local use.
    Local0,
    /// 17.
    Local1,
    /// 18.
    Local2,
    /// 19.
    Local3,
    /// 20.
    Local4,
    /// 21.
    Local5,
    /// 22.
    Local6,
    /// 23.
    Local7,
}

impl Facility {
    const ALL: [(Facility, &'static str, u8); 13] = [
        (Facility::User, "user", 1),
        (Facility::Daemon, "daemon", 3),
        (Facility::Auth, "auth", 4),
        (Facility::Authpriv, "authpriv", 10),
        (Facility::Audit, "audit", 13),
        (Facility::Local0, "local0", 16),
        (Facility::Local1, "local1", 17),
        (Facility::Local2, "local2", 18),
        (Facility::Local3, "local3", 19),
        (Facility::Local4, "local4", 20),
        (Facility::Local5, "local5", 21),
        (Facility::Local6, "local6", 22),
        (Facility::Local7, "local7", 23),
    ];

    /// Its number.
    pub fn code(self) -> u8 {
        Self::ALL
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or(16, |(_, _, code)| *code)
    }

    /// Its name in configuration.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(f, _, _)| *f == self)
            .map_or("local0", |(_, name, _)| name)
    }
}

impl FromStr for Facility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(s))
            .map(|(f, _, _)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|(_, n, _)| *n).collect();
                format!("unknown syslog facility {s:?}: one of {}", names.join(", "))
            })
    }
}

/// One event as one RFC 5424 message.
pub(crate) fn event(
    e: &Event,
    host: &str,
    facility: Option<Facility>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let body = serde_json::to_vec(e).map_err(|error| error.to_string())?;
    let facility = facility.unwrap_or(if e.kind == Kind::Session {
        Facility::Auth
    } else {
        Facility::Local0
    });
    let severity = match Level::of(e) {
        Level::Info => 6,
        Level::Low | Level::Medium => 4,
        Level::High => 1,
    };
    let seq = e.seq.map(|s| s.to_string());
    let id = e.id.to_string();
    let table = e.qualified_table();
    head(
        out,
        facility,
        severity,
        &pgtrail_core::time::format_micros(&e.captured_at),
        host,
        e.kind.as_str(),
    );
    structured(
        out,
        &[
            ("id", Some(&id)),
            ("seq", seq.as_deref()),
            ("source", Some(e.source.as_str())),
            ("kind", Some(e.kind.as_str())),
            ("operation", e.operation.as_deref()),
            ("db_user", e.db_user.as_deref()),
            ("app_user", e.app_user.as_deref()),
            ("client_addr", e.client_addr.as_deref()),
            ("database", e.database.as_deref()),
            ("table", table.as_deref()),
            ("sqlstate", e.sqlstate.as_deref()),
            ("hash", e.hash.as_deref()),
        ],
    );
    out.push(b' ');
    json::ascii_only(&body, out);
    Ok(())
}

/// A checkpoint as one message: MSGID `checkpoint`, MSG the `jsonl`
/// checkpoint record (`{"checkpoint":{…}}`).
pub(crate) fn checkpoint(
    c: &Checkpoint,
    host: &str,
    facility: Option<Facility>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut body = b"{\"checkpoint\":".to_vec();
    serde_json::to_writer(&mut body, c).map_err(|error| error.to_string())?;
    body.push(b'}');
    let seq = c.seq.to_string();
    let count = c.count.to_string();
    head(
        out,
        facility.unwrap_or(Facility::Local0),
        6,
        &pgtrail_core::time::format_micros(&c.created_at),
        host,
        "checkpoint",
    );
    structured(
        out,
        &[
            ("seq", Some(&seq)),
            ("kind", Some(c.kind.as_str())),
            ("hash", Some(&c.hash)),
            ("count", Some(&count)),
        ],
    );
    out.push(b' ');
    json::ascii_only(&body, out);
    Ok(())
}

fn head(out: &mut Vec<u8>, facility: Facility, severity: u8, time: &str, host: &str, msgid: &str) {
    let pri = u16::from(facility.code()) * 8 + u16::from(severity);
    out.extend_from_slice(
        format!(
            "<{pri}>1 {time} {host} pgtrail {} {} ",
            std::process::id(),
            printable(msgid, 32)
        )
        .as_bytes(),
    );
}

/// `[SD_ID name="value" …]`, parameters without a value left out.
fn structured(out: &mut Vec<u8>, params: &[(&str, Option<&str>)]) {
    out.push(b'[');
    out.extend_from_slice(SD_ID.as_bytes());
    let mut buf = [0u8; 4];
    for (name, value) in params {
        let Some(value) = value else { continue };
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        for c in value.chars() {
            match c {
                '"' | '\\' | ']' => {
                    out.push(b'\\');
                    out.push(c as u8);
                }
                c if c.is_control() => out.extend_from_slice("\u{fffd}".as_bytes()),
                c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
            }
        }
        out.push(b'"');
    }
    out.push(b']');
}

/// `text` as a header field: printable ASCII only (33–126), at most `max`
/// characters, `-` (the NILVALUE) when nothing is left.
fn printable(text: &str, max: usize) -> String {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if kept.is_empty() {
        "-".into()
    } else {
        kept
    }
}

/// A HOSTNAME field for `name`.
pub(crate) fn hostname(name: &str) -> String {
    printable(name, 255)
}

/// This machine's name, or `-` when it cannot be read (read once).
pub(crate) fn local_hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        hostname(name.trim())
    })
    .clone()
}
