//! pgtrail's one way to reach PostgreSQL.
//!
//! Every connection pgtrail makes — install, track, seal, the Postgres store,
//! capture's replication and catalog connections — starts from a
//! [`ConnectConfig`], so each behaves as a libpq user expects:
//!
//! - the connection string is a libpq URL or key=value pairs
//!   ([`conninfo`]); what it leaves out comes from the `PG*` environment
//!   (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`,
//!   `PGPASSFILE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGCONNECT_TIMEOUT`,
//!   `PGAPPNAME`, `PGREQUIREAUTH`), and the password, last, from the
//!   password file ([`pgpass`], `~/.pgpass` at 0600);
//! - TLS follows `sslmode` and `sslrootcert` ([`tls`], rustls), negotiated
//!   here for both kinds of connection;
//! - a server asking for a cleartext password over plain TCP gets nothing
//!   unless `require_auth=password` allows it; a missing password is one
//!   error naming where pgtrail looked.
//!
//! [`ConnectConfig::connect`] gives a tokio-postgres client, a session of
//! pgtrail's own: its `search_path` is [`SEARCH_PATH`] whatever the URL,
//! the role or the database say, so no function, operator or table a
//! database user created in `public` (or any schema) can stand in for a
//! built-in in pgtrail's queries and run with pgtrail's rights;
//! [`ConnectConfig::connect_stream`] gives the negotiated stream that
//! `pgtrail-cdc` runs its own replication protocol on (with the password
//! and the policy its authenticator must follow).

pub mod certificate;
mod conninfo;
mod pgpass;
mod stream;
pub mod tls;
mod transient;

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use pgtrail_wire::backend::AuthRequest;
use rustls::ClientConfig;
use tokio::net::{TcpStream, UnixStream};

pub use stream::PgStream;
pub use tls::{RootCerts, SslMode};
pub use transient::{postgres_error_may_pass, sqlstate_may_pass};

use conninfo::Params;
use pgpass::Lookup;
use stream::{AuthGuard, AuthPolicy, Refusal};

/// How long to wait for a server when neither the string nor
/// `PGCONNECT_TIMEOUT` says: a stuck connect never blocks a retry loop.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `search_path` of every session pgtrail opens for its own queries,
/// as startup options (after the user's, so it wins over them and over
/// `ALTER ROLE/DATABASE … SET search_path`). `pg_catalog` first; `pg_temp`
/// named last, since an unlisted `pg_temp` is searched first for tables.
/// Names of pgtrail's own objects are schema-qualified in every query.
pub const SEARCH_PATH: &str = "-c search_path=pg_catalog,pg_temp";

/// Where libpq looks for a server's socket when no host is named.
const SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// A connection could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connection string or a setting is invalid.
    #[error("invalid connection settings: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// The root certificate(s) for checking the server could not be used.
    #[error("root certificate {}: {reason}", path.display())]
    RootCert {
        /// The file (or `system`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach {target}")]
    Io {
        /// Host and port, or socket path.
        target: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No answer within `connect_timeout`.
    #[error("no answer from {target} within {} s (connect_timeout)", after.as_secs())]
    Timeout {
        /// Host and port, or socket path.
        target: String,
        /// The timeout.
        after: Duration,
    },
    /// The server has no TLS, and `sslmode` requires it.
    #[error("{target} does not offer TLS, and sslmode={sslmode} requires it")]
    TlsUnavailable {
        /// Host and port.
        target: String,
        /// The mode in force.
        sslmode: &'static str,
    },
    /// The TLS handshake failed (the server's certificate above all).
    #[error("TLS with {target} failed (sslmode={sslmode})")]
    Tls {
        /// Host and port.
        target: String,
        /// The mode in force.
        sslmode: &'static str,
        /// The handshake error (rustls's reason inside).
        #[source]
        source: std::io::Error,
    },
    /// The server asked for a password and none is configured.
    #[error("password missing for user '{user}' at {target}: {hint}")]
    PasswordMissing {
        /// The role.
        user: String,
        /// Host and port, or socket path.
        target: String,
        /// Where pgtrail looked, and how to give one.
        hint: String,
    },
    /// The server asked for the password in cleartext over plain TCP.
    #[error("{target} asked for the password in cleartext over a connection without TLS, and pgtrail does not send it\n  hint: use TLS (sslmode=require or stricter), or scram-sha-256 in pg_hba.conf; to send it anyway, add require_auth=password to the connection string")]
    CleartextRefused {
        /// Host and port.
        target: String,
    },
    /// The server refused the login or the session (wrong password, no
    /// such database, too many connections…).
    #[error("connecting to {target} as '{user}'")]
    Server {
        /// Host and port, or socket path.
        target: String,
        /// The role.
        user: String,
        /// The server's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The server's answer broke the protocol.
    #[error("{target}: {detail}")]
    Protocol {
        /// Host and port.
        target: String,
        /// What was wrong.
        detail: String,
    },
}

impl ConnectError {
    /// The server's SQLSTATE, when it sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ConnectError::Server { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the server down, restarting
    /// or full) rather than needing the operator.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Io { .. } | ConnectError::Timeout { .. } => true,
            ConnectError::Server { source, .. } => match source.code() {
                Some(code) => sqlstate_may_pass(code.code()),
                None => true,
            },
            _ => false,
        }
    }
}

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Tcp { host: String, port: u16 },
    Unix { dir: PathBuf, port: u16 },
}

