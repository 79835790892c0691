//! Messages the server sends, decoded from [`Frame`]s.
//!
//! Only the messages a client of pgtrail's kind acts on get their own
//! variant; everything else stays a raw [`Frame`] in [`BackendMessage::Other`]
//! so a caller can forward or ignore it knowingly.

use bytes::{Bytes, BytesMut};

use crate::frame::{decode_frame, Frame, Reader};
use crate::WireError;

/// What an `R` (Authentication) message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    CleartextPassword,
    /// Send `md5(md5(password || user) || salt)`.
    Md5Password {
        /// The four salt bytes.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<String>,
    },
    /// A SASL challenge.
    SaslContinue(Bytes),
    /// The SASL outcome (server signature).
    SaslFinal(Bytes),
    /// A method pgtrail does not implement (Kerberos, GSS, SSPI, …).
    Other(i32),
}

/// Transaction status reported by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// Not in a transaction block.
    Idle,
    /// In a transaction block.
    InTransaction,
    /// In a failed transaction block.
    Failed,
}

/// The fields of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// Every field as sent: type byte and value.
    pub fields: Vec<(u8, String)>,
}

impl ErrorFields {
    fn get(&self, code: u8) -> Option<&str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_str())
    }

    /// `ERROR`, `FATAL`, `WARNING`, … (the non-localized form when sent).
    pub fn severity(&self) -> &str {
        self.get(b'V').or_else(|| self.get(b'S')).unwrap_or("ERROR")
    }

    /// The SQLSTATE code, e.g. `42P01`.
    pub fn code(&self) -> &str {
        self.get(b'C').unwrap_or("XX000")
    }

    /// The primary message.
    pub fn message(&self) -> &str {
        self.get(b'M').unwrap_or("")
    }

    /// The optional detail.
    pub fn detail(&self) -> Option<&str> {
        self.get(b'D')
    }

    /// The optional hint.
    pub fn hint(&self) -> Option<&str> {
        self.get(b'H')
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (SQLSTATE {})",
            self.severity(),
            self.message(),
            self.code()
        )?;
        if let Some(detail) = self.detail() {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = self.hint() {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// Column name.
    pub name: String,
    /// OID of the source table, or 0.
    pub table_oid: u32,
    /// Attribute number in the source table, or 0.
    pub column: i16,
    /// OID of the data type.
    pub type_oid: u32,
    /// `pg_type.typlen`.
    pub type_size: i16,
    /// Type modifier (`atttypmod`).
    pub type_modifier: i32,
    /// 0 = text, 1 = binary.
    pub format: i16,
}

/// Formats announced by CopyIn/CopyOut/CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// 0 = text, 1 = binary.
    pub overall: i8,
    /// Per-column formats.
    pub columns: Vec<i16>,
}

/// A decoded server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// `R`
    Authentication(AuthRequest),
    /// `S`: a run-time parameter's current value.
    ParameterStatus {
        /// Parameter name.
        name: String,
        /// Its value.
        value: String,
    },
    /// `K`: what a CancelRequest needs.
    BackendKeyData {
        /// Backend process id.
        pid: i32,
        /// Secret key: 4 bytes in protocol 3.0, up to 256 in 3.2.
        secret: Bytes,
    },
    /// `Z`
    ReadyForQuery(TransactionStatus),
    /// `E`
    ErrorResponse(ErrorFields),
    /// `N`
    NoticeResponse(ErrorFields),
    /// `T`
    RowDescription(Vec<FieldDescription>),
    /// `D`: column values; `None` is SQL NULL.
    DataRow(Vec<Option<Bytes>>),
    /// `C`: the command tag.
    CommandComplete(String),
    /// `I`
    EmptyQueryResponse,
    /// `G`
    CopyInResponse(CopyFormat),
    /// `H`
    CopyOutResponse(CopyFormat),
    /// `W`: both directions stream CopyData (replication).
    CopyBothResponse(CopyFormat),
    /// `d`
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `1`: a Parse succeeded.
    ParseComplete,
    /// `2`: a Bind succeeded.
    BindComplete,
    /// `3`: a Close succeeded.
    CloseComplete,
    /// `n`: the described statement or portal returns no rows.
    NoData,
    /// `t`: parameter type OIDs of a described statement.
    ParameterDescription(Vec<u32>),
    /// `s`: an Execute stopped at its row limit; the portal can go on.
    PortalSuspended,
    /// `A`: a NOTIFY delivered to this session.
    NotificationResponse {
        /// The notifying backend's process id.
        pid: i32,
        /// The channel name.
        channel: String,
        /// The payload.
        payload: String,
    },
    /// `v`: the server supports an older minor version or not all
    /// `_pq_.` startup options.
    NegotiateProtocolVersion {
        /// The newest minor protocol version the server supports.
        newest_minor: i32,
        /// Protocol options the server did not recognise.
        unrecognized: Vec<String>,
    },
    /// `V`: a FunctionCall's result; `None` is SQL NULL.
    FunctionCallResponse(Option<Bytes>),
    /// Any other message, undecoded.
    Other(Frame),
}

