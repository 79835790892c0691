//! What can go wrong while installing, tracking or draining.

use pgtrail_store::StoreError;

/// Errors of trigger capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A statement against the audited database failed.
    #[error("{action}: {}", describe(.source))]
    Postgres {
        /// What was being done.
        action: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The audited database could not be reached or logged in to.
    #[error("connecting to {target}")]
    Connect {
        /// `user@host:port/db` (no password).
        target: String,
        /// Why (password missing, TLS, refused login, …).
        #[source]
        source: pgtrail_connect::ConnectError,
    },
    /// The server is older than trigger capture supports.
    #[error("PostgreSQL {found} is not supported by trigger capture: it needs PostgreSQL 13 or newer (tested on 13 to 17)")]
    UnsupportedVersion {
        /// The server's version.
        found: String,
    },
    /// The connected role lacks what installing needs.
    #[error("cannot install pgtrail as role {role}; missing:\n{}", .missing.iter().map(|m| format!("  - {m}")).collect::<Vec<_>>().join("\n"))]
    MissingPrivileges {
        /// The connected role.
        role: String,
        /// Each missing privilege and what it is needed for.
        missing: Vec<String>,
    },
    /// Trigger capture is not installed in this database.
    #[error("pgtrail trigger capture is not installed in this database (run `pgtrail install --db URL`)")]
    NotInstalled,
    /// The table to track does not exist.
    #[error("table {table} does not exist (or is not visible to this role)")]
    NoSuchTable {
        /// The name as given.
        table: String,
    },
    /// The database refused a tracking option (unknown column, not a table, …).
    #[error("cannot track {table}: {message}")]
    Refused {
        /// The table.
        table: String,
        /// Postgres's explanation.
        message: String,
    },
    /// A row of the inbox could not be turned into an event.
    #[error("inbox row {id} cannot be sealed: {reason}")]
    BadInbox {
        /// The inbox row's id.
        id: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// The store refused the sealed events.
    #[error("sealing into the store failed")]
    Store(#[from] StoreError),
}

impl Error {
    /// Wraps a driver error with what was being done.
    pub(crate) fn pg(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let action = action.into();
        move |source| Error::Postgres { action, source }
    }

    /// Whether trying again later may succeed: the database unreachable,
    /// restarting or out of a resource, a conflict between transactions, or
    /// the store unreachable. The inbox keeps every captured row meanwhile.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres { source, .. } => pgtrail_connect::postgres_error_may_pass(source),
            Error::Connect { source, .. } => source.is_transient(),
            Error::Store(store) => store.is_retryable(),
            _ => false,
        }
    }

    /// The SQLSTATE of a database error, if this is one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Postgres { source, .. } => source.as_db_error().map(|db| db.code().code()),
            Error::Connect { source, .. } => source.sqlstate(),
            _ => None,
        }
    }
}

/// A one-line description of a driver error: tokio-postgres's own message
/// is only "db error".
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_may_pass_is_retried() {
        let store_down = Error::Store(StoreError::Open {
            location: "postgres://db/shop".into(),
            reason: "connection refused".into(),
            source: None,
        });
        assert!(store_down.is_retryable());
        let bad_row = Error::BadInbox {
            id: 7,
            reason: "no image".into(),
        };
        assert!(!bad_row.is_retryable());
        assert!(!Error::NotInstalled.is_retryable());
        assert!(!Error::Store(StoreError::Invalid("x".into())).is_retryable());
    }
}
