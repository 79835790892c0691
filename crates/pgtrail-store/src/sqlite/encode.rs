//! Turning an event into its row.
//!
//! The body column is the event's canonical JSON without the seal fields,
//! written once by `pgtrail_core::canonical::CanonicalBody`; the hash input
//! is those same bytes with `"prev_hash"` and `"seq"` spliced in, so only
//! that last cheap step depends on the chain and everything here runs
//! before the write transaction. The other columns are the event's indexed
//! fields, borrowed from it: the caller keeps its batch (to retry it), and
//! nothing is copied that SQLite does not copy itself.
//!
//! [`ChainEnd::next`] is that last step. Appends run it ahead of the inserts
//! on the encoding thread, assuming every event goes in; an event whose
//! [`Link`] no longer fits the chain (one before it was already stored) is
//! linked again where it is inserted.

use std::borrow::Cow;

use pgtrail_core::canonical::CanonicalBody;
use pgtrail_core::filter::{canonical_pk, object_tables};
use pgtrail_core::{Event, Kind};

use super::keys;

/// An event encoded for the `events` table, not yet linked into the chain.
pub struct Prepared<'a> {
    /// Every column but the body and the seal.
    pub columns: Columns<'a>,
    /// Canonical JSON of the event without `seq`, `prev_hash` and `hash`
    /// (borrowed when encoded ahead of the append, see [`Ahead`]).
    pub body: Cow<'a, CanonicalBody>,
    /// The seal computed ahead, if any: valid only where it fits the chain.
    pub link: Option<Link>,
}

impl<'a> std::ops::Deref for Prepared<'a> {
    type Target = Columns<'a>;

    fn deref(&self) -> &Columns<'a> {
        &self.columns
    }
}

/// The columns of an event's row that copy or derive from its fields, for
/// the filters and indexes of readers. `verify` recomputes them with this
/// same code and compares them with what is stored.
pub struct Columns<'a> {
    pub id: [u8; 16],
    pub captured_at: i64,
    pub source: &'static str,
    pub kind: &'static str,
    pub schema: Option<&'a str>,
    pub table: Option<&'a str>,
    /// Canonical text of the key (`pgtrail_core::filter::canonical_pk`).
    pub pk: Option<String>,
    pub app_user: Option<&'a str>,
    pub db_user: Option<&'a str>,
    /// Index keys of the row and the users (see `keys`).
    pub row_key: Option<i64>,
    pub app_user_key: Option<i64>,
    pub db_user_key: Option<i64>,
    /// The client's address as an index key (see `keys::AddrKey`), `None`
    /// for text that is not an address (schema 15, like the three below:
    /// `ip:`, `db:` and the link between a statement and its rows).
    pub client_addr: Option<keys::AddrKey>,
    pub database: Option<&'a str>,
    pub backend_pid: Option<i32>,
    pub xid: Option<i64>,
    /// Upper-cased, so filters compare case-insensitively on an index.
    pub operation: Option<Cow<'a, str>>,
    pub failed: bool,
    /// The statement text, for the full-text index.
    pub sql: Option<&'a str>,
    /// The relations a statement touched (empty for other kinds of
    /// events), as `events_objects` indexes them: `(schema, table)`, the
    /// schema empty where unknown (no Postgres schema is named '').
    pub objects: Vec<(String, String)>,
}

/// An event's seal: its place in the chain and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub seq: i64,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

/// The last event of a chain: the next event links onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEnd {
    pub seq: i64,
    pub hash: [u8; 32],
}

impl ChainEnd {
    /// The seal of `body` as the next event.
    pub fn next(&self, body: &CanonicalBody) -> Link {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(self.hash, &mut hex).expect("32 bytes are 64 hex digits");
        let prev_hex = std::str::from_utf8(&hex).expect("hex digits are ASCII");
        let seq = self.seq + 1;
        Link {
            seq,
            prev: self.hash,
            hash: body.sealed_hash(seq, prev_hex),
        }
    }

    /// The seal of `row`: the one computed ahead when it fits here, else a new one.
    pub fn link(&self, row: &Prepared) -> Link {
        match row.link {
            Some(link) if link.seq == self.seq + 1 && link.prev == self.hash => link,
            _ => self.next(&row.body),
        }
    }

    /// The end after `link` went in.
    pub fn after(link: &Link) -> ChainEnd {
        ChainEnd {
            seq: link.seq,
            hash: link.hash,
        }
    }
}

/// Encodes `event` (its own seal fields ignored).
pub fn prepare(event: &Event) -> Prepared<'_> {
    Prepared {
        columns: columns(event),
        body: Cow::Owned(CanonicalBody::of(event)),
        link: None,
    }
}

/// What is done to an event ahead of its append, on another thread than
/// the inserts ([`crate::Store::encode`]): its body and, if the chain's end
/// was known, its seal.
pub struct Ahead {
    pub body: CanonicalBody,
    pub link: Option<Link>,
}

/// Encodes `events` ahead of their append, sealing them onto `chain` if it
/// is known (and moving it to where they end).
pub fn ahead(events: &[Event], chain: Option<&mut ChainEnd>) -> Vec<Ahead> {
    let mut encoded: Vec<Ahead> = events
        .iter()
        .map(|event| Ahead {
            body: CanonicalBody::of(event),
            link: None,
        })
        .collect();
    if let Some(end) = chain {
        for row in &mut encoded {
            let link = end.next(&row.body);
            *end = ChainEnd::after(&link);
            row.link = Some(link);
        }
    }
    encoded
}

