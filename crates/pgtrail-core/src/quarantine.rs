//! Quarantine: an event a store cannot keep as captured becomes a
//! `quarantine` event that it can keep, so capture goes on and nothing is
//! lost.
//!
//! The quarantine event takes the original's id (a retried append is still
//! deduplicated), source, capture time and position, and says in `context`:
//!
//! - `reason`: why the store refused the original;
//! - `quarantined_kind`: the original's kind;
//! - `source_position`: where it came from (`lsn X/X` for logical
//!   replication; `xid N, row M` — the transaction and the order in it — for
//!   trigger capture, whose event id also derives from the inbox row);
//! - `raw_base64`: the original's canonical JSON (without seal fields),
//!   base64: every byte the capture path produced, NUL included.
//!
//! Only fields that never carry what a store refuses (names Postgres gave,
//! numbers, times) are copied over; the rest is in `raw_base64`.

use base64::Engine as _;
use serde_json::Value;

use crate::canonical::CanonicalBody;
use crate::event::JsonObject;
use crate::{Event, Kind};

/// The quarantine event standing for `event`, which a store cannot keep
/// because of `reason`.
pub fn quarantine(event: &Event, reason: &str) -> Event {
    let raw = CanonicalBody::of(event);
    let mut q = Event::at(event.source, Kind::Quarantine, event.captured_at);
    q.id = event.id;
    let clean = |text: &Option<String>| text.clone().filter(|t| !t.contains('\0'));
    q.database = clean(&event.database);
    q.schema = clean(&event.schema);
    q.table = clean(&event.table);
    q.operation = clean(&event.operation);
    q.xid = event.xid;
    q.lsn = clean(&event.lsn);
    q.committed_at = event.committed_at;
    q.tx_seq = event.tx_seq;
    let mut context = JsonObject::new();
    context.insert("reason".into(), Value::from(reason.replace('\0', "\\0")));
    context.insert("quarantined_kind".into(), Value::from(event.kind.as_str()));
    if let Some(position) = position(event) {
        context.insert("source_position".into(), Value::from(position));
    }
    context.insert(
        "raw_base64".into(),
        Value::from(base64::engine::general_purpose::STANDARD.encode(raw.as_str())),
    );
    q.context = Some(context);
    q
}

/// The original event's canonical JSON (without seal fields), from a
/// quarantine event's `raw_base64`.
pub fn raw(quarantined: &Event) -> Option<Vec<u8>> {
    let encoded = quarantined.context.as_ref()?.get("raw_base64")?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
}

fn position(event: &Event) -> Option<String> {
    if let Some(lsn) = event.lsn.as_deref().filter(|lsn| !lsn.contains('\0')) {
        return Some(format!("lsn {lsn}"));
    }
    match (event.xid, event.tx_seq) {
        (Some(xid), Some(row)) => Some(format!("xid {xid}, row {row}")),
        (Some(xid), None) => Some(format!("xid {xid}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{json, Source};

    #[test]
    fn a_quarantine_event_keeps_every_byte_of_the_original() {
        let mut event = Event::new(Source::Cdc, Kind::RowChange);
        event.app_user = Some("mallory\0admin".into());
        event.table = Some("t".into());
        event.lsn = Some("0/16B3748".into());
        event.new = json::parse(r#"{"doc": "a\u0000b"}"#)
            .expect("json")
            .as_object()
            .cloned();
        let q = quarantine(&event, "text cannot hold NUL: app_user");
        assert_eq!(q.id, event.id);
        assert_eq!(q.kind, Kind::Quarantine);
        assert_eq!(q.table.as_deref(), Some("t"));
        assert_eq!(q.app_user, None);
        assert!(q.new.is_none());
        let context = q.context.as_ref().expect("context");
        assert_eq!(context["source_position"], "lsn 0/16B3748");
        assert_eq!(context["quarantined_kind"], "row_change");
        let raw = raw(&q).expect("raw bytes");
        assert_eq!(raw, CanonicalBody::of(&event).as_str().as_bytes());
        let back: Event = serde_json::from_slice(&raw).expect("the original event");
        assert_eq!(back, event.clone().unsealed());
        assert!(!CanonicalBody::of(&q).as_str().contains('\0'));
    }
}
