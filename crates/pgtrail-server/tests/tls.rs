//! `serve` over real sockets: TLS with a certificate from files, and the
//! client's address reaching the access records through `ConnectInfo`.

use std::sync::Arc;

use pgtrail_core::filter::Filter;
use pgtrail_core::Kind;
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{AppState, ServerTls};
use rustls::pki_types::pem::PemObject as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

async fn store(dir: &tempfile::TempDir) -> Arc<dyn pgtrail_store::Store> {
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    pgtrail_store::open::open(&url).await.expect("open store")
}

/// Sends one HTTP/1.1 request on `stream`; returns the whole answer.
async fn exchange<S>(mut stream: S, request: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn serve_tls_answers_over_tls_only_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = pgtrail_testkit::TestCa::new("pgtrail test CA").expect("ca");
    let cert = ca.server(&["localhost"]).expect("cert");
    let cert_file = dir.path().join("server.crt");
    let key_file = dir.path().join("server.key");
    std::fs::write(&cert_file, &cert.cert_pem).expect("cert");
    std::fs::write(&key_file, &cert.key_pem).expect("key");
    let tls = ServerTls::from_pem_files(&cert_file, &key_file).expect("tls");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let state = AppState::new(store(&dir).await, true);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pgtrail_server::serve_tls(listener, tls, state, async {
        let _ = stop_rx.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
        roots.add(der.expect("pem")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = connector.connect(name, tcp).await.expect("handshake");
    let answer = exchange(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("strict-transport-security"), "{answer}");

    // Plain HTTP on the TLS port gets no answer, and does not stop others.
    let plain = TcpStream::connect(address).await.expect("connect");
    let answer = exchange(
        plain,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.contains("200"), "{answer}");

    let _ = stop_tx.send(());
    server.await.expect("join").expect("served");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = pgtrail_testkit::TestCa::new("pgtrail test CA").expect("ca");
    let one = ca.server(&["localhost"]).expect("cert");
    let other = ca.server(&["localhost"]).expect("cert");
    let cert_file = dir.path().join("server.crt");
    let key_file = dir.path().join("other.key");
    std::fs::write(&cert_file, &one.cert_pem).expect("cert");
    std::fs::write(&key_file, &other.key_pem).expect("key");
    assert!(ServerTls::from_pem_files(&cert_file, &key_file).is_err());
    assert!(ServerTls::from_pem_files(&cert_file, &dir.path().join("missing")).is_err());
}

#[tokio::test]
async fn a_failed_login_over_a_real_socket_records_the_client_address() {
    let dir = tempfile::tempdir().expect("dir");
    let tokens = dir.path().join("tokens.toml");
    let mut set = TokenSet::default();
    set.create("ann", pgtrail_server::auth::Role::Auditor)
        .expect("create");
    set.save(&tokens).expect("save");
    let store = store(&dir).await;
    let state = AppState::new(store.clone(), true).with_tokens_file(&tokens);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(pgtrail_server::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let tcp = TcpStream::connect(address).await.expect("connect");
    let port = tcp.local_addr().expect("local").port();
    let answer = exchange(
        tcp,
        "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer pgt_wrong\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let _ = stop_tx.send(());
    server.await.expect("join").expect("served");

    let failed = store
        .query(&Filter {
            kind: Some(Kind::Access),
            ..Filter::default()
        })
        .await
        .expect("query");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].client_addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(failed[0].client_port, Some(i32::from(port)));
}
