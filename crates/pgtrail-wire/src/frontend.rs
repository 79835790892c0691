//! Messages a client sends: encoded into a buffer (for pgtrail's own
//! connections), and decoded (for the proxy, which reads what clients send).
//!
//! Each `encode_*` function appends exactly one message to `buf`.
//! [`StartupRequest::parse`] reads the untagged first message of a
//! connection; [`FrontendMessage::parse`] every tagged one after it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::backend::MAX_CANCEL_KEY;
use crate::frame::{Frame, Reader};
use crate::WireError;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_VERSION: i32 = 196_608;
/// Protocol version 3.2 (PostgreSQL 18: variable-length cancel keys).
pub const PROTOCOL_VERSION_3_2: i32 = 196_610;
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
        /// Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
        secret: Bytes,
    },
}

impl StartupRequest {
    /// Decodes the body returned by [`crate::frame::decode_untagged`].
    pub fn parse(body: &Bytes) -> Result<StartupRequest, WireError> {
        let mut r = Reader::new(0, body);
        let code = r.i32("protocol version")?;
        let request = match code {
            SSL_REQUEST_CODE => StartupRequest::Ssl,
            GSSENC_REQUEST_CODE => StartupRequest::GssEnc,
            CANCEL_REQUEST_CODE => {
                let pid = r.i32("process id")?;
                let secret = body.slice(8..);
                if !(4..=MAX_CANCEL_KEY).contains(&secret.len()) {
                    return Err(r.invalid("secret key", format!("{} bytes", secret.len())));
                }
                return Ok(StartupRequest::Cancel { pid, secret });
            }
            version => {
                let mut params = Vec::new();
                loop {
                    let name = r.cstr_lossy("parameter name")?;
                    if name.is_empty() {
                        break;
                    }
                    params.push((name, r.cstr_lossy("parameter value")?));
                }
                StartupRequest::Startup { version, params }
            }
        };
        if !r.is_empty() {
            return Err(r.invalid("length", format!("{} bytes left over", r.remaining().len())));
        }
        Ok(request)
    }
}

/// Whether a Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `S`: a prepared statement.
    Statement,
    /// `P`: a portal.
    Portal,
}

/// A Bind's parameters: format codes and raw values, never decoded (their
/// meaning depends on types only the server knows).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parameters {
    /// Format codes as sent: none (all text), one (for all), or one each.
    pub formats: Vec<i16>,
    /// Values; `None` is SQL NULL.
    pub values: Vec<Option<Bytes>>,
}

impl Parameters {
    /// The format of parameter `index`: 0 text, 1 binary (the protocol's rule
    /// for zero, one or one-per-parameter format codes).
    pub fn format(&self, index: usize) -> i16 {
        match self.formats.len() {
            0 => 0,
            1 => self.formats[0],
            _ => self.formats.get(index).copied().unwrap_or(0),
        }
    }
}

/// A tagged message from a client, decoded from a [`Frame`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Q`: one or more SQL statements (simple protocol).
    Query(String),
    /// `P`: prepare `sql` as `name` (empty: the unnamed statement).
    Parse {
        /// Statement name.
        name: String,
        /// The SQL text.
        sql: String,
        /// Parameter type OIDs the client fixed (0: let the server infer).
        param_types: Vec<u32>,
    },
    /// `B`: bind a statement's parameters into a portal.
    Bind {
        /// Portal name (empty: the unnamed portal).
        portal: String,
        /// Statement name.
        statement: String,
        /// The parameters.
        params: Parameters,
        /// Result column format codes.
        result_formats: Vec<i16>,
    },
    /// `D`: describe a statement or portal.
    Describe {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// `E`: run a portal.
    Execute {
        /// Portal name.
        portal: String,
        /// Row limit; 0 is no limit.
        max_rows: i32,
    },
    /// `C`: close a statement or portal.
    Close {
        /// Statement or portal.
        target: Target,
        /// Its name.
        name: String,
    },
    /// `S`: end of an extended-query batch.
    Sync,
    /// `H`: send what is pending now.
    Flush,
    /// `d`
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `f`: abort a COPY FROM STDIN with this message.
    CopyFail(String),
    /// `F`: call a function by OID (the legacy fast-path interface).
    FunctionCall {
        /// The function's OID.
        oid: u32,
        /// The arguments.
        args: Parameters,
        /// Result format code.
        result_format: i16,
    },
    /// `X`
    Terminate,
    /// `p`: a password, SASL or GSS response, kept as sent: its meaning
    /// depends on the authentication request it answers, and a proxy passes
    /// it through untouched.
    Authentication(Bytes),
    /// Any other tag, undecoded.
    Other(Frame),
}

