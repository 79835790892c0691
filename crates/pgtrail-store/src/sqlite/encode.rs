//! Turning an event into its row.
//!
//! The body column is the event's canonical JSON without the seal fields,
//! written once by `pgtrail_core::canonical::CanonicalBody`; the hash input
//! is those same bytes with `"prev_hash"` and `"seq"` spliced in, so only
//! that last cheap step depends on the chain and everything here runs
//! before the write transaction. The other columns are the event's indexed
//! fields, moved out of it rather than copied.

use pgtrail_core::canonical::CanonicalBody;
use pgtrail_core::filter::canonical_pk;
use pgtrail_core::Event;

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
    pub body: CanonicalBody,
}

/// Encodes `event` (its own seal fields ignored), taking its strings.
pub fn prepare(event: Event) -> Prepared {
    let body = CanonicalBody::of(&event);
    Prepared {
        id: *event.id.as_bytes(),
        captured_at: event.captured_at.timestamp_micros(),
        source: event.source.as_str(),
        kind: event.kind.as_str(),
        failed: event.failed(),
        pk: event.pk.as_ref().map(canonical_pk),
        operation: event.operation.map(|op| op.to_uppercase()),
        schema: event.schema,
        table: event.table,
        app_user: event.app_user,
        db_user: event.db_user,
        sql: event.sql,
        body,
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
        let prepared = prepare(e.clone());
        assert_eq!(prepared.operation.as_deref(), Some("UPDATE"));
        assert_eq!(prepared.pk, e.pk.as_ref().map(canonical_pk));
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
}
