//! [`Session`]: one client connection's protocol state, fed with bytes.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use pgtrail_wire::backend::{AuthRequest, BackendMessage, ErrorFields, TransactionStatus};
use pgtrail_wire::frame::{split_frame, split_startup};
use pgtrail_wire::frontend::{FrontendMessage, StartupRequest};

use crate::replies::Replies;
use crate::startup::{BackendKey, Links, Opening, StartupInfo, ALPN_POSTGRESQL, TLS_HANDSHAKE};
use crate::{SessionError, Side, StatementRecord};

/// Limits for one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The longest message body accepted from either side; a longer one
    /// ends the session when its header arrives (nothing is buffered).
    pub max_frame: usize,
    /// Unanswered requests above which [`Session::wants_client_data`] says
    /// stop reading the client, so a pipelining client cannot grow the
    /// reply queue without bound.
    pub max_pending: usize,
    /// A certificate is configured: SSLRequest is answered `S` and a direct
    /// TLS handshake is accepted (the shell runs the handshake).
    pub tls: bool,
    /// A StartupMessage that does not come over TLS is refused (28000).
    pub require_tls: bool,
    /// How long the shell waits for the StartupMessage, TLS handshake
    /// included (PostgreSQL's `authentication_timeout` default, 60 s), so a
    /// client that connects and stalls does not hold a session for ever.
    pub startup_timeout: std::time::Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame: 1 << 30,
            max_pending: 100_000,
            tls: false,
            require_tls: false,
            startup_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the client's first packet.
    Startup,
    /// StartupMessage forwarded; authentication in progress.
    Authenticating,
    /// The server sent ReadyForQuery: statements flow.
    Ready,
    /// The client's first packet was a CancelRequest for this backend.
    Cancel(BackendKey),
}

/// Parameters the server reports are kept up to this many.
const MAX_PARAMETERS: usize = 1_000;

/// One client connection's protocol state, without I/O.
///
/// Feed it what each side sent ([`Session::client_data`],
/// [`Session::server_data`], with the current time); take what to write to
/// each side ([`Session::take_to_server`], [`Session::take_to_client`]) —
/// every complete frame as soon as it is complete, byte for byte — and the
/// completed statements ([`Session::next_record`]). An error ends the
/// session; it never panics on any input.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    client_in: BytesMut,
    server_in: BytesMut,
    to_client: BytesMut,
    to_server: BytesMut,
    startup: Option<StartupInfo>,
    backend_key: Option<BackendKey>,
    login_error: Option<ErrorFields>,
    parameters: HashMap<String, String>,
    replies: Replies,
    links: Links,
    /// A TLS handshake the shell must run now: the ClientHello bytes
    /// already read (direct TLS) or nothing (after SSLRequest and `S`).
    tls_handshake: Option<Bytes>,
    /// The handshake was direct (no SSLRequest first).
    tls_direct: bool,
    /// No packet has been handled yet: direct TLS is only the first bytes.
    first_packet: bool,
}

impl Session {
    /// A new session, at `now`.
    pub fn new(config: SessionConfig, now: SystemTime) -> Self {
        Session {
            config,
            phase: Phase::Startup,
            client_in: BytesMut::new(),
            server_in: BytesMut::new(),
            to_client: BytesMut::new(),
            to_server: BytesMut::new(),
            startup: None,
            backend_key: None,
            login_error: None,
            parameters: HashMap::new(),
            replies: Replies::new(now),
            links: Links::default(),
            tls_handshake: None,
            tls_direct: false,
            first_packet: true,
        }
    }

