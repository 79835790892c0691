//! TLS and authentication through the proxy, against real clusters: TLS
//! toward clients (SSLRequest and PostgreSQL 17 direct TLS), toward the
//! server (sslmode from the upstream URL), each pg_hba.conf method passed
//! through, failed logins reported, SCRAM channel binding's limit, and the
//! attacks on each (named in each test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pgtrail_connect::ConnectConfig;
use pgtrail_proxy::{serve, ClientTls, LoginFailure, Recorded, SessionConfig, Upstream};
use pgtrail_testkit::{Cluster, ClusterOptions, ServerTls, TestCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A CA, the proxy's certificate it signed, and the CA's PEM in a file
/// (a client's `sslrootcert`).
struct Pki {
    ca: TestCa,
    proxy: ServerTls,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = TestCa::new("pgtrail test CA").expect("ca");
        let proxy = ca.server(&["localhost", "127.0.0.1"]).expect("cert");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write");
        Pki { ca, proxy, dir }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn client_tls(&self) -> ClientTls {
        ClientTls::from_pem(&self.proxy.cert_pem, &self.proxy.key_pem).expect("proxy cert")
    }

    /// A rustls client trusting the CA, offering `alpn`.
    fn connector(&self, alpn: Option<&[u8]>) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca.cert_pem().as_bytes()) {
            roots.add(cert.expect("pem")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        TlsConnector::from(Arc::new(config))
    }
}

/// A proxy on a free port, its records and refused logins.
struct Proxy {
    port: u16,
    records: mpsc::Receiver<Recorded>,
    failures: mpsc::Receiver<LoginFailure>,
}

async fn proxy(upstream_url: &str, tls: Option<ClientTls>, require_tls: bool) -> Proxy {
    proxy_with(upstream_url, tls, require_tls, SessionConfig::default()).await
}

async fn proxy_with(
    upstream_url: &str,
    tls: Option<ClientTls>,
    require_tls: bool,
    config: SessionConfig,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (sink, records) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel(16);
    let mut upstream = Upstream::parse(upstream_url)
        .expect("url")
        .with_session_config(config)
        .require_tls(require_tls)
        .with_login_failures(failures_tx);
    if let Some(tls) = tls {
        upstream = upstream.with_client_tls(tls);
    }
    tokio::spawn(serve(listener, upstream, sink));
    Proxy {
        port,
        records,
        failures,
    }
}

impl Proxy {
    async fn record(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(10), self.records.recv())
            .await
            .expect("a record within 10 s")
            .expect("the proxy runs")
    }

    async fn failure(&mut self) -> LoginFailure {
        tokio::time::timeout(Duration::from_secs(10), self.failures.recv())
            .await
            .expect("a login failure within 10 s")
            .expect("the proxy runs")
    }

    async fn no_failure(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(300), self.failures.recv()).await;
        assert!(next.is_err(), "unexpected login failure {next:?}");
    }

    /// A libpq-style conninfo for the proxy (pgtrail-connect and psql).
    fn conninfo(&self, user: &str, rest: &str) -> String {
        format!(
            "host=localhost port={} user={user} dbname=postgres {rest}",
            self.port
        )
    }
}

/// Logs in over `stream` (already TLS or not) with tokio-postgres.
async fn login<S>(
    stream: S,
    user: &str,
    password: Option<&str>,
) -> Result<Client, tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut config = tokio_postgres::Config::new();
    config
        .user(user)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Disable);
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// TLS to the proxy: after an SSLRequest, or directly (PostgreSQL 17).
async fn tls_stream(
    pki: &Pki,
    port: u16,
    direct: bool,
    alpn: Option<&[u8]>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    if !direct {
        tcp.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        assert_eq!(answer[0], b'S', "the proxy offers TLS");
    }
    let name = ServerName::try_from("localhost").expect("name");
    pki.connector(alpn).connect(name, tcp).await
}

fn code(error: &tokio_postgres::Error) -> Option<&str> {
    error.code().map(|c| c.code())
}

