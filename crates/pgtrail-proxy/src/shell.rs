//! The tokio shell around [`Session`]: sockets, TLS handshakes toward
//! clients, the upstream connection, cancel forwarding and the trail.
//! No protocol rule lives here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::{BufMut, BytesMut};
use pgtrail_connect::{ConnectConfig, ConnectError};
use pgtrail_wire::backend::ErrorFields;
use pgtrail_wire::frontend::CANCEL_REQUEST_CODE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::tls::{ClientStream, ClientTls};
use crate::{
    BackendKey, Login, Phase, Session, SessionConfig, SessionError, StartupInfo, StatementRecord,
    REFUSED_SQLSTATE,
};

/// Why the proxy or one of its sessions stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream URL is invalid.
    #[error("upstream")]
    Upstream(#[source] ConnectError),
    /// The server could not be reached.
    #[error("cannot connect upstream")]
    Connect(#[source] ConnectError),
    /// A socket failed.
    #[error("i/o")]
    Io(#[from] std::io::Error),
    /// The TLS handshake with the client failed (not TLS, a malformed
    /// ClientHello, no common protocol version or cipher suite, …).
    #[error("TLS handshake with the client")]
    Handshake(#[source] std::io::Error),
    /// The client sent no StartupMessage in time.
    #[error("no StartupMessage in time")]
    StartupTimeout,
    /// The protocol state machine ended the session.
    #[error("session ended by the proxy")]
    Session(#[from] SessionError),
    /// Nobody takes records any more: the session stops rather than run
    /// statements that would go unrecorded.
    #[error("the record sink is closed")]
    SinkClosed,
    /// The trail failed for good: the session stops rather than run
    /// statements that would go unrecorded.
    #[error("the audit trail failed: {0}")]
    Trail(String),
    /// The trail is full (fail_closed): a new session is refused.
    #[error("{0}")]
    Refused(String),
}

/// Where sessions go: the server, from a libpq connection string; and how
/// clients are served: the proxy's certificate, `require_tls`, limits.
///
/// Only the address and TLS settings (`host`, `port`, `sslmode`,
/// `sslrootcert`) are used: user, database and credentials are the
/// client's own, passed through in its StartupMessage.
#[derive(Debug, Clone)]
pub struct Upstream {
    connect: ConnectConfig,
    session: SessionConfig,
    client_tls: Option<ClientTls>,
    require_tls: bool,
    login_failures: Option<mpsc::Sender<LoginFailure>>,
    metrics: Arc<ProxyMetrics>,
}

/// The proxy's `/metrics` handles (docs/metrics.md), looked up once when
/// it starts serving, not per statement: open sessions, how each ended,
/// and the latency the proxy adds to a result.
#[derive(Debug)]
struct ProxyMetrics {
    open: metrics::Gauge,
    closed: metrics::Counter,
    login_failed: metrics::Counter,
    refused: metrics::Counter,
    cancel: metrics::Counter,
    trail_failed: metrics::Counter,
    error: metrics::Counter,
    added_latency: metrics::Histogram,
}

impl ProxyMetrics {
    fn new() -> ProxyMetrics {
        let ended = |outcome: &'static str| metrics::counter!("pgtrail_proxy_sessions_total", "outcome" => outcome);
        ProxyMetrics {
            open: metrics::gauge!("pgtrail_proxy_sessions"),
            closed: ended("closed"),
            login_failed: ended("login_failed"),
            refused: ended("refused"),
            cancel: ended("cancel"),
            trail_failed: ended("trail_failed"),
            error: ended("error"),
            added_latency: metrics::histogram!("pgtrail_proxy_added_latency_seconds"),
        }
    }

    /// Counts a connection that ended with `result`.
    fn ended(&self, result: &Result<(), ProxyError>, ending: Ending) {
        let counter = match result {
            _ if ending.cancel => &self.cancel,
            Err(ProxyError::Refused(_)) => &self.refused,
            _ if ending.login_failed => &self.login_failed,
            Err(ProxyError::Trail(_) | ProxyError::SinkClosed) => &self.trail_failed,
            Ok(()) => &self.closed,
            Err(_) => &self.error,
        };
        counter.increment(1);
    }
}

/// What a connection's end was, besides its result.
#[derive(Debug, Clone, Copy, Default)]
struct Ending {
    /// It was a CancelRequest.
    cancel: bool,
    /// Its login failed (refused by the server or the proxy).
    login_failed: bool,
}

/// One open connection on `pgtrail_proxy_sessions`, until dropped.
struct Open<'a>(&'a metrics::Gauge);

impl<'a> Open<'a> {
    fn new(gauge: &'a metrics::Gauge) -> Open<'a> {
        gauge.increment(1.0);
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Upstream {
    /// Reads `url` (libpq URL or key=value string, `PG*` environment applied).
    pub fn parse(url: &str) -> Result<Upstream, ProxyError> {
        Ok(Upstream {
            connect: ConnectConfig::parse(url).map_err(ProxyError::Upstream)?,
            session: SessionConfig::default(),
            client_tls: None,
            require_tls: false,
            login_failures: None,
            metrics: Arc::new(ProxyMetrics::new()),
        })
    }

    /// Offers TLS to clients with this certificate: SSLRequest is answered
    /// `S`, and PostgreSQL 17's direct TLS is accepted.
    pub fn with_client_tls(mut self, tls: ClientTls) -> Self {
        self.client_tls = Some(tls);
        self
    }

    /// Refuses clients that do not use TLS (FATAL 28000 before anything
    /// reaches the server). Without [`Upstream::with_client_tls`] every
    /// login is refused.
    pub fn require_tls(mut self, require: bool) -> Self {
        self.require_tls = require;
        self
    }

    /// Sends each refused login (by the server or by the proxy) to
    /// `failures`; a full channel makes the ending session wait.
    pub fn with_login_failures(mut self, failures: mpsc::Sender<LoginFailure>) -> Self {
        self.login_failures = Some(failures);
        self
    }

    fn session_config(&self) -> SessionConfig {
        SessionConfig {
            tls: self.client_tls.is_some(),
            require_tls: self.require_tls,
            ..self.session.clone()
        }
    }

    /// Limits for each session.
    pub fn with_session_config(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }
}

/// Who a record's session belongs to, shared by its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    /// Unique per proxy process, in accept order.
    pub id: u64,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The role named in the StartupMessage.
    pub user: Option<String>,
    /// The database named in the StartupMessage.
    pub database: Option<String>,
    /// `application_name` from the StartupMessage.
    pub application_name: Option<String>,
    /// The backend's process id.
    pub backend_pid: Option<i32>,
    /// The client's link to the proxy runs over TLS.
    pub tls: bool,
}

impl SessionContext {
    fn new(id: u64, client: SocketAddr, session: &Session) -> SessionContext {
        let startup = session.startup();
        let text = |value: Option<&str>| value.map(str::to_string);
        SessionContext {
            id,
            client,
            user: text(startup.and_then(|s| s.user())),
            database: text(startup.and_then(|s| s.database())),
            application_name: text(startup.and_then(|s| s.application_name())),
            backend_pid: session.backend_key().map(|k| k.pid),
            tls: session.client_tls(),
        }
    }
}

/// A login that did not succeed: refused by the server (wrong password
/// 28P01, no `pg_hba.conf` entry or a role that cannot log in 28000, no
/// such database 3D000, …) or by the proxy itself (28000: no TLS where it
/// is required, a cleartext password over an unencrypted link).
#[derive(Debug, Clone)]
pub struct LoginFailure {
    /// Who tried, from where (user and database from the StartupMessage).
    pub session: Arc<SessionContext>,
    /// The error the client was sent.
    pub error: ErrorFields,
    /// When the login ended.
    pub at: SystemTime,
}

/// A completed statement and the session it ran in.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The session.
    pub session: Arc<SessionContext>,
    /// The statement.
    pub record: StatementRecord,
}

/// What a session's recorder is told, in the order it happened.
#[derive(Debug)]
pub enum Happened<'a> {
    /// The login succeeded (first ReadyForQuery).
    Connected {
        /// When.
        at: SystemTime,
    },
    /// The server refused the login.
    LoginFailed {
        /// Its ErrorResponse.
        error: &'a ErrorFields,
        /// When.
        at: SystemTime,
    },
    /// The server reported a run-time parameter (at login for those it
    /// sent then, afterwards as it changes).
    Parameter {
        /// E.g. `search_path`, `application_name`.
        name: &'a str,
        /// Its value.
        value: &'a str,
    },
    /// A statement completed.
    Statement(&'a StatementRecord),
    /// The session ended.
    Disconnected {
        /// Its counts.
        stats: &'a Traffic,
        /// When.
        at: SystemTime,
    },
}

/// What went through one session, for its disconnect event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Traffic {
    /// When the client connected.
    pub started_at: Option<SystemTime>,
    /// Statements recorded (whether or not the log rules kept them).
    pub statements: u64,
    /// Bytes read from the client.
    pub bytes_from_client: u64,
    /// Bytes written to the client.
    pub bytes_to_client: u64,
}

/// Why the trail did not take events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrailError {
    /// Full, and its policy refuses (fail_closed): the session holds the
    /// results and tries again; new statements are refused meanwhile.
    #[error("{0}")]
    Full(String),
    /// It failed for good (a disk error): the session ends rather than run
    /// statements that would go unrecorded.
    #[error("{0}")]
    Failed(String),
}

/// Where the proxy's events go. The shell tells each session's recorder
/// what happened (off the lock of the other direction, never across an
/// await) and writes the events it makes with [`Trail::write`]; a result
/// reaches the client only after `write` returned for its event.
pub trait Trail: Send + Sync + 'static {
    /// One session's recorder (its claims, search_path, statements).
    type Recorder: Send + 'static;
    /// What a recorder makes.
    type Event: Send + 'static;

    /// False when nothing is recorded (audit off): results are not held.
    fn records(&self) -> bool {
        true
    }
    /// A recorder for a new session, from its StartupMessage.
    fn open(&self, context: Arc<SessionContext>, startup: &StartupInfo) -> Self::Recorder;
    /// SQL text the client just sent (already forwarded to the server).
    fn prepare(_recorder: &mut Self::Recorder, _sql: &str) {}
    /// The event for what happened, if the log rules keep it.
    fn event(recorder: &mut Self::Recorder, what: Happened<'_>) -> Option<Self::Event>;
    /// Puts `events` in the trail, taking them out of the vector (no
    /// copy); returns once they are as durable as the trail promises. On
    /// [`TrailError::Full`] `events` is left as it was, to be tried again.
    fn write(
        &self,
        events: &mut Vec<Self::Event>,
    ) -> impl std::future::Future<Output = Result<(), TrailError>> + Send;
    /// Why new statements and logins are refused now, if they are.
    fn refusal(&self) -> Option<String>;
}

/// A channel of [`Recorded`] statements is a trail: a full channel holds
/// results until the receiver takes records; a closed one ends sessions.
impl Trail for mpsc::Sender<Recorded> {
    type Recorder = Arc<SessionContext>;
    type Event = Recorded;

    fn open(&self, context: Arc<SessionContext>, _startup: &StartupInfo) -> Self::Recorder {
        context
    }

    fn event(recorder: &mut Self::Recorder, what: Happened<'_>) -> Option<Recorded> {
        match what {
            Happened::Statement(record) => Some(Recorded {
                session: recorder.clone(),
                record: record.clone(),
            }),
            _ => None,
        }
    }

    async fn write(&self, events: &mut Vec<Recorded>) -> Result<(), TrailError> {
        for recorded in std::mem::take(events) {
            self.send(recorded)
                .await
                .map_err(|_| TrailError::Failed("the record sink is closed".into()))?;
        }
        Ok(())
    }

    fn refusal(&self) -> Option<String> {
        None
    }
}

/// Backends of live sessions, for checking CancelRequests: only a key the
/// proxy itself saw is forwarded.
type Keys = Arc<Mutex<HashSet<BackendKey>>>;

/// Read buffers start at this size, so an idle session holds little…
const READ_START: usize = 4 * 1024;
/// …and grow up to this one while reads fill them (bulk results, COPY).
const READ_SIZE: usize = 64 * 1024;

/// Grows `buf` when a read of `n` bytes filled it: the next read of a busy
/// stream takes more at once.
fn grow(buf: &mut Vec<u8>, n: usize) {
    if n == buf.len() && buf.len() < READ_SIZE {
        buf.resize((buf.len() * 4).min(READ_SIZE), 0);
    }
}

/// Serves clients on `listener`, each proxied to `upstream` through a
/// [`Session`]; what happens goes to `trail`, and each result reaches its
/// client only once its event is in the trail. A full trail holds the
/// results of statements that ran and refuses new ones; a failed trail
/// ends sessions. One session's failure never affects another. Runs until
/// `accept` fails.
pub async fn serve<T: Trail>(
    listener: TcpListener,
    upstream: Upstream,
    trail: T,
) -> Result<(), ProxyError> {
    serve_until(listener, upstream, Arc::new(trail), std::future::pending()).await
}

/// [`serve`] until `shutdown` completes: then it stops accepting, ends
/// every session (a result still held never reaches its client) once the
/// events of what it completed are written, and returns when all are.
pub async fn serve_until<T: Trail>(
    listener: TcpListener,
    upstream: Upstream,
    trail: Arc<T>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError> {
    let mut upstream = upstream;
    upstream.session.hold = trail.records();
    upstream.metrics = Arc::new(ProxyMetrics::new());
    let upstream = Arc::new(upstream);
    let keys: Keys = Arc::default();
    let ids = AtomicU64::new(1);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let result = loop {
        let (client, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => break Err(ProxyError::Io(error)),
            },
            () = &mut shutdown => break Ok(()),
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let _ = client.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (upstream, trail, keys) = (upstream.clone(), trail.clone(), keys.clone());
        let mut stopped = stopped.clone();
        sessions.spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let _open = Open::new(&upstream.metrics.open);
            let mut ending = Ending::default();
            let result = run(
                id,
                client,
                peer,
                &upstream,
                &*trail,
                &keys,
                stop,
                &mut ending,
            )
            .await;
            upstream.metrics.ended(&result, ending);
            match result {
                Ok(()) => tracing::debug!(session = id, client = %peer, "Session ended"),
                Err(error) => tracing::warn!(
                    session = id, client = %peer, error = %DisplayChain(&error),
                    "Session ended by an error"
                ),
            }
        });
    };
    drop(listener);
    let _ = stop.send(true);
    while sessions.join_next().await.is_some() {}
    result
}

/// `error: cause: cause`, for logs.
struct DisplayChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

fn lock<'a, 's>(session: &'a Mutex<&'s mut Session>) -> std::sync::MutexGuard<'a, &'s mut Session> {
    session.lock().unwrap_or_else(PoisonError::into_inner)
}

#[allow(clippy::too_many_arguments)]
async fn run<T: Trail>(
    id: u64,
    client: TcpStream,
    peer: SocketAddr,
    upstream: &Upstream,
    trail: &T,
    keys: &Keys,
    stop: impl std::future::Future<Output = ()>,
    ending: &mut Ending,
) -> Result<(), ProxyError> {
    let mut session = Session::new(upstream.session_config(), SystemTime::now());
    let (client, mut result) = match tokio::time::timeout(
        upstream.session.startup_timeout,
        start(&mut session, client, upstream.client_tls.as_ref()),
    )
    .await
    {
        Ok(started) => started,
        Err(_) => (None, Err(ProxyError::StartupTimeout)),
    };
    let Some(mut client) = client else {
        return result;
    };
    if result.is_ok() {
        if let Phase::Cancel(key) = session.phase() {
            ending.cancel = true;
            return cancel(upstream, key, keys).await;
        }
        // Plain TCP splits for free; TLS through tokio's split (a lock).
        match client {
            ClientStream::Plain(tcp) => {
                let (mut client_read, mut client_write) = tcp.into_split();
                result = proxy(
                    id,
                    &mut client_read,
                    &mut client_write,
                    peer,
                    upstream,
                    trail,
                    keys,
                    &mut session,
                    stop,
                )
                .await;
                match client_read.reunite(client_write) {
                    Ok(tcp) => client = ClientStream::Plain(tcp),
                    Err(_) => return result,
                }
            }
            ClientStream::Tls(tls) => {
                let (mut client_read, mut client_write) = tokio::io::split(*tls);
                result = proxy(
                    id,
                    &mut client_read,
                    &mut client_write,
                    peer,
                    upstream,
                    trail,
                    keys,
                    &mut session,
                    stop,
                )
                .await;
                client = ClientStream::Tls(Box::new(client_read.unsplit(client_write)));
            }
        }
    }
    // Tell the client why, as the server would: a FATAL ErrorResponse.
    let fatal = match &result {
        Err(ProxyError::Session(error)) => Some((
            error.sqlstate(),
            format!("pgtrail proxy: {}", DisplayChain(error)),
        )),
        // The reason (host, TLS) is for the operator's log, not the client.
        Err(ProxyError::Connect(_)) => Some((
            "08006",
            "pgtrail proxy: cannot connect to the server".to_string(),
        )),
        Err(ProxyError::Refused(reason) | ProxyError::Trail(reason)) => {
            Some((REFUSED_SQLSTATE, reason.clone()))
        }
        _ => None,
    };
    if let Some((code, text)) = fatal {
        let mut message = BytesMut::new();
        // 08P01 (protocol violation), 28000 when the proxy refuses a login,
        // 08006 when the server cannot be reached, 53400 when the trail is full.
        crate::session::encode_error(&mut message, "FATAL", code, &text);
        let _ = client.write_all(&message).await;
        let _ = client.flush().await;
    }
    if *session.phase() != Phase::Ready {
        ending.login_failed = session.login_error().is_some();
        if let Err(ProxyError::Session(SessionError::LoginRefused { .. })) = &result {
            record_refused_login(id, peer, &session, trail).await;
        }
        report_login_failure(id, peer, &session, upstream).await;
    }
    result
}

/// A login the proxy itself refused (no TLS where it is required, a
/// cleartext password over an unencrypted link) never reached the server's
/// login path: its failed-login event is written here.
async fn record_refused_login<T: Trail>(id: u64, peer: SocketAddr, session: &Session, trail: &T) {
    let Some(error) = session.login_error() else {
        return;
    };
    let startup = session.startup().cloned().unwrap_or_default();
    let mut recorder = trail.open(Arc::new(SessionContext::new(id, peer, session)), &startup);
    let at = SystemTime::now();
    let events: Vec<T::Event> = T::event(&mut recorder, Happened::LoginFailed { error, at })
        .into_iter()
        .collect();
    if let Err(error) = write_events(trail, events).await {
        tracing::error!(session = id, client = %peer, error = %DisplayChain(&error), "A refused login's event was not recorded");
    }
}

/// Reads the client's opening packets (answering SSLRequest and
/// GSSENCRequest) and runs the TLS handshake the session asks for, until a
/// StartupMessage or a CancelRequest has arrived. Returns the client's
/// stream unless the handshake consumed it.
async fn start(
    session: &mut Session,
    tcp: TcpStream,
    tls: Option<&ClientTls>,
) -> (Option<ClientStream>, Result<(), ProxyError>) {
    let mut client = ClientStream::Plain(tcp);
    let mut buf = vec![0u8; READ_START];
    while *session.phase() == Phase::Startup {
        let n = match client.read(&mut buf).await {
            Ok(0) => return (Some(client), Ok(())),
            Ok(n) => n,
            Err(e) => return (Some(client), Err(e.into())),
        };
        if let Err(e) = session.client_data(&buf[..n], SystemTime::now()) {
            return (Some(client), Err(e.into()));
        }
        if let Some(bytes) = session.take_to_client() {
            if let Err(e) = client.write_all(&bytes).await {
                return (Some(client), Err(e.into()));
            }
        }
        if let Some(read) = session.take_tls_handshake() {
            // The session asks for TLS only when it is configured.
            let (Some(tls), ClientStream::Plain(tcp)) = (tls, client) else {
                return (None, Err(SessionError::DirectTls.into()));
            };
            client = match tls.accept(tcp, read).await {
                Ok(stream) => stream,
                Err(e) => return (None, Err(ProxyError::Handshake(e))),
            };
            if let Err(e) = session.tls_established(client.alpn()) {
                return (Some(client), Err(e.into()));
            }
        }
    }
    (Some(client), Ok(()))
}

/// Sends the session's login error, if it has one, to the login failure
/// channel.
async fn report_login_failure(id: u64, peer: SocketAddr, session: &Session, upstream: &Upstream) {
    let (Some(error), Some(failures)) = (session.login_error(), &upstream.login_failures) else {
        return;
    };
    let failure = LoginFailure {
        session: Arc::new(SessionContext::new(id, peer, session)),
        error: error.clone(),
        at: SystemTime::now(),
    };
    if failures.send(failure).await.is_err() {
        tracing::warn!(session = id, client = %peer, "Login failure not reported: nobody takes them");
    }
}

/// Forwards a started session (its StartupMessage taken) both ways.
#[allow(clippy::too_many_arguments)]
async fn proxy<T: Trail, R, W>(
    id: u64,
    client_read: &mut R,
    client_write: &mut W,
    peer: SocketAddr,
    upstream: &Upstream,
    trail: &T,
    keys: &Keys,
    session: &mut Session,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if *session.phase() != Phase::Authenticating {
        return Ok(());
    }
    let started_at = SystemTime::now();
    let server = upstream
        .connect
        .connect_stream()
        .await
        .map_err(ProxyError::Connect)?
        .stream;
    session.set_server_private(server.is_private());
    let client_tls = session.client_tls();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    if let Some(bytes) = session.take_to_server() {
        server_write.write_all(&bytes).await?;
    }
    let startup = session.startup().cloned().unwrap_or_default();
    let session = Mutex::new(session);
    let client_write = tokio::sync::Mutex::new(&mut *client_write);
    let replies_read = Notify::new();
    let recorder: Mutex<Option<T::Recorder>> = Mutex::new(None);
    let key: Mutex<Option<BackendKey>> = Mutex::new(None);
    let traffic = Mutex::new(Traffic {
        started_at: Some(started_at),
        ..Traffic::default()
    });
    let context = |key: &Option<BackendKey>| {
        Arc::new(SessionContext {
            id,
            client: peer,
            user: startup.user().map(str::to_string),
            database: startup.database().map(str::to_string),
            application_name: startup.application_name().map(str::to_string),
            backend_pid: key.as_ref().map(|k| k.pid),
            tls: client_tls,
        })
    };

    let client_to_server = async {
        let mut buf = vec![0u8; READ_START];
        loop {
            // Backpressure: a client that pipelines without reading waits,
            // and so does one whose refused statement waits for its answer.
            while !lock(&session).wants_client_data() {
                replies_read.notified().await;
            }
            let (bytes, texts) = {
                let mut session = lock(&session);
                session.refuse_new(trail.refusal());
                // What the client sent while it was not read.
                session.client_data(&[], SystemTime::now())?;
                (session.take_to_server(), take_texts(&mut session))
            };
            if let Some(bytes) = bytes {
                server_write.write_all(&bytes).await?;
            }
            // Anything the session answered itself (a refusal's answer
            // comes back from the server, in order, through the other loop).
            to_client(&client_write, &session, &traffic).await?;
            prepare::<T>(&recorder, texts);
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), ProxyError>(());
            }
            lock_any(&traffic).bytes_from_client += n as u64;
            let (bytes, texts) = {
                let mut session = lock(&session);
                session.refuse_new(trail.refusal());
                session.client_data(&buf[..n], SystemTime::now())?;
                (session.take_to_server(), take_texts(&mut session))
            };
            grow(&mut buf, n);
            if let Some(bytes) = bytes {
                server_write.write_all(&bytes).await?;
            }
            // Anything the session answered itself, as above.
            to_client(&client_write, &session, &traffic).await?;
            prepare::<T>(&recorder, texts);
        }
    };
    let server_to_client = async {
        let mut buf = vec![0u8; READ_START];
        let mut records = Vec::new();
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), ProxyError>(());
            }
            // From the server's reply to the client's copy: decoding,
            // the events' write to the trail, the write to the client.
            let replied = std::time::Instant::now();
            let (login, mut parameters) = {
                let mut session = lock(&session);
                session.server_data(&buf[..n], SystemTime::now())?;
                grow(&mut buf, n);
                while let Some(record) = session.next_record() {
                    records.push(record);
                }
                let mut parameters: Vec<(String, String)> =
                    std::iter::from_fn(|| session.next_reported()).collect();
                if session.phase() == &Phase::Ready && lock_any(&recorder).is_none() {
                    for name in ["application_name", "search_path"] {
                        if let Some(value) = session.parameter(name) {
                            parameters.insert(0, (name.to_string(), value.to_string()));
                        }
                    }
                }
                let mut key = lock_any(&key);
                if key.is_none() {
                    if let Some(seen) = session.backend_key() {
                        *key = Some(seen.clone());
                        lock_keys(keys).insert(seen.clone());
                    }
                }
                (session.take_login(), parameters)
            };
            replies_read.notify_one();
            if let Some(login) = &login {
                let context = context(&lock_any(&key));
                *lock_any(&recorder) = Some(trail.open(context, &startup));
                if let Some(refusal) = trail.refusal() {
                    // A full trail takes no new session: its connect event
                    // would not fit.
                    return Err(ProxyError::Refused(refusal));
                }
                let at = SystemTime::now();
                let what = match login {
                    Login::Connected => Happened::Connected { at },
                    Login::Failed(error) => Happened::LoginFailed { error, at },
                };
                let mut events = events::<T>(&recorder, std::iter::once(what));
                // A login whose event does not fit is refused, not held.
                match trail.write(&mut events).await {
                    Ok(()) => {}
                    Err(TrailError::Full(reason)) => return Err(ProxyError::Refused(reason)),
                    Err(TrailError::Failed(reason)) => return Err(ProxyError::Trail(reason)),
                }
                lock(&session).login_recorded();
            }
            if !parameters.is_empty() {
                let told = events::<T>(
                    &recorder,
                    parameters
                        .iter()
                        .map(|(name, value)| Happened::Parameter { name, value }),
                );
                write_events(trail, told).await?;
                parameters.clear();
            }
            let completed = records.len();
            if !records.is_empty() {
                lock_any(&traffic).statements += records.len() as u64;
                let events = events::<T>(&recorder, records.iter().map(Happened::Statement));
                write_events(trail, events).await?;
                lock(&session).recorded(records.len() as u64);
                records.clear();
            }
            to_client(&client_write, &session, &traffic).await?;
            if completed > 0 {
                // Once per statement whose result this read completed.
                upstream
                    .metrics
                    .added_latency
                    .record_many(replied.elapsed().as_secs_f64(), completed);
            }
            // A client held back (pipelining, or a refusal waiting for its
            // answer) may go on.
            replies_read.notify_one();
        }
    };
    // Either direction ending ends the session (the other is dropped), and
    // so does the proxy's shutdown.
    let result = tokio::select! {
        result = client_to_server => result,
        result = server_to_client => result,
        () = stop => Ok(()),
    };
    let key = lock_any(&key).take();
    if let Some(key) = &key {
        lock_keys(keys).remove(key);
    }
    // Statements still waiting for replies are recorded as NoReply; then
    // the session's end.
    let session = session.into_inner().unwrap_or_else(PoisonError::into_inner);
    session.close(SystemTime::now());
    let mut records = Vec::new();
    while let Some(record) = session.next_record() {
        records.push(record);
    }
    let mut traffic = traffic.into_inner().unwrap_or_else(PoisonError::into_inner);
    traffic.statements += records.len() as u64;
    let recorder = recorder
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner);
    // A login refused by a full trail left no event and ends without one
    // (its FATAL must not wait for room).
    let refused = matches!(result, Err(ProxyError::Refused(_)));
    if let (Some(mut recorder), false) = (recorder, refused) {
        let mut events: Vec<T::Event> = records
            .iter()
            .filter_map(|record| T::event(&mut recorder, Happened::Statement(record)))
            .collect();
        let at = SystemTime::now();
        events.extend(T::event(
            &mut recorder,
            Happened::Disconnected {
                stats: &traffic,
                at,
            },
        ));
        write_events(trail, events).await?;
    }
    result
}