impl BackendMessage {
    /// Decodes the next whole message in `buf`, if one has arrived.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<BackendMessage>, WireError> {
        match decode_frame(buf)? {
            Some(frame) => Self::parse(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Decodes one framed message.
    pub fn parse(frame: Frame) -> Result<BackendMessage, WireError> {
        let body = frame.body.clone(); // a reference count, not a copy
        let mut r = Reader::new(frame.tag, &body);
        let message = match frame.tag {
            b'R' => BackendMessage::Authentication(parse_auth(&mut r, &frame.body)?),
            b'S' => BackendMessage::ParameterStatus {
                name: r.cstr_lossy("parameter name")?,
                value: r.cstr_lossy("parameter value")?,
            },
            b'K' => {
                let pid = r.i32("process id")?;
                let secret = take_rest(&mut r, &body);
                // 3.0 sends 4 bytes; 3.2 allows up to 256.
                if !(4..=MAX_CANCEL_KEY).contains(&secret.len()) {
                    return Err(r.invalid("secret key", format!("{} bytes", secret.len())));
                }
                BackendMessage::BackendKeyData { pid, secret }
            }
            b'Z' => BackendMessage::ReadyForQuery(match r.u8("transaction status")? {
                b'I' => TransactionStatus::Idle,
                b'T' => TransactionStatus::InTransaction,
                b'E' => TransactionStatus::Failed,
                other => {
                    return Err(r.invalid("transaction status", format!("{:?}", char::from(other))))
                }
            }),
            b'E' => BackendMessage::ErrorResponse(parse_error_fields(&mut r)?),
            b'N' => BackendMessage::NoticeResponse(parse_error_fields(&mut r)?),
            b'T' => BackendMessage::RowDescription(parse_row_description(&mut r)?),
            b'D' => BackendMessage::DataRow(parse_data_row(&mut r, &frame.body)?),
            b'C' => BackendMessage::CommandComplete(r.cstr_lossy("command tag")?),
            b'I' => BackendMessage::EmptyQueryResponse,
            b'G' => BackendMessage::CopyInResponse(parse_copy_format(&mut r)?),
            b'H' => BackendMessage::CopyOutResponse(parse_copy_format(&mut r)?),
            b'W' => BackendMessage::CopyBothResponse(parse_copy_format(&mut r)?),
            b'd' => BackendMessage::CopyData(take_rest(&mut r, &body)),
            b'c' => BackendMessage::CopyDone,
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b's' => BackendMessage::PortalSuspended,
            b't' => {
                let count = r.count_i16("parameter count")?;
                let mut types = Vec::with_capacity(count.min(r.remaining().len() / 4));
                for _ in 0..count {
                    types.push(r.u32("parameter type")?);
                }
                BackendMessage::ParameterDescription(types)
            }
            b'A' => BackendMessage::NotificationResponse {
                pid: r.i32("process id")?,
                channel: r.cstr_lossy("channel")?,
                payload: r.cstr_lossy("payload")?,
            },
            b'v' => {
                let newest_minor = r.i32("newest minor version")?;
                let count = r.count_i32("option count")?;
                let mut unrecognized = Vec::with_capacity(count.min(r.remaining().len()));
                for _ in 0..count {
                    unrecognized.push(r.cstr_lossy("option name")?);
                }
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized,
                }
            }
            b'V' => {
                let len = r.i32("result length")?;
                let value = match usize::try_from(len) {
                    Err(_) => None,
                    Ok(len) => {
                        r.bytes(len, "result")?;
                        Some(frame.body.slice(4..4 + len))
                    }
                };
                BackendMessage::FunctionCallResponse(value)
            }
            _ => BackendMessage::Other(frame),
        };
        // Trailing bytes mean the two sides disagree on the message's shape.
        if !r.is_empty() && !matches!(message, BackendMessage::Other(_)) {
            return Err(r.invalid("length", format!("{} bytes left over", r.remaining().len())));
        }
        Ok(message)
    }
}

/// The longest cancel key protocol 3.2 allows.
pub const MAX_CANCEL_KEY: usize = 256;

/// A CommandComplete tag split into the command and its row count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandTag<'a> {
    /// `SELECT`, `INSERT`, `CREATE TABLE`, …
    pub command: &'a str,
    /// Rows processed, for the commands whose tag carries a count.
    pub rows: Option<u64>,
}

