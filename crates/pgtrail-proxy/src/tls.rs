//! TLS toward clients: the proxy's certificate, the handshake, and the
//! client stream the forwarding loops read and write (plain TCP or TLS).
//!
//! When to run a handshake is the session's decision (an SSLRequest
//! answered `S`, or a direct ClientHello: see [`crate::Session::take_tls_handshake`]);
//! this module only runs it. TLS toward the server is `pgtrail-connect`'s,
//! from the upstream URL's `sslmode`.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::startup::ALPN_POSTGRESQL;

/// Why the proxy's certificate cannot be used.
pub use pgtrail_connect::certificate::CertificateError as TlsError;

/// The certificate the proxy presents to clients, ready for handshakes.
/// Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    acceptor: TlsAcceptor,
}

/// A client that offers ALPN must offer PostgreSQL's (as the server
/// checks); one that offers none is accepted after an SSLRequest, and
/// refused on a direct handshake by the session.
fn alpn() -> Vec<Vec<u8>> {
    vec![ALPN_POSTGRESQL.to_vec()]
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads a PEM certificate chain (the proxy's certificate first) and its
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ClientTls, TlsError> {
        let config = pgtrail_connect::certificate::from_pem_files(cert, key, alpn())?;
        Ok(Self::new(config))
    }

    /// The same from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClientTls, TlsError> {
        let config = pgtrail_connect::certificate::from_pem(cert_pem, key_pem, alpn())?;
        Ok(Self::new(config))
    }

    fn new(config: ServerConfig) -> ClientTls {
        ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// Runs the server side of a handshake on `tcp`, `read` being the bytes
    /// of it already read from the socket.
    pub(crate) async fn accept(&self, tcp: TcpStream, read: Bytes) -> io::Result<ClientStream> {
        let stream = self.acceptor.accept(Rewind { read, inner: tcp }).await?;
        Ok(ClientStream::Tls(Box::new(stream)))
    }
}

/// A socket with bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    read: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read.has_remaining() {
            let n = this.read.len().min(buf.remaining());
            buf.put_slice(&this.read[..n]);
            this.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
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

/// The client's connection: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum ClientStream {
    /// In the clear.
    Plain(TcpStream),
    /// After an SSLRequest or a direct handshake.
    Tls(Box<tokio_rustls::server::TlsStream<Rewind<TcpStream>>>),
}

impl ClientStream {
    /// The ALPN protocol the handshake agreed on.
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) => None,
            ClientStream::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn rewind_gives_the_read_bytes_first() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .expect("write");
        drop(a);
        let mut stream = Rewind {
            read: Bytes::from_static(b"hello"),
            inner: b,
        };
        let mut out = String::new();
        stream.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let ca = pgtrail_testkit::TestCa::new("test").expect("ca");
        let one = ca.server(&["localhost"]).expect("cert");
        let two = ca.server(&["localhost"]).expect("cert");
        assert!(ClientTls::from_pem(&one.cert_pem, &one.key_pem).is_ok());
        let error = ClientTls::from_pem(&one.cert_pem, &two.key_pem).expect_err("mismatch");
        assert!(matches!(error, TlsError::Config(_)), "{error:?}");
        let error = ClientTls::from_pem("", &one.key_pem).expect_err("no cert");
        assert!(error.to_string().contains("no certificate"), "{error}");
    }
}