/// The texts the client sent, for the recorder.
fn take_texts(session: &mut Session) -> Vec<Arc<str>> {
    std::iter::from_fn(|| session.next_text()).collect()
}

fn prepare<T: Trail>(recorder: &Mutex<Option<T::Recorder>>, texts: Vec<Arc<str>>) {
    if texts.is_empty() {
        return;
    }
    if let Some(recorder) = lock_any(recorder).as_mut() {
        for text in texts {
            T::prepare(recorder, &text);
        }
    }
}

fn events<'a, T: Trail>(
    recorder: &Mutex<Option<T::Recorder>>,
    what: impl Iterator<Item = Happened<'a>>,
) -> Vec<T::Event> {
    match lock_any(recorder).as_mut() {
        Some(recorder) => what.filter_map(|what| T::event(recorder, what)).collect(),
        None => Vec::new(),
    }
}

/// Writes events to the trail. A full trail is tried again until it takes
/// them (the results they hold wait; new statements are refused meanwhile,
/// by the client side reading [`Trail::refusal`]).
async fn write_events<T: Trail>(trail: &T, mut events: Vec<T::Event>) -> Result<(), ProxyError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut wait = std::time::Duration::from_millis(5);
    let mut warned = false;
    loop {
        match trail.write(&mut events).await {
            Ok(()) => return Ok(()),
            Err(TrailError::Failed(reason)) => return Err(ProxyError::Trail(reason)),
            Err(TrailError::Full(reason)) => {
                if !warned {
                    tracing::warn!(%reason, "trail full: holding results until their events fit");
                    warned = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_millis(200));
            }
        }
    }
}

