//! Decoding of the `pgoutput` logical decoding plugin's messages.
//!
//! Pure: bytes in, [`PgOutput`] out. Protocol versions 1 and 2 are
//! understood; version 2 adds streaming of large in-progress transactions,
//! during which data messages carry the (sub)transaction id. Whether such an
//! id is present depends on being between Stream Start and Stream Stop, so
//! the [`Decoder`] keeps that one bit of state. Two-phase messages (version 3)
//! are never requested by pgtrail and are refused if they arrive.
//!
//! Column values stay as the bytes the server sent (text format): turning them
//! into JSON needs the column types, which is the assembler's job.

use bytes::Bytes;
use pgtrail_wire::frame::Reader;
use pgtrail_wire::{Lsn, WireError};

#[cfg(test)]
mod malformed;
#[cfg(test)]
mod tests;

/// A transaction id as pgoutput sends it (32 bits, no epoch).
pub type Xid = u32;

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnValue {
    /// SQL NULL.
    Null,
    /// A TOASTed value that did not change and was not sent.
    UnchangedToast,
    /// The value in text format.
    Text(Bytes),
    /// The value in binary format (only if requested; pgtrail does not).
    Binary(Bytes),
}

/// A row image: one value per column of the relation, in column order.
pub type Tuple = Vec<ColumnValue>;

/// Which old image an UPDATE or DELETE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `K`: only the replica identity key columns are set.
    Key,
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (for FULL: every column).
    pub replica_key: bool,
    /// Column name.
    pub name: String,
    /// Type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub type_modifier: i32,
}

/// A Relation message: the shape of a table as of the next change to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Table OID.
    pub oid: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    /// Columns, in order.
    pub columns: Vec<RelationColumn>,
}

/// One decoded pgoutput message. `xid` fields are `Some` only inside a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    /// A transaction begins; changes follow, then Commit.
    Begin {
        /// LSN of the commit record.
        final_lsn: Lsn,
        /// Commit time (Postgres-epoch microseconds).
        commit_time: i64,
        /// Transaction id.
        xid: Xid,
    },
    /// The transaction committed.
    Commit {
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record: where a restart resumes after this transaction.
        end_lsn: Lsn,
        /// Commit time (Postgres-epoch microseconds).
        commit_time: i64,
    },
    /// The changes came from another node (replication origin).
    Origin {
        /// Commit LSN on the origin.
        lsn: Lsn,
        /// Origin name.
        name: String,
    },
    /// Table shape.
    Relation {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// The relation.
        relation: Relation,
    },
    /// A non-built-in type's name.
    Type {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Type OID.
        oid: u32,
        /// Schema name.
        schema: String,
        /// Type name.
        name: String,
    },
    /// A row was inserted.
    Insert {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Table OID.
        relation: u32,
        /// The new row.
        new: Tuple,
    },
    /// A row was updated.
    Update {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Table OID.
        relation: u32,
        /// The old key or row, when the replica identity requires it.
        old: Option<(OldKind, Tuple)>,
        /// The new row.
        new: Tuple,
    },
    /// A row was deleted.
    Delete {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Table OID.
        relation: u32,
        /// The old key or row.
        old: (OldKind, Tuple),
    },
    /// Tables were truncated.
    Truncate {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Table OIDs.
        relations: Vec<u32>,
        /// `CASCADE` was given.
        cascade: bool,
        /// `RESTART IDENTITY` was given.
        restart_identity: bool,
    },
    /// A `pg_logical_emit_message`.
    Message {
        /// Streamed (sub)transaction.
        xid: Option<Xid>,
        /// Part of a transaction (else emitted immediately).
        transactional: bool,
        /// LSN of the message.
        lsn: Lsn,
        /// The prefix given by the emitter.
        prefix: String,
        /// The payload.
        content: Bytes,
    },
    /// A chunk of a large in-progress transaction begins.
    StreamStart {
        /// Top-level transaction id.
        xid: Xid,
        /// First chunk of this transaction.
        first_segment: bool,
    },
    /// The chunk ends.
    StreamStop,
    /// A streamed transaction committed.
    StreamCommit {
        /// Top-level transaction id.
        xid: Xid,
        /// LSN of the commit record.
        commit_lsn: Lsn,
        /// End of the commit record.
        end_lsn: Lsn,
        /// Commit time (Postgres-epoch microseconds).
        commit_time: i64,
    },
    /// A streamed transaction, or one of its subtransactions, rolled back.
    StreamAbort {
        /// Top-level transaction id.
        xid: Xid,
        /// The aborted subtransaction (equal to `xid` for the whole transaction).
        subxid: Xid,
    },
}

