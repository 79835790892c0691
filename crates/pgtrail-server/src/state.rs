//! What every handler shares.

use std::sync::Arc;

use pgtrail_store::Store;

/// The server's shared state: cheap to clone (one per request).
#[derive(Clone)]
pub struct AppState {
    /// The trail, read through the same trait as the CLI.
    pub store: Arc<dyn Store>,
    /// The listener is on loopback and no token exists: requests are the
    /// local operator's (see `auth`).
    pub local_operator: bool,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, local_operator: bool) -> Self {
        AppState {
            store,
            local_operator,
        }
    }
}
