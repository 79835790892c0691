//! What the audited databases say of capture now, for the integrity page:
//! tables tracked and rows waiting to be sealed (trigger capture), the
//! replication slot's state and lag (logical replication).
//!
//! The server reads the store, not the audited databases: the process that
//! runs it (`pgtrail run`, `pgtrail serve` with `[triggers] db` or
//! `[replication] db` in its config) gives it a [`CaptureProbe`] that
//! connects to them. Without one, the page says where to look instead.
//! A probe answers within its own timeout: a database that is down is an
//! error line on the page, never a page that hangs.

use serde::Serialize;

/// One capture path's state, as read from its database.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CapturePath {
    /// `triggers` or `logical replication`.
    pub path: &'static str,
    /// The database, as a URL without its password.
    pub database: String,
    /// Tables trigger capture tracks.
    pub tables_tracked: Option<i64>,
    /// Inbox rows waiting to be sealed.
    pub pending_rows: Option<i64>,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_seconds: Option<f64>,
    /// The replication slot.
    pub slot: Option<String>,
    /// Whether a consumer holds the slot now.
    pub slot_active: Option<bool>,
    /// WAL bytes past the position the consumer confirmed.
    pub lag_bytes: Option<i64>,
    /// Seconds behind, where the server can tell.
    pub lag_seconds: Option<f64>,
    /// What needs attention (a missing slot, lag past the warning).
    pub warning: Option<String>,
    /// Why the database could not be read.
    pub error: Option<String>,
}

/// Reads the capture paths' databases.
#[async_trait::async_trait]
pub trait CaptureProbe: Send + Sync {
    /// Each configured path's state now.
    async fn probe(&self) -> Vec<CapturePath>;
}