impl<'a> CommandTag<'a> {
    /// Splits `tag`: `INSERT 0 5` is INSERT with 5 rows (the middle word is
    /// the long-gone OID), `SELECT 3`, `UPDATE 2`, `DELETE 1`, `MERGE 4`,
    /// `FETCH 10`, `MOVE 10`, `COPY 7` carry counts; other tags carry none.
    pub fn parse(tag: &'a str) -> CommandTag<'a> {
        const COUNTED: &[&str] = &[
            "SELECT", "UPDATE", "DELETE", "MERGE", "FETCH", "MOVE", "COPY", "INSERT",
        ];
        let mut words = tag.split(' ');
        let command = words.next().unwrap_or("");
        if COUNTED.contains(&command) {
            if let Some(rows) = tag.rsplit(' ').next().and_then(|n| n.parse().ok()) {
                // `SELECT 3` but also `CREATE TABLE AS` reports `SELECT n`.
                let expected_words = if command == "INSERT" { 3 } else { 2 };
                if tag.split(' ').count() == expected_words {
                    return CommandTag {
                        command,
                        rows: Some(rows),
                    };
                }
            }
        }
        CommandTag {
            command: tag,
            rows: None,
        }
    }
}

fn parse_auth(r: &mut Reader<'_>, body: &Bytes) -> Result<AuthRequest, WireError> {
    Ok(match r.i32("authentication code")? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::CleartextPassword,
        5 => {
            let salt = r.bytes(4, "md5 salt")?;
            AuthRequest::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let name = r.cstr("SASL mechanism")?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name.to_string());
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(take_rest(r, body)),
        12 => AuthRequest::SaslFinal(take_rest(r, body)),
        other => {
            // GSS continuation data and the like: kept undecoded.
            take_rest(r, body);
            AuthRequest::Other(other)
        }
    })
}

/// The unread rest of `body`, marking it read.
fn take_rest(r: &mut Reader<'_>, body: &Bytes) -> Bytes {
    let rest = body.slice(body.len() - r.remaining().len()..);
    let _ = r.bytes(r.remaining().len(), "rest");
    rest
}

fn parse_error_fields(r: &mut Reader<'_>) -> Result<ErrorFields, WireError> {
    let mut fields = Vec::new();
    loop {
        let code = r.u8("field type")?;
        if code == 0 {
            break;
        }
        // Lossy: messages come in the client's encoding, which may not be UTF-8.
        fields.push((code, r.cstr_lossy("field value")?));
    }
    Ok(ErrorFields { fields })
}

fn parse_row_description(r: &mut Reader<'_>) -> Result<Vec<FieldDescription>, WireError> {
    let count = r.count_i16("field count")?;
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        fields.push(FieldDescription {
            name: r.cstr("field name")?.to_string(),
            table_oid: r.u32("table oid")?,
            column: r.i16("column number")?,
            type_oid: r.u32("type oid")?,
            type_size: r.i16("type size")?,
            type_modifier: r.i32("type modifier")?,
            format: r.i16("format code")?,
        });
    }
    Ok(fields)
}

fn parse_data_row(r: &mut Reader<'_>, body: &Bytes) -> Result<Vec<Option<Bytes>>, WireError> {
    let count = r.count_i16("column count")?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.i32("value length")?;
        if len < 0 {
            values.push(None);
            continue;
        }
        let start = body.len() - r.remaining().len();
        let len = usize::try_from(len).expect("non-negative i32 fits usize");
        r.bytes(len, "value")?;
        values.push(Some(body.slice(start..start + len)));
    }
    Ok(values)
}

