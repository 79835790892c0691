//! The startup phase: from the first bytes until the server's first
//! ReadyForQuery ("Message Flow: Start-up").
//!
//! The client's first packet is untagged. An SSLRequest is answered `S`
//! when a certificate is configured (the shell then runs the TLS handshake
//! and the StartupMessage comes inside TLS), else `N`; a TLS ClientHello as
//! the very first bytes is PostgreSQL 17's direct TLS, accepted under the
//! same condition. GSSENCRequest is always answered `N`. A CancelRequest
//! ends the connection (the shell forwards it); a StartupMessage is
//! forwarded unchanged, and the session learns the user, database,
//! `application_name` and `options` from it.
//!
//! Authentication then passes through untouched (password, MD5 and SASL
//! messages are never decoded), with one exception: a server asking for a
//! cleartext password gets no answer unless both links are encrypted
//! ([`Links::cleartext_refusal`]). BackendKeyData gives the backend pid and
//! cancel key.

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
    /// SSLRequest: `S` and a TLS handshake when TLS is configured, else `N`.
    Tls,
    /// GSSENCRequest: always `N` (the proxy has no GSSAPI encryption).
    Refuse,
    /// A cancel for this backend; the connection carries nothing else.
    Cancel(BackendKey),
    /// A session: forward the packet.
    Startup(StartupInfo),
}

impl Opening {
    pub fn from(request: StartupRequest) -> Opening {
        match request {
            StartupRequest::Ssl => Opening::Tls,
            StartupRequest::GssEnc => Opening::Refuse,
            StartupRequest::Cancel { pid, secret } => Opening::Cancel(BackendKey { pid, secret }),
            StartupRequest::Startup { version, params } => {
                Opening::Startup(StartupInfo { version, params })
            }
        }
    }
}

/// The first byte of a TLS handshake record: a client that starts with it
/// instead of a length word begins TLS directly (`sslnegotiation=direct`).
pub(crate) const TLS_HANDSHAKE: u8 = 0x16;

/// The ALPN protocol name PostgreSQL 17 requires on a direct TLS handshake
/// (so a TLS connection meant for another protocol is never taken as ours).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// How the session's two links are protected, as the shell knows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Links {
    /// The client's link to the proxy runs over TLS.
    pub client_tls: bool,
    /// The proxy's link to the server is TLS or a Unix socket.
    pub server_private: bool,
}

impl Links {
    /// Why a cleartext password must not be forwarded over these links, if
    /// it must not: it would cross a network in the clear on one of them.
    pub fn cleartext_refusal(self) -> Option<&'static str> {
        if !self.client_tls {
            Some(
                "the server asks for a cleartext password, and the client's link to the proxy is not encrypted: connect with sslmode=require (or use SCRAM)",
            )
        } else if !self.server_private {
            Some(
                "the server asks for a cleartext password, and the proxy's link to the server is not encrypted: give the proxy sslmode=require in its upstream URL, or a Unix socket (or use SCRAM)",
            )
        } else {
            None
        }
    }
}
