//! The one writer of the canonical form, in a single pass over the event.
//!
//! Going through `serde_json::to_value` built a map of the whole event
//! (every string copied) only to serialize it again; at ingest rates that
//! was most of the cost of sealing. Here the canonical JSON is written
//! straight from the struct's fields in sorted key order, once, without the
//! seal fields: that is a [`CanonicalBody`]. Sealing needs only `"prev_hash"`
//! and `"seq"` spliced in at their sorted places, fed to SHA-256 in pieces,
//! so a store can encode a batch before it takes its chain lock and do only
//! that cheap last step under it.
//!
//! Values are written with `serde_json` itself (string escaping, number text
//! kept by `arbitrary_precision`, sorted maps), so only the top-level key
//! order is ours. `Event` is destructured without `..`: a new field does not
//! compile until it is placed here, and the tests compare against the
//! `to_value` form on full, sparse and awkward events.

use std::io::Write;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::time::format_micros;
use crate::Event;

/// Room reserved for a body: most events fit without the buffer growing.
const BODY_CAPACITY: usize = 768;

/// The canonical JSON of an event without `seq`, `prev_hash` and `hash`,
/// and where `seq` and `prev_hash` go when it is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalBody {
    text: String,
    prev_hash_at: usize,
    seq_at: usize,
}

impl CanonicalBody {
    /// Encodes `event`, ignoring its own `seq`, `prev_hash` and `hash`.
    pub fn of(event: &Event) -> Self {
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
            provenance,
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
            class,
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
        w.opt("app_user", app_user);
        w.opt("application_name", application_name);
        w.opt("backend_pid", backend_pid);
        w.field("captured_at", &format_micros(captured_at));
        w.list("changed", changed);
        w.opt("class", class);
        w.opt("client_addr", client_addr);
        w.opt("client_port", client_port);
        w.opt("command_tag", command_tag);
        w.opt("committed_at", &committed_at.as_ref().map(format_micros));
        w.object("context", context);
        w.opt("database", database);
        w.opt("db_user", db_user);
        w.opt("duration_us", duration_us);
        w.opt("error", error);
        w.field("id", id);
        w.field("kind", kind.as_str());
        w.opt("lsn", lsn);
        w.object("new", new);
        w.list("objects", objects);
        w.object("old", old);
        w.opt("operation", operation);
        if let Some(params) = params {
            w.key("params");
            crate::json::write_array(params, &mut w.buf);
        }
        w.list("partial", partial);
        w.object("pk", pk);
        let prev_hash_at = w.buf.len();
        w.opt("provenance", provenance);
        w.opt("rows", rows);
        w.opt("schema", schema);
        let seq_at = w.buf.len();
        w.opt("session_id", session_id);
        w.field("source", source.as_str());
        w.opt("sql", sql);
        w.opt("sqlstate", sqlstate);
        w.opt("table", table);
        w.opt("tx_seq", tx_seq);
        w.opt("xid", xid);

        // Every entry starts with ','; the first (captured_at at the latest,
        // so never a splice point) becomes the opening brace.
        w.buf[0] = b'{';
        w.buf.push(b'}');
        CanonicalBody {
            text: String::from_utf8(w.buf).expect("serde_json writes UTF-8"),
            prev_hash_at,
            seq_at,
        }
    }

    /// The canonical JSON of the unsealed event.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The canonical JSON of the unsealed event, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Feeds the canonical JSON of the event with these seal fields (left
    /// out when `None`) to `sink`, in pieces.
    pub fn write_sealed(
        &self,
        seq: Option<i64>,
        prev_hash: Option<&str>,
        mut sink: impl FnMut(&[u8]),
    ) {
        let body = self.text.as_bytes();
        sink(&body[..self.prev_hash_at]);
        if let Some(prev_hash) = prev_hash {
            sink(b",\"prev_hash\":");
            write_json_str(prev_hash, &mut sink);
        }
        sink(&body[self.prev_hash_at..self.seq_at]);
        if let Some(seq) = seq {
            sink(b",\"seq\":");
            let mut digits = [0u8; 20];
            let mut rest = &mut digits[..];
            write!(rest, "{seq}").expect("an i64 has at most 20 characters");
            let len = 20 - rest.len();
            sink(&digits[..len]);
        }
        sink(&body[self.seq_at..]);
    }

    /// SHA-256 of the canonical JSON of the event sealed at `seq` after `prev_hash`.
    pub fn sealed_hash(&self, seq: i64, prev_hash: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        self.write_sealed(Some(seq), Some(prev_hash), |piece| hasher.update(piece));
        hasher.finalize().into()
    }
}

/// Writes `text` as a JSON string; hashes (hex) need no escaping, so the
/// common case copies nothing.
fn write_json_str(text: &str, sink: &mut impl FnMut(&[u8])) {
    // serde_json escapes exactly these: '"', '\\' and control characters.
    if text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        sink(&serde_json::to_vec(text).expect("a string always serializes"));
    } else {
        sink(b"\"");
        sink(text.as_bytes());
        sink(b"\"");
    }
}

/// Appends `,"key":value` entries to one buffer.
struct FieldWriter {
    buf: Vec<u8>,
}

impl FieldWriter {
    fn key(&mut self, key: &str) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A JSON object, left out when unset.
    fn object(&mut self, key: &str, value: &Option<crate::event::JsonObject>) {
        if let Some(object) = value {
            self.key(key);
            crate::json::write_object(object, &mut self.buf);
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.key(key);
        // Scalars and lists of strings: serde_json cannot fail on them
        // writing into memory.
        serde_json::to_writer(&mut self.buf, value).expect("an event field always serializes");
    }

    /// Left out when unset, as `skip_serializing_if = "Option::is_none"`.
    fn opt<T: Serialize>(&mut self, key: &str, value: &Option<T>) {
        if let Some(value) = value {
            self.field(key, value);
        }
    }

    /// Left out when empty, as `skip_serializing_if = "Vec::is_empty"`.
    fn list<T: Serialize>(&mut self, key: &str, value: &[T]) {
        if !value.is_empty() {
            self.field(key, value);
        }
    }
}
