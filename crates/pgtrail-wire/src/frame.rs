//! Framing: a tag byte, a 4-byte big-endian length that counts itself, a body.
//!
//! [`decode_frame`] splits one whole message off the front of a buffer without
//! interpreting it, which is all a forwarding proxy needs. [`decode_untagged`]
//! does the same for the startup-phase messages a client sends first (no tag).
//! [`Reader`] walks a body field by field with errors that name the field.

use bytes::{Bytes, BytesMut};

use crate::WireError;

/// Bodies larger than this are refused: the server's own limit for most
/// messages is 1 GB, and a bigger length means the stream is out of step.
pub const MAX_BODY: usize = 1 << 30;

/// The most [`decode_frame`] reserves ahead for a message still arriving;
/// a longer one grows the buffer as its bytes come in.
const MAX_RESERVE: usize = 1 << 20;

/// One message: its tag and its body (length prefix removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The type byte, e.g. `b'Z'` for ReadyForQuery.
    pub tag: u8,
    /// Everything after the length field.
    pub body: Bytes,
}

/// The longest startup-phase packet accepted, length word included: the
/// server's own `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// One message exactly as it arrived (header and body), so a proxy forwards
/// the very bytes it read and never re-encodes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    bytes: Bytes,
}

impl RawFrame {
    /// The type byte.
    pub fn tag(&self) -> u8 {
        self.bytes[0]
    }

    /// The whole message: tag, length, body.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The body (length prefix removed), sharing the same memory.
    pub fn body(&self) -> Bytes {
        self.bytes.slice(5..)
    }

    /// The message as a [`Frame`], for the typed decoders (no copy).
    pub fn frame(&self) -> Frame {
        Frame {
            tag: self.tag(),
            body: self.body(),
        }
    }
}

/// Splits one tagged message off `buf` with its header, or returns
/// `Ok(None)` if it has not fully arrived yet (the buffer is then left
/// untouched). A body longer than `max_body` is an error as soon as the
/// header is seen: it is never buffered.
pub fn split_frame(buf: &mut BytesMut, max_body: usize) -> Result<Option<RawFrame>, WireError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let length = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    let body_len = checked_body_len(tag, length, max_body)?;
    if buf.len() < 5 + body_len {
        // A hint for the reader, bounded: the declared length is not trusted
        // until its bytes arrive, so a corrupt header cannot reserve a gigabyte.
        buf.reserve((5 + body_len - buf.len()).min(MAX_RESERVE));
        return Ok(None);
    }
    Ok(Some(RawFrame {
        bytes: buf.split_to(5 + body_len).freeze(),
    }))
}

/// Splits one tagged message off `buf`, or returns `Ok(None)` if it has not
/// fully arrived yet (the buffer is then left untouched).
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
    Ok(split_frame(buf, MAX_BODY)?.map(|raw| raw.frame()))
}

/// Splits one untagged (startup-phase) message off `buf`: StartupMessage,
/// SSLRequest, GSSENCRequest or CancelRequest. Returns the body, whose first
/// four bytes are the protocol version or request code.
pub fn decode_untagged(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    Ok(split_startup(buf)?.map(|whole| whole.slice(4..)))
}

/// Splits one untagged (startup-phase) message off `buf` with its length
/// word, for forwarding unchanged. Longer than [`MAX_STARTUP_PACKET`] is an
/// error, as in the server: a client cannot make a proxy buffer more.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let body_len = checked_body_len(0, length, MAX_STARTUP_PACKET - 4)?;
    if buf.len() < 4 + body_len {
        return Ok(None);
    }
    Ok(Some(buf.split_to(4 + body_len).freeze()))
}

fn checked_body_len(tag: u8, length: i32, max_body: usize) -> Result<usize, WireError> {
    let bad = || WireError::BadLength {
        tag: char::from(tag),
        length: i64::from(length),
    };
    let length = usize::try_from(length).map_err(|_| bad())?;
    let body = length.checked_sub(4).ok_or_else(bad)?;
    if body > max_body.min(MAX_BODY) {
        return Err(bad());
    }
    Ok(body)
}

