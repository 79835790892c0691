//! ArcSight Common Event Format (CEF:0), one line per record:
//! `CEF:0|pgtrail|pgtrail|VERSION|SIGNATURE|NAME|SEVERITY|EXTENSIONS`.
//!
//! Escaping, as the CEF specification has it: in the header `\` becomes
//! `\\` and `|` becomes `\|`; in extension values `\` becomes `\\`, `=`
//! becomes `\=`, and CR and LF become `\r` and `\n`. A header field cannot
//! hold a line break at all, so there CR, LF and other ASCII control
//! characters become a space (the exact value is in the extensions); in
//! extension values C0 control characters other than tab, CR and LF
//! (Postgres text cannot hold NUL; the JSON of a row image escapes them
//! all) become U+FFFD. So no
//! value can end the record, add a header field or start a key.
//!
//! Fields use CEF's dictionary where one fits (`rt`, `externalId`, `cat`,
//! `act`, `outcome`, `suser`, `src`, `spt`, `dpid`, `reason`,
//! `requestClientApplication`, `dvchost`), six labelled custom strings
//! (`cs1` appUser, `cs2` sql, `cs3` database, `cs4` table, `cs5` sqlstate,
//! `cs6` hash) and three labelled numbers (`cn1` seq, `cn2` rows, `cn3`
//! durationMicros); the rest are vendor extension keys `pgtrail…`
//! (`pgtrailPk`, `pgtrailOld`, `pgtrailNew`, … with JSON values).

use pgtrail_core::Event;
use pgtrail_store::checkpoint::Checkpoint;

use super::{millis, summary, Level, Outcome, VERSION};

/// One event as one CEF line (no newline).
pub(crate) fn event(e: &Event, host: &str, out: &mut Vec<u8>) {
    let signature = match e.operation.as_deref() {
        Some(operation) => format!("{}:{}", e.kind.as_str(), operation),
        None => e.kind.as_str().to_string(),
    };
    header(
        out,
        &super::cut(&signature, 100),
        &summary(e),
        severity(Level::of(e)),
    );
    let mut x = Extensions { out, first: true };
    x.int("rt", Some(millis(&e.captured_at)));
    x.str("externalId", Some(&e.id.to_string()));
    x.str("cat", Some(e.kind.as_str()));
    x.str("act", e.operation.as_deref());
    x.str("outcome", Some(Outcome::of(e).as_str()));
    x.str("suser", e.db_user.as_deref());
    x.str("src", e.client_addr.as_deref());
    x.int("spt", e.client_port.map(i64::from));
    x.int("dpid", e.backend_pid.map(i64::from));
    x.str("reason", e.error.as_deref());
    x.str("requestClientApplication", e.application_name.as_deref());
    x.str("dvchost", Some(host).filter(|h| *h != "-"));
    x.labelled("cs1", "appUser", e.app_user.as_deref());
    x.labelled("cs2", "sql", e.sql.as_deref());
    x.labelled("cs3", "database", e.database.as_deref());
    x.labelled("cs4", "table", e.qualified_table().as_deref());
    x.labelled("cs5", "sqlstate", e.sqlstate.as_deref());
    x.labelled("cs6", "hash", e.hash.as_deref());
    x.labelled_int("cn1", "seq", e.seq);
    x.labelled_int("cn2", "rows", e.rows);
    x.labelled_int("cn3", "durationMicros", e.duration_us);
    x.str("pgtrailSource", Some(e.source.as_str()));
    x.str("pgtrailSessionId", e.session_id.as_deref());
    x.json_object("pgtrailContext", e.context.as_ref());
    if let Some(provenance) = &e.provenance {
        if let Ok(json) = serde_json::to_string(provenance) {
            x.str("pgtrailProvenance", Some(&json));
        }
    }
    x.list("pgtrailObjects", &e.objects);
    x.json_object("pgtrailPk", e.pk.as_ref());
    x.json_object("pgtrailOld", e.old.as_ref());
    x.json_object("pgtrailNew", e.new.as_ref());
    x.list("pgtrailChanged", &e.changed);
    x.list("pgtrailPartial", &e.partial);
    if let Some(params) = &e.params {
        x.str(
            "pgtrailParams",
            Some(&pgtrail_core::json::array_to_string(params)),
        );
    }
    x.str("pgtrailClass", e.class.as_deref());
    x.str("pgtrailCommandTag", e.command_tag.as_deref());
    x.int("pgtrailXid", e.xid);
    x.str("pgtrailLsn", e.lsn.as_deref());
    if let Some(at) = &e.committed_at {
        x.str(
            "pgtrailCommittedAt",
            Some(&pgtrail_core::time::format_micros(at)),
        );
    }
    x.int("pgtrailTxSeq", e.tx_seq);
    x.str("pgtrailPrevHash", e.prev_hash.as_deref());
}

