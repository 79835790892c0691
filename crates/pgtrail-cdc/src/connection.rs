//! The replication connection: a small tokio shell around `pgtrail-wire`.
//!
//! It logs in with `replication=database`, runs replication commands
//! (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `START_REPLICATION`) over
//! the simple query protocol, then streams CopyData. Reading is cancel-safe
//! (bytes stay in the buffer until a whole message is there), so the consumer
//! can `select!` on it with timers. The socket, TLS (`sslmode`), the
//! password (URL, `PGPASSWORD`, `~/.pgpass`) and the refusal of a cleartext
//! password without TLS come from `pgtrail-connect`, as for every other
//! connection pgtrail makes.
//!
//! The session fixes the settings that shape text output (`DateStyle`,
//! `IntervalStyle`, `TimeZone=UTC`, `extra_float_digits`), since pgoutput
//! prints values with the walsender's settings, and the catalog-only
//! `search_path` of every pgtrail session.

use bytes::BytesMut;
use pgtrail_connect::{ConnectConfig, PgStream};
use pgtrail_wire::auth::{AuthProgress, Authenticator};
use pgtrail_wire::backend::BackendMessage;
use pgtrail_wire::frontend::{encode_query, encode_startup, encode_terminate};
use pgtrail_wire::replication::{encode_standby_status, ReplicationMessage, StandbyStatus};
use pgtrail_wire::Lsn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::CdcError;

/// Output settings every pgtrail replication session uses.
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3 -c bytea_output=hex";

/// How much the read buffer grows by when it runs low.
const READ_CHUNK: usize = 256 * 1024;

/// Where and as whom to connect, parsed from a libpq URL or key=value string
/// with the `PG*` environment.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The connection settings (also used for the ordinary catalog connection).
    pub config: ConnectConfig,
}

impl ConnectOptions {
    /// Parses `url` (`postgres://user@host:port/db?sslmode=…` or `host=… dbname=…`).
    pub fn parse(url: &str) -> Result<Self, CdcError> {
        Ok(Self::from_config(ConnectConfig::parse(url)?))
    }

    /// From settings parsed elsewhere (e.g. with an environment of a
    /// test's choosing), with capture's session name and options added.
    pub fn from_config(mut config: ConnectConfig) -> Self {
        config.default_application_name("pgtrail capture");
        config.add_options(SESSION_OPTIONS);
        ConnectOptions { config }
    }

    /// The role to log in as (default: `PGUSER`, else the OS user, as libpq).
    pub fn user(&self) -> String {
        self.config.user().to_string()
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        self.config.dbname()
    }

    /// Opens an ordinary (non-replication) connection for catalog queries.
    pub async fn connect_sql(&self) -> Result<tokio_postgres::Client, CdcError> {
        Ok(self.config.connect().await?)
    }
}

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's unique system identifier.
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// The database connected to.
    pub dbname: String,
}

/// Rows of a simple query, every value as text.
pub type TextRows = Vec<Vec<Option<String>>>;

/// A logged-in replication connection.
pub struct ReplicationConnection {
    io: PgStream,
    read: BytesMut,
    write: BytesMut,
    target: String,
}

