//! Turning an event into its row, in one pass over its fields.
//!
//! `pgtrail_core::canonical::seal` builds a `serde_json::Value` of the whole
//! event (a map, every string copied) and serializes that; the store then
//! needed a second serialization for the body. At 10,000 events a batch that
//! was over half of the append time. Here the canonical JSON is written
//! directly from the struct's fields in key order, once, without `seq` and
//! `prev_hash`: that is the body. The hash input is the same bytes with
//! `"prev_hash"` and `"seq"` spliced in at their sorted places, fed to
//! SHA-256 in pieces, so only that last cheap step depends on the chain and
//! everything else can run before (and beside) the write transaction.
//!
//! Staying identical to `canonical_json` is guarded three ways: `Event` is
//! destructured without `..` (a new field fails to compile here), tests
//! compare against `event_hash` on fully and sparsely populated events, and
//! `append` checks the first event of every batch against `seal` and refuses
//! the batch on a mismatch.

use pgtrail_core::canonical::seal;
use pgtrail_core::filter::canonical_pk;
use pgtrail_core::time::format_micros;
use pgtrail_core::Event;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Result, StoreError};

/// Room reserved for a body: most events fit without the buffer growing.
const BODY_CAPACITY: usize = 768;

/// An event encoded for the `events` table, not yet linked into the chain.
pub struct Prepared {
    pub id: [u8; 16],
    pub captured_at: i64,
    pub source: &'static str,
    pub kind: &'static str,
    pub schema: Option<String>,
    pub table: Option<String>,
    /// Canonical text of the key (`pgtrail_core::filter::canonical_pk`).
    pub pk: Option<String>,
    pub app_user: Option<String>,
    pub db_user: Option<String>,
    /// Upper-cased, so filters compare case-insensitively on an index.
    pub operation: Option<String>,
    pub failed: bool,
    /// The statement text, for the full-text index.
    pub sql: Option<String>,
    /// Canonical JSON of the event without `seq`, `prev_hash` and `hash`.
    pub body: String,
    /// Where `"prev_hash"` and `"seq"` go in `body` when hashing.
    prev_hash_at: usize,
    seq_at: usize,
}

impl Prepared {
    /// SHA-256 of the canonical JSON of the event sealed at `seq` after `prev_hash_hex`.
    pub fn chain_hash(&self, seq: i64, prev_hash_hex: &str) -> [u8; 32] {
        let body = self.body.as_bytes();
        let mut hasher = Sha256::new();
        hasher.update(&body[..self.prev_hash_at]);
        hasher.update(b",\"prev_hash\":\"");
        hasher.update(prev_hash_hex.as_bytes());
        hasher.update(b"\"");
        hasher.update(&body[self.prev_hash_at..self.seq_at]);
        hasher.update(b",\"seq\":");
        hasher.update(seq.to_string().as_bytes());
        hasher.update(&body[self.seq_at..]);
        hasher.finalize().into()
    }
}

