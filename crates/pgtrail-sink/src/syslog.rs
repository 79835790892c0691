//! The syslog sink: one RFC 5424 message per event, over UDP (RFC 5426),
//! TCP (RFC 6587) or TLS (RFC 5425).
//!
//! With `format = "syslog"` the encoder's message is sent as it is; with
//! another format (`jsonl`, `cef`, …) the record is the MSG of a message
//! this sink heads itself (facility 13, log audit; the event id and `seq`
//! in the `pgtrail@32473` structured data element).
//!
//! TCP and TLS frame each message by octet counting (`LEN SP MSG`), so a
//! newline, a `<14>1` or a digit run inside a statement never starts a
//! second record at the receiver. Syslog has no acknowledgement: `Ok` means
//! the batch was written and flushed to the connection, which was checked
//! for a close by the peer before. Any I/O error drops the connection and
//! fails the batch (`Unavailable`); the runner sends it again on a new one,
//! so a receiver may see a message twice: the event id tells them apart.
//!
//! UDP is at most once on the wire: a datagram lost is never known. One
//! message is one datagram and cannot be split, so a message longer than
//! `max_datagram` is truncated with a marker, logged and counted
//! ([`SyslogSink::truncated`]); never dropped. Use TCP or TLS for audit.

use std::mem::MaybeUninit;
use std::time::Duration;

use async_trait::async_trait;
use pgtrail_connect::RootCerts;
use pgtrail_core::config::SyslogSinkConfig;
use pgtrail_core::{Event, Kind};
use pgtrail_store::checkpoint::Checkpoint;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::format::{Encoder, Format};
use crate::sink::{Item, Sink, SinkError};

/// The structured data element this sink's own header carries. 32473 is the
/// private enterprise number RFC 5612 sets aside for documentation.
pub const SD_ID: &str = "pgtrail@32473";

/// Facility 13 (log audit), in the PRI value.
const FACILITY_AUDIT: u8 = 13;

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// How long a new TLS connection is watched, at least, for the receiver
/// refusing the client's certificate: in TLS 1.3 that refusal comes after
/// the client thinks the handshake is done, and a batch written before it
/// would be lost. On a slow link the handshake's own duration is waited.
const TLS_SETTLE: Duration = Duration::from_millis(300);

/// How the messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One datagram per message (RFC 5426).
    Udp,
    /// Octet-counted frames on TCP (RFC 6587 §3.4.1).
    Tcp,
    /// Octet-counted frames on TLS (RFC 5425).
    Tls,
}