/// `event` with what was done to it ahead.
pub fn prepare_ahead<'a>(event: &'a Event, ahead: &'a Ahead) -> Prepared<'a> {
    Prepared {
        columns: columns(event),
        body: Cow::Borrowed(&ahead.body),
        link: ahead.link,
    }
}

/// The indexed columns of `event`.
pub fn columns(event: &Event) -> Columns<'_> {
    let pk = event.pk.as_ref().map(canonical_pk);
    Columns {
        id: *event.id.as_bytes(),
        captured_at: event.captured_at.timestamp_micros(),
        source: event.source.as_str(),
        kind: event.kind.as_str(),
        failed: event.failed(),
        // Events of a table without a key (DDL, TRUNCATE) still fall in the
        // table's key range, for `--table` alone.
        row_key: event
            .table
            .as_deref()
            .map(|table| keys::row_key(table, pk.as_deref().unwrap_or(""))),
        app_user_key: event.app_user.as_deref().map(keys::user_key),
        db_user_key: event.db_user.as_deref().map(keys::user_key),
        pk,
        operation: event.operation.as_deref().map(upper_case),
        schema: event.schema.as_deref(),
        table: event.table.as_deref(),
        app_user: event.app_user.as_deref(),
        db_user: event.db_user.as_deref(),
        client_addr: event.client_addr.as_deref().and_then(keys::addr_key),
        database: event.database.as_deref(),
        backend_pid: event.backend_pid,
        xid: event.xid,
        sql: event.sql.as_deref(),
        // Statements only: `--table` keeps matching row changes and DDL by
        // their own table, as before.
        objects: if event.kind == Kind::Statement && !event.objects.is_empty() {
            object_tables(&event.objects)
                .into_iter()
                .map(|t| (t.schema.unwrap_or_default(), t.table))
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// `text` in upper case, copied only if it is not already (captured
/// operations nearly always are).
fn upper_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) || !text.is_ascii() {
        Cow::Owned(text.to_uppercase())
    } else {
        Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use pgtrail_core::canonical::{canonical_json, seal};
    use pgtrail_core::{Kind, Source, GENESIS_HASH};
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_come_from_the_event_and_the_body_is_canonical() {
        let mut e = Event::new(Source::Proxy, Kind::Statement);
        e.schema = Some("public".into());
        e.table = Some("t".into());
        e.operation = Some("update".into());
        e.pk = json!({"b": 2, "a": "x"}).as_object().cloned();
        e.sql = Some("update t set n = 1".into());
        e.sqlstate = Some("23505".into());
        e.client_addr = Some("10.0.4.7".into());
        e.database = Some("crm".into());
        e.backend_pid = Some(4242);
        e.xid = Some(77);
        let prepared = prepare(&e);
        assert_eq!(
            prepared.client_addr.map(|k| k.as_bytes().to_vec()),
            Some(vec![4, 10, 0, 4, 7])
        );
        assert_eq!(
            (prepared.database, prepared.backend_pid, prepared.xid),
            (Some("crm"), Some(4242), Some(77))
        );
        assert_eq!(prepared.operation.as_deref(), Some("UPDATE"));
        assert_eq!(prepared.pk, e.pk.as_ref().map(canonical_pk));
        let pk_text = prepared.pk.as_deref().expect("a key");
        assert_eq!(prepared.row_key, Some(keys::row_key("t", pk_text)));
        assert_eq!(prepared.app_user_key, None);
        assert!(prepared.failed);
        assert_eq!(prepared.id, *e.id.as_bytes());
        assert_eq!(prepared.body.as_str().as_bytes(), canonical_json(&e));

        let mut sealed = e.clone();
        seal(&mut sealed, 4, GENESIS_HASH);
        assert_eq!(
            Some(hex::encode(prepared.body.sealed_hash(4, GENESIS_HASH))),
            sealed.hash
        );
    }

    #[test]
    fn a_link_computed_ahead_is_used_only_where_it_fits() {
        let genesis = ChainEnd {
            seq: 0,
            hash: [0; 32],
        };
        let (first_event, second_event) = (
            Event::new(Source::Cdc, Kind::RowChange),
            Event::new(Source::Cdc, Kind::RowChange),
        );
        let mut first = prepare(&first_event);
        let mut second = prepare(&second_event);
        first.link = Some(genesis.next(&first.body));
        let after_first = ChainEnd::after(&first.link.expect("linked"));
        second.link = Some(after_first.next(&second.body));

        // In order, the links computed ahead are the links.
        assert_eq!(genesis.link(&first), first.link.expect("linked"));
        assert_eq!(after_first.link(&second), second.link.expect("linked"));
        // The first was already stored: the second is linked onto the genesis.
        let relinked = genesis.link(&second);
        assert_eq!(relinked.seq, 1);
        assert_eq!(relinked.prev, [0; 32]);
        assert_eq!(relinked.hash, second.body.sealed_hash(1, GENESIS_HASH));
        // Same seq, other predecessor: linked again too.
        let elsewhere = ChainEnd {
            seq: 0,
            hash: [7; 32],
        };
        assert_ne!(elsewhere.link(&first), first.link.expect("linked"));
    }
}
