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
use std::ops::Range;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::commit;
use crate::time::format_micros;
use crate::Event;

/// Room reserved for a body: most events fit without the buffer growing.
const BODY_CAPACITY: usize = 768;

/// The canonical JSON of an event without `seq`, `prev_hash` and `hash`,
/// and where `seq` and `prev_hash` go when it is sealed; for a version 2
/// event (one with a nonce) also its committed form (`super::commit`),
/// which is what its hash is over, kept as SHA-256 already fed with all of
/// it before `prev_hash`: that part never changes, and the rest of the
/// committed form is the body's own rest (every value comes before the
/// splice points), so the committed text itself is never kept.
#[derive(Debug, Clone)]
pub struct CanonicalBody {
    body: Spliced,
    committed: Option<Sha256>,
}

impl PartialEq for CanonicalBody {
    fn eq(&self, other: &Self) -> bool {
        let state = |c: &Option<Sha256>| c.clone().map(|h| <[u8; 32]>::from(h.finalize()));
        self.body == other.body && state(&self.committed) == state(&other.committed)
    }
}

impl Eq for CanonicalBody {}

/// A JSON text and where `prev_hash` and `seq` are spliced into it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spliced {
    text: String,
    prev_hash_at: usize,
    seq_at: usize,
}

/// Where a row value was written in the body: its part (index into
/// `commit::PARTS`), its column, where its member starts (the column's
/// quoted name) and its value's bytes.
struct ValueSpan<'a> {
    part: usize,
    column: &'a str,
    member_at: usize,
    range: Range<usize>,
}

impl CanonicalBody {
    /// Encodes `event`, ignoring its own `seq`, `prev_hash` and `hash`.
    pub fn of(event: &Event) -> Self {
        let mut w = FieldWriter {
            buf: Vec::with_capacity(BODY_CAPACITY),
        };
        let mut values = Vec::new();
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
            nonce,
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
        let new_at = w.members(0, new, &mut values);
        let nonce_start = w.buf.len();
        w.opt("nonce", nonce);
        let nonce_at = nonce_start..w.buf.len();
        w.list("objects", objects);
        let old_at = w.members(1, old, &mut values);
        w.opt("operation", operation);
        if let Some(params) = params {
            w.key("params");
            crate::json::write_array(params, &mut w.buf);
        }
        w.list("partial", partial);
        let pk_at = w.members(2, pk, &mut values);
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
        let body = Spliced {
            text: String::from_utf8(w.buf).expect("serde_json writes UTF-8"),
            prev_hash_at,
            seq_at,
        };
        let committed = nonce.as_deref().and_then(commit::nonce_bytes).map(|nonce| {
            // Every edit lies before the splice points (pk is the last
            // part, right before `prev_hash`).
            let edits = [
                (new_at, true),
                (nonce_at, false),
                (old_at, true),
                (pk_at, true),
            ];
            body.committed_prefix(&edits, &values, &commit::Salter::new(&nonce))
        });
        CanonicalBody { body, committed }
    }

    /// The canonical JSON of the unsealed event (with its nonce and values:
    /// what a store keeps).
    pub fn as_str(&self) -> &str {
        &self.body.text
    }

    /// The canonical JSON of the unsealed event, owned.
    pub fn into_string(self) -> String {
        self.body.text
    }

    /// Whether the event's hash is version 2 (over its committed form).
    pub fn is_committed(&self) -> bool {
        self.committed.is_some()
    }

    /// Feeds the canonical JSON of the event with these seal fields (left
    /// out when `None`) to `sink`, in pieces.
    pub fn write_sealed(&self, seq: Option<i64>, prev_hash: Option<&str>, sink: impl FnMut(&[u8])) {
        self.body.write_sealed(seq, prev_hash, sink);
    }

    /// The hash of the event with these seal fields (left out when
    /// `None`): SHA-256 of its canonical JSON (version 1), or of
    /// `commit::V2_PREFIX` and its committed form (version 2).
    pub fn hash_with(&self, seq: Option<i64>, prev_hash: Option<&str>) -> [u8; 32] {
        match &self.committed {
            None => {
                let mut hasher = Sha256::new();
                self.body
                    .write_sealed(seq, prev_hash, |piece| hasher.update(piece));
                hasher.finalize().into()
            }
            Some(prefix) => {
                let mut hasher = prefix.clone();
                self.body
                    .write_sealed_rest(seq, prev_hash, |piece| hasher.update(piece));
                hasher.finalize().into()
            }
        }
    }

