//! Messages a client sends, encoded into a buffer; and the startup message
//! decoded, for a server-side reader (the proxy).
//!
//! Each `encode_*` function appends exactly one message to `buf`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::Reader;
use crate::WireError;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_VERSION: i32 = 196_608;
/// The request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;
/// The request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;

/// Appends a message: tag, length, then whatever `body` writes.
fn tagged(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let length_at = buf.len();
    buf.put_i32(0);
    body(buf);
    let length = i32::try_from(buf.len() - length_at).expect("a message body under 2 GB");
    buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, text: &str) {
    buf.put_slice(text.as_bytes());
    buf.put_u8(0);
}

/// StartupMessage with `params` (e.g. `user`, `database`, `replication`).
pub fn encode_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    let length_at = buf.len();
    buf.put_i32(0);
    buf.put_i32(PROTOCOL_VERSION);
    for (name, value) in params {
        put_cstr(buf, name);
        put_cstr(buf, value);
    }
    buf.put_u8(0);
    let length = i32::try_from(buf.len() - length_at).expect("a startup message under 2 GB");
    buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

/// SSLRequest (answered by one byte, `S` or `N`, not a message).
pub fn encode_ssl_request(buf: &mut BytesMut) {
    buf.put_i32(8);
    buf.put_i32(SSL_REQUEST_CODE);
}

/// PasswordMessage (cleartext or MD5 answer).
pub fn encode_password(buf: &mut BytesMut, password: &str) {
    tagged(buf, b'p', |b| put_cstr(b, password));
}

/// SASLInitialResponse: the chosen mechanism and the client-first message.
pub fn encode_sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    tagged(buf, b'p', |b| {
        put_cstr(b, mechanism);
        b.put_i32(i32::try_from(data.len()).expect("SASL data under 2 GB"));
        b.put_slice(data);
    });
}

/// SASLResponse: the client-final message.
pub fn encode_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'p', |b| b.put_slice(data));
}

/// Query (simple protocol).
pub fn encode_query(buf: &mut BytesMut, sql: &str) {
    tagged(buf, b'Q', |b| put_cstr(b, sql));
}

/// CopyData carrying `data`.
pub fn encode_copy_data(buf: &mut BytesMut, data: &[u8]) {
    tagged(buf, b'd', |b| b.put_slice(data));
}

/// CopyDone.
pub fn encode_copy_done(buf: &mut BytesMut) {
    tagged(buf, b'c', |_| {});
}

/// Terminate.
pub fn encode_terminate(buf: &mut BytesMut) {
    tagged(buf, b'X', |_| {});
}

/// The first message of a connection, as a server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// A StartupMessage with its parameters, in order.
    Startup {
        /// Protocol version (major << 16 | minor).
        version: i32,
        /// `user`, `database`, `options`, `replication`, …
        params: Vec<(String, String)>,
    },
    /// SSLRequest.
    Ssl,
    /// GSSENCRequest.
    GssEnc,
    /// CancelRequest.
    Cancel {
        /// Backend process id.
        pid: i32,
        /// Secret key.
        secret: i32,
    },
}

impl StartupRequest {
    /// Decodes the body returned by [`crate::frame::decode_untagged`].
    pub fn parse(body: &Bytes) -> Result<StartupRequest, WireError> {
        let mut r = Reader::new(0, body);
        let code = r.i32("protocol version")?;
        Ok(match code {
            SSL_REQUEST_CODE => StartupRequest::Ssl,
            GSSENC_REQUEST_CODE => StartupRequest::GssEnc,
            CANCEL_REQUEST_CODE => StartupRequest::Cancel {
                pid: r.i32("process id")?,
                secret: r.i32("secret key")?,
            },
            version => {
                let mut params = Vec::new();
                loop {
                    let name = r.cstr("parameter name")?;
                    if name.is_empty() {
                        break;
                    }
                    params.push((name.to_string(), r.cstr("parameter value")?.to_string()));
                }
                StartupRequest::Startup { version, params }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_frame, decode_untagged};

    #[test]
    fn fixtures_encode() {
        type Case = (fn(&mut BytesMut), &'static [u8]);
        let cases: Vec<Case> = vec![
            (|b| encode_query(b, "SELECT 1"), b"Q\0\0\0\x0dSELECT 1\0"),
            (|b| encode_password(b, "pw"), b"p\0\0\0\x07pw\0"),
            (|b| encode_copy_data(b, b"xy"), b"d\0\0\0\x06xy"),
            (encode_copy_done, b"c\0\0\0\x04"),
            (encode_terminate, b"X\0\0\0\x04"),
            (encode_ssl_request, b"\0\0\0\x08\x04\xd2\x16\x2f"),
            (
                |b| encode_sasl_initial_response(b, "SCRAM-SHA-256", b"n,,"),
                b"p\0\0\0\x19SCRAM-SHA-256\0\0\0\0\x03n,,",
            ),
            (|b| encode_sasl_response(b, b"c=biws"), b"p\0\0\0\x0ac=biws"),
        ];
        for (encode, expected) in cases {
            let mut buf = BytesMut::new();
            encode(&mut buf);
            assert_eq!(&buf[..], expected);
        }
    }

    #[test]
    fn encoded_messages_frame_back() {
        let mut buf = BytesMut::new();
        encode_query(&mut buf, "IDENTIFY_SYSTEM");
        encode_copy_done(&mut buf);
        assert_eq!(
            decode_frame(&mut buf).expect("ok").expect("whole").tag,
            b'Q'
        );
        assert_eq!(
            decode_frame(&mut buf).expect("ok").expect("whole").tag,
            b'c'
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        encode_startup(
            &mut buf,
            &[("user", "postgres"), ("replication", "database")],
        );
        let body = decode_untagged(&mut buf).expect("ok").expect("whole");
        assert_eq!(
            StartupRequest::parse(&body).expect("valid"),
            StartupRequest::Startup {
                version: PROTOCOL_VERSION,
                params: vec![
                    ("user".into(), "postgres".into()),
                    ("replication".into(), "database".into())
                ],
            }
        );
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        let body = decode_untagged(&mut buf).expect("ok").expect("whole");
        assert_eq!(
            StartupRequest::parse(&body).expect("valid"),
            StartupRequest::Ssl
        );
    }
}
