use pgtrail_wire::WireError;
use thiserror::Error;

/// Which end of a session sent something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The application.
    Client,
    /// PostgreSQL.
    Server,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// Why a session was ended by the proxy. Each ends that one session only.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Bytes that are not a valid protocol message.
    #[error("malformed message from the {side}")]
    Malformed {
        /// Who sent it.
        side: Side,
        /// What was wrong.
        #[source]
        source: WireError,
    },
    /// A well-formed message the protocol does not allow at this point: the
    /// proxy could no longer match replies to statements, so it stops
    /// rather than record wrong results.
    #[error("out of step: the {side} sent {detail}")]
    OutOfStep {
        /// Who sent it.
        side: Side,
        /// The message and the state it arrived in.
        detail: String,
    },
    /// A StartupMessage for a protocol other than 3.x.
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedProtocol {
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// A TLS ClientHello as the first bytes (PostgreSQL 17 `sslnegotiation=direct`),
    /// which needs TLS configured on the proxy.
    #[error("the client started TLS directly, and TLS is not configured on this proxy")]
    DirectTls,
    /// Bytes after an SSLRequest, before the proxy's `S`: they were sent in
    /// the clear and must not be taken as coming over TLS (the
    /// CVE-2021-23214 injection). PostgreSQL refuses them the same way.
    #[error("received unencrypted data after the SSLRequest")]
    PlaintextAfterTlsRequest,
    /// A direct TLS handshake without the ALPN protocol `postgresql`.
    #[error("a direct TLS connection must negotiate the ALPN protocol \"postgresql\"")]
    NoAlpn,
    /// The proxy refused the login itself, before the server saw a password:
    /// a client in the clear where TLS is required, or a server asking for a
    /// cleartext password over an unencrypted link.
    #[error("{reason}")]
    LoginRefused {
        /// Why, for the client and the session's login error.
        reason: String,
    },
}

impl SessionError {
    pub(crate) fn malformed(side: Side) -> impl FnOnce(WireError) -> SessionError {
        move |source| SessionError::Malformed { side, source }
    }

    /// The SQLSTATE the client is told: 28000 (invalid authorization) for
    /// a refused login, 08P01 (protocol violation) for everything else.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            SessionError::LoginRefused { .. } => "28000",
            _ => "08P01",
        }
    }

    pub(crate) fn out_of_step(side: Side, detail: impl Into<String>) -> SessionError {
        SessionError::OutOfStep {
            side,
            detail: detail.into(),
        }
    }
}