/// Sends events to a syslog receiver.
pub struct SyslogSink {
    transport: Transport,
    host: String,
    port: u16,
    encoder: Encoder,
    hostname: String,
    timeout: Duration,
    max_datagram: usize,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connection: Option<Connection>,
    truncated: u64,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("destination", &self.destination())
            .field("format", &self.encoder.format())
            .finish_non_exhaustive()
    }
}

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl SyslogSink {
    /// A sink for `config`, writing records with `encoder`. Checks the
    /// settings and reads the TLS files; connects on the first delivery.
    pub fn new(config: &SyslogSinkConfig, encoder: Encoder) -> Result<Self, SinkError> {
        let invalid = |reason: String| SinkError::Refused {
            destination: config.url.clone(),
            reason: format!("invalid syslog sink settings: {reason}"),
        };
        let (transport, host, port) = parse_url(&config.url).map_err(invalid)?;
        let hostname = match &config.hostname {
            Some(name) => {
                if !is_header_field(name, 255) {
                    return Err(invalid(format!(
                        "hostname {name:?} must be 1 to 255 printable ASCII characters without spaces"
                    )));
                }
                name.clone()
            }
            None => local_hostname(),
        };
        if config.timeout_secs == 0 {
            return Err(invalid("timeout_secs must be at least 1".into()));
        }
        if !(480..=MAX_UDP_PAYLOAD).contains(&config.max_datagram) {
            return Err(invalid(format!(
                "max_datagram must be between 480 (RFC 5426's minimum) and {MAX_UDP_PAYLOAD}"
            )));
        }
        let tls = match transport {
            Transport::Tls => {
                let roots = match &config.ca_file {
                    Some(path) => RootCerts::File(path.into()),
                    None => RootCerts::System,
                };
                let identity = match (&config.cert_file, &config.key_file) {
                    (Some(cert), Some(key)) => {
                        Some((std::path::Path::new(cert), std::path::Path::new(key)))
                    }
                    (None, None) => None,
                    _ => return Err(invalid("cert_file and key_file go together".into())),
                };
                let client = pgtrail_connect::tls::verified_client_config(&roots, identity)
                    .map_err(|e| invalid(e.to_string()))?;
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| invalid(format!("{host:?} is not a valid name for TLS")))?;
                Some((TlsConnector::from(client), name))
            }
            _ => {
                if config.ca_file.is_some() || config.cert_file.is_some() {
                    return Err(invalid(
                        "ca_file, cert_file and key_file are for tls:// only".into(),
                    ));
                }
                None
            }
        };
        Ok(SyslogSink {
            transport,
            host,
            port,
            encoder,
            hostname,
            timeout: Duration::from_secs(config.timeout_secs),
            max_datagram: config.max_datagram,
            tls,
            connection: None,
            truncated: 0,
        })
    }

    /// The transport in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// How many messages were truncated to fit a UDP datagram so far.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Unavailable {
            destination: self.destination(),
            reason: reason.to_string(),
        }
    }

    /// One RFC 5424 message (no framing) for `item`, appended to `out`.
    fn message(&self, item: &Item, out: &mut Vec<u8>) -> Result<(), SinkError> {
        if self.encoder.format() == Format::Syslog {
            match item {
                Item::Event(event) => self.encoder.encode(event, out)?,
                Item::Checkpoint(checkpoint) => self.encoder.encode_checkpoint(checkpoint, out)?,
            }
            return Ok(());
        }
        match item {
            Item::Event(event) => {
                self.event_header(event, out);
                let start = out.len();
                self.encoder.encode(event, out)?;
                trim_line_end(out, start);
            }
            Item::Checkpoint(checkpoint) => {
                self.checkpoint_header(checkpoint, out);
                let start = out.len();
                self.encoder.encode_checkpoint(checkpoint, out)?;
                trim_line_end(out, start);
            }
        }
        Ok(())
    }

    /// `<PRI>1 TIMESTAMP HOSTNAME pgtrail PROCID MSGID [pgtrail@32473 …] `
    /// for an event; every value is ASCII without `"`, `\` or `]`.
    fn event_header(&self, event: &Event, out: &mut Vec<u8>) {
        // Warning for alarms and failures, informational for the rest.
        let severity = if event.kind == Kind::Alarm || event.failed() {
            4
        } else {
            6
        };
        let seq = event
            .seq
            .map(|s| format!(" seq=\"{s}\""))
            .unwrap_or_default();
        out.extend_from_slice(
            format!(
                "<{}>1 {} {} pgtrail {} {} [{SD_ID} id=\"{}\"{seq}] ",
                FACILITY_AUDIT * 8 + severity,
                event.captured_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                self.hostname,
                std::process::id(),
                event.kind.as_str(),
                event.id,
            )
            .as_bytes(),
        );
    }

    fn checkpoint_header(&self, checkpoint: &Checkpoint, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "<{}>1 {} {} pgtrail {} checkpoint [{SD_ID} checkpoint=\"{}\" seq=\"{}\"] ",
                FACILITY_AUDIT * 8 + 6,
                checkpoint.created_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                self.hostname,
                std::process::id(),
                checkpoint.kind.as_str(),
                checkpoint.seq,
            )
            .as_bytes(),
        );
    }

    async fn connect(&self) -> Result<Connection, SinkError> {
        let address = (self.host.as_str(), self.port);
        let connection = match self.transport {
            Transport::Udp => {
                let bind = if self.host.contains(':') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                };
                let socket = UdpSocket::bind(bind)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                tokio::time::timeout(self.timeout, socket.connect(address))
                    .await
                    .map_err(|_| self.unavailable("the host name did not resolve in time"))?
                    .map_err(|e| self.unavailable(e))?;
                Connection::Udp(socket)
            }
            Transport::Tcp | Transport::Tls => {
                let tcp = tokio::time::timeout(self.timeout, TcpStream::connect(address))
                    .await
                    .map_err(|_| self.unavailable("no connection within timeout_secs"))?
                    .map_err(|e| self.unavailable(e))?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    None => Connection::Tcp(tcp),
                    Some((connector, name)) => {
                        let started = std::time::Instant::now();
                        let mut tls = tokio::time::timeout(
                            self.timeout,
                            connector.connect(name.clone(), tcp),
                        )
                        .await
                        .map_err(|_| self.unavailable("no TLS handshake within timeout_secs"))?
                        .map_err(|e| self.unavailable(format!("TLS handshake failed: {e}")))?;
                        let settle = started
                            .elapsed()
                            .clamp(TLS_SETTLE, self.timeout.max(TLS_SETTLE));
                        if peer_closed_tls(&mut tls, settle).await {
                            return Err(self.unavailable(
                                "the receiver closed the TLS connection after the handshake (did it refuse the client certificate?)",
                            ));
                        }
                        Connection::Tls(Box::new(tls))
                    }
                }
            }
        };
        Ok(connection)
    }

    /// Writes `items` on the current connection (made first if needed).
    async fn send(&mut self, items: &[Item]) -> Result<(), SinkError> {
        let stale = match &mut self.connection {
            Some(Connection::Tcp(tcp)) => peer_closed_tcp(tcp),
            Some(Connection::Tls(tls)) => peer_closed_tls(tls, Duration::ZERO).await,
            Some(Connection::Udp(_)) | None => false,
        };
        if stale {
            tracing::info!(destination = %self.destination(), "Syslog receiver closed the connection; reconnecting");
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        if self.transport == Transport::Udp {
            return self.send_datagrams(items).await;
        }
        let mut frames = Vec::new();
        let mut message = Vec::new();
        for item in items {
            message.clear();
            self.message(item, &mut message)?;
            frames.extend_from_slice(message.len().to_string().as_bytes());
            frames.push(b' ');
            frames.extend_from_slice(&message);
        }
        let timeout = self.timeout;
        let written = match &mut self.connection {
            Some(Connection::Tcp(tcp)) => {
                tokio::time::timeout(timeout, async {
                    tcp.write_all(&frames).await?;
                    tcp.flush().await
                })
                .await
            }
            Some(Connection::Tls(tls)) => {
                tokio::time::timeout(timeout, async {
                    tls.write_all(&frames).await?;
                    tls.flush().await
                })
                .await
            }
            _ => return Err(self.unavailable("no connection")),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.unavailable(e)),
            Err(_) => Err(self.unavailable(format!(
                "the receiver did not take the batch ({} bytes) within timeout_secs",
                frames.len()
            ))),
        }
    }

    async fn send_datagrams(&mut self, items: &[Item]) -> Result<(), SinkError> {
        // Every message is made before any is sent: an item that cannot be
        // written fails the batch before part of it went out.
        let mut datagrams = Vec::with_capacity(items.len());
        for item in items {
            let mut message = Vec::new();
            self.message(item, &mut message)?;
            if message.len() > self.max_datagram {
                let original = message.len();
                message = self.truncate(item, &message);
                self.truncated += 1;
                let (id, seq) = item_identity(item);
                tracing::warn!(destination = %self.destination(), %id, seq, bytes = original, max_datagram = self.max_datagram,
                    "Syslog message longer than a datagram: sent truncated (use tcp:// or tls:// for whole events)");
            }
            datagrams.push(message);
        }
        let Some(Connection::Udp(socket)) = &self.connection else {
            return Err(self.unavailable("no socket"));
        };
        for message in &datagrams {
            match tokio::time::timeout(self.timeout, socket.send(message)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.unavailable(e)),
                Err(_) => {
                    return Err(self.unavailable("the datagram was not sent within timeout_secs"))
                }
            }
        }
        Ok(())
    }

    /// A message of at most `max_datagram` bytes standing for `message`:
    /// its header and structured data kept, its MSG cut at a character
    /// boundary and ended with a marker; when even the header and
    /// structured data do not fit, this sink's own header with the event's
    /// id and the marker alone.
    fn truncate(&self, item: &Item, message: &[u8]) -> Vec<u8> {
        let marker = format!(
            " [truncated by pgtrail: {} bytes; the whole event is in the store]",
            message.len()
        );
        let room = self.max_datagram - marker.len();
        if let Some(body) = msg_offset(message) {
            if body < room {
                let mut cut = room;
                // Never split a UTF-8 sequence.
                while cut > body && message.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
                    cut -= 1;
                }
                let mut out = message[..cut].to_vec();
                out.extend_from_slice(marker.as_bytes());
                return out;
            }
        }
        let mut out = Vec::new();
        match item {
            Item::Event(event) => self.event_header(event, &mut out),
            Item::Checkpoint(checkpoint) => self.checkpoint_header(checkpoint, &mut out),
        }
        out.extend_from_slice(marker.trim_start().as_bytes());
        out.truncate(self.max_datagram);
        out
    }
}

