//! The socket under every pgtrail connection: TCP, a Unix socket, or TLS
//! over TCP after the `SSLRequest` exchange, and the watch over the
//! server's authentication requests ([`AuthGuard`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgtrail_wire::backend::{AuthRequest, BackendMessage};
use pgtrail_wire::frontend::encode_ssl_request;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;

use crate::tls::{server_name, SslMode};
use crate::ConnectError;

/// A connected socket, TLS or not.
#[derive(Debug)]
pub enum PgStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// A local Unix-domain socket (never TLS, as in libpq).
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl PgStream {
    /// Whether a password sent over this stream stays on this machine or is
    /// encrypted: TLS, or a Unix socket.
    pub fn is_private(&self) -> bool {
        !matches!(self, PgStream::Tcp(_))
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        matches!(self, PgStream::Tls(_))
    }
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            PgStream::Unix(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Asks the server for TLS (`SSLRequest`) when `tls` is set and upgrades the
/// stream if it agrees. The answer is read one byte exactly, so nothing a
/// man in the middle sends after it can be taken as coming over TLS.
pub(crate) async fn negotiate(
    mut tcp: TcpStream,
    host: &str,
    target: &str,
    mode: SslMode,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<PgStream, ConnectError> {
    let Some(config) = tls else {
        return Ok(PgStream::Tcp(tcp));
    };
    let io_error = |source| ConnectError::Io {
        target: target.to_string(),
        source,
    };
    let mut request = BytesMut::with_capacity(8);
    encode_ssl_request(&mut request);
    tcp.write_all(&request).await.map_err(io_error)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io_error)?;
    match answer[0] {
        b'S' => {
            let connector = TlsConnector::from(Arc::clone(config));
            let stream = connector
                .connect(server_name(host)?, tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    target: target.to_string(),
                    sslmode: mode.as_str(),
                    source,
                })?;
            Ok(PgStream::Tls(Box::new(stream)))
        }
        b'N' if mode.requires_tls() => Err(ConnectError::TlsUnavailable {
            target: target.to_string(),
            sslmode: mode.as_str(),
        }),
        b'N' => Ok(PgStream::Tcp(tcp)),
        other => Err(ConnectError::Protocol {
            target: target.to_string(),
            detail: format!("the server answered the TLS request with byte {other:#04x}"),
        }),
    }
}

/// What pgtrail will answer to, decided before the server asks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthPolicy {
    /// TLS or a Unix socket.
    pub(crate) private_channel: bool,
    /// `require_auth` names `password`.
    pub(crate) allow_cleartext: bool,
    /// A password is configured.
    pub(crate) has_password: bool,
}

/// Why an authentication request was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A cleartext password over plain TCP, not allowed.
    Cleartext,
    /// A password was asked for and none is configured.
    NoPassword,
}

impl AuthPolicy {
    /// Whether pgtrail answers `request`.
    pub(crate) fn check(&self, request: &AuthRequest) -> Result<(), Refusal> {
        let asks_password = matches!(
            request,
            AuthRequest::CleartextPassword
                | AuthRequest::Md5Password { .. }
                | AuthRequest::Sasl { .. }
        );
        if asks_password && !self.has_password {
            return Err(Refusal::NoPassword);
        }
        if matches!(request, AuthRequest::CleartextPassword)
            && !self.private_channel
            && !self.allow_cleartext
        {
            return Err(Refusal::Cleartext);
        }
        Ok(())
    }
}

