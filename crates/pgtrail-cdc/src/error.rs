use pgtrail_wire::backend::ErrorFields;
use pgtrail_wire::WireError;

use crate::assemble::AssembleError;

/// Why capture failed or could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdcError {
    /// The connection URL cannot be used.
    #[error("invalid database URL: {reason}")]
    Url {
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or logged in to (settings, TLS,
    /// password, refused login).
    #[error("cannot connect")]
    Connect(#[from] pgtrail_connect::ConnectError),
    /// The server could not be reached, or the connection broke.
    #[error("connection to {target} failed")]
    Io {
        /// `host:port` or socket path.
        target: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("the server closed the replication connection")]
    Closed,
    /// Bytes from the server did not decode.
    #[error("protocol error")]
    Wire(#[from] WireError),
    /// The server answered with an error.
    #[error("{action}: {fields}")]
    Server {
        /// What pgtrail was doing.
        action: String,
        /// The server's error fields.
        fields: ErrorFields,
    },
    /// The server sent something the protocol does not allow here.
    #[error("unexpected message from the server while {action}: {detail}")]
    Unexpected {
        /// What pgtrail was doing.
        action: String,
        /// What arrived.
        detail: String,
    },
    /// A catalog query on the ordinary connection failed.
    #[error("{action}")]
    Catalog {
        /// What pgtrail was doing (its action).
        action: String,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database is not ready for capture; `hint` says how to fix it.
    #[error("{problem}\n  hint: {hint}")]
    NotReady {
        /// What is wrong.
        problem: String,
        /// How to fix it.
        hint: String,
    },
    /// Another process streams from the slot.
    #[error("replication slot '{slot}' is in use{by}: another consumer is running\n  hint: stop the other consumer, or use another --slot (each consumer needs its own slot)", by = pid.map(|p| format!(" by process {p}")).unwrap_or_default())]
    SlotInUse {
        /// The slot.
        slot: String,
        /// The process holding it, when known.
        pid: Option<i32>,
    },
    /// The stream could not be assembled into events.
    #[error("cannot assemble the change stream")]
    Assemble(#[from] AssembleError),
}

/// What the consumer does about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Reconnect after a pause: the slot keeps the position.
    Reconnect,
    /// Stop: an operator must act (the message says what).
    Stop,
}

impl CdcError {
    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            CdcError::Server { fields, .. } => Some(fields.code()),
            CdcError::Catalog { source, .. } => source.code().map(|c| c.code()),
            CdcError::Connect(source) => source.sqlstate(),
            _ => None,
        }
    }

    /// The one place deciding whether capture may retry after this error.
    pub fn retry_policy(&self) -> RetryPolicy {
        match self {
            CdcError::Io { .. } | CdcError::Closed => RetryPolicy::Reconnect,
            CdcError::Connect(source) if source.is_transient() => RetryPolicy::Reconnect,
            // Admin shutdown, crash recovery, too many connections, the server starting up.
            CdcError::Server { fields, .. }
                if pgtrail_connect::sqlstate_may_pass(fields.code()) =>
            {
                RetryPolicy::Reconnect
            }
            CdcError::Catalog { source, .. }
                if source.code().is_none() || pgtrail_connect::postgres_error_may_pass(source) =>
            {
                RetryPolicy::Reconnect
            }
            _ => RetryPolicy::Stop,
        }
    }
}