#[async_trait]
impl Sink for SyslogSink {
    fn destination(&self) -> String {
        let scheme = match self.transport {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        };
        if self.host.contains(':') {
            format!("syslog {scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("syslog {scheme}://{}:{}", self.host, self.port)
        }
    }

    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let result = self.send(items).await;
        if matches!(result, Err(SinkError::Unavailable { .. })) {
            // A half-written frame would corrupt the next one: start over.
            self.connection = None;
        }
        result
    }
}

/// `udp://HOST[:PORT]`, `tcp://…`, `tls://…` (IPv6 in brackets); the ports
/// default to 514, 601 and 6514.
fn parse_url(url: &str) -> Result<(Transport, String, u16), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("url {url:?} must be udp://HOST:PORT, tcp://HOST:PORT or tls://HOST:PORT")
    })?;
    let (transport, default_port) = match scheme {
        "udp" => (Transport::Udp, 514),
        "tcp" => (Transport::Tcp, 601),
        "tls" => (Transport::Tls, 6514),
        other => {
            return Err(format!(
                "unknown scheme {other:?} in url: use udp, tcp or tls"
            ))
        }
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in url {url:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', '?', '#']) {
        return Err(format!("no usable host in url {url:?}"));
    }
    let port = match port {
        None => default_port,
        Some(text) => text
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {text:?} in url {url:?}"))?,
    };
    Ok((transport, host.to_string(), port))
}