fn parse_copy_format(r: &mut Reader<'_>) -> Result<CopyFormat, WireError> {
    let overall = r.u8("overall format")? as i8;
    let count = r.count_i16("column count")?;
    let mut columns = Vec::new();
    for _ in 0..count {
        columns.push(r.i16("column format")?);
    }
    Ok(CopyFormat { overall, columns })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_one(bytes: &[u8]) -> BackendMessage {
        let mut buf = BytesMut::from(bytes);
        let message = BackendMessage::decode(&mut buf)
            .expect("valid")
            .expect("complete");
        assert!(buf.is_empty(), "one message consumed exactly");
        message
    }

    #[test]
    fn fixtures_decode() {
        let cases: Vec<(&[u8], BackendMessage)> = vec![
            (
                b"R\0\0\0\x08\0\0\0\0",
                BackendMessage::Authentication(AuthRequest::Ok),
            ),
            (
                b"R\0\0\0\x08\0\0\0\x03",
                BackendMessage::Authentication(AuthRequest::CleartextPassword),
            ),
            (
                b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04",
                BackendMessage::Authentication(AuthRequest::Md5Password { salt: [1, 2, 3, 4] }),
            ),
            (
                b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
                BackendMessage::Authentication(AuthRequest::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256".into()],
                }),
            ),
            (
                b"R\0\0\0\x0b\0\0\0\x0br=x",
                BackendMessage::Authentication(AuthRequest::SaslContinue(Bytes::from_static(
                    b"r=x",
                ))),
            ),
            (
                b"S\0\0\0\x18server_version\x0015.4\0",
                BackendMessage::ParameterStatus {
                    name: "server_version".into(),
                    value: "15.4".into(),
                },
            ),
            (
                b"K\0\0\0\x0c\0\0\x30\x39\0\0\0\x07",
                BackendMessage::BackendKeyData {
                    pid: 12345,
                    secret: Bytes::from_static(b"\0\0\0\x07"),
                },
            ),
            (
                b"Z\0\0\0\x05T",
                BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
            ),
            (
                b"C\0\0\0\x0dSELECT 1\0",
                BackendMessage::CommandComplete("SELECT 1".into()),
            ),
            (b"I\0\0\0\x04", BackendMessage::EmptyQueryResponse),
            (
                b"W\0\0\0\x07\0\0\0",
                BackendMessage::CopyBothResponse(CopyFormat {
                    overall: 0,
                    columns: vec![],
                }),
            ),
            (
                b"d\0\0\0\x06hi",
                BackendMessage::CopyData(Bytes::from_static(b"hi")),
            ),
            (b"c\0\0\0\x04", BackendMessage::CopyDone),
            (
                b"D\0\0\0\x11\0\x02\0\0\0\x03abc\xff\xff\xff\xff",
                BackendMessage::DataRow(vec![Some(Bytes::from_static(b"abc")), None]),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_one(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn row_description() {
        let mut body = Vec::new();
        body.extend_from_slice(b"\0\x01slot_name\0");
        body.extend_from_slice(&0u32.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&25u32.to_be_bytes());
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        let message = BackendMessage::parse(Frame {
            tag: b'T',
            body: Bytes::from(body),
        })
        .expect("valid");
        let BackendMessage::RowDescription(fields) = message else {
            panic!("expected RowDescription, got {message:?}");
        };
        assert_eq!(fields.len(), 1);
        assert_eq!(
            (
                fields[0].name.as_str(),
                fields[0].type_oid,
                fields[0].type_size
            ),
            ("slot_name", 25, -1)
        );
    }

    #[test]
    fn error_fields_and_display() {
        let message = decode_one(
            b"E\0\0\0\x4aSERROR\0VERROR\0C42704\0Mreplication slot \"s\" does not exist\0Hcreate it\0\0",
        );
        let BackendMessage::ErrorResponse(fields) = message else {
            panic!("expected ErrorResponse, got {message:?}");
        };
        assert_eq!(fields.code(), "42704");
        assert_eq!(fields.severity(), "ERROR");
        assert_eq!(
            fields.to_string(),
            "ERROR: replication slot \"s\" does not exist (SQLSTATE 42704); hint: create it"
        );
    }

    #[test]
    fn unknown_tags_are_kept_raw_and_bad_bodies_are_errors() {
        assert!(matches!(
            decode_one(b"x\0\0\0\x06ab"),
            BackendMessage::Other(Frame { tag: b'x', .. })
        ));
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05Q"[..]);
        assert!(BackendMessage::decode(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"D\0\0\0\x0a\0\x01\0\0\0\x09"[..]);
        assert!(matches!(
            BackendMessage::decode(&mut buf),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn extended_protocol_replies_decode() {
        let cases: Vec<(&[u8], BackendMessage)> = vec![
            (b"1\0\0\0\x04", BackendMessage::ParseComplete),
            (b"2\0\0\0\x04", BackendMessage::BindComplete),
            (b"3\0\0\0\x04", BackendMessage::CloseComplete),
            (b"n\0\0\0\x04", BackendMessage::NoData),
            (b"s\0\0\0\x04", BackendMessage::PortalSuspended),
            (
                b"t\0\0\0\x0e\0\x02\0\0\0\x17\0\0\0\x19",
                BackendMessage::ParameterDescription(vec![23, 25]),
            ),
            (
                b"A\0\0\0\x0f\0\0\0\x2ach\0hey\0",
                BackendMessage::NotificationResponse {
                    pid: 42,
                    channel: "ch".into(),
                    payload: "hey".into(),
                },
            ),
            (
                b"v\0\0\0\x13\0\0\0\x00\0\0\0\x01_pq_.x\0",
                BackendMessage::NegotiateProtocolVersion {
                    newest_minor: 0,
                    unrecognized: vec!["_pq_.x".into()],
                },
            ),
            (
                b"V\0\0\0\x0a\0\0\0\x02ok",
                BackendMessage::FunctionCallResponse(Some(Bytes::from_static(b"ok"))),
            ),
            (
                b"V\0\0\0\x08\xff\xff\xff\xff",
                BackendMessage::FunctionCallResponse(None),
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_one(bytes), expected, "{bytes:?}");
        }
    }

    #[test]
    fn protocol_3_2_cancel_keys_are_variable_length() {
        let mut bytes = b"K\0\0\0\x28\0\0\0\x09".to_vec();
        bytes.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            decode_one(&bytes),
            BackendMessage::BackendKeyData {
                pid: 9,
                secret: Bytes::from(vec![7u8; 32]),
            }
        );
        // Shorter than 4 or longer than 256 bytes is not a key.
        for key_len in [0usize, 3, 257] {
            let mut body = 9i32.to_be_bytes().to_vec();
            body.extend(std::iter::repeat_n(1u8, key_len));
            let frame = Frame {
                tag: b'K',
                body: Bytes::from(body),
            };
            assert!(BackendMessage::parse(frame).is_err(), "{key_len} bytes");
        }
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bytes in [
            &b"t\0\0\0\x0a\0\x02\0\0\0\x17"[..], // one type missing
            b"t\0\0\0\x06\xff\xff",              // negative count
            b"A\0\0\0\x0b\0\0\0\x2ach\0",        // payload missing
            b"A\0\0\0\x0e\0\0\0\x2ach\0hey",     // no NUL
            b"V\0\0\0\x0a\0\0\0\x05ok",          // value shorter than said
            b"1\0\0\0\x05x",                     // trailing byte
            b"Z\0\0\0\x06II",                    // trailing byte
            b"C\0\0\0\x0aSELECT",                // no NUL
            b"v\0\0\0\x0c\0\0\0\0\0\0\0\x05",    // options missing
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(BackendMessage::decode(&mut buf).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn command_tags_split_into_command_and_rows() {
        for (tag, command, rows) in [
            ("SELECT 3", "SELECT", Some(3)),
            ("INSERT 0 5", "INSERT", Some(5)),
            ("UPDATE 0", "UPDATE", Some(0)),
            ("DELETE 12", "DELETE", Some(12)),
            ("MERGE 4", "MERGE", Some(4)),
            ("COPY 7", "COPY", Some(7)),
            ("FETCH 10", "FETCH", Some(10)),
            ("CREATE TABLE", "CREATE TABLE", None),
            ("BEGIN", "BEGIN", None),
            ("DEALLOCATE ALL", "DEALLOCATE ALL", None),
            ("SELECT x", "SELECT x", None),
            ("", "", None),
        ] {
            assert_eq!(
                CommandTag::parse(tag),
                CommandTag { command, rows },
                "{tag}"
            );
        }
    }

    #[test]
    fn error_text_in_another_encoding_is_kept_lossily() {
        let message = decode_one(b"E\0\0\0\x17SERROR\0C22P02\0Mb\xe9\0\0");
        let BackendMessage::ErrorResponse(fields) = message else {
            panic!("expected ErrorResponse, got {message:?}");
        };
        assert_eq!(fields.message(), "b\u{fffd}");
    }
}