impl std::fmt::Debug for ReplicationConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl ReplicationConnection {
    /// Connects and logs in with `replication=database`.
    pub async fn connect(options: &ConnectOptions) -> Result<Self, CdcError> {
        let pgtrail_connect::Connected { stream, login } = options.config.connect_stream().await?;
        let mut conn = ReplicationConnection {
            io: stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::with_capacity(1024),
            target: login.target.clone(),
        };
        let user = options.user();
        let application_name = options
            .config
            .application_name()
            .unwrap_or("pgtrail capture");
        // Last, so it wins: the catalog-only search path of every pgtrail
        // session (this login does not go through `ConnectConfig::connect`).
        let session_options = format!(
            "{} {}",
            options.config.options().unwrap_or(SESSION_OPTIONS),
            pgtrail_connect::SEARCH_PATH
        );
        encode_startup(
            &mut conn.write,
            &[
                ("user", user.as_str()),
                ("database", options.dbname()),
                ("replication", "database"),
                ("application_name", application_name),
                ("client_encoding", "UTF8"),
                ("options", session_options.as_str()),
            ],
        );
        conn.flush().await?;
        let mut auth = Authenticator::new(&user, login.password());
        loop {
            match conn.recv().await? {
                BackendMessage::Authentication(request) => {
                    // Refuses a cleartext password without TLS, and names
                    // where a missing password was looked for.
                    login.check_auth_request(&request)?;
                    let progress = auth.respond(&request, &mut conn.write)?;
                    conn.flush().await?;
                    if progress == AuthProgress::Done {
                        break;
                    }
                }
                BackendMessage::ErrorResponse(fields) => {
                    return Err(CdcError::Server {
                        action: format!(
                            "logging in to {} as '{user}' for replication",
                            conn.target
                        ),
                        fields,
                    })
                }
                other => return Err(unexpected("logging in", &other)),
            }
        }
        loop {
            match conn.recv().await? {
                BackendMessage::ReadyForQuery(_) => return Ok(conn),
                BackendMessage::ErrorResponse(fields) => {
                    return Err(CdcError::Server {
                        action: "starting the replication session".into(),
                        fields,
                    })
                }
                _ => {}
            }
        }
    }

    async fn flush(&mut self) -> Result<(), CdcError> {
        if self.write.is_empty() {
            return Ok(());
        }
        let result = self.io.write_all(&self.write).await;
        self.write.clear();
        result.map_err(|source| CdcError::Io {
            target: self.target.clone(),
            source,
        })?;
        self.io.flush().await.map_err(|source| CdcError::Io {
            target: self.target.clone(),
            source,
        })
    }