/// Reads what the proxy sends until it closes (at most 5 s).
async fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

/// The SQLSTATE and message of an ErrorResponse at the start of `bytes`.
fn error_response(bytes: &[u8]) -> Option<(String, String)> {
    if bytes.first() != Some(&b'E') || bytes.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes(bytes[1..5].try_into().ok()?) as usize;
    let body = bytes.get(5..1 + len)?;
    let (mut code, mut message) = (String::new(), String::new());
    for field in body.split(|b| *b == 0) {
        match field.first() {
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    Some((code, message))
}

fn startup_packet(user: &str) -> Vec<u8> {
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", "postgres")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// An upstream that is only a listening socket counting who connects: for
/// attacks that must not reach the server at all.
async fn counting_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (
        format!("postgres://x@127.0.0.1:{port}/postgres?sslmode=disable"),
        count,
    )
}

/// Runs psql with `conninfo` and `sql`; its stdout, or its stderr as the error.
async fn psql(cluster: &Cluster, conninfo: String, sql: &str) -> Result<String, String> {
    let program = cluster.binaries().program("psql");
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(program)
            .args(["-X", "-A", "-t", "-w", "-d", &conninfo, "-c", &sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
    .expect("psql task")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test]
async fn clients_reach_the_proxy_over_tls_negotiated_or_direct() {
    let cluster = Cluster::start().expect("cluster");
    let pki = Pki::new();
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let mut proxy = proxy(&upstream, Some(pki.client_tls()), false).await;

    // SSLRequest, then TLS (libpq before 17 sends no ALPN).
    let stream = tls_stream(&pki, proxy.port, false, None)
        .await
        .expect("tls");
    let client = login(stream, "postgres", None)
        .await
        .expect("login over TLS");
    client.simple_query("SELECT 1").await.expect("query");
    let record = proxy.record().await;
    assert!(
        record.session.tls,
        "the session knows its client link is TLS"
    );

    // PostgreSQL 17 direct TLS, ALPN "postgresql".
    let stream = tls_stream(&pki, proxy.port, true, Some(b"postgresql"))
        .await
        .expect("direct tls");
    let client = login(stream, "postgres", None)
        .await
        .expect("login, direct TLS");
    client.simple_query("SELECT 2").await.expect("query");
    assert!(proxy.record().await.session.tls);

    // Direct TLS without ALPN is refused, as PostgreSQL 17 refuses it.
    let stream = tls_stream(&pki, proxy.port, true, None)
        .await
        .expect("handshake");
    let error = login(stream, "postgres", None).await.expect_err("no ALPN");
    assert_eq!(code(&error), Some("08P01"), "{error}");
    // Another protocol's ALPN fails the handshake itself.
    assert!(tls_stream(&pki, proxy.port, true, Some(b"h2"))
        .await
        .is_err());

    // In the clear, without require_tls: served, and marked so.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let client = login(tcp, "postgres", None).await.expect("plain login");
    client.simple_query("SELECT 3").await.expect("query");
    assert!(!proxy.record().await.session.tls);

    // libpq itself: sslmode=verify-full against the proxy's certificate.
    let conninfo = proxy.conninfo(
        "postgres",
        &format!(
            "sslmode=verify-full sslrootcert={}",
            pki.ca_file().display()
        ),
    );
    let out = psql(&cluster, conninfo, "SELECT 'via psql'")
        .await
        .expect("psql");
    assert_eq!(out, "via psql");
    assert!(proxy.record().await.session.tls);
    // The wrong CA: libpq refuses the proxy.
    let other = TestCa::new("another CA").expect("ca");
    let wrong = write(pki.dir.path(), "other.pem", &other.cert_pem());
    let conninfo = proxy.conninfo(
        "postgres",
        &format!("sslmode=verify-full sslrootcert={}", wrong.display()),
    );
    let error = psql(&cluster, conninfo, "SELECT 1")
        .await
        .expect_err("wrong CA");
    assert!(error.contains("certificate verify failed"), "{error}");
    proxy.no_failure().await;
}

/// Attacker: someone on the network who writes plaintext commands right
/// behind the client's SSLRequest (CVE-2021-23214), hoping the proxy takes
/// them as having come inside TLS. Refused; nothing reaches the server.
#[tokio::test]
async fn plaintext_behind_an_ssl_request_is_refused() {
    let pki = Pki::new();
    let (upstream, connections) = counting_upstream().await;
    let mut proxy = proxy(&upstream, Some(pki.client_tls()), false).await;
    let mut attack = SSL_REQUEST.to_vec();
    attack.extend_from_slice(&startup_packet("postgres"));
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    tcp.write_all(&attack).await.expect("write");
    let answer = read_all(&mut tcp).await;
    let (code, message) = error_response(&answer).expect("an ErrorResponse, not 'S'");
    assert_eq!(code, "08P01");
    assert!(
        message.contains("unencrypted data after the SSLRequest"),
        "{message}"
    );
    // The same bytes after the 'S' are not TLS: the handshake fails and
    // the session ends.
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    tcp.write_all(&SSL_REQUEST).await.expect("write");
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.expect("answer");
    assert_eq!(&s, b"S");
    tcp.write_all(&startup_packet("postgres"))
        .await
        .expect("write");
    let rest = read_all(&mut tcp).await;
    assert!(
        error_response(&rest).is_none(),
        "no protocol answer in the clear: {rest:?}"
    );
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    proxy.no_failure().await;
}

/// Attacker: a client (or a downgrade on the network) that logs in without
/// TLS where the proxy requires it. Refused with 28000 before anything
/// reaches the server, and seen as a failed login.
#[tokio::test]
async fn require_tls_refuses_clients_in_the_clear_before_the_server() {
    let pki = Pki::new();
    let (upstream, connections) = counting_upstream().await;
    let mut proxy = proxy(&upstream, Some(pki.client_tls()), true).await;
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let client_addr = tcp.local_addr().expect("addr");
    let error = login(tcp, "alice", Some("secret"))
        .await
        .expect_err("refused");
    assert_eq!(code(&error), Some("28000"), "{error}");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(message.contains("requires TLS"), "{message}");
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the server"
    );
    let failure = proxy.failure().await;
    assert_eq!(failure.error.code(), "28000");
    assert_eq!(failure.session.user.as_deref(), Some("alice"));
    assert_eq!(failure.session.database.as_deref(), Some("postgres"));
    assert_eq!(failure.session.client, client_addr);
    assert!(!failure.session.tls);
    // Over TLS the proxy goes on to the server (here: the counting socket).
    let stream = tls_stream(&pki, proxy.port, false, None)
        .await
        .expect("tls");
    let _ = tokio::time::timeout(Duration::from_secs(2), login(stream, "alice", None)).await;
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// A malformed ClientHello (attacker: anyone who can reach the port) ends
/// only its own connection: a session already running and new ones go on.
#[tokio::test]
async fn a_malformed_client_hello_closes_only_its_session() {
    let cluster = Cluster::start().expect("cluster");
    let pki = Pki::new();
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let mut proxy = proxy(&upstream, Some(pki.client_tls()), false).await;
    let stream = tls_stream(&pki, proxy.port, false, None)
        .await
        .expect("tls");
    let running = login(stream, "postgres", None).await.expect("login");
    for garbage in [
        // A handshake record whose body is not a ClientHello.
        vec![0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
        // A record header claiming 64 KiB, then nothing.
        vec![0x16, 0x03, 0x03, 0xff, 0xff],
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .expect("tcp");
        tcp.write_all(&garbage).await.expect("write");
        let _ = tcp.shutdown().await;
        let answer = read_all(&mut tcp).await;
        assert!(error_response(&answer).is_none(), "{answer:?}");
    }
    // After SSLRequest: the same garbage inside the handshake.
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    tcp.write_all(&SSL_REQUEST).await.expect("write");
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.expect("S");
    tcp.write_all(&[0x16, 0x03, 0x01, 0x00, 0x01, 0x00])
        .await
        .expect("write");
    let _ = read_all(&mut tcp).await;

    running
        .simple_query("SELECT 'still here'")
        .await
        .expect("the running session");
    assert!(proxy.record().await.session.tls);
    let stream = tls_stream(&pki, proxy.port, true, Some(b"postgresql"))
        .await
        .expect("tls");
    let fresh = login(stream, "postgres", None)
        .await
        .expect("a new session");
    fresh.simple_query("SELECT 1").await.expect("query");
    proxy.no_failure().await;
}

/// psql's Ctrl-C over TLS: a CancelRequest sent inside TLS (as
/// tokio-postgres and libpq 17 do) reaches the right backend.
#[tokio::test]
async fn a_cancel_request_over_tls_cancels_the_statement() {
    let cluster = Cluster::start().expect("cluster");
    let pki = Pki::new();
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let proxy = proxy(&upstream, Some(pki.client_tls()), true).await;
    let stream = tls_stream(&pki, proxy.port, false, None)
        .await
        .expect("tls");
    let client = login(stream, "postgres", None).await.expect("login");
    let token = client.cancel_token();
    let sleeping = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stream = tls_stream(&pki, proxy.port, false, None)
        .await
        .expect("tls");
    token
        .cancel_query_raw(stream, NoTls)
        .await
        .expect("cancel sent");
    let result = tokio::time::timeout(Duration::from_secs(10), sleeping)
        .await
        .expect("cancelled well before 30 s")
        .expect("task");
    let error = result.expect_err("cancelled");
    assert_eq!(code(&error), Some("57014"), "{error}");
}

/// A cluster with `ssl = on` that accepts logins only over TLS (`hostssl`,
/// and `hostnossl … reject`), with one role per method.
struct TlsCluster {
    cluster: Cluster,
    pki: Pki,
    server_tls: ServerTls,
}

fn tls_cluster() -> TlsCluster {
    let pki = Pki::new();
    let server_tls = pki.ca.server(&["localhost", "127.0.0.1"]).expect("cert");
    let hba = [
        "hostssl all scram_user 127.0.0.1/32 scram-sha-256",
        "hostssl all md5_user 127.0.0.1/32 md5",
        "hostssl all clear_user 127.0.0.1/32 password",
        "hostssl all trust_user 127.0.0.1/32 trust",
        // For channel binding over a plain upstream link only.
        "hostnossl all scram_user 127.0.0.1/32 scram-sha-256",
        "hostnossl all all 127.0.0.1/32 reject",
    ];
    let cluster = Cluster::start_with(ClusterOptions {
        hba: hba.iter().map(|l| l.to_string()).collect(),
        tls: Some(server_tls.clone()),
        ..ClusterOptions::default()
    })
    .expect("cluster");
    cluster
        .psql(
            "postgres",
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN PASSWORD 'scram-secret';
             CREATE ROLE clear_user LOGIN PASSWORD 'clear-secret';
             CREATE ROLE trust_user LOGIN;
             SET password_encryption = 'md5';
             CREATE ROLE md5_user LOGIN PASSWORD 'md5-secret';",
        )
        .expect("roles");
    TlsCluster {
        cluster,
        pki,
        server_tls,
    }
}

/// Whether the backend serving `client` sees its connection as TLS.
async fn server_side_tls(client: &Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn every_auth_method_passes_through_over_tls_to_the_server() {
    let t = tls_cluster();
    let port = t.cluster.port();
    for upstream in [
        format!("postgres://x@127.0.0.1:{port}/postgres?sslmode=require"),
        format!(
            "postgres://x@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
            t.pki.ca_file().display()
        ),
    ] {
        let mut proxy = proxy(&upstream, Some(t.pki.client_tls()), false).await;
        for (user, password) in [
            ("scram_user", Some("scram-secret")),
            ("md5_user", Some("md5-secret")),
            ("clear_user", Some("clear-secret")),
            ("trust_user", None),
        ] {
            let mut conninfo = proxy.conninfo(
                user,
                &format!(
                    "sslmode=verify-full sslrootcert={}",
                    t.pki.ca_file().display()
                ),
            );
            if let Some(password) = password {
                conninfo.push_str(&format!(" password='{password}'"));
            }
            let client = ConnectConfig::parse(&conninfo)
                .expect("conninfo")
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{user} through {upstream}: {e}"));
            assert!(
                server_side_tls(&client).await,
                "{user}: the proxy reached the server over TLS"
            );
            assert!(proxy.record().await.session.tls);
        }
        proxy.no_failure().await;
    }
    // A server certificate the proxy cannot verify: the client is told the
    // server cannot be reached (the reason stays in the proxy's log).
    let other = TestCa::new("another CA").expect("ca");
    let wrong = write(t.pki.dir.path(), "other.pem", &other.cert_pem());
    let upstream = format!(
        "postgres://x@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        wrong.display()
    );
    let proxy = proxy(&upstream, Some(t.pki.client_tls()), false).await;
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let error = login(tcp, "trust_user", None)
        .await
        .expect_err("unverified server");
    assert_eq!(code(&error), Some("08006"), "{error}");
}

/// Attacker: a server (or whoever answers upstream) asking for the password
/// in cleartext while the client's link to the proxy is plain TCP. The
/// request never reaches the client, so the password is never sent.
#[tokio::test]
async fn a_cleartext_password_is_never_asked_for_over_a_plain_client_link() {
    let t = tls_cluster();
    let upstream = format!(
        "postgres://x@127.0.0.1:{}/postgres?sslmode=require",
        t.cluster.port()
    );
    let mut proxy = proxy(&upstream, Some(t.pki.client_tls()), false).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let client_addr = tcp.local_addr().expect("addr");
    tcp.write_all(&startup_packet("clear_user"))
        .await
        .expect("write");
    let answer = read_all(&mut tcp).await;
    let (code, message) = error_response(&answer)
        .unwrap_or_else(|| panic!("an ErrorResponse, not a password request: {answer:?}"));
    assert_eq!(code, "28000");
    assert!(message.contains("cleartext password"), "{message}");
    let failure = proxy.failure().await;
    assert_eq!(failure.error.code(), "28000");
    assert_eq!(failure.session.user.as_deref(), Some("clear_user"));
    assert_eq!(failure.session.client, client_addr);
}

/// The server's own refusals reach the proxy's caller with who tried from
/// where: 28P01 wrong password, 28000 no pg_hba.conf entry and a role that
/// cannot log in, 3D000 no such database.
#[tokio::test]
async fn failed_logins_are_reported_with_user_database_and_address() {
    let cluster = Cluster::start_with(ClusterOptions {
        hba: vec![
            "host all alice 127.0.0.1/32 scram-sha-256".into(),
            "host all locked 127.0.0.1/32 scram-sha-256".into(),
        ],
        ..ClusterOptions::default()
    })
    .expect("cluster");
    cluster
        .psql(
            "postgres",
            "CREATE ROLE alice LOGIN PASSWORD 'right';
             CREATE ROLE locked NOLOGIN PASSWORD 'right';
             CREATE ROLE stranger LOGIN PASSWORD 'right';",
        )
        .expect("roles");
    let upstream = format!("{}?sslmode=disable", cluster.url("postgres"));
    let mut proxy = proxy(&upstream, None, false).await;
    for (user, database, password, expected) in [
        ("alice", "postgres", "wrong", "28P01"),
        ("stranger", "postgres", "right", "28000"),
        ("locked", "postgres", "right", "28000"),
        ("alice", "no_such_db", "right", "3D000"),
    ] {
        let tcp = TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .expect("tcp");
        let client_addr: SocketAddr = tcp.local_addr().expect("addr");
        let mut config = tokio_postgres::Config::new();
        config
            .user(user)
            .dbname(database)
            .password(password)
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        let error = config.connect_raw(tcp, NoTls).await.err().expect("refused");
        assert_eq!(code(&error), Some(expected), "{user}/{database}: {error}");
        let failure = proxy.failure().await;
        let case = format!("{user}/{database}");
        assert_eq!(failure.error.code(), expected, "{case}");
        assert_eq!(failure.error.severity(), "FATAL", "{case}");
        assert!(!failure.error.message().is_empty(), "{case}");
        assert_eq!(failure.session.user.as_deref(), Some(user), "{case}");
        assert_eq!(
            failure.session.database.as_deref(),
            Some(database),
            "{case}"
        );
        assert_eq!(failure.session.client, client_addr, "{case}");
        assert_eq!(failure.session.backend_pid, None, "{case}");
    }
    // The right password: no failure reported.
    let tcp = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let client = login(tcp, "alice", Some("right")).await.expect("login");
    client.simple_query("SELECT 1").await.expect("query");
    proxy.no_failure().await;
}

/// SCRAM channel binding through a TLS-terminating proxy, with libpq: what
/// docs/proxy.md says, checked.
#[tokio::test]
async fn scram_channel_binding_through_the_proxy() {
    let t = tls_cluster();
    let port = t.cluster.port();
    let upstream = format!("postgres://x@127.0.0.1:{port}/postgres?sslmode=require");
    let ca = t.pki.ca_file();
    let run = |proxy_port: u16, binding: &'static str| {
        let conninfo = format!(
            "host=localhost port={proxy_port} user=scram_user dbname=postgres password='scram-secret' sslmode=verify-full sslrootcert={} channel_binding={binding}",
            ca.display()
        );
        psql(&t.cluster, conninfo, "SELECT 'in'")
    };
    // The proxy's own certificate: binding fails (the client binds to the
    // proxy's certificate, the server to its own) — also libpq's default
    // `prefer`, since the server offers SCRAM-SHA-256-PLUS over TLS.
    let own = proxy(&upstream, Some(t.pki.client_tls()), false).await;
    for binding in ["require", "prefer"] {
        let error = run(own.port, binding).await.expect_err(binding);
        assert!(error.contains("channel binding"), "{binding}: {error}");
    }
    assert_eq!(run(own.port, "disable").await.as_deref(), Ok("in"));
    // The proxy presenting the server's own certificate and key: it works.
    let same = ClientTls::from_pem(&t.server_tls.cert_pem, &t.server_tls.key_pem).expect("cert");
    let same = proxy(&upstream, Some(same), false).await;
    for binding in ["require", "prefer"] {
        assert_eq!(
            run(same.port, binding).await.as_deref(),
            Ok("in"),
            "{binding}"
        );
    }
    // A plain upstream link (the proxy on the database host): the server
    // offers no -PLUS, so `prefer` works and `require` cannot.
    let plain = format!("postgres://x@127.0.0.1:{port}/postgres?sslmode=disable");
    let plain = proxy(&plain, Some(t.pki.client_tls()), false).await;
    assert_eq!(run(plain.port, "prefer").await.as_deref(), Ok("in"));
    let error = run(plain.port, "require").await.expect_err("require");
    assert!(error.contains("channel binding"), "{error}");
}

/// Attacker: anyone who can reach the port opens connections and stalls
/// (no StartupMessage, or a TLS handshake left half done): each is closed
/// after the startup timeout instead of being held for ever.
#[tokio::test]
async fn a_stalled_startup_or_handshake_is_closed_after_the_timeout() {
    let pki = Pki::new();
    let (upstream, connections) = counting_upstream().await;
    let config = SessionConfig {
        startup_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    let proxy = proxy_with(&upstream, Some(pki.client_tls()), false, config).await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    let mut half = TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("tcp");
    half.write_all(&SSL_REQUEST).await.expect("write");
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x40])
        .await
        .expect("write");
    for stream in [&mut silent, &mut half] {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed by the proxy")
            .expect("read");
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}