impl Target {
    fn port(&self) -> u16 {
        match self {
            Target::Tcp { port, .. } | Target::Unix { port, .. } => *port,
        }
    }

    /// The host a password file line is matched against (libpq: the default
    /// socket directory is `localhost`).
    fn pgpass_host(&self) -> String {
        match self {
            Target::Tcp { host, .. } => host.clone(),
            Target::Unix { dir, .. } if SOCKET_DIRS.iter().any(|d| dir.as_os_str() == *d) => {
                "localhost".into()
            }
            Target::Unix { dir, .. } => dir.display().to_string(),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Unix { dir, port } => write!(f, "{}/.s.PGSQL.{port}", dir.display()),
        }
    }
}

/// Where and how to connect: a libpq connection string with the `PG*`
/// environment applied. Never prints the password.
#[derive(Clone)]
pub struct ConnectConfig {
    targets: Vec<Target>,
    user: String,
    dbname: String,
    password: Option<String>,
    passfile: PathBuf,
    sslmode: SslMode,
    tls: Option<Arc<ClientConfig>>,
    connect_timeout: Option<Duration>,
    application_name: Option<String>,
    options: Option<String>,
    allow_cleartext: bool,
}

impl std::fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("targets", &self.targets)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl ConnectConfig {
    /// Parses a libpq URL or key=value string, with this process's
    /// environment filling in what it leaves out.
    pub fn parse(conninfo: &str) -> Result<Self, ConnectError> {
        Self::parse_with_env(conninfo, &|var| std::env::var(var).ok())
    }

    /// [`ConnectConfig::parse`] with `env` standing for the environment.
    pub fn parse_with_env(
        conninfo: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConnectError> {
        let params = Params::parse(conninfo, env)?;
        let invalid = |reason: String| ConnectError::Invalid { reason };
        let user = match params.get("user") {
            Some(user) => user.to_string(),
            None => env("USER")
                .or_else(|| env("LOGNAME"))
                .or_else(os_user)
                .ok_or_else(|| {
                    invalid(
                        "no user: name one in the URL (postgres://USER@host/db) or set PGUSER"
                            .into(),
                    )
                })?,
        };
        let dbname = params.get("dbname").unwrap_or(&user).to_string();
        let targets = targets(params.get("host"), params.get("port"))?;
        let sslmode = SslMode::parse(params.get("sslmode").unwrap_or("prefer"))?;
        let roots = match params.get("sslrootcert") {
            Some("system") => RootCerts::System,
            Some(path) => RootCerts::File(PathBuf::from(path)),
            None => tls::default_root_cert()
                .map(RootCerts::File)
                .unwrap_or(RootCerts::None),
        };
        let tls = tls::client_config(sslmode, &roots)?;
        let connect_timeout = match params.get("connect_timeout") {
            None => Some(DEFAULT_CONNECT_TIMEOUT),
            Some(text) => {
                let seconds: i64 = text.trim().parse().map_err(|_| {
                    invalid(format!(
                        "connect_timeout '{text}' is not a whole number of seconds"
                    ))
                })?;
                // libpq: zero or negative waits forever; under 2 s means 2 s.
                (seconds > 0).then(|| Duration::from_secs(seconds.max(2).unsigned_abs()))
            }
        };
        let allow_cleartext = match params.get("require_auth") {
            None => false,
            Some(list) => {
                let methods: Vec<&str> = list.split(',').map(str::trim).collect();
                if methods.iter().any(|m| m.starts_with('!')) {
                    return Err(invalid(
                        "require_auth with '!' (negated methods) is not supported by pgtrail"
                            .into(),
                    ));
                }
                methods.contains(&"password")
            }
        };
        let passfile = match params.get("passfile") {
            Some(path) => PathBuf::from(path),
            None => env("HOME")
                .map(|home| PathBuf::from(home).join(".pgpass"))
                .unwrap_or_else(|| PathBuf::from(".pgpass")),
        };
        Ok(ConnectConfig {
            targets,
            user,
            dbname,
            password: params.get("password").map(str::to_string),
            passfile,
            sslmode,
            tls,
            connect_timeout,
            application_name: params
                .get("application_name")
                .or(params.get("fallback_application_name"))
                .map(str::to_string),
            options: params.get("options").map(str::to_string),
            allow_cleartext,
        })
    }

    /// The role to log in as.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The database.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// The TLS mode in force.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// Names the session `name` unless the string or `PGAPPNAME` did.
    pub fn default_application_name(&mut self, name: &str) -> &mut Self {
        if self.application_name.is_none() {
            self.application_name = Some(name.to_string());
        }
        self
    }

    /// The application name the session will carry.
    pub fn application_name(&self) -> Option<&str> {
        self.application_name.as_deref()
    }

    /// Appends pgtrail's own session settings (`-c name=value …`) to the
    /// startup options; they come after the user's, so they win.
    pub fn add_options(&mut self, options: &str) -> &mut Self {
        self.options = Some(match self.options.take() {
            Some(existing) => format!("{existing} {options}"),
            None => options.to_string(),
        });
        self
    }

    /// The startup options.
    pub fn options(&self) -> Option<&str> {
        self.options.as_deref()
    }

    /// `user@host:port/db`, for messages (never the password).
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }

    /// Opens a negotiated stream to the first host that answers: what
    /// `pgtrail-cdc` logs in over with its own protocol code.
    pub async fn connect_stream(&self) -> Result<Connected, ConnectError> {
        let mut last = None;
        for target in &self.targets {
            let attempt = self.open(target);
            let result = match self.connect_timeout {
                Some(after) => tokio::time::timeout(after, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ConnectError::Timeout {
                            target: target.to_string(),
                            after,
                        })
                    }),
                None => attempt.await,
            };
            match result {
                Ok(stream) => return Ok(self.connected(target, stream)),
                Err(e) => {
                    tracing::debug!(%target, error = %e, "Host not usable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Invalid {
            reason: "no host to connect to".into(),
        }))
    }

    /// Connects and logs in; the connection runs on a spawned task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ConnectError> {
        let mut last = None;
        for target in &self.targets {
            let attempt = self.connect_client(target);
            let result = match self.connect_timeout {
                Some(after) => tokio::time::timeout(after, attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ConnectError::Timeout {
                            target: target.to_string(),
                            after,
                        })
                    }),
                None => attempt.await,
            };
            match result {
                Ok(client) => return Ok(client),
                Err(e) => {
                    tracing::debug!(%target, error = %e, "Host not usable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::Invalid {
            reason: "no host to connect to".into(),
        }))
    }

    async fn connect_client(
        &self,
        target: &Target,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let connected = self.connect_stream_to(target).await?;
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.user)
            .dbname(&self.dbname)
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(password) = connected.login.password() {
            config.password(password);
        }
        if let Some(name) = &self.application_name {
            config.application_name(name);
        }
        // The user's options, then the search path that keeps every
        // unqualified name in pgtrail's queries on the catalog.
        config.options(&match &self.options {
            Some(options) => format!("{options} {SEARCH_PATH}"),
            None => SEARCH_PATH.to_string(),
        });
        let Connected { stream, login } = connected;
        let policy = login.policy();
        let (guarded, refusal) = AuthGuard::new(stream, policy);
        match config.connect_raw(guarded, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "Connection ended with an error");
                    }
                });
                Ok(client)
            }
            Err(source) => {
                let refused = *refusal.lock().unwrap_or_else(PoisonError::into_inner);
                Err(match refused {
                    Some(refusal) => login.refusal_error(refusal),
                    None => ConnectError::Server {
                        target: target.to_string(),
                        user: self.user.clone(),
                        source,
                    },
                })
            }
        }
    }

    async fn connect_stream_to(&self, target: &Target) -> Result<Connected, ConnectError> {
        let stream = self.open(target).await?;
        Ok(self.connected(target, stream))
    }

    async fn open(&self, target: &Target) -> Result<PgStream, ConnectError> {
        let io_error = |source| ConnectError::Io {
            target: target.to_string(),
            source,
        };
        match target {
            Target::Tcp { host, port } => {
                let tcp = TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(io_error)?;
                let _ = tcp.set_nodelay(true);
                stream::negotiate(
                    tcp,
                    host,
                    &target.to_string(),
                    self.sslmode,
                    self.tls.as_ref(),
                )
                .await
            }
            Target::Unix { .. } => {
                let path = target.to_string();
                Ok(PgStream::Unix(
                    UnixStream::connect(&path).await.map_err(io_error)?,
                ))
            }
        }
    }

    fn connected(&self, target: &Target, stream: PgStream) -> Connected {
        // The file is read only when no password was given, as libpq does.
        let (password, missing_hint) = match &self.password {
            Some(password) => (Some(password.clone()), String::new()),
            None => match self.pgpass_lookup(target) {
                Lookup::Found(password) => (Some(password), String::new()),
                other => (None, self.missing_hint(&other)),
            },
        };
        Connected {
            login: Login {
                private_channel: stream.is_private(),
                target: target.to_string(),
                user: self.user.clone(),
                password,
                allow_cleartext: self.allow_cleartext,
                missing_hint,
            },
            stream,
        }
    }

    fn pgpass_lookup(&self, target: &Target) -> Lookup {
        let host = target.pgpass_host();
        let key = pgpass::Key {
            host: &host,
            port: target.port(),
            dbname: &self.dbname,
            user: &self.user,
        };
        pgpass::lookup(&self.passfile, &key)
    }

    /// Where pgtrail looked for a password, for the error when none was found.
    fn missing_hint(&self, lookup: &Lookup) -> String {
        let file = self.passfile.display();
        let state = match lookup {
            Lookup::Found(_) => "a line matches".to_string(),
            Lookup::NoMatch(_) => "no line for this host, port, database and user".into(),
            Lookup::Missing(_) => "there is no such file".into(),
            Lookup::Ignored(_, reason) => format!("the file was ignored: {reason}"),
        };
        format!(
            "the server asks for one; set PGPASSWORD, or add a line 'host:port:database:user:password' to the password file {file} (or the file PGPASSFILE names; mode 0600), where {state}"
        )
    }
}