    /// The next message from the server. Cancel-safe.
    async fn recv(&mut self) -> Result<BackendMessage, CdcError> {
        loop {
            if let Some(message) = BackendMessage::decode(&mut self.read)? {
                return Ok(message);
            }
            // Read in large chunks: one wake-up then serves many small messages.
            if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
                self.read.reserve(READ_CHUNK);
            }
            let n = self
                .io
                .read_buf(&mut self.read)
                .await
                .map_err(|source| CdcError::Io {
                    target: self.target.clone(),
                    source,
                })?;
            if n == 0 {
                return Err(CdcError::Closed);
            }
        }
    }

    /// Runs one command with the simple query protocol; returns its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<TextRows, CdcError> {
        encode_query(&mut self.write, sql);
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.recv().await? {
                BackendMessage::DataRow(values) => rows.push(
                    values
                        .into_iter()
                        .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect(),
                ),
                BackendMessage::ErrorResponse(fields) => error = Some(fields),
                BackendMessage::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(fields) => Err(CdcError::Server {
                action: format!("running {}", first_word(sql)),
                fields,
            }),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<SystemInfo, CdcError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| CdcError::Unexpected {
            action: "IDENTIFY_SYSTEM".into(),
            detail: "no row".into(),
        })?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemInfo {
            system_id: field(0),
            timeline: field(1).parse().unwrap_or(0),
            xlogpos: Lsn::parse(&field(2)).unwrap_or_default(),
            dbname: field(3),
        })
    }

    /// Creates a logical slot for pgoutput. With `export_snapshot`, returns
    /// the snapshot name, valid until this connection runs its next command.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        export_snapshot: bool,
    ) -> Result<Option<String>, CdcError> {
        let snapshot = if export_snapshot { "export" } else { "nothing" };
        let sql = format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT '{snapshot}')",
            quote_ident(slot)
        );
        let rows = self.simple_query(&sql).await?;
        Ok(rows.first().and_then(|r| r.get(2).cloned().flatten()))
    }

    /// Starts streaming from `slot` (from its confirmed position if `start` is
    /// behind it). `proto_version` 2 enables streaming of large transactions.
    pub async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
        proto_version: u32,
    ) -> Result<(), CdcError> {
        let streaming = if proto_version >= 2 {
            ", streaming 'on'"
        } else {
            ""
        };
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '{proto_version}', publication_names {}, messages 'true'{streaming})",
            quote_ident(slot),
            quote_literal(&quote_ident(publication)),
        );
        encode_query(&mut self.write, &sql);
        self.flush().await?;
        loop {
            match self.recv().await? {
                BackendMessage::CopyBothResponse(_) => return Ok(()),
                BackendMessage::ErrorResponse(fields) => {
                    // Read up to ReadyForQuery so the connection stays usable.
                    while !matches!(self.recv().await?, BackendMessage::ReadyForQuery(_)) {}
                    return Err(CdcError::Server {
                        action: format!("starting replication from slot '{slot}'"),
                        fields,
                    });
                }
                BackendMessage::NoticeResponse(_) | BackendMessage::ParameterStatus { .. } => {}
                other => return Err(unexpected("starting replication", &other)),
            }
        }
    }

    /// The next replication message. Cancel-safe.
    pub async fn next_message(&mut self) -> Result<ReplicationMessage, CdcError> {
        loop {
            match self.recv().await? {
                BackendMessage::CopyData(data) => return Ok(ReplicationMessage::parse(&data)?),
                BackendMessage::ErrorResponse(fields) => {
                    return Err(CdcError::Server {
                        action: "streaming changes".into(),
                        fields,
                    })
                }
                BackendMessage::CopyDone => return Err(CdcError::Closed),
                BackendMessage::NoticeResponse(fields) => {
                    tracing::info!(notice = %fields, "Server notice")
                }
                other => return Err(unexpected("streaming changes", &other)),
            }
        }
    }

    /// A replication message already in the read buffer, without waiting.
    pub fn next_buffered(&mut self) -> Result<Option<ReplicationMessage>, CdcError> {
        match BackendMessage::decode(&mut self.read)? {
            None => Ok(None),
            Some(BackendMessage::CopyData(data)) => Ok(Some(ReplicationMessage::parse(&data)?)),
            Some(BackendMessage::ErrorResponse(fields)) => Err(CdcError::Server {
                action: "streaming changes".into(),
                fields,
            }),
            Some(BackendMessage::CopyDone) => Err(CdcError::Closed),
            Some(BackendMessage::NoticeResponse(fields)) => {
                tracing::info!(notice = %fields, "Server notice");
                Ok(None)
            }
            Some(other) => Err(unexpected("streaming changes", &other)),
        }
    }

    /// Sends a standby status update.
    pub async fn send_status(&mut self, status: &StandbyStatus) -> Result<(), CdcError> {
        encode_standby_status(&mut self.write, status);
        self.flush().await
    }

    /// Says goodbye (best effort).
    pub async fn close(mut self) {
        encode_terminate(&mut self.write);
        let _ = self.flush().await;
    }
}

fn unexpected(action: &str, message: &BackendMessage) -> CdcError {
    let detail = match message {
        BackendMessage::Other(frame) => format!("message '{}'", char::from(frame.tag)),
        other => format!("{other:?}").chars().take(80).collect(),
    };
    CdcError::Unexpected {
        action: action.into(),
        detail,
    }
}

fn first_word(sql: &str) -> &str {
    sql.split_whitespace().next().unwrap_or("")
}

/// Quotes an SQL identifier (`"…"`, doubling inner quotes): pgtrail-sql's.
pub use pgtrail_sql::quote_ident;

/// Quotes an SQL string literal (`'…'`, doubling inner quotes).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(&quote_ident("Pub")), "'\"Pub\"'");
    }

    #[test]
    fn urls() {
        let options =
            ConnectOptions::parse("postgres://alice:pw@127.0.0.1:5433/shop").expect("valid");
        assert_eq!(
            (options.user(), options.dbname()),
            ("alice".to_string(), "shop")
        );
        assert!(
            !format!("{options:?}").contains("pw"),
            "no password in Debug"
        );
        assert_eq!(options.config.application_name(), Some("pgtrail capture"));
    }
}