/// A checkpoint as one CEF line: signature `checkpoint`, the signed note
/// in `pgtrailNote` (its line breaks escaped as `\n`).
pub(crate) fn checkpoint(c: &Checkpoint, host: &str, out: &mut Vec<u8>) {
    header(
        out,
        "checkpoint",
        &format!("chain checkpoint at event {}", c.seq),
        severity(Level::Info),
    );
    let mut x = Extensions { out, first: true };
    x.int("rt", Some(millis(&c.created_at)));
    x.str("externalId", Some(&format!("checkpoint-{}", c.seq)));
    x.str("cat", Some("checkpoint"));
    x.str("act", Some(c.kind.as_str()));
    x.str("dvchost", Some(host).filter(|h| *h != "-"));
    x.labelled("cs6", "hash", Some(&c.hash));
    x.labelled_int("cn1", "seq", Some(c.seq));
    x.int("pgtrailCount", Some(c.count));
    x.str("pgtrailPublicKey", c.public_key.as_deref());
    x.str("pgtrailSignature", c.signature.as_deref());
    x.str("pgtrailNote", c.note.as_deref());
    x.str("pgtrailFrontier", c.frontier.as_deref());
}

/// CEF severity 0–10: 3 informational, 5 a failed statement, 7 a failed
/// login or a quarantined value, 9 an alarm.
fn severity(level: Level) -> u8 {
    match level {
        Level::Info => 3,
        Level::Low => 5,
        Level::Medium => 7,
        Level::High => 9,
    }
}

fn header(out: &mut Vec<u8>, signature: &str, name: &str, severity: u8) {
    out.extend_from_slice(b"CEF:0|pgtrail|pgtrail|");
    header_field(out, VERSION);
    out.push(b'|');
    header_field(out, signature);
    out.push(b'|');
    header_field(out, name);
    out.push(b'|');
    out.extend_from_slice(severity.to_string().as_bytes());
    out.push(b'|');
}

/// A header field: `\` and `|` escaped, control characters a space.
fn header_field(out: &mut Vec<u8>, text: &str) {
    let mut buf = [0u8; 4];
    for c in text.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '|' => out.extend_from_slice(b"\\|"),
            c if c.is_ascii_control() => out.push(b' '),
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
}

/// An extension value: `\`, `=`, CR and LF escaped; other C0 control
/// characters (but tab) U+FFFD.
fn value(out: &mut Vec<u8>, text: &str) {
    let mut buf = [0u8; 4];
    for c in text.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '=' => out.extend_from_slice(b"\\="),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.push(b'\t'),
            c if c < ' ' => out.extend_from_slice("\u{fffd}".as_bytes()),
            c => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
}

/// The extension part: `key=value` pairs separated by spaces.
struct Extensions<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl Extensions<'_> {
    fn str(&mut self, key: &str, text: Option<&str>) {
        let Some(text) = text else { return };
        if !self.first {
            self.out.push(b' ');
        }
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'=');
        value(self.out, text);
    }

    fn int(&mut self, key: &str, n: Option<i64>) {
        self.str(key, n.map(|n| n.to_string()).as_deref());
    }

    fn labelled(&mut self, key: &str, label: &str, text: Option<&str>) {
        if text.is_some() {
            self.str(key, text);
            self.str(&format!("{key}Label"), Some(label));
        }
    }

    fn labelled_int(&mut self, key: &str, label: &str, n: Option<i64>) {
        self.labelled(key, label, n.map(|n| n.to_string()).as_deref());
    }

    fn list(&mut self, key: &str, items: &[String]) {
        if !items.is_empty() {
            let mut json = Vec::new();
            super::json::strings(&mut json, items);
            self.str(key, Some(&String::from_utf8_lossy(&json)));
        }
    }

    fn json_object(
        &mut self,
        key: &str,
        object: Option<&serde_json::Map<String, serde_json::Value>>,
    ) {
        if let Some(object) = object {
            self.str(key, Some(&pgtrail_core::json::object_to_string(object)));
        }
    }
}
