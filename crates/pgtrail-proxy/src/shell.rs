//! The tokio shell around [`Session`]: sockets, TLS handshakes toward
//! clients, the upstream connection, cancel forwarding and the record sink.
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
use crate::{BackendKey, Phase, Session, SessionConfig, SessionError, StatementRecord};

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

/// Backends of live sessions, for checking CancelRequests: only a key the
/// proxy itself saw is forwarded.
type Keys = Arc<Mutex<HashSet<BackendKey>>>;

const READ_SIZE: usize = 64 * 1024;

/// Serves clients on `listener`, each proxied to `upstream` through a
/// [`Session`]; completed statements go to `sink`. A full sink blocks the
/// session that produced the record (its client waits for results); a closed
/// sink ends sessions. One session's failure never affects another. Runs
/// until `accept` fails.
pub async fn serve(
    listener: TcpListener,
    upstream: Upstream,
    sink: mpsc::Sender<Recorded>,
) -> Result<(), ProxyError> {
    let upstream = Arc::new(upstream);
    let keys: Keys = Arc::default();
    let ids = AtomicU64::new(1);
    loop {
        let (client, peer) = listener.accept().await?;
        let _ = client.set_nodelay(true);
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let (upstream, sink, keys) = (upstream.clone(), sink.clone(), keys.clone());
        tokio::spawn(async move {
            match run(id, client, peer, &upstream, sink, &keys).await {
                Ok(()) => tracing::debug!(session = id, client = %peer, "Session ended"),
                Err(error) => tracing::warn!(
                    session = id, client = %peer, error = %DisplayChain(&error),
                    "Session ended by an error"
                ),
            }
        });
    }
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

async fn run(
    id: u64,
    client: TcpStream,
    peer: SocketAddr,
    upstream: &Upstream,
    sink: mpsc::Sender<Recorded>,
    keys: &Keys,
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
                    sink,
                    keys,
                    &mut session,
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
                    sink,
                    keys,
                    &mut session,
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
        _ => None,
    };
    if let Some((code, text)) = fatal {
        let mut message = BytesMut::new();
        encode_fatal(&mut message, code, &text);
        let _ = client.write_all(&message).await;
        let _ = client.flush().await;
    }
    if *session.phase() != Phase::Ready {
        report_login_failure(id, peer, &session, upstream).await;
    }
    result
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
    let mut buf = vec![0u8; 16 * 1024];
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

/// A FATAL ErrorResponse with `code`: 08P01 (protocol violation), 28000
/// when the proxy refuses a login, 08006 when the server cannot be reached.
fn encode_fatal(buf: &mut BytesMut, code: &str, message: &str) {
    let mut body = BytesMut::new();
    for (field, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.put_u8(field);
        // A NUL would end the field early (error texts can name tag '\0').
        body.put_slice(value.replace('\0', "\\0").as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    buf.put_u8(b'E');
    buf.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    buf.put_slice(&body);
}

/// Forwards a started session (its StartupMessage taken) both ways.
#[allow(clippy::too_many_arguments)]
async fn proxy<R, W>(
    id: u64,
    client_read: &mut R,
    client_write: &mut W,
    peer: SocketAddr,
    upstream: &Upstream,
    sink: mpsc::Sender<Recorded>,
    keys: &Keys,
    session: &mut Session,
) -> Result<(), ProxyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if *session.phase() != Phase::Authenticating {
        return Ok(());
    }
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
    let replies_read = Notify::new();
    let mut context: Option<Arc<SessionContext>> = None;
    let mut key: Option<BackendKey> = None;

    let client_to_server = async {
        let mut buf = vec![0u8; READ_SIZE];
        loop {
            // Backpressure: a client that pipelines without reading waits.
            while !lock(&session).wants_client_data() {
                replies_read.notified().await;
            }
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), ProxyError>(());
            }
            let bytes = {
                let mut session = lock(&session);
                session.client_data(&buf[..n], SystemTime::now())?;
                session.take_to_server()
            };
            if let Some(bytes) = bytes {
                server_write.write_all(&bytes).await?;
            }
        }
    };
    let server_to_client = async {
        let mut buf = vec![0u8; READ_SIZE];
        let mut records = Vec::new();
        loop {
            let n = server_read.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), ProxyError>(());
            }
            let bytes = {
                let mut session = lock(&session);
                session.server_data(&buf[..n], SystemTime::now())?;
                while let Some(record) = session.next_record() {
                    records.push(record);
                }
                if key.is_none() {
                    if let Some(seen) = session.backend_key() {
                        key = Some(seen.clone());
                        lock_keys(keys).insert(seen.clone());
                    }
                }
                session.take_to_client()
            };
            replies_read.notify_one();
            if let Some(bytes) = bytes {
                client_write.write_all(&bytes).await?;
            }
            if !records.is_empty() {
                let context = context.get_or_insert_with(|| {
                    Arc::new(SessionContext {
                        id,
                        client: peer,
                        user: startup.user().map(str::to_string),
                        database: startup.database().map(str::to_string),
                        application_name: startup.application_name().map(str::to_string),
                        backend_pid: key.as_ref().map(|k| k.pid),
                        tls: client_tls,
                    })
                });
                for record in records.drain(..) {
                    let recorded = Recorded {
                        session: context.clone(),
                        record,
                    };
                    sink.send(recorded)
                        .await
                        .map_err(|_| ProxyError::SinkClosed)?;
                }
            }
        }
    };
    // Either direction ending ends the session (the other is dropped).
    let result = tokio::select! {
        result = client_to_server => result,
        result = server_to_client => result,
    };
    if let Some(key) = &key {
        lock_keys(keys).remove(key);
    }
    // Statements still waiting for replies are recorded as NoReply.
    let session = session.into_inner().unwrap_or_else(PoisonError::into_inner);
    session.close(SystemTime::now());
    let context = Arc::new(SessionContext::new(id, peer, session));
    while let Some(record) = session.next_record() {
        let recorded = Recorded {
            session: context.clone(),
            record,
        };
        if sink.send(recorded).await.is_err() {
            return Err(ProxyError::SinkClosed);
        }
    }
    result
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
