//! The startup phase: from the first bytes until the server's first
//! ReadyForQuery ("Message Flow: Start-up").
//!
//! The client's first packet is untagged: SSLRequest and GSSENCRequest are
//! answered here with `N` (no TLS, no GSS encryption: the client then sends
//! a StartupMessage in the clear or gives up, per its `sslmode`);
//! a CancelRequest ends the connection (the shell forwards it); a
//! StartupMessage is forwarded unchanged, and the session learns the user,
//! database, `application_name` and `options` from it. Authentication then
//! passes through untouched (password, MD5 and SASL messages are never
//! decoded); BackendKeyData gives the backend pid and cancel key.

use bytes::Bytes;
use pgtrail_wire::frontend::StartupRequest;

/// What the client asked for in its StartupMessage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartupInfo {
    /// Protocol version (major << 16 | minor): 3.0 or 3.2.
    pub version: i32,
    /// Every parameter, in order (`user`, `database`, `options`, `_pq_.*`, …).
    pub params: Vec<(String, String)>,
}

impl StartupInfo {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The role the client logs in as.
    pub fn user(&self) -> Option<&str> {
        self.get("user")
    }

    /// The database (defaults to the user name, as in the server).
    pub fn database(&self) -> Option<&str> {
        self.get("database").or_else(|| self.user())
    }

    /// `application_name` as sent at startup (later changes arrive as
    /// ParameterStatus: see [`crate::Session::parameter`]).
    pub fn application_name(&self) -> Option<&str> {
        self.get("application_name")
    }

    /// Command-line style options, e.g. `-c pgtrail.user=alice`.
    pub fn options(&self) -> Option<&str> {
        self.get("options")
    }

    /// Whether this is a replication connection.
    pub fn replication(&self) -> Option<&str> {
        self.get("replication")
    }
}

/// A backend's identity for CancelRequest: its pid and secret key (4 bytes
/// in protocol 3.0, up to 256 in 3.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// The backend's process id.
    pub pid: i32,
    /// The secret key, as the server sent it.
    pub secret: Bytes,
}

/// What the client's untagged first packet asks of the proxy.
pub(crate) enum Opening {
    /// Answer this byte and wait for the next packet.
    Refuse,
    /// A cancel for this backend; the connection carries nothing else.
    Cancel(BackendKey),
    /// A session: forward the packet.
    Startup(StartupInfo),
}

impl Opening {
    pub fn from(request: StartupRequest) -> Opening {
        match request {
            StartupRequest::Ssl | StartupRequest::GssEnc => Opening::Refuse,
            StartupRequest::Cancel { pid, secret } => Opening::Cancel(BackendKey { pid, secret }),
            StartupRequest::Startup { version, params } => {
                Opening::Startup(StartupInfo { version, params })
            }
        }
    }
}
