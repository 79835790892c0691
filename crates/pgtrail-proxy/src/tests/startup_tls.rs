//! TLS and authentication decisions at startup, sans-IO: when the session
//! asks the shell for a handshake, what it refuses, and what it never
//! forwards.

use std::time::UNIX_EPOCH;

use super::{msg, startup_message};
use crate::{Phase, Session, SessionConfig, SessionError};

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];
/// The start of a TLS ClientHello record.
const CLIENT_HELLO: [u8; 6] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

fn session(tls: bool, require_tls: bool) -> Session {
    let config = SessionConfig {
        tls,
        require_tls,
        ..SessionConfig::default()
    };
    Session::new(config, UNIX_EPOCH)
}

/// AuthenticationCleartextPassword.
fn cleartext_request() -> Vec<u8> {
    msg(b'R', &3i32.to_be_bytes())
}

#[test]
fn with_a_certificate_ssl_request_gets_s_and_a_handshake() {
    let mut s = session(true, false);
    // GSSENCRequest is refused even with TLS configured.
    s.client_data(&GSSENC_REQUEST, UNIX_EPOCH).expect("valid");
    assert_eq!(s.take_to_client().as_deref(), Some(&b"N"[..]));
    assert_eq!(s.take_tls_handshake(), None);
    s.client_data(&SSL_REQUEST, UNIX_EPOCH).expect("valid");
    assert_eq!(s.take_to_client().as_deref(), Some(&b"S"[..]));
    assert_eq!(s.take_tls_handshake().as_deref(), Some(&b""[..]));
    assert!(!s.client_tls());
    // Negotiated TLS from a client that offers no ALPN (libpq before 17).
    s.tls_established(None)
        .expect("no ALPN is fine after SSLRequest");
    assert!(s.client_tls());
    s.client_data(&startup_message(), UNIX_EPOCH)
        .expect("valid");
    assert_eq!(s.phase(), &Phase::Authenticating);
    assert_eq!(s.take_to_server().as_deref(), Some(&startup_message()[..]));
    // A second SSLRequest inside TLS is not something the server speaks.
    let mut s = session(true, false);
    s.client_data(&SSL_REQUEST, UNIX_EPOCH).expect("valid");
    s.take_tls_handshake();
    s.tls_established(None).expect("tls");
    assert!(matches!(
        s.client_data(&SSL_REQUEST, UNIX_EPOCH),
        Err(SessionError::OutOfStep { .. })
    ));
}

/// Attacker: someone on the network between client and proxy (or a
/// malicious client) sends plaintext right behind the SSLRequest, hoping
/// the proxy reads it as if it had come inside TLS (CVE-2021-23214).
#[test]
fn plaintext_after_ssl_request_is_refused_not_taken_as_encrypted() {
    let mut s = session(true, false);
    let mut packet = SSL_REQUEST.to_vec();
    packet.extend_from_slice(&startup_message());
    let error = s.client_data(&packet, UNIX_EPOCH).expect_err("refused");
    assert!(
        matches!(error, SessionError::PlaintextAfterTlsRequest),
        "{error:?}"
    );
    assert_eq!(error.sqlstate(), "08P01");
    assert_eq!(s.take_to_client(), None, "no 'S'");
    assert_eq!(s.take_tls_handshake(), None, "no handshake");
    assert_eq!(s.take_to_server(), None, "nothing for the server");
    // A single extra byte is enough to refuse.
    let mut s = session(true, false);
    let mut packet = SSL_REQUEST.to_vec();
    packet.push(b'Q');
    assert!(matches!(
        s.client_data(&packet, UNIX_EPOCH),
        Err(SessionError::PlaintextAfterTlsRequest)
    ));
}

#[test]
fn direct_tls_hands_over_the_client_hello_and_needs_alpn() {
    let mut s = session(true, false);
    s.client_data(&CLIENT_HELLO, UNIX_EPOCH)
        .expect("direct TLS");
    assert_eq!(
        s.take_tls_handshake().as_deref(),
        Some(&CLIENT_HELLO[..]),
        "the bytes read are given back for the handshake"
    );
    assert_eq!(s.take_to_client(), None);
    assert!(matches!(s.tls_established(None), Err(SessionError::NoAlpn)));
    assert!(!s.client_tls());
    let mut s = session(true, false);
    s.client_data(&CLIENT_HELLO, UNIX_EPOCH)
        .expect("direct TLS");
    s.take_tls_handshake();
    s.tls_established(Some(b"postgresql")).expect("ALPN");
    assert!(s.client_tls());
    // Direct TLS is only the connection's first bytes, as in the server.
    let mut s = session(true, false);
    s.client_data(&GSSENC_REQUEST, UNIX_EPOCH).expect("valid");
    assert!(matches!(
        s.client_data(&CLIENT_HELLO, UNIX_EPOCH),
        Err(SessionError::DirectTls)
    ));
    // Without a certificate: refused, and SSLRequest gets 'N'.
    let mut s = session(false, false);
    s.client_data(&SSL_REQUEST, UNIX_EPOCH).expect("valid");
    assert_eq!(s.take_to_client().as_deref(), Some(&b"N"[..]));
    assert_eq!(s.take_tls_handshake(), None);
    let mut s = session(false, false);
    assert!(matches!(
        s.client_data(&CLIENT_HELLO, UNIX_EPOCH),
        Err(SessionError::DirectTls)
    ));
}

