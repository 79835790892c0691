//! Alarms: conditions that may leave the trail incomplete (capture switched
//! off, a slot lost, pending rows deleted, a gap), as `pgtrail status
//! --check` reports them and as `alarm` events record them.
//!
//! An alarm event says what happened in `operation` (the code, one of the
//! constants below), names the table where there is one, and carries the
//! explanation in `context.alarm`. The trigger path raises some in SQL, in
//! the transaction that caused them (`pgtrail.raise_alarm`); the sealer
//! gives those the same form.

use serde::Serialize;
use serde_json::Value;

use crate::event::JsonObject;
use crate::{Event, Kind, Source};

/// A capture trigger of a tracked table is missing.
pub const CAPTURE_TRIGGER_DROPPED: &str = "capture_trigger_dropped";
/// A capture trigger of a tracked table is disabled (or fires only in replica mode).
pub const CAPTURE_TRIGGER_DISABLED: &str = "capture_trigger_disabled";
/// A DDL event trigger of pgtrail is disabled or missing.
pub const EVENT_TRIGGER_DISABLED: &str = "event_trigger_disabled";
/// A table of an auto-tracked schema is not tracked.
pub const TABLE_NOT_TRACKED: &str = "table_not_tracked";
/// Captured rows were deleted before they were sealed.
pub const PENDING_ROWS_DELETED: &str = "pending_rows_deleted";
/// The replication slot does not exist.
pub const SLOT_DROPPED: &str = "slot_dropped";
/// The replication slot lost WAL it needed (invalidated).
pub const SLOT_INVALIDATED: &str = "slot_invalidated";
/// The replication slot is close to `max_slot_wal_keep_size`.
pub const SLOT_NEAR_LIMIT: &str = "slot_near_wal_limit";
/// The publication is missing, or does not publish every kind of change.
pub const PUBLICATION_INCOMPLETE: &str = "publication_incomplete";
/// A table left the publication.
pub const TABLE_NOT_PUBLISHED: &str = "table_not_published";
/// The chain's newest events are not numbered without gaps.
pub const SEQ_GAP: &str = "seq_gap";
/// Row changes reached the WAL without pgtrail's actor message: who made
/// them is unknown (logical replication with the context trigger).
pub const ACTOR_MISSING: &str = "actor_missing";
/// Roles other than superusers and pgtrail's own may execute
/// `pg_logical_emit_message`, so they could forge actors and DDL events.
pub const MESSAGE_EMITTERS: &str = "message_emitters";
/// The pipeline's on-disk spool was full with `fail_open`: batches were
/// dropped instead of stored (how many and when are in the explanation).
pub const SPOOL_DROPPED: &str = "spool_dropped";
/// With the proxy and trigger capture both running, a row changed by a
/// server backend the proxy never opened: a write around the proxy.
pub const WRITE_BYPASSED_PROXY: &str = "write_bypassed_proxy";

/// Every code above: what `/metrics` names an alarm by (`alarm` label; a
/// code not listed here counts as `other`, so no label comes from data).
pub const ALL: [&str; 15] = [
    CAPTURE_TRIGGER_DROPPED,
    CAPTURE_TRIGGER_DISABLED,
    EVENT_TRIGGER_DISABLED,
    TABLE_NOT_TRACKED,
    PENDING_ROWS_DELETED,
    SLOT_DROPPED,
    SLOT_INVALIDATED,
    SLOT_NEAR_LIMIT,
    PUBLICATION_INCOMPLETE,
    TABLE_NOT_PUBLISHED,
    SEQ_GAP,
    ACTOR_MISSING,
    MESSAGE_EMITTERS,
    SPOOL_DROPPED,
    WRITE_BYPASSED_PROXY,
];

/// One condition that may make the trail incomplete.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Alarm {
    /// What it is: one of this module's constants.
    pub code: String,
    /// The schema of the table concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The table concerned, or the slot or publication's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// What happened and what it means, for people.
    pub message: String,
}

impl Alarm {
    /// An alarm not about one table.
    pub fn new(code: &str, message: impl Into<String>) -> Alarm {
        Alarm {
            code: code.to_string(),
            schema: None,
            table: None,
            message: message.into(),
        }
    }

    /// An alarm about `schema.table`.
    pub fn on_table(code: &str, schema: &str, table: &str, message: impl Into<String>) -> Alarm {
        Alarm {
            code: code.to_string(),
            schema: Some(schema.to_string()),
            table: Some(table.to_string()),
            message: message.into(),
        }
    }

    /// What stays the same while the condition lasts (the message may
    /// change, e.g. with a lag): an alarm is recorded once per onset.
    pub fn key(&self) -> (String, Option<String>, Option<String>) {
        (self.code.clone(), self.schema.clone(), self.table.clone())
    }

    /// The `alarm` event recording it, stamped now.
    pub fn event(&self, source: Source) -> Event {
        let mut event = Event::new(source, Kind::Alarm);
        event.operation = Some(self.code.clone());
        event.schema = self.schema.clone();
        event.table = self.table.clone();
        event.context = Some(context(&self.message));
        event
    }
}

/// The context of an alarm event: its explanation under `alarm`.
pub fn context(message: &str) -> JsonObject {
    JsonObject::from_iter([("alarm".to_string(), Value::from(message))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alarm_event_names_its_code_table_and_explanation() {
        let alarm = Alarm::on_table(CAPTURE_TRIGGER_DROPPED, "public", "orders", "gone");
        let event = alarm.event(Source::Trigger);
        assert_eq!(event.kind, Kind::Alarm);
        assert_eq!(event.operation.as_deref(), Some("capture_trigger_dropped"));
        assert_eq!(event.table.as_deref(), Some("orders"));
        assert_eq!(event.context.clone().expect("context")["alarm"], "gone");
    }

    #[test]
    fn the_onset_key_ignores_the_message() {
        let a = Alarm::new(SLOT_NEAR_LIMIT, "10 MB left");
        let b = Alarm::new(SLOT_NEAR_LIMIT, "9 MB left");
        assert_eq!(a.key(), b.key());
    }
}
