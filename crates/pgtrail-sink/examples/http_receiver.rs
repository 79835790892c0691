//! bench/export's HTTP receiver, in a process of its own so the sink's CPU
//! is counted apart from it: it costs about what a remote receiver costs
//! this machine. Each request's body is read and dropped (never kept or
//! parsed) and answered with the least each API's sink accepts honestly:
//! HEC `{"text":"Success","code":0}`; `_bulk` `errors: false` with one
//! outcome per action line (the body's lines counted as they stream by:
//! the sink refuses an answer with fewer outcomes than it sent); a
//! webhook an empty 200.
//!
//! Serves plain HTTP and HTTPS (a throwaway CA's certificate for
//! `localhost`) on one thread, and prints three lines on stdout: the
//! `http://` URL, the `https://` URL and the CA file to trust for it.
//!
//! Usage: http_receiver DIR   (the CA file is written in DIR)

use std::io::Write as _;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use http_body_util::BodyExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

async fn answer(uri: Uri, body: Body) -> Response {
    let bulk = uri.path().ends_with("/_bulk");
    let mut body = body;
    let mut lines = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (axum::http::StatusCode::BAD_REQUEST, "unreadable body").into_response();
        };
        if let (true, Some(data)) = (bulk, frame.data_ref()) {
            lines += data.iter().filter(|b| **b == b'\n').count();
        }
    }
    if bulk {
        // One outcome per action line (an action and its document each
        // end in a newline).
        let items = lines / 2;
        let mut text = String::with_capacity(40 + items * 26);
        text.push_str(r#"{"took":0,"errors":false,"items":["#);
        for i in 0..items {
            if i > 0 {
                text.push(',');
            }
            text.push_str(r#"{"index":{"status":201}}"#);
        }
        text.push_str("]}");
        return ([(header::CONTENT_TYPE, "application/json")], text).into_response();
    }
    if uri.path().ends_with("/services/collector/event") {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"text":"Success","code":0}"#,
        )
            .into_response();
    }
    Response::new(Body::empty())
}

/// TLS connections, the handshake done in `accept`.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: http_receiver DIR"));
    let ca = pgtrail_testkit::TestCa::new("bench/export receiver CA").expect("CA");
    let server = ca.server(&["localhost"]).expect("server certificate");
    let ca_file = dir.join("receiver-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let config = pgtrail_connect::certificate::from_pem(
        &server.cert_pem,
        &server.key_pem,
        vec![b"http/1.1".to_vec()],
    )
    .expect("server TLS");

    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls = TlsListener {
        tcp: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    };
    let mut out = std::io::stdout();
    writeln!(out, "http://{}", plain.local_addr().expect("addr")).expect("stdout");
    writeln!(
        out,
        "https://localhost:{}",
        tls.tcp.local_addr().expect("addr").port()
    )
    .expect("stdout");
    writeln!(out, "{}", ca_file.display()).expect("stdout");
    out.flush().expect("stdout");

    let app = axum::Router::new().fallback(answer);
    let plain = axum::serve(
        plain.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app.clone(),
    );
    let tls = axum::serve(tls, app);
    let _ = tokio::join!(async { plain.await }, async { tls.await });
}
