//! The streaming replication sub-protocol carried inside CopyData.
//!
//! After `START_REPLICATION` the server sends XLogData (`w`) and
//! PrimaryKeepalive (`k`); the client answers with StandbyStatusUpdate (`r`),
//! which is how it confirms how far it has durably processed the stream.
//! Times are microseconds since 2000-01-01 UTC, Postgres's epoch.

use bytes::{BufMut, Bytes, BytesMut};

use crate::frame::Reader;
use crate::frontend::encode_copy_data;
use crate::{Lsn, WireError};

/// Microseconds from 1970-01-01 to 2000-01-01.
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Converts Unix-epoch microseconds to Postgres-epoch microseconds.
/// Saturates: a clock value from a corrupt message must not overflow.
pub fn to_pg_epoch(unix_micros: i64) -> i64 {
    unix_micros.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// Converts Postgres-epoch microseconds to Unix-epoch microseconds.
/// Saturates: times come from the server's bytes, which may be corrupt.
pub fn from_pg_epoch(pg_micros: i64) -> i64 {
    pg_micros.saturating_add(PG_EPOCH_OFFSET_MICROS)
}

/// A message from the server inside CopyData during replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`: a piece of the stream (for logical replication, one output-plugin message).
    XLogData {
        /// Where this data starts in the WAL.
        wal_start: Lsn,
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock when sent (Postgres-epoch microseconds).
        send_time: i64,
        /// The payload (pgoutput bytes).
        data: Bytes,
    },
    /// `k`: the server's position and whether it wants an answer now.
    PrimaryKeepalive {
        /// The server's current end of WAL.
        wal_end: Lsn,
        /// Server clock when sent (Postgres-epoch microseconds).
        send_time: i64,
        /// The client must reply soon or be disconnected.
        reply_requested: bool,
    },
}

impl ReplicationMessage {
    /// Decodes the body of a CopyData message.
    pub fn parse(data: &Bytes) -> Result<ReplicationMessage, WireError> {
        let Some(&tag) = data.first() else {
            return Err(WireError::Truncated {
                tag: 'd',
                field: "replication message type",
            });
        };
        let mut r = Reader::new(tag, &data[1..]);
        match tag {
            b'w' => {
                let wal_start = Lsn(r.u64("WAL start")?);
                let wal_end = Lsn(r.u64("WAL end")?);
                let send_time = r.i64("send time")?;
                Ok(ReplicationMessage::XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data: data.slice(25..),
                })
            }
            b'k' => Ok(ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(r.u64("WAL end")?),
                send_time: r.i64("send time")?,
                reply_requested: r.u8("reply requested")? == 1,
            }),
            other => Err(r.invalid(
                "replication message type",
                format!("{:?}", char::from(other)),
            )),
        }
    }
}

/// What a StandbyStatusUpdate reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    /// Received and written (not necessarily durable) up to here.
    pub write: Lsn,
    /// Durably processed up to here: the slot may release WAL before it.
    pub flush: Lsn,
    /// Applied up to here (for pgtrail, the same as `flush`).
    pub apply: Lsn,
    /// Client clock (Postgres-epoch microseconds).
    pub send_time: i64,
    /// Ask the server to answer with a keepalive at once.
    pub reply_requested: bool,
}

/// Appends a CopyData message holding a StandbyStatusUpdate (`r`).
pub fn encode_standby_status(buf: &mut BytesMut, status: &StandbyStatus) {
    let mut body = BytesMut::with_capacity(34);
    body.put_u8(b'r');
    body.put_u64(status.write.0);
    body.put_u64(status.flush.0);
    body.put_u64(status.apply.0);
    body.put_i64(status.send_time);
    body.put_u8(u8::from(status.reply_requested));
    encode_copy_data(buf, &body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendMessage;

    #[test]
    fn xlogdata_and_keepalive_fixtures() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&0x1_0000_0010u64.to_be_bytes());
        w.extend_from_slice(&0x1_0000_0020u64.to_be_bytes());
        w.extend_from_slice(&7i64.to_be_bytes());
        w.extend_from_slice(b"B...");
        assert_eq!(
            ReplicationMessage::parse(&Bytes::from(w)).expect("valid"),
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x1_0000_0010),
                wal_end: Lsn(0x1_0000_0020),
                send_time: 7,
                data: Bytes::from_static(b"B..."),
            }
        );
        let k = Bytes::from_static(b"k\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0\x09\x01");
        assert_eq!(
            ReplicationMessage::parse(&k).expect("valid"),
            ReplicationMessage::PrimaryKeepalive {
                wal_end: Lsn(0x100),
                send_time: 9,
                reply_requested: true,
            }
        );
        for bad in [&b""[..], b"k\0\0", b"w\0\0\0\0\0\0\0\0", b"z"] {
            assert!(
                ReplicationMessage::parse(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn standby_status_update_layout() {
        let mut buf = BytesMut::new();
        encode_standby_status(
            &mut buf,
            &StandbyStatus {
                write: Lsn(3),
                flush: Lsn(2),
                apply: Lsn(1),
                send_time: 5,
                reply_requested: false,
            },
        );
        let Some(BackendMessage::CopyData(body)) =
            BackendMessage::decode(&mut buf).expect("frames")
        else {
            panic!("expected CopyData");
        };
        let mut expected = vec![b'r'];
        for v in [3u64, 2, 1, 5] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.push(0);
        assert_eq!(&body[..], &expected[..]);
    }

    #[test]
    fn epochs() {
        assert_eq!(to_pg_epoch(PG_EPOCH_OFFSET_MICROS), 0);
        assert_eq!(
            from_pg_epoch(to_pg_epoch(1_700_000_000_000_000)),
            1_700_000_000_000_000
        );
        assert_eq!(from_pg_epoch(i64::MAX), i64::MAX, "saturates, no overflow");
        assert_eq!(to_pg_epoch(i64::MIN), i64::MIN, "saturates, no overflow");
    }
}
