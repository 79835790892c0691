//! Malformed bytes never panic the decoders: property tests over arbitrary
//! byte strings and over valid messages with random mutations (truncated at
//! every length, bytes flipped, lengths and counts inflated).
//!
//! The seeded generator and the mutations are `pgtrail_testkit::fuzz`,
//! shared with the pgoutput decoder's tests: a failure names its seed and
//! replays exactly. Case counts stay small so the whole file runs in well
//! under a second in a debug build.

use bytes::{BufMut, Bytes, BytesMut};
use pgtrail_testkit::fuzz::{cases, mutate, rng};
use pgtrail_wire::auth::Authenticator;
use pgtrail_wire::backend::{AuthRequest, BackendMessage};
use pgtrail_wire::frame::{decode_frame, decode_untagged, Frame, MAX_BODY};
use pgtrail_wire::frontend::{FrontendMessage, StartupRequest};
use pgtrail_wire::replication::ReplicationMessage;

/// A frame: the tag, the length (itself included), the body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = i32::try_from(body.len() + 4).expect("fixture fits i32");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// One valid example of every message the backend decoder gives a variant.
fn backend_corpus() -> Vec<Vec<u8>> {
    let mut row_description = 2i16.to_be_bytes().to_vec();
    for name in ["id", "name"] {
        row_description.extend_from_slice(name.as_bytes());
        row_description.push(0);
        row_description.extend_from_slice(&16384u32.to_be_bytes());
        row_description.extend_from_slice(&1i16.to_be_bytes());
        row_description.extend_from_slice(&23u32.to_be_bytes());
        row_description.extend_from_slice(&4i16.to_be_bytes());
        row_description.extend_from_slice(&(-1i32).to_be_bytes());
        row_description.extend_from_slice(&0i16.to_be_bytes());
    }
    let mut data_row = 3i16.to_be_bytes().to_vec();
    data_row.extend_from_slice(&2i32.to_be_bytes());
    data_row.extend_from_slice(b"42");
    data_row.extend_from_slice(&(-1i32).to_be_bytes());
    data_row.extend_from_slice(&0i32.to_be_bytes());
    let copy_both = [&[0u8][..], &2i16.to_be_bytes(), &[0, 0, 0, 0]].concat();
    vec![
        frame(b'R', &0i32.to_be_bytes()),
        frame(b'R', &3i32.to_be_bytes()),
        frame(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]),
        frame(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0"),
        frame(b'R', b"\0\0\0\x0br=abc,s=c2FsdA==,i=4096"),
        frame(b'R', b"\0\0\0\x0cv=c2ln"),
        frame(b'S', b"server_version\x0015.4\0"),
        frame(b'K', &[0, 0, 0, 7, 0, 0, 0, 9]),
        frame(b'Z', b"I"),
        frame(b'E', b"SERROR\0VERROR\0C42P01\0Mno such table\0Dd\0Hh\0\0"),
        frame(b'N', b"SNOTICE\0Mhello\0\0"),
        frame(b'T', &row_description),
        frame(b'D', &data_row),
        frame(b'C', b"SELECT 1\0"),
        frame(b'I', b""),
        frame(b'G', &copy_both),
        frame(b'H', &copy_both),
        frame(b'W', &copy_both),
        frame(b'd', &xlog_data(b"B\0\0\0\0")),
        frame(b'c', b""),
        frame(b'1', b""),
        frame(b't', b"\0\x01\0\0\0\x17"),
        frame(b'A', b"\0\0\0\x01ch\0payload\0"),
        frame(b'v', b"\0\0\0\0\0\0\0\x01_pq_.x\0"),
        frame(b'V', b"\0\0\0\x01x"),
    ]
}

/// One valid example of every message the frontend decoder gives a variant.
fn frontend_corpus() -> Vec<Vec<u8>> {
    vec![
        frame(b'Q', b"SELECT 1\0"),
        frame(b'P', b"s\0SELECT $1\0\0\x01\0\0\0\x17"),
        frame(
            b'B',
            b"p\0s\0\0\x01\0\x01\0\x02\0\0\0\x01\x07\xff\xff\xff\xff\0\x01\0\0",
        ),
        frame(b'D', b"Pp\0"),
        frame(b'E', b"p\0\0\0\0\x05"),
        frame(b'C', b"Ss\0"),
        frame(b'S', b""),
        frame(b'H', b""),
        frame(b'd', b"1\tx\n"),
        frame(b'c', b""),
        frame(b'f', b"no\0"),
        frame(b'F', b"\0\0\x04\xd2\0\0\0\x01\0\0\0\x01x\0\0"),
        frame(b'X', b""),
        frame(b'p', b"secret\0"),
    ]
}

#[test]
fn mutated_frontend_messages_decode_or_fail_cleanly() {
    let corpus = frontend_corpus();
    for message in &corpus {
        let mut buf = BytesMut::from(&message[..]);
        let frame = decode_frame(&mut buf).expect("valid").expect("whole");
        FrontendMessage::parse(frame).expect("the corpus is valid");
    }
    let mut rng = rng(0xF0F0_1111);
    for _ in 0..cases(3000) {
        let pick = rng.below(corpus.len());
        let message = mutate(&mut rng, &corpus[pick]);
        let mut buf = BytesMut::from(&message[..]);
        while let Ok(Some(frame)) = decode_frame(&mut buf) {
            let _ = FrontendMessage::parse(frame);
        }
        let mut buf = BytesMut::from(&message[..]);
        if let Ok(Some(body)) = decode_untagged(&mut buf) {
            let _ = StartupRequest::parse(&body);
        }
    }
}

