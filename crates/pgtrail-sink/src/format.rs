//! One event as one record in the formats SIEMs and log shippers take.
//!
//! Shared by `pgtrail export --format` and every sink, so a field maps the
//! same way wherever it goes (docs/integrations.md has the mapping).

use std::fmt;
use std::str::FromStr;

use pgtrail_core::Event;
use pgtrail_store::checkpoint::Checkpoint;
use serde::{Deserialize, Serialize};

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
}

impl Encoder {
    /// An encoder for `format`.
    pub fn new(format: Format) -> Self {
        Encoder { format }
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes written once before the first record (CSV's header line);
    /// empty for the other formats.
    pub fn header(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Appends one record for `event` to `out`: line formats end with a
    /// newline; `syslog` is one RFC 5424 message with no framing (octet
    /// counting or a newline is the transport's).
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), FormatError> {
        match self.format {
            Format::Jsonl => {
                serde_json::to_writer(&mut *out, event).map_err(|error| FormatError::Encode {
                    seq: event.seq.unwrap_or_default(),
                    format: self.format,
                    reason: error.to_string(),
                })?;
                out.push(b'\n');
                Ok(())
            }
            other => Err(FormatError::Encode {
                seq: event.seq.unwrap_or_default(),
                format: other,
                reason: "not written yet".into(),
            }),
        }
    }

    /// Appends one record for a signed checkpoint, in the same format.
    pub fn encode_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let _ = out;
        Err(FormatError::Encode {
            seq: checkpoint.seq,
            format: self.format,
            reason: "not written yet".into(),
        })
    }
}