/// The name of the user this process runs as, from `/etc/passwd` (libpq's
/// default user; a service may run without `USER` set).
fn os_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to this process's user; no unsafe getuid().
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_string())
    })
}

/// The hosts and ports to try, libpq's way: one port for every host, or one
/// per host; an empty host is the default socket directory.
fn targets(hosts: Option<&str>, ports: Option<&str>) -> Result<Vec<Target>, ConnectError> {
    let hosts: Vec<&str> = hosts
        .map(|h| h.split(',').collect())
        .unwrap_or_else(|| vec![""]);
    let ports: Vec<u16> = match ports {
        None => vec![5432],
        Some(text) => text
            .split(',')
            .map(|p| match p.trim() {
                "" => Ok(5432),
                p => p.parse().map_err(|_| ConnectError::Invalid {
                    reason: format!("invalid port '{p}'"),
                }),
            })
            .collect::<Result<_, _>>()?,
    };
    if ports.len() != 1 && ports.len() != hosts.len() {
        return Err(ConnectError::Invalid {
            reason: format!("{} hosts but {} ports", hosts.len(), ports.len()),
        });
    }
    Ok(hosts
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            let host = host.trim();
            if host.is_empty() {
                let dir = SOCKET_DIRS
                    .iter()
                    .find(|d| std::path::Path::new(d).is_dir())
                    .unwrap_or(&SOCKET_DIRS[0]);
                Target::Unix {
                    dir: PathBuf::from(dir),
                    port,
                }
            } else if host.starts_with('/') {
                Target::Unix {
                    dir: PathBuf::from(host),
                    port,
                }
            } else {
                Target::Tcp {
                    host: host.to_string(),
                    port,
                }
            }
        })
        .collect())
}

/// A negotiated stream, with what a login over it needs.
#[derive(Debug)]
pub struct Connected {
    /// The stream (TLS when negotiated).
    pub stream: PgStream,
    /// The password and the rules for answering the server.
    pub login: Login,
}

/// What a login needs besides the stream: the password and the rules for
/// answering the server's authentication requests.
pub struct Login {
    /// Host and port, or socket path: for messages.
    pub target: String,
    user: String,
    password: Option<String>,
    private_channel: bool,
    allow_cleartext: bool,
    missing_hint: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("target", &self.target)
            .field("user", &self.user)
            .field("private_channel", &self.private_channel)
            .finish_non_exhaustive()
    }
}