fn xlog_data(payload: &[u8]) -> Vec<u8> {
    let mut body = vec![b'w'];
    body.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
    body.extend_from_slice(&0x1_0000_0020u64.to_be_bytes());
    body.extend_from_slice(&7i64.to_be_bytes());
    body.extend_from_slice(payload);
    body
}

fn keepalive() -> Vec<u8> {
    let mut body = vec![b'k'];
    body.extend_from_slice(&0x100u64.to_be_bytes());
    body.extend_from_slice(&9i64.to_be_bytes());
    body.push(1);
    body
}

/// Decodes every whole frame in `bytes` as a client reading a socket would,
/// stopping at the first error or at the incomplete tail. Each frame consumes
/// at least five bytes, so the loop ends; the buffer must never have grown
/// far beyond what arrived, whatever length a header declared.
fn decode_all(bytes: &[u8]) {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.len();
        match BackendMessage::decode(&mut buf) {
            Ok(Some(message)) => {
                assert!(buf.len() < before, "a decoded message consumes bytes");
                if let BackendMessage::CopyData(body) = message {
                    let _ = ReplicationMessage::parse(&body);
                }
            }
            Ok(None) => break,
            Err(err) => {
                assert!(!err.to_string().is_empty());
                break;
            }
        }
    }
    assert!(
        buf.capacity() <= bytes.len() + (1 << 20),
        "buffer grew to {} bytes for {} bytes of input",
        buf.capacity(),
        bytes.len()
    );
}

#[test]
fn arbitrary_bytes_never_panic_the_frame_and_backend_decoders() {
    let mut rng = rng(0x5eed_0001);
    for _ in 0..cases(3000) {
        let bytes = rng.bytes(64);
        decode_all(&bytes);
        let _ = decode_untagged(&mut BytesMut::from(&bytes[..]));
        if let Some((&tag, body)) = bytes.split_first() {
            let _ = BackendMessage::parse(Frame {
                tag,
                body: Bytes::copy_from_slice(body),
            });
        }
    }
}

#[test]
fn mutated_backend_messages_decode_or_fail_cleanly() {
    let corpus = backend_corpus();
    for valid in &corpus {
        decode_all(valid);
        for cut in 0..valid.len() {
            decode_all(&valid[..cut]);
        }
    }
    let mut rng = rng(0x5eed_0002);
    for _ in 0..cases(3000) {
        let valid = &corpus[rng.below(corpus.len())];
        decode_all(&mutate(&mut rng, valid));
        // The body alone, as a proxy that framed it itself would pass it on.
        let mutated = mutate(&mut rng, &valid[5..]);
        let _ = BackendMessage::parse(Frame {
            tag: valid[0],
            body: Bytes::from(mutated),
        });
    }
}

#[test]
fn a_huge_declared_length_does_not_reserve_it() {
    for length in [
        i32::MAX,
        i32::try_from(MAX_BODY + 4).expect("fits"),
        1 << 29,
    ] {
        let mut buf = BytesMut::new();
        buf.put_u8(b'd');
        buf.put_i32(length);
        buf.put_slice(b"abc");
        let result = decode_frame(&mut buf);
        assert!(matches!(result, Ok(None) | Err(_)), "{length}: {result:?}");
        assert!(
            buf.capacity() < 1 << 21,
            "declared length {length} reserved {} bytes",
            buf.capacity()
        );
    }
}

#[test]
fn mutated_replication_messages_parse_or_fail_cleanly() {
    let corpus = [xlog_data(b""), xlog_data(b"I\0\0\0\x01N\0\0"), keepalive()];
    for valid in &corpus {
        for cut in 0..=valid.len() {
            let _ = ReplicationMessage::parse(&Bytes::copy_from_slice(&valid[..cut]));
        }
    }
    let mut rng = rng(0x5eed_0003);
    for _ in 0..cases(3000) {
        let bytes = if rng.below(4) == 0 {
            rng.bytes(40)
        } else {
            let valid = &corpus[rng.below(corpus.len())];
            mutate(&mut rng, valid)
        };
        match ReplicationMessage::parse(&Bytes::from(bytes)) {
            Ok(
                ReplicationMessage::XLogData { .. } | ReplicationMessage::PrimaryKeepalive { .. },
            ) => {}
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
}

#[test]
fn authenticator_survives_malformed_sasl_messages() {
    let mut rng = rng(0x5eed_0004);
    let valid_first = b"r=abc,s=c2FsdA==,i=1".to_vec();
    for _ in 0..cases(300) {
        let mut auth = Authenticator::new("alice", Some("secret"));
        let mut out = BytesMut::new();
        auth.respond(
            &AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into()],
            },
            &mut out,
        )
        .expect("SCRAM starts");
        let challenge = if rng.below(2) == 0 {
            rng.bytes(40)
        } else {
            mutate(&mut rng, &valid_first)
        };
        let _ = auth.respond(&AuthRequest::SaslContinue(Bytes::from(challenge)), &mut out);
        let _ = auth.respond(
            &AuthRequest::SaslFinal(Bytes::from(rng.bytes(20))),
            &mut out,
        );
    }
}

#[test]
fn negative_counts_are_errors_not_empty_lists() {
    for (tag, body) in [
        (b'T', &b"\xff\xff"[..]),
        (b'D', b"\x80\x00"),
        (b'W', b"\0\xff\xff"),
    ] {
        let err = BackendMessage::parse(Frame {
            tag,
            body: Bytes::from_static(body),
        })
        .expect_err("negative count");
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