/// Reads the fields of one message body in order.
#[derive(Debug)]
pub struct Reader<'a> {
    tag: u8,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `body` of a message tagged `tag` (used in errors).
    pub fn new(tag: u8, body: &'a [u8]) -> Self {
        Reader { tag, rest: body }
    }

    fn truncated(&self, field: &'static str) -> WireError {
        WireError::Truncated {
            tag: char::from(self.tag),
            field,
        }
    }

    /// An error about `field` of this message.
    pub fn invalid(&self, field: &'static str, detail: impl Into<String>) -> WireError {
        WireError::Invalid {
            tag: char::from(self.tag),
            field,
            detail: detail.into(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.rest.len() < n {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.bytes(1, field)?[0])
    }

    /// A big-endian i16.
    pub fn i16(&mut self, field: &'static str) -> Result<i16, WireError> {
        let b = self.bytes(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian i32.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, WireError> {
        let b = self.bytes(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian i64.
    pub fn i64(&mut self, field: &'static str) -> Result<i64, WireError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A count of following items sent as a big-endian i16. A negative count
    /// is an error: read as zero items it would silently drop what follows.
    pub fn count_i16(&mut self, field: &'static str) -> Result<usize, WireError> {
        let count = self.i16(field)?;
        usize::try_from(count).map_err(|_| self.invalid(field, format!("negative: {count}")))
    }

    /// A count of following items sent as a big-endian i32; negative is an error.
    pub fn count_i32(&mut self, field: &'static str) -> Result<usize, WireError> {
        let count = self.i32(field)?;
        usize::try_from(count).map_err(|_| self.invalid(field, format!("negative: {count}")))
    }

    /// A NUL-terminated string in any encoding: bytes that are not UTF-8
    /// become U+FFFD. For text a proxy only records (SQL, names, messages),
    /// which a client in another `client_encoding` may send.
    pub fn cstr_lossy(&mut self, field: &'static str) -> Result<String, WireError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(field))?;
        let text = String::from_utf8_lossy(&self.rest[..end]).into_owned();
        self.rest = &self.rest[end + 1..];
        Ok(text)
    }

    /// A NUL-terminated string (UTF-8; the server encoding is UTF-8 for pgtrail's connections).
    pub fn cstr(&mut self, field: &'static str) -> Result<&'a str, WireError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(field))?;
        let text = std::str::from_utf8(&self.rest[..end])
            .map_err(|e| self.invalid(field, e.to_string()))?;
        self.rest = &self.rest[end + 1..];
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_complete() {
        // ReadyForQuery 'I', then half of a CommandComplete.
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IC\0\0\0\x0bSEL"[..]);
        let frame = decode_frame(&mut buf).expect("valid").expect("complete");
        assert_eq!(
            frame,
            Frame {
                tag: b'Z',
                body: Bytes::from_static(b"I")
            }
        );
        assert_eq!(decode_frame(&mut buf).expect("valid"), None);
        assert_eq!(
            &buf[..],
            b"C\0\0\0\x0bSEL",
            "an incomplete frame stays in the buffer"
        );
        buf.extend_from_slice(b"ECT\0");
        let frame = decode_frame(&mut buf).expect("valid").expect("complete");
        assert_eq!((frame.tag, &frame.body[..]), (b'C', &b"SELECT\0"[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn impossible_lengths_are_errors() {
        for bytes in [
            &b"Z\0\0\0\x03"[..],
            b"Z\xff\xff\xff\xff",
            b"Z\x7f\xff\xff\xff",
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(
                matches!(decode_frame(&mut buf), Err(WireError::BadLength { .. })),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn raw_frames_keep_their_header_and_respect_the_maximum() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dSELECT 1\0X\0\0\0\x04"[..]);
        let raw = split_frame(&mut buf, 64).expect("valid").expect("complete");
        assert_eq!(raw.tag(), b'Q');
        assert_eq!(&raw.as_bytes()[..], b"Q\0\0\0\x0dSELECT 1\0");
        assert_eq!(&raw.body()[..], b"SELECT 1\0");
        // A body of 8 bytes over a maximum of 7 fails from the header alone.
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0c"[..]);
        assert!(matches!(
            split_frame(&mut buf, 7),
            Err(WireError::BadLength {
                tag: 'Q',
                length: 12
            })
        ));
    }

    #[test]
    fn startup_packets_are_bounded() {
        let mut buf = BytesMut::from(&10_001i32.to_be_bytes()[..]);
        assert!(split_startup(&mut buf).is_err(), "over 10,000 bytes");
        let mut buf = BytesMut::from(&10_000i32.to_be_bytes()[..]);
        assert_eq!(split_startup(&mut buf).expect("allowed"), None, "waits");
        let mut buf = BytesMut::from(&3i32.to_be_bytes()[..]);
        assert!(split_startup(&mut buf).is_err(), "shorter than itself");
    }

    #[test]
    fn lossy_strings_accept_other_encodings() {
        let mut r = Reader::new(b'Q', b"caf\xe9\0");
        assert_eq!(r.cstr_lossy("query").expect("terminated"), "caf\u{fffd}");
        let mut r = Reader::new(b'Q', b"no end");
        assert!(r.cstr_lossy("query").is_err());
    }

    #[test]
    fn untagged_startup_frames() {
        // SSLRequest: length 8, code 80877103.
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x2f"[..]);
        let body = decode_untagged(&mut buf).expect("valid").expect("complete");
        assert_eq!(&body[..], b"\x04\xd2\x16\x2f");
    }

    #[test]
    fn reader_names_the_missing_field() {
        let mut r = Reader::new(b'T', b"\0\x01ab");
        assert_eq!(r.i16("count").expect("two bytes"), 1);
        let err = r.cstr("name").expect_err("no NUL");
        assert_eq!(
            err.to_string(),
            "message 'T' is truncated while reading name"
        );
    }
}