    /// Bytes the client sent.
    pub fn client_data(&mut self, data: &[u8], now: SystemTime) -> Result<(), SessionError> {
        self.client_in.extend_from_slice(data);
        loop {
            match self.phase {
                Phase::Startup => {
                    if self.tls_handshake.is_some() {
                        return Err(SessionError::out_of_step(
                            Side::Client,
                            "data before the TLS handshake ran",
                        ));
                    }
                    // A TLS record (handshake, 0x16) instead of a length word.
                    if self.client_in.first() == Some(&TLS_HANDSHAKE) {
                        if !self.config.tls || !self.first_packet {
                            return Err(SessionError::DirectTls);
                        }
                        self.tls_direct = true;
                        self.tls_handshake = Some(self.client_in.split().freeze());
                        return Ok(());
                    }
                    let Some(packet) = split_startup(&mut self.client_in)
                        .map_err(SessionError::malformed(Side::Client))?
                    else {
                        return Ok(());
                    };
                    self.first_packet = false;
                    let request = StartupRequest::parse(&packet.slice(4..))
                        .map_err(SessionError::malformed(Side::Client))?;
                    match Opening::from(request) {
                        Opening::Tls if self.links.client_tls => {
                            // As the server: a second SSLRequest inside TLS
                            // is not a protocol it speaks.
                            return Err(SessionError::out_of_step(
                                Side::Client,
                                "an SSLRequest inside TLS",
                            ));
                        }
                        Opening::Tls if self.config.tls => {
                            // What the client sent after its SSLRequest
                            // was sent in the clear: it must not be read
                            // as if it came over TLS.
                            if !self.client_in.is_empty() {
                                return Err(SessionError::PlaintextAfterTlsRequest);
                            }
                            self.to_client.put_u8(b'S');
                            self.tls_handshake = Some(Bytes::new());
                            return Ok(());
                        }
                        // Without TLS or GSS: 'N', then the client goes on
                        // in the clear or gives up, per its sslmode.
                        Opening::Tls | Opening::Refuse => self.to_client.put_u8(b'N'),
                        Opening::Cancel(key) => {
                            self.phase = Phase::Cancel(key);
                            self.client_in.clear();
                            return Ok(());
                        }
                        Opening::Startup(info) => {
                            let (major, minor) = (info.version >> 16, info.version & 0xffff);
                            if major != 3 {
                                return Err(SessionError::UnsupportedProtocol { major, minor });
                            }
                            self.startup = Some(info);
                            if self.config.require_tls && !self.links.client_tls {
                                return Err(self.refuse_login(
                                    "this proxy requires TLS: connect with sslmode=require (or verify-full)",
                                ));
                            }
                            self.to_server.extend_from_slice(&packet);
                            self.phase = Phase::Authenticating;
                        }
                    }
                }
                Phase::Cancel(_) => {
                    self.client_in.clear();
                    return Ok(());
                }
                Phase::Authenticating | Phase::Ready => {
                    let Some(raw) = split_frame(&mut self.client_in, self.config.max_frame)
                        .map_err(SessionError::malformed(Side::Client))?
                    else {
                        return Ok(());
                    };
                    if self.phase == Phase::Ready {
                        let message = FrontendMessage::parse(raw.frame())
                            .map_err(SessionError::malformed(Side::Client))?;
                        self.replies.on_client(message, now);
                    }
                    // Authentication messages pass through undecoded.
                    self.to_server.extend_from_slice(raw.as_bytes());
                }
            }
        }
    }

    /// Bytes the server sent.
    pub fn server_data(&mut self, data: &[u8], now: SystemTime) -> Result<(), SessionError> {
        self.server_in.extend_from_slice(data);
        while let Some(raw) = split_frame(&mut self.server_in, self.config.max_frame)
            .map_err(SessionError::malformed(Side::Server))?
        {
            match self.phase {
                Phase::Startup | Phase::Cancel(_) => {
                    return Err(SessionError::out_of_step(
                        Side::Server,
                        "a message before the client's StartupMessage",
                    ))
                }
                Phase::Authenticating => self.startup_reply(&raw)?,
                Phase::Ready => {
                    if raw.tag() == b'S' {
                        self.parameter_status(&raw)?;
                    }
                    self.replies.on_server(&raw, now)?;
                }
            }
            self.to_client.extend_from_slice(raw.as_bytes());
        }
        Ok(())
    }

    /// A server message before the first ReadyForQuery.
    fn startup_reply(&mut self, raw: &pgtrail_wire::frame::RawFrame) -> Result<(), SessionError> {
        let message =
            BackendMessage::parse(raw.frame()).map_err(SessionError::malformed(Side::Server))?;
        match message {
            BackendMessage::Authentication(AuthRequest::CleartextPassword) => {
                // Not forwarded: the client never sends the password.
                if let Some(reason) = self.links.cleartext_refusal() {
                    return Err(self.refuse_login(reason));
                }
            }
            BackendMessage::Authentication(_)
            | BackendMessage::NoticeResponse(_)
            | BackendMessage::NegotiateProtocolVersion { .. } => {}
            BackendMessage::ParameterStatus { name, value } => self.set_parameter(name, value),
            BackendMessage::BackendKeyData { pid, secret } => {
                self.replies.backend_pid = Some(pid);
                self.backend_key = Some(BackendKey { pid, secret });
            }
            BackendMessage::ErrorResponse(fields) => self.login_error = Some(fields),
            BackendMessage::ReadyForQuery(status) => {
                self.replies.status = Some(status);
                self.phase = Phase::Ready;
            }
            _ => {
                return Err(SessionError::out_of_step(
                    Side::Server,
                    format!(
                        "message '{}' during startup",
                        char::from(raw.tag()).escape_default()
                    ),
                ))
            }
        }
        Ok(())
    }