impl Login {
    /// The password: from the string, `PGPASSWORD` or the password file.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    fn policy(&self) -> AuthPolicy {
        AuthPolicy {
            private_channel: self.private_channel,
            allow_cleartext: self.allow_cleartext,
            has_password: self.password.is_some(),
        }
    }

    /// Call before answering each authentication request: the error to
    /// return instead when pgtrail must not answer it (a cleartext password
    /// without TLS; a password it does not have).
    pub fn check_auth_request(&self, request: &AuthRequest) -> Result<(), ConnectError> {
        self.policy()
            .check(request)
            .map_err(|refusal| self.refusal_error(refusal))
    }

    fn refusal_error(&self, refusal: Refusal) -> ConnectError {
        match refusal {
            Refusal::Cleartext => ConnectError::CleartextRefused {
                target: self.target.clone(),
            },
            Refusal::NoPassword => ConnectError::PasswordMissing {
                user: self.user.clone(),
                target: self.target.clone(),
                hint: self.missing_hint.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            vars.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_follow_libpq() {
        let env = env_of(&[("USER", "osuser"), ("HOME", "/home/osuser")]);
        let config = ConnectConfig::parse_with_env("postgres://db.example", &env).expect("valid");
        assert_eq!(config.user(), "osuser");
        assert_eq!(config.dbname(), "osuser", "dbname defaults to the user");
        assert_eq!(config.sslmode(), SslMode::Prefer);
        assert_eq!(config.passfile, PathBuf::from("/home/osuser/.pgpass"));
        assert_eq!(config.connect_timeout, Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(config.describe(), "osuser@db.example:5432/osuser");
    }

    #[test]
    fn environment_fills_in() {
        let env = env_of(&[
            ("PGHOST", "h1,h2"),
            ("PGPORT", "6000,6001"),
            ("PGUSER", "alice"),
            ("PGDATABASE", "shop"),
            ("PGPASSWORD", "s3cret"),
            ("PGPASSFILE", "/etc/pgtrail/pgpass"),
            ("PGCONNECT_TIMEOUT", "0"),
            ("PGAPPNAME", "mine"),
            ("PGSSLMODE", "require"),
        ]);
        let mut config = ConnectConfig::parse_with_env("", &env).expect("valid");
        config.default_application_name("pgtrail");
        assert_eq!(config.describe(), "alice@h1:6000,h2:6001/shop");
        assert_eq!(config.password.as_deref(), Some("s3cret"));
        assert_eq!(config.passfile, PathBuf::from("/etc/pgtrail/pgpass"));
        assert_eq!(config.connect_timeout, None, "0 waits forever");
        assert_eq!(config.application_name(), Some("mine"));
        assert_eq!(config.sslmode(), SslMode::Require);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn without_user_or_pguser_the_os_user_is_used() {
        let env = env_of(&[]);
        let config = ConnectConfig::parse_with_env("host=h", &env).expect("valid");
        assert_eq!(Some(config.user().to_string()), os_user());
        assert!(!config.user().is_empty());
    }

    #[test]
    fn hosts_and_ports() {
        let env = env_of(&[("USER", "u")]);
        let config =
            ConnectConfig::parse_with_env("host=/run/pg,::1 port=5433", &env).expect("valid");
        assert_eq!(
            config.targets,
            vec![
                Target::Unix {
                    dir: "/run/pg".into(),
                    port: 5433
                },
                Target::Tcp {
                    host: "::1".into(),
                    port: 5433
                }
            ]
        );
        let error = ConnectConfig::parse_with_env("host=a,b,c port=1,2", &env)
            .expect_err("mismatch")
            .to_string();
        assert!(error.contains("3 hosts but 2 ports"), "{error}");
    }

    #[test]
    fn require_auth_allows_cleartext_only_when_it_names_password() {
        let env = env_of(&[("USER", "u")]);
        let parse = |s| ConnectConfig::parse_with_env(s, &env).expect(s);
        assert!(!parse("host=h").allow_cleartext);
        assert!(parse("host=h require_auth=password").allow_cleartext);
        assert!(parse("host=h require_auth=scram-sha-256,password").allow_cleartext);
        assert!(!parse("host=h require_auth=scram-sha-256").allow_cleartext);
    }

    #[test]
    fn pgtrail_options_follow_the_users() {
        let env = env_of(&[("USER", "u")]);
        let mut config = ConnectConfig::parse_with_env("host=h options='-c work_mem=64MB'", &env)
            .expect("valid");
        config.add_options("-c synchronous_commit=on");
        assert_eq!(
            config.options(),
            Some("-c work_mem=64MB -c synchronous_commit=on")
        );
    }
}