/// Writes what the session releases to the client. Both directions call
/// it (a refusal is answered from the client side), so bytes are taken
/// under the writer's lock: taken in order, written in order.
async fn to_client<W: AsyncWrite + Unpin>(
    client_write: &tokio::sync::Mutex<W>,
    session: &Mutex<&mut Session>,
    traffic: &Mutex<Traffic>,
) -> Result<(), ProxyError> {
    let mut writer = client_write.lock().await;
    let bytes = lock(session).take_to_client();
    if let Some(bytes) = bytes {
        writer.write_all(&bytes).await?;
        lock_any(traffic).bytes_to_client += bytes.len() as u64;
    }
    Ok(())
}

fn lock_any<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_keys(keys: &Keys) -> std::sync::MutexGuard<'_, HashSet<BackendKey>> {
    keys.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards a CancelRequest to the server, on a new connection, if the key
/// belongs to a session of this proxy; other keys are dropped (a client of
/// the proxy cannot use it to probe for backends it never had).
async fn cancel(upstream: &Upstream, key: &BackendKey, keys: &Keys) -> Result<(), ProxyError> {
    if !lock_keys(keys).contains(key) {
        tracing::warn!(
            pid = key.pid,
            "CancelRequest for a backend this proxy does not serve: dropped"
        );
        return Ok(());
    }
    let mut packet = BytesMut::new();
    let length = 12 + key.secret.len();
    packet.put_i32(i32::try_from(length).unwrap_or(i32::MAX));
    packet.put_i32(CANCEL_REQUEST_CODE);
    packet.put_i32(key.pid);
    packet.put_slice(&key.secret);
    let mut server = upstream
        .connect
        .connect_stream()
        .await
        .map_err(ProxyError::Connect)?
        .stream;
    server.write_all(&packet).await?;
    server.flush().await?;
    // The server closes the connection once it has read the request.
    let mut rest = Vec::new();
    let _ = read_to_end(&mut server, &mut rest).await;
    Ok(())
}

async fn read_to_end<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    stream.read_to_end(out).await
}