/// Decodes pgoutput messages in stream order.
#[derive(Debug, Default)]
pub struct Decoder {
    in_stream: bool,
}

impl Decoder {
    /// A decoder at the start of a replication stream.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Decodes one XLogData payload.
    pub fn decode(&mut self, data: &Bytes) -> Result<PgOutput, WireError> {
        let Some(&tag) = data.first() else {
            return Err(WireError::Truncated {
                tag: '?',
                field: "pgoutput message type",
            });
        };
        let mut r = Body {
            data,
            r: Reader::new(tag, &data[1..]),
        };
        let message = match tag {
            b'B' => PgOutput::Begin {
                final_lsn: r.lsn("final LSN")?,
                commit_time: r.r.i64("commit time")?,
                xid: r.r.u32("xid")?,
            },
            b'C' => {
                r.r.u8("flags")?;
                PgOutput::Commit {
                    commit_lsn: r.lsn("commit LSN")?,
                    end_lsn: r.lsn("end LSN")?,
                    commit_time: r.r.i64("commit time")?,
                }
            }
            b'O' => PgOutput::Origin {
                lsn: r.lsn("origin LSN")?,
                name: r.r.cstr("origin name")?.to_string(),
            },
            b'R' => {
                let xid = self.stream_xid(&mut r)?;
                PgOutput::Relation {
                    xid,
                    relation: r.relation()?,
                }
            }
            b'Y' => PgOutput::Type {
                xid: self.stream_xid(&mut r)?,
                oid: r.r.u32("type oid")?,
                schema: r.r.cstr("type schema")?.to_string(),
                name: r.r.cstr("type name")?.to_string(),
            },
            b'I' => {
                let xid = self.stream_xid(&mut r)?;
                let relation = r.r.u32("relation oid")?;
                r.expect(b'N', "new tuple marker")?;
                PgOutput::Insert {
                    xid,
                    relation,
                    new: r.tuple()?,
                }
            }
            b'U' => {
                let xid = self.stream_xid(&mut r)?;
                let relation = r.r.u32("relation oid")?;
                let mut old = None;
                let mut marker = r.r.u8("tuple marker")?;
                if marker == b'K' || marker == b'O' {
                    let kind = if marker == b'K' {
                        OldKind::Key
                    } else {
                        OldKind::Full
                    };
                    old = Some((kind, r.tuple()?));
                    marker = r.r.u8("new tuple marker")?;
                }
                if marker != b'N' {
                    return Err(r
                        .r
                        .invalid("new tuple marker", format!("{:?}", char::from(marker))));
                }
                PgOutput::Update {
                    xid,
                    relation,
                    old,
                    new: r.tuple()?,
                }
            }
            b'D' => {
                let xid = self.stream_xid(&mut r)?;
                let relation = r.r.u32("relation oid")?;
                let kind = match r.r.u8("old tuple marker")? {
                    b'K' => OldKind::Key,
                    b'O' => OldKind::Full,
                    other => {
                        return Err(r
                            .r
                            .invalid("old tuple marker", format!("{:?}", char::from(other))))
                    }
                };
                PgOutput::Delete {
                    xid,
                    relation,
                    old: (kind, r.tuple()?),
                }
            }
            b'T' => {
                let xid = self.stream_xid(&mut r)?;
                let count = r.r.count_i32("relation count")?;
                let options = r.r.u8("truncate options")?;
                let mut relations = Vec::new();
                for _ in 0..count {
                    relations.push(r.r.u32("relation oid")?);
                }
                PgOutput::Truncate {
                    xid,
                    relations,
                    cascade: options & 1 != 0,
                    restart_identity: options & 2 != 0,
                }
            }
            b'M' => {
                let xid = self.stream_xid(&mut r)?;
                let transactional = r.r.u8("flags")? & 1 != 0;
                let lsn = r.lsn("message LSN")?;
                let prefix = r.r.cstr("prefix")?.to_string();
                let len = r.r.i32("content length")?;
                let len = usize::try_from(len)
                    .map_err(|_| r.r.invalid("content length", len.to_string()))?;
                PgOutput::Message {
                    xid,
                    transactional,
                    lsn,
                    prefix,
                    content: r.slice(len, "content")?,
                }
            }
            b'S' => {
                self.in_stream = true;
                PgOutput::StreamStart {
                    xid: r.r.u32("xid")?,
                    first_segment: r.r.u8("first segment")? == 1,
                }
            }
            b'E' => {
                self.in_stream = false;
                PgOutput::StreamStop
            }
            b'c' => {
                let xid = r.r.u32("xid")?;
                r.r.u8("flags")?;
                PgOutput::StreamCommit {
                    xid,
                    commit_lsn: r.lsn("commit LSN")?,
                    end_lsn: r.lsn("end LSN")?,
                    commit_time: r.r.i64("commit time")?,
                }
            }
            b'A' => PgOutput::StreamAbort {
                xid: r.r.u32("xid")?,
                subxid: r.r.u32("subxid")?,
            },
            other => {
                return Err(r.r.invalid(
                    "pgoutput message type",
                    format!("{:?} is not requested by pgtrail", char::from(other)),
                ))
            }
        };
        Ok(message)
    }

