//! [`Session`]: one client connection's protocol state, fed with bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
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
    /// Hold results back until their events are recorded: a statement's
    /// completion (and everything after it from the server) reaches the
    /// client only after [`Session::recorded`] counted its record, and the
    /// login's outcome only after [`Session::login_recorded`]. Off by
    /// default for a bare state machine; the shell turns it on whenever it
    /// records.
    pub hold: bool,
    /// Held bytes above which the completed records are handed over before
    /// the next ReadyForQuery (without a transaction status) instead of
    /// holding more.
    pub max_held: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame: 1 << 30,
            max_pending: 100_000,
            tls: false,
            require_tls: false,
            startup_timeout: std::time::Duration::from_secs(60),
            hold: false,
            max_held: 256 * 1024,
        }
    }
}

/// How a login ended, as the server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// The first ReadyForQuery arrived.
    Connected,
    /// The server refused it (ErrorResponse before ReadyForQuery).
    Failed(ErrorFields),
}

/// The SQLSTATE of a statement refused because the trail cannot take its
/// event (`configuration_limit_exceeded`: the trail's bound is reached).
pub const REFUSED_SQLSTATE: &str = "53400";

/// What a held chunk of server bytes waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Need {
    /// Records counted by [`Session::recorded`].
    records: u64,
    /// The login's event.
    login: bool,
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
    /// Server bytes waiting for their events, oldest first.
    held: VecDeque<(Need, BytesMut)>,
    held_bytes: usize,
    /// Records the caller said are recorded.
    recorded: u64,
    login: Option<Login>,
    login_known: bool,
    login_recorded: bool,
    /// SQL texts the client sent (Query, Parse), for the caller's analysis.
    texts: VecDeque<Arc<str>>,
    /// Refuse new statements with this message.
    refusal: Option<String>,
    /// Messages since the client's last Sync were forwarded (an extended
    /// batch is refused whole or not at all).
    in_batch: bool,
    /// Swallowing a refused extended batch until its Sync.
    refusing_batch: bool,
    /// A refused statement's answer: the refusal's message, waiting for
    /// the server's reply to [`ABORT_QUERY`] (see [`Session::refused`]).
    answer_due: Option<String>,
    /// ParameterStatus reports since the login, for the caller.
    reported: VecDeque<(String, String)>,
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
            held: VecDeque::new(),
            held_bytes: 0,
            recorded: 0,
            login: None,
            login_known: false,
            login_recorded: false,
            texts: VecDeque::new(),
            refusal: None,
            in_batch: false,
            refusing_batch: false,
            answer_due: None,
            reported: VecDeque::new(),
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
                    if self.answer_due.is_some() {
                        // What the client sent after a refused statement
                        // waits until the refusal is answered.
                        return Ok(());
                    }
                    let Some(raw) = split_frame(&mut self.client_in, self.config.max_frame)
                        .map_err(SessionError::malformed(Side::Client))?
                    else {
                        return Ok(());
                    };
                    if self.phase == Phase::Ready {
                        let message = FrontendMessage::parse(raw.frame())
                            .map_err(SessionError::malformed(Side::Client))?;
                        if self.refused(&message) {
                            continue;
                        }
                        if let FrontendMessage::Query(sql) | FrontendMessage::Parse { sql, .. } =
                            &message
                        {
                            self.texts.push_back(Arc::from(sql.as_str()));
                        }
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
                    if self.answer_due.is_some() && self.replies.pending() == 0 {
                        // Everything forwarded before the refusal is
                        // answered: this is the reply to ABORT_QUERY.
                        if self.refusal_reply(&raw, now)? {
                            continue;
                        }
                    }
                    if raw.tag() == b'S' {
                        self.parameter_status(&raw)?;
                    }
                    self.replies.on_server(&raw, now)?;
                    // A running statement's rows never wait for the next
                    // ReadyForQuery: the records completed before them are
                    // handed over now, so the rows wait for their events'
                    // write only.
                    if matches!(raw.tag(), b'D' | b'd') && self.replies.unstamped() > 0 {
                        self.replies.release_unstamped();
                    }
                }
            }
            self.emit(raw.as_bytes());
            if self.held_bytes > self.config.max_held && self.replies.unstamped() > 0 {
                self.replies.release_unstamped();
            }
        }
        Ok(())
    }

    /// Handles `raw` as the server's reply to [`ABORT_QUERY`]: its error
    /// becomes the refusal (SQLSTATE [`REFUSED_SQLSTATE`]); its
    /// ReadyForQuery, with the server's own transaction status, ends the
    /// answer. Whether `raw` was handled here (asynchronous messages are not).
    fn refusal_reply(
        &mut self,
        raw: &pgtrail_wire::frame::RawFrame,
        now: SystemTime,
    ) -> Result<bool, SessionError> {
        let message =
            BackendMessage::parse(raw.frame()).map_err(SessionError::malformed(Side::Server))?;
        match (raw.tag(), message) {
            // The server going away (shutdown, terminated backend) says so itself.
            (b'E', BackendMessage::ErrorResponse(fields))
                if matches!(fields.severity(), "FATAL" | "PANIC") =>
            {
                Ok(false)
            }
            (b'E', _) => {
                let message = self.answer_due.clone().unwrap_or_else(refusal_text);
                let mut reply = BytesMut::new();
                encode_error(&mut reply, "ERROR", REFUSED_SQLSTATE, &message);
                self.emit(&reply);
                Ok(true)
            }
            (b'Z', BackendMessage::ReadyForQuery(status)) => {
                self.replies.ready(status, now);
                self.answer_due = None;
                self.emit(raw.as_bytes());
                Ok(true)
            }
            (b'N' | b'A' | b'S', _) => Ok(false),
            _ => Err(SessionError::out_of_step(
                Side::Server,
                "a reply to pgtrail's refusal query other than an error",
            )),
        }
    }

    /// Bytes for the client: forwarded now, or held behind events not yet
    /// recorded (everything after a held byte is held too, in order).
    fn emit(&mut self, bytes: &[u8]) {
        let need = Need {
            records: self.replies.finished,
            login: self.login_known,
        };
        if !self.config.hold || (self.held.is_empty() && self.satisfied(need)) {
            self.to_client.extend_from_slice(bytes);
            return;
        }
        self.held_bytes += bytes.len();
        match self.held.back_mut() {
            Some((last, chunk)) if *last == need => chunk.extend_from_slice(bytes),
            _ => self.held.push_back((need, BytesMut::from(bytes))),
        }
    }

    fn satisfied(&self, need: Need) -> bool {
        self.recorded >= need.records && (!need.login || self.login_recorded)
    }

    /// Whether `message` is swallowed by a refusal: a new statement (a
    /// simple Query, a FunctionCall, an extended batch not yet started)
    /// while [`Session::refuse_new`] is set, or the rest of a refused
    /// batch. Sets the answer due when the refused part is complete.
    fn refused(&mut self, message: &FrontendMessage) -> bool {
        if self.refusing_batch {
            match message {
                FrontendMessage::Sync => {
                    self.refusing_batch = false;
                    self.answer_with_abort(self.refusal.clone().unwrap_or_else(refusal_text));
                    return true;
                }
                FrontendMessage::Terminate => {
                    self.refusing_batch = false;
                    return false;
                }
                _ => return true,
            }
        }
        let new_statement = match message {
            FrontendMessage::Query(_) | FrontendMessage::FunctionCall { .. } => Some(true),
            FrontendMessage::Parse { .. }
            | FrontendMessage::Bind { .. }
            | FrontendMessage::Describe { .. }
            | FrontendMessage::Execute { .. }
            | FrontendMessage::Close { .. } => Some(false),
            _ => None,
        };
        match (new_statement, &self.refusal) {
            (Some(answered_now), Some(refusal)) if !self.in_batch => {
                if answered_now {
                    let refusal = refusal.clone();
                    self.answer_with_abort(refusal);
                } else {
                    self.refusing_batch = true;
                }
                true
            }
            (Some(false), _) => {
                self.in_batch = true;
                false
            }
            _ => {
                if matches!(message, FrontendMessage::Sync) {
                    self.in_batch = false;
                }
                false
            }
        }
    }

    /// Answers a refused statement through the server: [`ABORT_QUERY`]
    /// goes in its place, and its error, rewritten to the refusal, and
    /// ReadyForQuery come back in order after everything forwarded before.
    /// So the server decides the transaction status as for any failed
    /// statement: inside a transaction block the refusal aborts it, and a
    /// later COMMIT rolls back (answered `ROLLBACK`), just as if the
    /// statement itself had failed. A client never commits a transaction
    /// that is missing a statement it was told failed.
    fn answer_with_abort(&mut self, message: String) {
        // Rare (a full trail): the lookup per refusal costs nothing that matters.
        metrics::counter!("pgtrail_proxy_refused_total").increment(1);
        let mut query = BytesMut::new();
        query.put_u8(b'Q');
        query.put_i32((4 + ABORT_QUERY.len() + 1) as i32);
        query.put_slice(ABORT_QUERY.as_bytes());
        query.put_u8(0);
        self.to_server.extend_from_slice(&query);
        self.answer_due = Some(message);
    }

    /// Refuse new statements (`Some(message)`, answered with SQLSTATE
    /// [`REFUSED_SQLSTATE`]) or take them again (`None`). Statements
    /// already forwarded run on and their results are held as usual; an
    /// extended batch already started is let through to its Sync.
    pub fn refuse_new(&mut self, refusal: Option<String>) {
        self.refusal = refusal;
    }

    /// Whether new statements are refused.
    pub fn refusing(&self) -> bool {
        self.refusal.is_some()
    }

    /// The next SQL text the client sent (Query or Parse), oldest first,
    /// for analysis while the server works.
    pub fn next_text(&mut self) -> Option<Arc<str>> {
        self.texts.pop_front()
    }

    /// The next ParameterStatus the server sent after the login (a `SET
    /// search_path`, `application_name`), oldest first.
    pub fn next_reported(&mut self) -> Option<(String, String)> {
        self.reported.pop_front()
    }

    /// The login's outcome, once, when the server decided it.
    pub fn take_login(&mut self) -> Option<Login> {
        self.login.take()
    }

    /// The login's event is recorded: what was held for it may go.
    pub fn login_recorded(&mut self) {
        self.login_recorded = true;
    }

    /// `count` more records taken with [`Session::next_record`] are
    /// recorded (or left out by the log rules): what was held for them may
    /// go.
    pub fn recorded(&mut self, count: u64) {
        self.recorded += count;
    }

    /// Server bytes held back, waiting for events.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
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
            BackendMessage::ErrorResponse(fields) => {
                if !self.login_known {
                    self.login_known = true;
                    self.login = Some(Login::Failed(fields.clone()));
                }
                self.login_error = Some(fields);
            }
            BackendMessage::ReadyForQuery(status) => {
                self.replies.status = Some(status);
                self.phase = Phase::Ready;
                if !self.login_known {
                    self.login_known = true;
                    self.login = Some(Login::Connected);
                }
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
            if self.reported.len() < MAX_PARAMETERS {
                self.reported.push_back((name.clone(), value.clone()));
            }
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

    /// Bytes to write to the client, if any: those held back whose events
    /// are now recorded come out too, in order.
    pub fn take_to_client(&mut self) -> Option<Bytes> {
        while let Some((need, _)) = self.held.front() {
            if !self.satisfied(*need) {
                break;
            }
            if let Some((_, chunk)) = self.held.pop_front() {
                self.held_bytes -= chunk.len();
                self.to_client.extend_from_slice(&chunk);
            }
        }
        (!self.to_client.is_empty()).then(|| self.to_client.split().freeze())
    }

    /// The next completed statement, oldest first.
    pub fn next_record(&mut self) -> Option<StatementRecord> {
        self.replies.done.pop_front()
    }

    /// Whether to read more from the client: false while too many requests
    /// wait for replies ([`SessionConfig::max_pending`]) or a refusal waits
    /// for them (then call [`Session::client_data`] with nothing once it is
    /// true again, to go on with what the client already sent).
    pub fn wants_client_data(&self) -> bool {
        self.replies.pending() < self.config.max_pending && self.answer_due.is_none()
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

/// The refusal's message when none was given.
/// Sent to the server in place of a refused statement: it fails on any
/// server in any transaction state, touches nothing, and says in the
/// server's log why it is there.
pub const ABORT_QUERY: &str =
    "SELECT 'pgtrail refused a statement: the audit trail cannot take more events'::pg_catalog.int4";

fn refusal_text() -> String {
    "pgtrail: the audit trail cannot take more events; statement refused".to_string()
}

/// An ErrorResponse with severity, SQLSTATE and message.
pub(crate) fn encode_error(buf: &mut BytesMut, severity: &str, code: &str, message: &str) {
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(field);
        // A NUL would end the field early.
        body.put_slice(value.replace('\0', "\\0").as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    buf.put_u8(b'E');
    buf.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    buf.put_slice(&body);
}