/// Attacker: a client (or a downgrade on the network) that logs in without
/// TLS where the proxy requires it.
#[test]
fn require_tls_refuses_a_startup_in_the_clear_before_the_server() {
    let mut s = session(true, true);
    // Declining TLS ('N' after GSSENC) and going on in the clear.
    s.client_data(&GSSENC_REQUEST, UNIX_EPOCH).expect("valid");
    s.take_to_client();
    let error = s
        .client_data(&startup_message(), UNIX_EPOCH)
        .expect_err("refused");
    assert!(
        matches!(error, SessionError::LoginRefused { .. }),
        "{error:?}"
    );
    assert_eq!(error.sqlstate(), "28000");
    assert!(error.to_string().contains("requires TLS"), "{error}");
    assert_eq!(s.take_to_server(), None, "nothing reaches the server");
    // Seen as a failed login, with who tried.
    let login = s.login_error().expect("the refusal is the login error");
    assert_eq!((login.code(), login.severity()), ("28000", "FATAL"));
    assert_eq!(s.startup().and_then(|i| i.user()), Some("alice"));
    // Over TLS the same StartupMessage goes through.
    let mut s = session(true, true);
    s.client_data(&SSL_REQUEST, UNIX_EPOCH).expect("valid");
    s.take_tls_handshake();
    s.tls_established(None).expect("tls");
    s.client_data(&startup_message(), UNIX_EPOCH)
        .expect("valid");
    assert!(s.take_to_server().is_some());
    // A CancelRequest in the clear stays possible: libpq before 17 always
    // sends it so, and it carries no credentials beyond the cancel key.
    let mut s = session(true, true);
    let cancel = [0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 7, 1, 2, 3, 4];
    s.client_data(&cancel, UNIX_EPOCH).expect("valid");
    assert!(matches!(s.phase(), Phase::Cancel(_)));
}

/// Attacker: a server (or whoever impersonates it upstream) asks for the
/// password in cleartext while the client's link to the proxy is plain TCP:
/// the request is not forwarded, so the client never sends the password.
#[test]
fn a_cleartext_password_request_is_forwarded_only_over_encrypted_links() {
    for (client_tls, server_private, forwarded) in [
        (false, true, false),
        (true, false, false),
        (false, false, false),
        (true, true, true),
    ] {
        let mut s = session(true, false);
        if client_tls {
            s.client_data(&SSL_REQUEST, UNIX_EPOCH).expect("valid");
            s.take_to_client();
            s.take_tls_handshake();
            s.tls_established(None).expect("tls");
        }
        s.set_server_private(server_private);
        s.client_data(&startup_message(), UNIX_EPOCH)
            .expect("valid");
        s.take_to_server();
        let result = s.server_data(&cleartext_request(), UNIX_EPOCH);
        let case = format!("client_tls {client_tls}, server_private {server_private}");
        if forwarded {
            result.expect(&case);
            assert_eq!(
                s.take_to_client().as_deref(),
                Some(&cleartext_request()[..]),
                "{case}"
            );
            assert_eq!(s.login_error(), None, "{case}");
        } else {
            let error = result.expect_err(&case);
            assert_eq!(error.sqlstate(), "28000", "{case}");
            assert!(error.to_string().contains("cleartext password"), "{case}");
            assert_eq!(s.take_to_client(), None, "{case}: request not forwarded");
            assert_eq!(s.login_error().map(|e| e.code()), Some("28000"), "{case}");
        }
    }
    // md5 and SCRAM pass through over plain links.
    let mut s = session(false, false);
    s.client_data(&startup_message(), UNIX_EPOCH)
        .expect("valid");
    let md5 = msg(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
    s.server_data(&md5, UNIX_EPOCH).expect("md5");
    assert_eq!(s.take_to_client().as_deref(), Some(&md5[..]));
}