/// Encodes `event` (its own seal fields ignored), taking its strings.
pub fn prepare(event: Event) -> Result<Prepared> {
    let failed = event.failed();
    let mut w = FieldWriter {
        buf: Vec::with_capacity(BODY_CAPACITY),
    };
    // Keys in byte order, exactly as a serde_json map (BTreeMap) sorts them.
    let Event {
        id,
        seq: _,
        source,
        kind,
        captured_at,
        db_user,
        app_user,
        client_addr,
        client_port,
        application_name,
        backend_pid,
        session_id,
        context,
        database,
        schema,
        table,
        operation,
        objects,
        pk,
        old,
        new,
        changed,
        partial,
        sql,
        params,
        command_tag,
        rows,
        duration_us,
        sqlstate,
        error,
        xid,
        lsn,
        committed_at,
        tx_seq,
        prev_hash: _,
        hash: _,
    } = event;
    w.opt("app_user", &app_user)?;
    w.opt("application_name", &application_name)?;
    w.opt("backend_pid", &backend_pid)?;
    w.field("captured_at", &format_micros(&captured_at))?;
    w.list("changed", &changed)?;
    w.opt("client_addr", &client_addr)?;
    w.opt("client_port", &client_port)?;
    w.opt("command_tag", &command_tag)?;
    w.opt("committed_at", &committed_at.as_ref().map(format_micros))?;
    w.opt("context", &context)?;
    w.opt("database", &database)?;
    w.opt("db_user", &db_user)?;
    w.opt("duration_us", &duration_us)?;
    w.opt("error", &error)?;
    w.field("id", &id)?;
    w.field("kind", kind.as_str())?;
    w.opt("lsn", &lsn)?;
    w.opt("new", &new)?;
    w.list("objects", &objects)?;
    w.opt("old", &old)?;
    w.opt("operation", &operation)?;
    w.opt("params", &params)?;
    w.list("partial", &partial)?;
    w.opt("pk", &pk)?;
    let prev_hash_at = w.buf.len();
    w.opt("rows", &rows)?;
    w.opt("schema", &schema)?;
    let seq_at = w.buf.len();
    w.opt("session_id", &session_id)?;
    w.field("source", source.as_str())?;
    w.opt("sql", &sql)?;
    w.opt("sqlstate", &sqlstate)?;
    w.opt("table", &table)?;
    w.opt("tx_seq", &tx_seq)?;
    w.opt("xid", &xid)?;

    // Every entry starts with ','; the first becomes the opening brace.
    w.buf[0] = b'{';
    w.buf.push(b'}');
    let body = String::from_utf8(w.buf)
        .map_err(|e| StoreError::Invalid(format!("event {id} is not UTF-8: {e}")))?;
    Ok(Prepared {
        id: *id.as_bytes(),
        captured_at: captured_at.timestamp_micros(),
        source: source.as_str(),
        kind: kind.as_str(),
        schema,
        table,
        pk: pk.as_ref().map(canonical_pk),
        app_user,
        db_user,
        operation: operation.map(|op| op.to_uppercase()),
        failed,
        sql,
        body,
        prev_hash_at,
        seq_at,
    })
}

/// Prepares `event`, checking the result against `pgtrail_core::canonical`.
/// Storing events `verify` would call modified is worse than failing loudly.
pub fn prepare_checked(event: Event) -> Result<Prepared> {
    const PREV: &str = pgtrail_core::GENESIS_HASH;
    let mut sealed = event.clone();
    seal(&mut sealed, 1, PREV);
    let prepared = prepare(event)?;
    if sealed.hash.as_deref() == Some(hex::encode(prepared.chain_hash(1, PREV)).as_str()) {
        return Ok(prepared);
    }
    Err(StoreError::Invalid(format!(
        "event {}: the SQLite store's encoder disagrees with pgtrail_core::canonical (a bug): batch refused",
        sealed.id
    )))
}

/// Appends `,"key":value` entries to one buffer.
struct FieldWriter {
    buf: Vec<u8>,
}

