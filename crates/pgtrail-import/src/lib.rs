//! Old audit history brought into the trail (`pgtrail import --from`).
//!
//! A team adopting pgtrail has months of pgAudit log lines or a trigger-fed
//! audit table. Each reader here turns one such record into the same
//! [`pgtrail_core::Event`] every capture path produces, with `source =
//! import`, the record's place in `context.imported`, and every actor field
//! marked as the record's claim (pgtrail saw none of it happen). The
//! binary appends them through the store like any other event, so they are
//! sealed and verified with the rest.
//!
//! - [`pgaudit`]: pgAudit's `AUDIT:` lines from a server log written as
//!   `stderr` (with its `log_line_prefix`), `csvlog` or `jsonlog`.
//! - [`table`]: the classic audit tables (`audit.logged_actions` of the
//!   "audit trigger 91plus" script, and JSONB `old`/`new` tables with a
//!   `changed_by` column), read in key order in bounded pages.
//!
//! Ids are derived from the record (its text, or its table and key), so a
//! second import of the same history adds nothing.

use std::collections::BTreeMap;

use pgtrail_core::event::{Channel, Provenance, SERVER_FIELDS};
use pgtrail_core::Event;

mod csv;
mod id;
pub mod pgaudit;
pub mod prefix;
pub mod table;

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A record could not be read as what it claims to be.
    #[error("{place}: {reason}")]
    Malformed {
        /// File and line, or table and key.
        place: String,
        /// What was wrong.
        reason: String,
    },
    /// The audit table's database could not be read.
    #[error("cannot read {what}: {source}")]
    Database {
        /// What was being read.
        what: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The audit table's database could not be reached.
    #[error(transparent)]
    Connect(#[from] pgtrail_connect::ConnectError),
    /// The table's columns match no layout pgtrail knows.
    #[error("{0}")]
    Layout(String),
}

/// Every actor field of an imported event is the old record's claim.
pub(crate) fn claimed_by_the_record(event: &Event) -> Provenance {
    let present = |field: &str| match field {
        "backend_pid" => event.backend_pid.is_some(),
        "client_addr" => event.client_addr.is_some(),
        "client_port" => event.client_port.is_some(),
        "db_user" => event.db_user.is_some(),
        _ => false,
    };
    let mut claimed = BTreeMap::new();
    for field in SERVER_FIELDS.into_iter().filter(|f| present(f)) {
        claimed.insert(field.to_string(), vec![Channel::Import]);
    }
    if event.app_user.is_some() {
        claimed.insert("app_user".into(), vec![Channel::Import]);
    }
    if event.application_name.is_some() {
        claimed.insert("application_name".into(), vec![Channel::Import]);
    }
    Provenance {
        claimed,
        vouched: Vec::new(),
    }
}