    /// The hash of the event sealed at `seq` after `prev_hash`.
    pub fn sealed_hash(&self, seq: i64, prev_hash: &str) -> [u8; 32] {
        self.hash_with(Some(seq), Some(prev_hash))
    }
}

impl Spliced {
    fn write_sealed(&self, seq: Option<i64>, prev_hash: Option<&str>, mut sink: impl FnMut(&[u8])) {
        sink(&self.text.as_bytes()[..self.prev_hash_at]);
        self.write_sealed_rest(seq, prev_hash, sink);
    }

    /// What `write_sealed` writes from `prev_hash` on.
    fn write_sealed_rest(
        &self,
        seq: Option<i64>,
        prev_hash: Option<&str>,
        mut sink: impl FnMut(&[u8]),
    ) {
        let body = self.text.as_bytes();
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

    /// SHA-256 fed with `commit::V2_PREFIX` and the committed form of this
    /// body up to `prev_hash`: each edit's range (in order, all before the
    /// splice points) left out, and for a part its members written again
    /// with each value's commitment in its place.
    fn committed_prefix(
        &self,
        edits: &[(Range<usize>, bool)],
        values: &[ValueSpan<'_>],
        salter: &commit::Salter,
    ) -> Sha256 {
        let body = self.text.as_bytes();
        let mut hasher = Sha256::new();
        hasher.update(commit::V2_PREFIX);
        let mut from = 0;
        let mut parts = 0;
        for (range, is_part) in edits {
            hasher.update(&body[from..range.start]);
            if *is_part && !range.is_empty() {
                hash_commitments(parts, body, values, salter, &mut hasher);
            }
            parts += usize::from(*is_part);
            from = range.end;
        }
        hasher.update(&body[from..self.prev_hash_at]);
        hasher
    }
}

/// Feeds a part's member again (`,"new":{"col":"<commitment>",…}`) to
/// `hasher`: its key and column names as in the body, each value's
/// commitment (over the value's bytes in `body`) in place of the value.
fn hash_commitments(
    part: usize,
    body: &[u8],
    values: &[ValueSpan<'_>],
    salter: &commit::Salter,
    hasher: &mut Sha256,
) {
    hasher.update(b",\"");
    hasher.update(commit::PARTS[part].as_bytes());
    hasher.update(b"\":{");
    let mut first = true;
    for span in values.iter().filter(|v| v.part == part) {
        if !first {
            hasher.update(b",");
        }
        first = false;
        // `"column":` as the body spells it, then the quoted commitment.
        let salt = salter.salt(commit::PARTS[part], span.column);
        let commitment = commit::commitment(&salt, &body[span.range.clone()]);
        let mut quoted = [b'"'; 66];
        quoted[1..65].copy_from_slice(&crate::hex::encode_32(&commitment));
        hasher.update(&body[span.member_at..span.range.start]);
        hasher.update(quoted);
    }
    hasher.update(b"}");
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

    /// A part's object (left out when unset), member by member, as
    /// `json::write_object` writes it; where each value went is pushed to
    /// `values`. Returns the range of the whole entry (empty when unset).
    fn members<'a>(
        &mut self,
        part: usize,
        value: &'a Option<crate::event::JsonObject>,
        values: &mut Vec<ValueSpan<'a>>,
    ) -> Range<usize> {
        let start = self.buf.len();
        if let Some(object) = value {
            self.key(commit::PARTS[part]);
            self.buf.push(b'{');
            for (i, (column, value)) in object.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                let member_at = self.buf.len();
                crate::json::write_str(column, &mut self.buf);
                self.buf.push(b':');
                let at = self.buf.len();
                crate::json::write(value, &mut self.buf);
                values.push(ValueSpan {
                    part,
                    column,
                    member_at,
                    range: at..self.buf.len(),
                });
            }
            self.buf.push(b'}');
        }
        start..self.buf.len()
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