impl FrontendMessage {
    /// Decodes one framed message. Text (SQL, names) is read lossily: a
    /// client may use any `client_encoding`.
    pub fn parse(frame: Frame) -> Result<FrontendMessage, WireError> {
        let body = frame.body.clone(); // a reference count, not a copy
        let mut r = Reader::new(frame.tag, &body);
        let message = match frame.tag {
            b'Q' => FrontendMessage::Query(r.cstr_lossy("query")?),
            b'P' => {
                let name = r.cstr_lossy("statement name")?;
                let sql = r.cstr_lossy("query")?;
                let count = r.count_i16("parameter type count")?;
                let mut param_types = Vec::with_capacity(count.min(r.remaining().len() / 4));
                for _ in 0..count {
                    param_types.push(r.u32("parameter type")?);
                }
                FrontendMessage::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => {
                let portal = r.cstr_lossy("portal name")?;
                let statement = r.cstr_lossy("statement name")?;
                let params = read_parameters(&mut r, &body)?;
                let result_formats = read_formats(&mut r, "result format")?;
                FrontendMessage::Bind {
                    portal,
                    statement,
                    params,
                    result_formats,
                }
            }
            b'D' | b'C' => {
                let target = match r.u8("target")? {
                    b'S' => Target::Statement,
                    b'P' => Target::Portal,
                    other => return Err(r.invalid("target", format!("{:?}", char::from(other)))),
                };
                let name = r.cstr_lossy("name")?;
                if frame.tag == b'D' {
                    FrontendMessage::Describe { target, name }
                } else {
                    FrontendMessage::Close { target, name }
                }
            }
            b'E' => FrontendMessage::Execute {
                portal: r.cstr_lossy("portal name")?,
                max_rows: r.i32("row limit")?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'd' => {
                let data = body.clone();
                r.bytes(body.len(), "data")?;
                FrontendMessage::CopyData(data)
            }
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail(r.cstr_lossy("message")?),
            b'F' => {
                let oid = r.u32("function oid")?;
                let args = read_parameters(&mut r, &body)?;
                FrontendMessage::FunctionCall {
                    oid,
                    args,
                    result_format: r.i16("result format")?,
                }
            }
            b'X' => FrontendMessage::Terminate,
            b'p' => {
                let data = body.clone();
                r.bytes(body.len(), "data")?;
                FrontendMessage::Authentication(data)
            }
            _ => return Ok(FrontendMessage::Other(frame)),
        };
        // Trailing bytes mean the two sides disagree on the message's shape.
        if !r.is_empty() {
            return Err(r.invalid("length", format!("{} bytes left over", r.remaining().len())));
        }
        Ok(message)
    }
}

/// Format codes: a count, then that many i16.
fn read_formats(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<i16>, WireError> {
    let count = r.count_i16(field)?;
    let mut formats = Vec::with_capacity(count.min(r.remaining().len() / 2));
    for _ in 0..count {
        let format = r.i16(field)?;
        if !(0..=1).contains(&format) {
            return Err(r.invalid(field, format!("format code {format}")));
        }
        formats.push(format);
    }
    Ok(formats)
}

/// Bind's and FunctionCall's format codes and values (sharing `body`'s memory).
fn read_parameters(r: &mut Reader<'_>, body: &Bytes) -> Result<Parameters, WireError> {
    let formats = read_formats(r, "parameter format")?;
    let count = r.count_i16("parameter count")?;
    if formats.len() > 1 && formats.len() != count {
        return Err(r.invalid(
            "parameter format",
            format!("{} format codes for {count} parameters", formats.len()),
        ));
    }
    let mut values = Vec::with_capacity(count.min(r.remaining().len() / 4));
    for _ in 0..count {
        let len = r.i32("parameter length")?;
        match usize::try_from(len) {
            Err(_) if len == -1 => values.push(None),
            Err(_) => return Err(r.invalid("parameter length", len.to_string())),
            Ok(len) => {
                let start = body.len() - r.remaining().len();
                r.bytes(len, "parameter value")?;
                values.push(Some(body.slice(start..start + len)));
            }
        }
    }
    Ok(Parameters { formats, values })
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

    /// A frame: tag, length, body.
    fn frame(tag: u8, body: &[u8]) -> Frame {
        Frame {
            tag,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn parse(tag: u8, body: &[u8]) -> Result<FrontendMessage, WireError> {
        FrontendMessage::parse(frame(tag, body))
    }

    #[test]
    fn client_messages_decode() {
        // Two format codes for three values: the counts disagree.
        let bind_body =
            b"p1\0s1\0\0\x02\0\0\0\x01\0\x03\0\0\0\x0242\xff\xff\xff\xff\0\0\0\x01\x07\0\x01\0\x01";
        let function_body = b"\0\0\x04\xd2\0\x01\0\x01\0\x01\0\0\0\x01\x09\0\0";
        let cases: Vec<(u8, &[u8], FrontendMessage)> = vec![
            (
                b'Q',
                b"SELECT 1; SELECT 2\0",
                FrontendMessage::Query("SELECT 1; SELECT 2".into()),
            ),
            (
                b'P',
                b"s1\0SELECT $1\0\0\x01\0\0\0\x17",
                FrontendMessage::Parse {
                    name: "s1".into(),
                    sql: "SELECT $1".into(),
                    param_types: vec![23],
                },
            ),
            (
                b'D',
                b"S\0",
                FrontendMessage::Describe {
                    target: Target::Statement,
                    name: String::new(),
                },
            ),
            (
                b'C',
                b"Pcur\0",
                FrontendMessage::Close {
                    target: Target::Portal,
                    name: "cur".into(),
                },
            ),
            (
                b'E',
                b"p1\0\0\0\0\x0a",
                FrontendMessage::Execute {
                    portal: "p1".into(),
                    max_rows: 10,
                },
            ),
            (b'S', b"", FrontendMessage::Sync),
            (b'H', b"", FrontendMessage::Flush),
            (
                b'd',
                b"1\tx\n",
                FrontendMessage::CopyData(Bytes::from_static(b"1\tx\n")),
            ),
            (b'c', b"", FrontendMessage::CopyDone),
            (b'f', b"stop\0", FrontendMessage::CopyFail("stop".into())),
            (
                b'F',
                function_body,
                FrontendMessage::FunctionCall {
                    oid: 1234,
                    args: Parameters {
                        formats: vec![1],
                        values: vec![Some(Bytes::from_static(b"\x09"))],
                    },
                    result_format: 0,
                },
            ),
            (b'X', b"", FrontendMessage::Terminate),
            (
                b'p',
                b"SCRAM-SHA-256\0\0\0\0\x03n,,",
                FrontendMessage::Authentication(Bytes::from_static(
                    b"SCRAM-SHA-256\0\0\0\0\x03n,,",
                )),
            ),
        ];
        for (tag, body, expected) in cases {
            assert_eq!(
                parse(tag, body).expect("valid"),
                expected,
                "{}",
                char::from(tag)
            );
        }
        let bind = b"p1\0s1\0\0\x01\0\x01\0\x02\0\0\0\x02\0\x2a\xff\xff\xff\xff\0\0";
        assert_eq!(
            parse(b'B', bind).expect("valid"),
            FrontendMessage::Bind {
                portal: "p1".into(),
                statement: "s1".into(),
                params: Parameters {
                    formats: vec![1],
                    values: vec![Some(Bytes::from_static(b"\0\x2a")), None],
                },
                result_formats: vec![],
            }
        );
        assert!(parse(b'B', bind_body).is_err(), "2 format codes, 3 values");
    }

    #[test]
    fn parameter_formats_follow_the_protocol_rule() {
        let none = Parameters {
            formats: vec![],
            values: vec![None, None],
        };
        let one = Parameters {
            formats: vec![1],
            values: vec![None, None],
        };
        let each = Parameters {
            formats: vec![0, 1],
            values: vec![None, None],
        };
        assert_eq!((none.format(0), none.format(1)), (0, 0));
        assert_eq!((one.format(0), one.format(1)), (1, 1));
        assert_eq!((each.format(0), each.format(1)), (0, 1));
    }

    #[test]
    fn malformed_client_messages_are_errors() {
        let cases: Vec<(u8, &[u8])> = vec![
            (b'Q', b"SELECT 1"),                       // missing NUL
            (b'Q', b"SELECT 1\0x"),                    // trailing byte
            (b'P', b"s1\0SELECT 1\0"),                 // type count missing
            (b'P', b"s1\0SELECT 1\0\0\x02\0\0\0\x17"), // one type short
            (b'P', b"s1\0SELECT 1\0\xff\xff"),         // negative count
            (b'B', b"\0\0\0\0\0\x01\0\0\0\x05ab"),     // value shorter than said
            (b'B', b"\0\0\0\0\0\x01\xff\xff\xff\xfe"), // length -2
            (b'B', b"\0\0\0\x01\0\x02\0\0\0\0"),       // format code 2
            (b'B', b"\0\0"),                           // counts missing
            (b'D', b"X\0"),                            // neither S nor P
            (b'D', b"S"),                              // name missing
            (b'E', b"p\0\0\0"),                        // row limit cut
            (b'F', b"\0\0\x04"),                       // oid cut
            (b'f', b"oops"),                           // missing NUL
        ];
        for (tag, body) in cases {
            assert!(parse(tag, body).is_err(), "{} {body:?}", char::from(tag));
        }
        assert!(matches!(
            parse(b'?', b"anything").expect("unknown tags are kept"),
            FrontendMessage::Other(Frame { tag: b'?', .. })
        ));
    }

    fn startup_body(bytes: &[u8]) -> Result<StartupRequest, WireError> {
        StartupRequest::parse(&Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn startup_requests_of_both_protocol_versions() {
        let mut v32 = PROTOCOL_VERSION_3_2.to_be_bytes().to_vec();
        v32.extend_from_slice(b"user\0alice\0database\0app\0options\0-c pgtrail.user=bob\0\0");
        assert_eq!(
            startup_body(&v32).expect("valid"),
            StartupRequest::Startup {
                version: PROTOCOL_VERSION_3_2,
                params: vec![
                    ("user".into(), "alice".into()),
                    ("database".into(), "app".into()),
                    ("options".into(), "-c pgtrail.user=bob".into()),
                ],
            }
        );
        assert_eq!(
            startup_body(&GSSENC_REQUEST_CODE.to_be_bytes()).expect("valid"),
            StartupRequest::GssEnc
        );
        // CancelRequest: 3.0's 4-byte key and 3.2's longer one.
        for key_len in [4usize, 32, 256] {
            let mut body = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
            body.extend_from_slice(&77i32.to_be_bytes());
            body.extend(std::iter::repeat_n(5u8, key_len));
            assert_eq!(
                startup_body(&body).expect("valid"),
                StartupRequest::Cancel {
                    pid: 77,
                    secret: Bytes::from(vec![5u8; key_len]),
                }
            );
        }
    }

    #[test]
    fn malformed_startup_requests_are_errors() {
        let mut short_key = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        short_key.extend_from_slice(&[0, 0, 0, 1, 9, 9, 9]);
        let mut long_key = CANCEL_REQUEST_CODE.to_be_bytes().to_vec();
        long_key.extend_from_slice(&[0, 0, 0, 1]);
        long_key.extend(std::iter::repeat_n(1u8, 257));
        let mut no_terminator = PROTOCOL_VERSION.to_be_bytes().to_vec();
        no_terminator.extend_from_slice(b"user\0alice\0");
        let mut missing_value = PROTOCOL_VERSION.to_be_bytes().to_vec();
        missing_value.extend_from_slice(b"user\0");
        let mut trailing = SSL_REQUEST_CODE.to_be_bytes().to_vec();
        trailing.push(0);
        for body in [
            &short_key[..],
            &long_key,
            &no_terminator,
            &missing_value,
            &trailing,
            &[0, 3],
        ] {
            assert!(startup_body(body).is_err(), "{body:?}");
        }
    }
}