    fn stream_xid(&self, r: &mut Body<'_>) -> Result<Option<Xid>, WireError> {
        if self.in_stream {
            Ok(Some(r.r.u32("streamed xid")?))
        } else {
            Ok(None)
        }
    }
}

/// A reader that can also hand out zero-copy slices of the payload.
struct Body<'a> {
    data: &'a Bytes,
    r: Reader<'a>,
}

impl Body<'_> {
    fn lsn(&mut self, field: &'static str) -> Result<Lsn, WireError> {
        Ok(Lsn(self.r.u64(field)?))
    }

    fn expect(&mut self, byte: u8, field: &'static str) -> Result<(), WireError> {
        let got = self.r.u8(field)?;
        if got != byte {
            return Err(self.r.invalid(field, format!("{:?}", char::from(got))));
        }
        Ok(())
    }

    fn slice(&mut self, len: usize, field: &'static str) -> Result<Bytes, WireError> {
        let start = self.data.len() - self.r.remaining().len();
        self.r.bytes(len, field)?;
        Ok(self.data.slice(start..start + len))
    }

    fn tuple(&mut self) -> Result<Tuple, WireError> {
        let count = self.r.count_i16("column count")?;
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let value = match self.r.u8("column kind")? {
                b'n' => ColumnValue::Null,
                b'u' => ColumnValue::UnchangedToast,
                kind @ (b't' | b'b') => {
                    let len = self.r.i32("value length")?;
                    let len = usize::try_from(len)
                        .map_err(|_| self.r.invalid("value length", len.to_string()))?;
                    let bytes = self.slice(len, "value")?;
                    if kind == b't' {
                        ColumnValue::Text(bytes)
                    } else {
                        ColumnValue::Binary(bytes)
                    }
                }
                other => {
                    return Err(self
                        .r
                        .invalid("column kind", format!("{:?}", char::from(other))))
                }
            };
            values.push(value);
        }
        Ok(values)
    }

    fn relation(&mut self) -> Result<Relation, WireError> {
        let oid = self.r.u32("relation oid")?;
        let schema = self.r.cstr("schema")?.to_string();
        let name = self.r.cstr("table name")?.to_string();
        let replica_identity = self.r.u8("replica identity")?;
        let count = self.r.count_i16("column count")?;
        let mut columns = Vec::new();
        for _ in 0..count {
            columns.push(RelationColumn {
                replica_key: self.r.u8("column flags")? & 1 != 0,
                name: self.r.cstr("column name")?.to_string(),
                type_oid: self.r.u32("column type")?,
                type_modifier: self.r.i32("type modifier")?,
            });
        }
        Ok(Relation {
            oid,
            schema,
            name,
            replica_identity,
            columns,
        })
    }
}
