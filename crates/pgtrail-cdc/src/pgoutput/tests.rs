//! Byte fixtures for every pgoutput message pgtrail decodes, laid out as
//! PostgreSQL 15's `proto.c` writes them.

use super::*;

/// Builds a payload field by field (also used by the `malformed` tests).
#[derive(Default)]
pub(super) struct Msg(pub(super) Vec<u8>);

impl Msg {
    pub(super) fn tag(t: u8) -> Self {
        Msg(vec![t])
    }
    pub(super) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub(super) fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(super) fn s(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    pub(super) fn text(mut self, v: &str) -> Self {
        self.0.push(b't');
        self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    pub(super) fn bytes(self) -> Bytes {
        Bytes::from(self.0)
    }
}

fn text(v: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes()))
}

fn decode(decoder: &mut Decoder, msg: Msg) -> PgOutput {
    decoder.decode(&msg.bytes()).expect("valid pgoutput")
}

#[test]
fn transaction_messages() {
    let mut d = Decoder::new();
    assert_eq!(
        decode(&mut d, Msg::tag(b'B').u64(0x10).u64(99).u32(731)),
        PgOutput::Begin {
            final_lsn: Lsn(0x10),
            commit_time: 99,
            xid: 731
        }
    );
    assert_eq!(
        decode(&mut d, Msg::tag(b'C').u8(0).u64(0x10).u64(0x38).u64(99)),
        PgOutput::Commit {
            commit_lsn: Lsn(0x10),
            end_lsn: Lsn(0x38),
            commit_time: 99
        }
    );
    assert_eq!(
        decode(&mut d, Msg::tag(b'O').u64(5).s("node_a")),
        PgOutput::Origin {
            lsn: Lsn(5),
            name: "node_a".into()
        }
    );
}

#[test]
fn relation_and_type() {
    let mut d = Decoder::new();
    let msg = Msg::tag(b'R')
        .u32(16384)
        .s("public")
        .s("accounts")
        .u8(b'd')
        .u16(2)
        .u8(1)
        .s("id")
        .u32(23)
        .u32(u32::MAX)
        .u8(0)
        .s("balance")
        .u32(1700)
        .u32(0x000A_0006);
    let PgOutput::Relation { xid, relation } = decode(&mut d, msg) else {
        panic!("expected Relation");
    };
    assert_eq!(xid, None);
    assert_eq!(
        (
            relation.oid,
            relation.schema.as_str(),
            relation.name.as_str()
        ),
        (16384, "public", "accounts")
    );
    assert_eq!(relation.columns.len(), 2);
    assert!(relation.columns[0].replica_key && !relation.columns[1].replica_key);
    assert_eq!(
        (
            relation.columns[1].type_oid,
            relation.columns[0].type_modifier
        ),
        (1700, -1)
    );
    assert_eq!(
        decode(&mut d, Msg::tag(b'Y').u32(16400).s("public").s("mood")),
        PgOutput::Type {
            xid: None,
            oid: 16400,
            schema: "public".into(),
            name: "mood".into()
        }
    );
}

#[test]
fn row_changes() {
    let mut d = Decoder::new();
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'I')
                .u32(7)
                .u8(b'N')
                .u16(3)
                .text("1")
                .u8(b'n')
                .text("x")
        ),
        PgOutput::Insert {
            xid: None,
            relation: 7,
            new: vec![text("1"), ColumnValue::Null, text("x")]
        }
    );
    // UPDATE without an old image, with an unchanged TOAST column.
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'U').u32(7).u8(b'N').u16(2).text("1").u8(b'u')
        ),
        PgOutput::Update {
            xid: None,
            relation: 7,
            old: None,
            new: vec![text("1"), ColumnValue::UnchangedToast]
        }
    );
    // UPDATE of the key: old key, then the new row.
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'U')
                .u32(7)
                .u8(b'K')
                .u16(2)
                .text("1")
                .u8(b'n')
                .u8(b'N')
                .u16(2)
                .text("2")
                .text("y")
        ),
        PgOutput::Update {
            xid: None,
            relation: 7,
            old: Some((OldKind::Key, vec![text("1"), ColumnValue::Null])),
            new: vec![text("2"), text("y")]
        }
    );
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'D').u32(7).u8(b'O').u16(2).text("2").text("y")
        ),
        PgOutput::Delete {
            xid: None,
            relation: 7,
            old: (OldKind::Full, vec![text("2"), text("y")])
        }
    );
    assert_eq!(
        decode(&mut d, Msg::tag(b'T').u32(2).u8(3).u32(7).u32(8)),
        PgOutput::Truncate {
            xid: None,
            relations: vec![7, 8],
            cascade: true,
            restart_identity: true
        }
    );
}

#[test]
fn logical_message() {
    let mut d = Decoder::new();
    let mut msg = Msg::tag(b'M').u8(1).u64(0x20).s("pgtrail").u32(7);
    msg.0.extend_from_slice(b"{\"a\":1}");
    assert_eq!(
        decode(&mut d, msg),
        PgOutput::Message {
            xid: None,
            transactional: true,
            lsn: Lsn(0x20),
            prefix: "pgtrail".into(),
            content: Bytes::from_static(b"{\"a\":1}")
        }
    );
}

#[test]
fn streamed_messages_carry_the_xid_only_inside_a_stream() {
    let mut d = Decoder::new();
    assert_eq!(
        decode(&mut d, Msg::tag(b'S').u32(900).u8(1)),
        PgOutput::StreamStart {
            xid: 900,
            first_segment: true
        }
    );
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'I').u32(901).u32(7).u8(b'N').u16(1).text("5")
        ),
        PgOutput::Insert {
            xid: Some(901),
            relation: 7,
            new: vec![text("5")]
        }
    );
    let msg = Msg::tag(b'M').u32(900).u8(1).u64(0x30).s("p").u32(0);
    assert!(matches!(
        decode(&mut d, msg),
        PgOutput::Message { xid: Some(900), .. }
    ));
    assert_eq!(decode(&mut d, Msg::tag(b'E')), PgOutput::StreamStop);
    // Outside the stream the same Insert has no xid field.
    assert!(matches!(
        decode(&mut d, Msg::tag(b'I').u32(7).u8(b'N').u16(1).text("5")),
        PgOutput::Insert { xid: None, .. }
    ));
    assert_eq!(
        decode(&mut d, Msg::tag(b'A').u32(900).u32(901)),
        PgOutput::StreamAbort {
            xid: 900,
            subxid: 901
        }
    );
    assert_eq!(
        decode(
            &mut d,
            Msg::tag(b'c').u32(900).u8(0).u64(0x40).u64(0x48).u64(5)
        ),
        PgOutput::StreamCommit {
            xid: 900,
            commit_lsn: Lsn(0x40),
            end_lsn: Lsn(0x48),
            commit_time: 5
        }
    );
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let mut d = Decoder::new();
    for bad in [
        Msg::tag(b'B').u64(1).bytes(),
        Msg::tag(b'I').u32(7).u8(b'X').bytes(),
        Msg::tag(b'I')
            .u32(7)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .u32(100)
            .bytes(),
        Msg::tag(b'I').u32(7).u8(b'N').u16(1).u8(b'z').bytes(),
        Msg::tag(b'U').u32(7).u8(b'Q').bytes(),
        Msg::tag(b'P').bytes(),
        Bytes::new(),
    ] {
        assert!(d.decode(&bad).is_err(), "{bad:?}");
    }
}
