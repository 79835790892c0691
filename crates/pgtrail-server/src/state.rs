//! What every handler shares.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use pgtrail_store::Store;

use crate::access::AccessWriter;
use crate::access_spool::AccessSpool;
use crate::session::Sessions;
use crate::throttle::Throttle;
use crate::tokens::{TokenSet, TokensFile};

/// The server's shared state: cheap to clone (one per request).
#[derive(Clone)]
pub struct AppState {
    /// The trail, read through the same trait as the CLI.
    pub store: Arc<dyn Store>,
    /// The listener is on loopback: while no token exists, requests whose
    /// `Host` is a loopback name are the local operator's (see `auth`).
    pub local_operator: bool,
    /// Served over TLS: the session cookie is `Secure`, HSTS is sent.
    pub tls: bool,
    /// The tokens file; `None`: no token exists.
    pub(crate) tokens: Option<Arc<TokensFile>>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) throttle: Arc<Throttle>,
    /// The local operator's CSRF token (they have no session).
    pub(crate) local_csrf: Arc<str>,
    /// The access records' writer, started by the first record (without
    /// an access spool).
    pub(crate) access: Arc<OnceLock<AccessWriter>>,
    /// Where access records are made durable, when set.
    pub(crate) access_spool: Option<AccessSpool>,
    /// Reads the audited databases' capture state (see `capture`).
    pub(crate) capture: Option<Arc<dyn crate::capture::CaptureProbe>>,
}

impl AppState {
    /// State over `store`; `local_operator`: the listener is on loopback.
    pub fn new(store: Arc<dyn Store>, local_operator: bool) -> Self {
        let local_csrf = crate::session::random_text()
            // No randomness: no local operator's POST passes the CSRF check.
            .unwrap_or_default();
        AppState {
            store,
            local_operator,
            tls: false,
            tokens: None,
            sessions: Arc::default(),
            throttle: Arc::default(),
            local_csrf: local_csrf.into(),
            access: Arc::default(),
            access_spool: None,
            capture: None,
        }
    }

    /// Shows what `probe` reads of the audited databases on the integrity page.
    pub fn with_capture_probe(mut self, probe: Arc<dyn crate::capture::CaptureProbe>) -> Self {
        self.capture = Some(probe);
        self
    }

    /// Records reads into `spool` (fsync'd there before a read is answered,
    /// drained into its store in batches) instead of one store append each.
    pub fn with_access_spool(mut self, spool: AccessSpool) -> Self {
        self.access_spool = Some(spool);
        self
    }

    /// Takes tokens from `path` (`[server] tokens_file`), re-read when it changes.
    pub fn with_tokens_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokens = Some(Arc::new(TokensFile::new(path)));
        self
    }

    /// Marks the state as served over TLS.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// The current tokens (none without a tokens file); `Err` when the file
    /// cannot be used, and then nobody gets in.
    pub(crate) fn tokens(&self) -> Result<Arc<TokenSet>, String> {
        match &self.tokens {
            Some(file) => file.current(),
            None => Ok(Arc::new(TokenSet::default())),
        }
    }
}