/// Wraps the stream tokio-postgres logs in over: reads the server's
/// messages until authentication ends, and fails the read (so nothing is
/// sent) when the server asks for what the policy refuses. tokio-postgres
/// has no hook of its own for this.
pub(crate) struct AuthGuard<S> {
    inner: S,
    policy: AuthPolicy,
    seen: BytesMut,
    done: bool,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl<S> AuthGuard<S> {
    pub(crate) fn new(inner: S, policy: AuthPolicy) -> (Self, Arc<Mutex<Option<Refusal>>>) {
        let refusal = Arc::new(Mutex::new(None));
        let guard = AuthGuard {
            inner,
            policy,
            seen: BytesMut::new(),
            done: false,
            refusal: Arc::clone(&refusal),
        };
        (guard, refusal)
    }

    /// Looks at newly read bytes; an error when the policy refuses.
    fn inspect(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.seen.extend_from_slice(bytes);
        while !self.done {
            let message = match BackendMessage::decode(&mut self.seen) {
                Ok(Some(m)) => m,
                Ok(None) => return Ok(()),
                // Malformed input is tokio-postgres's to report.
                Err(_) => {
                    self.done = true;
                    break;
                }
            };
            match message {
                BackendMessage::Authentication(AuthRequest::Ok) => self.done = true,
                BackendMessage::Authentication(request) => {
                    if let Err(refusal) = self.policy.check(&request) {
                        *self.refusal.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(refusal);
                        if refusal == Refusal::Cleartext {
                            self.done = true;
                            return Err(io::Error::new(
                                io::ErrorKind::PermissionDenied,
                                "refusing to send a password in cleartext without TLS",
                            ));
                        }
                    }
                }
                BackendMessage::ErrorResponse(_) => self.done = true,
                // Anything else before AuthenticationOk is tokio-postgres's
                // to refuse; the watch stays on until then.
                _ => {}
            }
        }
        self.seen = BytesMut::new();
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result {
            if !this.done {
                let fresh = buf.filled()[before..].to_vec();
                if let Err(e) = this.inspect(&fresh) {
                    buf.set_filled(before);
                    return Poll::Ready(Err(e));
                }
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `R` message asking for `code` (3 cleartext, 5 md5 with a salt).
    fn auth_request(code: i32) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        if code == 5 {
            body.extend_from_slice(&[1, 2, 3, 4]);
        }
        let mut message = vec![b'R'];
        message.extend_from_slice(&(4 + body.len() as i32).to_be_bytes());
        message.extend_from_slice(&body);
        message
    }

    const PLAIN: AuthPolicy = AuthPolicy {
        private_channel: false,
        allow_cleartext: false,
        has_password: true,
    };

    #[tokio::test]
    async fn the_guard_fails_the_read_that_brings_a_cleartext_request() {
        let (client, mut server) = tokio::io::duplex(64);
        let (mut guard, refusal) = AuthGuard::new(client, PLAIN);
        // Sent a byte at a time: the request is recognised across reads.
        for byte in auth_request(3) {
            server.write_all(&[byte]).await.expect("write");
        }
        let mut buf = [0u8; 64];
        let mut result = Ok(0);
        for _ in 0..9 {
            result = guard.read(&mut buf).await;
            if result.is_err() {
                break;
            }
        }
        let error = result.expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(*refusal.lock().expect("lock"), Some(Refusal::Cleartext));
    }

    #[tokio::test]
    async fn the_guard_passes_other_requests_through_unchanged() {
        let (client, mut server) = tokio::io::duplex(64);
        let (mut guard, refusal) = AuthGuard::new(client, PLAIN);
        let md5 = auth_request(5);
        server.write_all(&md5).await.expect("write");
        let mut buf = vec![0u8; md5.len()];
        guard.read_exact(&mut buf).await.expect("read");
        assert_eq!(buf, md5);
        assert_eq!(*refusal.lock().expect("lock"), None);
    }

    #[test]
    fn policy() {
        let plain = AuthPolicy {
            private_channel: false,
            allow_cleartext: false,
            has_password: true,
        };
        assert_eq!(
            plain.check(&AuthRequest::CleartextPassword),
            Err(Refusal::Cleartext)
        );
        assert_eq!(
            plain.check(&AuthRequest::Md5Password { salt: [0; 4] }),
            Ok(())
        );
        assert_eq!(plain.check(&AuthRequest::Ok), Ok(()));
        let allowed = AuthPolicy {
            allow_cleartext: true,
            ..plain
        };
        assert_eq!(allowed.check(&AuthRequest::CleartextPassword), Ok(()));
        let tls = AuthPolicy {
            private_channel: true,
            ..plain
        };
        assert_eq!(tls.check(&AuthRequest::CleartextPassword), Ok(()));
        let none = AuthPolicy {
            has_password: false,
            ..tls
        };
        assert_eq!(
            none.check(&AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into()]
            }),
            Err(Refusal::NoPassword)
        );
    }
}
