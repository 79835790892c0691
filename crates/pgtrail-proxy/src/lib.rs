//! pgtrail's statement proxy: clients connect to it as if it were
//! PostgreSQL; it forwards every byte to the server and back, and records
//! each statement with its result.
//!
//! Design:
//! - [`Session`] is the protocol state machine, sans-IO: it is fed bytes
//!   (and the time) and returns bytes to forward and completed
//!   [`StatementRecord`]s. Frames are forwarded as soon as each is complete,
//!   exactly as read (never held until Sync, never re-encoded).
//! - A queue of expected replies (module `replies`), apart from the I/O,
//!   matches each server message to the request it answers: simple and
//!   extended query, pipelines, errors that make the server skip to Sync,
//!   COPY, FunctionCall, and asynchronous messages.
//! - Prepared statements and portals (module `prepared`) count only once
//!   the server confirmed them.
//! - [`serve`] is the thin tokio shell: accept, connect upstream, copy both
//!   ways through a `Session`, forward CancelRequests, send records to a
//!   bounded channel (a full channel blocks the session; nothing is dropped).
//!
//! Classification, redaction and the event pipeline come later and run off
//! the forwarding path: a record carries the SQL text and the raw
//! parameters.

mod error;
mod events;
mod prepared;
mod record;
mod replies;
mod session;
mod shell;
mod startup;

pub use error::{SessionError, Side};
pub use events::{EventsError, Recorder, SessionRecorder, SessionStats};
pub use prepared::MAX_NAMES;
pub use record::{Outcome, Protocol, StatementRecord, Step};
pub use session::{Login, Phase, Session, SessionConfig, REFUSED_SQLSTATE};
pub use shell::{
    serve, serve_until, Happened, ProxyError, Recorded, SessionContext, Traffic, Trail, TrailError,
    Upstream,
};
pub use startup::{BackendKey, StartupInfo};

#[cfg(test)]
mod tests;