/// RFC 5424's header fields: printable US-ASCII, no space.
fn is_header_field(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.bytes().all(|b| (33..=126).contains(&b))
}

/// This machine's name, as a header field ("-", the nil value, if unknown).
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| is_header_field(name, 255))
        .unwrap_or_else(|| "-".into())
}

/// Drops the line format's record end: the frame or datagram bounds it.
fn trim_line_end(out: &mut Vec<u8>, start: usize) {
    while out.len() > start && matches!(out.last(), Some(b'\n' | b'\r')) {
        out.pop();
    }
}

fn item_identity(item: &Item) -> (String, i64) {
    match item {
        Item::Event(event) => (event.id.to_string(), event.seq.unwrap_or_default()),
        Item::Checkpoint(checkpoint) => (
            format!("checkpoint {}", checkpoint.kind.as_str()),
            checkpoint.seq,
        ),
    }
}

/// Where MSG starts in an RFC 5424 message: after the six header fields
/// and the structured data (`-` or `[…]` elements, whose quoted values may
/// hold escaped `"`, `\` and `]`); `None` when it does not parse.
pub(crate) fn msg_offset(message: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..6 {
        let space = message[at..].iter().position(|&b| b == b' ')?;
        at += space + 1;
    }
    if message.get(at) == Some(&b'-') {
        at += 1;
    } else {
        let mut in_value = false;
        let mut in_element = false;
        loop {
            let byte = *message.get(at)?;
            if in_value {
                match byte {
                    b'\\' => at += 1,
                    b'"' => in_value = false,
                    _ => {}
                }
            } else if in_element {
                match byte {
                    b'"' => in_value = true,
                    b']' => in_element = false,
                    _ => {}
                }
            } else if byte == b'[' {
                in_element = true;
            } else {
                break;
            }
            at += 1;
        }
        if at == 0 || message.get(at.checked_sub(1)?) != Some(&b']') {
            return None;
        }
    }
    match message.get(at) {
        None => Some(at),
        Some(b' ') => Some(at + 1),
        Some(_) => None,
    }
}

/// Whether the receiver closed a TCP connection. It never sends anything,
/// so readable means end of stream or an error. Asks the kernel directly:
/// tokio's readiness may not have seen the close yet, and a batch written
/// into a closed connection would be lost while `deliver` says `Ok`.
fn peer_closed_tcp(tcp: &TcpStream) -> bool {
    let socket = socket2::SockRef::from(tcp);
    let mut probe = [MaybeUninit::<u8>::uninit(); 256];
    loop {
        match socket.recv(&mut probe) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// The same under TLS: the kernel says whether anything is waiting; what
/// is (a session ticket, a close, an alert) is read through TLS, waiting at
/// most `wait` (a ticket is ignored; a close or an alert means closed).
async fn peer_closed_tls(tls: &mut TlsStream<TcpStream>, wait: Duration) -> bool {
    let mut probe = [0u8; 256];
    loop {
        let mut peeked = [MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(tls.get_ref().0).peek(&mut peeked) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && wait.is_zero() => return false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
        // Something to read, or a first wait after the handshake.
        let wait = wait.max(Duration::from_millis(100));
        match tokio::time::timeout(wait, tls.read(&mut probe)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_transport_host_and_port() {
        assert_eq!(
            parse_url("udp://logs.example").expect("udp"),
            (Transport::Udp, "logs.example".into(), 514)
        );
        assert_eq!(
            parse_url("tcp://10.0.0.5:1601").expect("tcp"),
            (Transport::Tcp, "10.0.0.5".into(), 1601)
        );
        assert_eq!(
            parse_url("tls://[::1]").expect("tls"),
            (Transport::Tls, "::1".into(), 6514)
        );
        for bad in [
            "logs:514",
            "http://x:1",
            "tcp://:514",
            "tcp://h:0",
            "tcp://h:x",
            "tcp://u@h:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn msg_starts_after_the_structured_data_even_with_escaped_brackets() {
        let message =
            br#"<110>1 2026-01-01T00:00:00Z h app 1 id [a@1 x="q\"]\\" y="]"][b@1] hello ] world"#;
        let at = msg_offset(message).expect("parses");
        assert_eq!(&message[at..], b"hello ] world");
        let nil = b"<110>1 - - - - - - body";
        assert_eq!(&nil[msg_offset(nil).expect("nil")..], b"body");
        assert_eq!(msg_offset(b"<110>1 - - - - - [unclosed"), None);
        assert_eq!(msg_offset(b"no header"), None);
    }
}