impl FieldWriter {
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
        serde_json::to_writer(&mut self.buf, value)
            .map_err(|e| StoreError::Invalid(format!("field {key} cannot be encoded: {e}")))
    }

    /// Left out when unset, as `skip_serializing_if = "Option::is_none"`.
    fn opt<T: Serialize>(&mut self, key: &str, value: &Option<T>) -> Result<()> {
        match value {
            Some(value) => self.field(key, value),
            None => Ok(()),
        }
    }

    /// Left out when empty, as `skip_serializing_if = "Vec::is_empty"`.
    fn list<T: Serialize>(&mut self, key: &str, value: &[T]) -> Result<()> {
        if value.is_empty() {
            return Ok(());
        }
        self.field(key, value)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use pgtrail_core::canonical::{canonical_json, event_hash};
    use pgtrail_core::{Kind, Source, GENESIS_HASH};
    use serde_json::json;

    use super::*;

    fn full() -> Event {
        let mut e = Event::at(Source::Cdc, Kind::RowChange, Utc::now());
        let obj = |v: serde_json::Value| v.as_object().cloned();
        e.db_user = Some("app".into());
        e.app_user = Some("o'brien \"the\" \\ admin 東京".into());
        e.client_addr = Some("10.0.0.1".into());
        e.client_port = Some(5432);
        e.application_name = Some("api".into());
        e.backend_pid = Some(77);
        e.session_id = Some("s1".into());
        e.context = obj(json!({"z": 1, "a": {"y": [1.50, null]}}));
        e.database = Some("shop".into());
        e.schema = Some("public".into());
        e.table = Some("t".into());
        e.operation = Some("UPDATE".into());
        e.objects = vec!["public.t".into()];
        e.pk = obj(json!({"id": "1"}));
        e.old = obj(json!({"id": 1, "n": 0.10}));
        e.new = serde_json::from_str(r#"{"id": 1, "n": 123456789012345678901234567890.5}"#)
            .expect("json");
        e.changed = vec!["n".into()];
        e.partial = vec!["blob".into()];
        e.sql = Some("update t set n = $1\n\t-- ✓".into());
        e.params = Some(vec![json!("x"), serde_json::Value::Null]);
        e.command_tag = Some("UPDATE 1".into());
        e.rows = Some(1);
        e.duration_us = Some(12);
        e.sqlstate = Some("00000".into());
        e.error = Some("none".into());
        e.xid = Some(1 << 40);
        e.lsn = Some("0/16B3748".into());
        e.committed_at = Utc.timestamp_micros(1_700_000_000_000_001).single();
        e.tx_seq = Some(0);
        e
    }

    fn assert_matches_canonical(event: &Event, seq: i64, prev: &str) {
        let encoded = prepare(event.clone()).expect("encode");
        assert!(prepare_checked(event.clone()).is_ok());
        let mut sealed = event.clone();
        seal(&mut sealed, seq, prev);
        assert_eq!(
            hex::encode(encoded.chain_hash(seq, prev)),
            sealed.hash.clone().expect("sealed"),
            "{}",
            encoded.body
        );
        let unsealed = event.clone().unsealed();
        assert_eq!(
            encoded.body.as_bytes(),
            canonical_json(&unsealed).as_slice()
        );
        let back: Event = serde_json::from_str(&encoded.body).expect("body parses");
        assert_eq!(back, unsealed);
        assert_eq!(event_hash(&sealed), sealed.hash.expect("sealed"));
    }

    #[test]
    fn matches_canonical_json_fully_populated() {
        assert_matches_canonical(&full(), 42, &"ab".repeat(32));
    }

    #[test]
    fn matches_canonical_json_with_each_field_left_out() {
        // Clearing one optional field at a time moves every splice point.
        let base = full();
        let value = serde_json::to_value(&base).expect("json");
        let keys: Vec<String> = value.as_object().expect("object").keys().cloned().collect();
        for key in keys {
            let mut v = value.clone();
            let object = v.as_object_mut().expect("object");
            if ["id", "source", "kind", "captured_at"].contains(&key.as_str()) {
                continue;
            }
            object.remove(&key);
            let event: Event = serde_json::from_value(v).expect("still an event");
            assert_matches_canonical(&event, 1, GENESIS_HASH);
        }
        let minimal = Event::at(Source::Proxy, Kind::Session, Utc::now());
        assert_matches_canonical(&minimal, i64::MAX, GENESIS_HASH);
    }

    #[test]
    fn incoming_seal_fields_are_ignored() {
        let mut e = full();
        e.seq = Some(9);
        e.prev_hash = Some("f".repeat(64));
        e.hash = Some("e".repeat(64));
        let encoded = prepare(e.clone()).expect("encode");
        let clean = prepare(e.clone().unsealed()).expect("encode");
        assert_eq!(
            encoded.chain_hash(1, GENESIS_HASH),
            clean.chain_hash(1, GENESIS_HASH)
        );
        assert!(!encoded.body.contains("ffff") && !encoded.body.contains("\"seq\""));
    }
}