    fn parameter_status(
        &mut self,
        raw: &pgtrail_wire::frame::RawFrame,
    ) -> Result<(), SessionError> {
        if let BackendMessage::ParameterStatus { name, value } =
            BackendMessage::parse(raw.frame()).map_err(SessionError::malformed(Side::Server))?
        {
            self.set_parameter(name, value);
        }
        Ok(())
    }

    fn set_parameter(&mut self, name: String, value: String) {
        if self.parameters.len() < MAX_PARAMETERS || self.parameters.contains_key(&name) {
            self.parameters.insert(name, value);
        }
    }

    /// The proxy refuses the login: the error is kept as the session's
    /// login error (for the failed-login event) and ends the session.
    fn refuse_login(&mut self, reason: &str) -> SessionError {
        let error = SessionError::LoginRefused {
            reason: reason.to_string(),
        };
        let message = format!("pgtrail proxy: {error}");
        self.login_error = Some(ErrorFields {
            fields: vec![
                (b'S', "FATAL".into()),
                (b'V', "FATAL".into()),
                (b'C', error.sqlstate().into()),
                (b'M', message),
            ],
        });
        error
    }

    /// A TLS handshake to run now, before anything else is read from the
    /// client: the bytes of it already read (a direct TLS ClientHello), or
    /// none (after an SSLRequest; write [`Session::take_to_client`]'s `S`
    /// first). Then call [`Session::tls_established`].
    pub fn take_tls_handshake(&mut self) -> Option<Bytes> {
        self.tls_handshake.take()
    }

    /// The handshake the session asked for succeeded, with this ALPN
    /// protocol: the client's link is TLS from now on. A direct handshake
    /// must have negotiated `postgresql`, as PostgreSQL 17 requires.
    pub fn tls_established(&mut self, alpn: Option<&[u8]>) -> Result<(), SessionError> {
        if self.tls_direct && alpn != Some(ALPN_POSTGRESQL) {
            return Err(SessionError::NoAlpn);
        }
        self.links.client_tls = true;
        Ok(())
    }

    /// Whether the client's link to the proxy runs over TLS.
    pub fn client_tls(&self) -> bool {
        self.links.client_tls
    }

    /// Tells the session how the proxy reached the server: over TLS or a
    /// Unix socket (`private`), or plain TCP. A cleartext password is
    /// forwarded only when both links are encrypted.
    pub fn set_server_private(&mut self, private: bool) {
        self.links.server_private = private;
    }

    /// The connection ended (either side closed, or an error): statements
    /// still waiting for a reply are recorded as [`crate::Outcome::NoReply`].
    pub fn close(&mut self, now: SystemTime) {
        self.replies.close(now);
    }

    /// Bytes to write to the server, if any.
    pub fn take_to_server(&mut self) -> Option<Bytes> {
        (!self.to_server.is_empty()).then(|| self.to_server.split().freeze())
    }

    /// Bytes to write to the client, if any.
    pub fn take_to_client(&mut self) -> Option<Bytes> {
        (!self.to_client.is_empty()).then(|| self.to_client.split().freeze())
    }

    /// The next completed statement, oldest first.
    pub fn next_record(&mut self) -> Option<StatementRecord> {
        self.replies.done.pop_front()
    }

    /// Whether to read more from the client: false while too many requests
    /// wait for replies ([`SessionConfig::max_pending`]).
    pub fn wants_client_data(&self) -> bool {
        self.replies.pending() < self.config.max_pending
    }

    /// Requests sent to the server and not answered yet.
    pub fn pending_replies(&self) -> usize {
        self.replies.pending()
    }

    /// Where the session stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The client's StartupMessage, once it arrived.
    pub fn startup(&self) -> Option<&StartupInfo> {
        self.startup.as_ref()
    }

    /// The backend's pid and cancel key (BackendKeyData).
    pub fn backend_key(&self) -> Option<&BackendKey> {
        self.backend_key.as_ref()
    }

    /// The error that refused the login, if the server refused it.
    pub fn login_error(&self) -> Option<&ErrorFields> {
        self.login_error.as_ref()
    }

    /// The last value the server reported for a run-time parameter
    /// (ParameterStatus: `application_name`, `server_version`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// The transaction status of the last ReadyForQuery.
    pub fn transaction_status(&self) -> Option<TransactionStatus> {
        self.replies.status
    }
}
