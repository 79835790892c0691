//! From an inbox row to an [`Event`]: everything the triggers deferred.
//!
//! The trigger stores what only it can see (the row images, the session
//! settings as read, the key when the image does not hold its text); the
//! drainer derives the rest here, off the write path: the event id,
//! `changed`, the key's values from the image, "unset" for empty settings,
//! the commit time and the order inside the transaction. Pure functions,
//! tested without a database. Rows written by older triggers (before
//! migration 3: a built key, NULL for unset settings) read the same.

use chrono::{DateTime, Utc};
use pgtrail_core::event::{Channel, JsonObject};
use pgtrail_core::{json, Event, Kind, Source};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Context key set on events of tables without a primary key: their `pk`
/// is the whole row.
pub const FULL_ROW_IDENTITY_KEY: &str = "pgtrail_identity";

/// Where the captured rows waiting to be sealed are read, for an install at
/// `version`: from migration 4 on, the view `pgtrail.pending` adds the rows
/// of the shape tables (see sql/v4_shaped_row_capture.sql) to the inbox's.
pub(crate) fn pending_rows(version: i32) -> &'static str {
    if version >= 4 {
        "pgtrail.pending"
    } else {
        "pgtrail.inbox"
    }
}

/// One row of `pgtrail.inbox`, with what the drainer adds.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRow {
    /// The row's id (order inside its transaction).
    pub id: i64,
    /// The writing transaction (64-bit).
    pub xid: i64,
    /// When the statement ran.
    pub captured_at: DateTime<Utc>,
    /// `r` (row change), `d` (DDL) or `a` (alarm).
    pub kind: u8,
    /// INSERT/UPDATE/DELETE/TRUNCATE or the DDL command tag.
    pub operation: String,
    /// Schema of the table or object.
    pub schema: Option<String>,
    /// Table (or relation) name.
    pub table: Option<String>,
    /// Whether `pk` is the whole row (no primary key).
    pub keyless: bool,
    /// Key columns to text; or the names of the key columns, read from the
    /// image; or, for keyless tables, the row or nothing (then the image is
    /// the key). See [`to_event`].
    pub pk: Option<Value>,
    /// Old image (UPDATE: changed columns only).
    pub old: Option<Value>,
    /// New image (UPDATE: changed columns only).
    pub new: Option<Value>,
    /// `session_user`.
    pub db_user: Option<String>,
    /// The role set with SET ROLE, when the trigger ran.
    pub role: Option<String>,
    /// Application user from the session settings.
    pub app_user: Option<String>,
    /// Application context setting, as text (JSON expected).
    pub context: Option<String>,
    /// Client address (host part).
    pub client_addr: Option<String>,
    /// Client port.
    pub client_port: Option<i32>,
    /// `application_name`.
    pub application_name: Option<String>,
    /// Backend process id.
    pub backend_pid: Option<i32>,
    /// Statement text, when captured.
    pub sql: Option<String>,
    /// DDL: object type and identity.
    pub detail: Option<Value>,
    /// Commit time of the transaction, when known.
    pub committed_at: Option<DateTime<Utc>>,
    /// Position inside the transaction, from 0.
    pub tx_seq: i64,
    /// Members that a `json` value in `pk`, `old`, `new` or `detail` repeated
    /// (the column, and the earlier value the last one replaced): the event
    /// records them in its context under [`DUPLICATE_KEYS_KEY`].
    pub duplicates: Vec<(&'static str, json::Duplicate)>,
}

/// Context key listing what the captured values repeated: for each image,
/// the members whose key a later member repeated (`path`, a JSON Pointer
/// into the image, and the `dropped` value). A `json` column may repeat a
/// key; the event, like `jsonb`, keeps the last value, and this keeps the
/// others. Repeated keys in the context setting itself are listed under
/// `context`.
pub const DUPLICATE_KEYS_KEY: &str = "pgtrail_duplicate_keys";

/// The event id of an inbox row: a UUIDv7 whose time is the capture time
/// and whose other bits come from the install id and the row id. The same
/// row always gets the same id, so a seal retried after a crash is
/// deduplicated by the store instead of recorded twice.
pub fn event_id(install_id: &Uuid, inbox_id: i64, captured_at: DateTime<Utc>) -> Uuid {
    let digest = Sha256::new()
        .chain_update(install_id.as_bytes())
        .chain_update(inbox_id.to_be_bytes())
        .finalize();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(captured_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

/// The event an inbox row records.
pub fn to_event(row: InboxRow, install_id: &Uuid, database: &str) -> Result<Event, String> {
    let kind = match row.kind {
        b'r' => Kind::RowChange,
        b'd' => Kind::Ddl,
        b'a' => Kind::Alarm,
        other => return Err(format!("unknown kind '{}'", char::from(other))),
    };
    // Row-mode triggers store settings as read: an empty setting is unset,
    // and role 'none' means no SET ROLE (a role cannot be named so).
    let role = row.role.filter(|role| role != "none");
    let app_user = row.app_user.filter(|user| !user.is_empty());
    let context_text = row.context.filter(|context| !context.is_empty());
    let context_claimed = context_text.is_some();

    let mut event = Event::at(Source::Trigger, kind, row.captured_at);
    event.id = event_id(install_id, row.id, row.captured_at);
    event.db_user = row.db_user.clone();
    event.app_user = app_user;
    event.client_addr = row.client_addr;
    event.client_port = row.client_port;
    event.application_name = row.application_name;
    event.backend_pid = row.backend_pid;
    event.database = Some(database.to_string());
    event.schema = row.schema;
    event.table = row.table;
    event.operation = Some(row.operation.clone());
    event.sql = row.sql;
    event.xid = Some(row.xid);
    event.committed_at = row.committed_at;
    event.tx_seq = Some(row.tx_seq);

    let mut duplicates = row.duplicates;
    let mut context = match context_text.as_deref().map(json::parse_captured) {
        None => JsonObject::new(),
        Some(Ok(json::Parsed {
            value: Value::Object(object),
            duplicates: repeated,
        })) => {
            duplicates.extend(repeated.into_iter().map(|d| ("context", d)));
            object
        }
        // Not a JSON object: keep what the application said, as text.
        Some(_) => JsonObject::from_iter([(
            "value".to_string(),
            Value::String(context_text.unwrap_or_default()),
        )]),
    };
    if !duplicates.is_empty() {
        let mut by_column = JsonObject::new();
        for (column, duplicate) in duplicates {
            let entry = by_column
                .entry(column)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                let mut member = JsonObject::new();
                member.insert("path".into(), Value::String(duplicate.path));
                member.insert("dropped".into(), duplicate.dropped);
                list.push(Value::Object(member));
            }
        }
        context.insert(DUPLICATE_KEYS_KEY.into(), Value::Object(by_column));
    }
    if role.is_some() && role != row.db_user {
        context.insert("current_user".into(), Value::from(role));
    }

    match kind {
        // Raised by pgtrail.raise_alarm: the code is the operation, the
        // explanation is in detail (see pgtrail_core::alarm).
        Kind::Alarm => {
            if let Some(Value::String(message)) =
                row.detail.as_ref().and_then(|detail| detail.get("message"))
            {
                context.extend(pgtrail_core::alarm::context(message));
            }
        }
        Kind::Ddl => {
            event.command_tag = Some(row.operation);
            if let Some(Value::Object(detail)) = row.detail {
                if let Some(Value::String(identity)) = detail.get("object_identity") {
                    event.objects = vec![identity.clone()];
                }
                if let Some(object_type) = detail.get("object_type") {
                    context.insert("object_type".into(), object_type.clone());
                }
            }
        }
        _ => {
            event.old = object(row.old, row.id, "old")?;
            event.new = object(row.new, row.id, "new")?;
            let images = (event.old.as_ref(), event.new.as_ref());
            let (pk, full_row) = key(row.id, row.keyless, &row.operation, row.pk, images)?;
            event.pk = pk;
            if row.keyless || full_row {
                context.insert(FULL_ROW_IDENTITY_KEY.into(), Value::from("full_row"));
            }
            if row.operation == "UPDATE" {
                keep_changed(&mut event.old, &mut event.new);
                let mut changed: Vec<String> = event
                    .new
                    .iter()
                    .chain(event.old.iter())
                    .flat_map(|image| image.keys().cloned())
                    .collect();
                changed.sort();
                changed.dedup();
                event.changed = changed;
            }
        }
    }
    event.context = (!context.is_empty()).then_some(context);
    // The capture function read the session fields itself; the settings
    // are the application's claims (a sqlcommenter comment adds its own,
    // in seal.rs).
    event.vouch_server_fields();
    if event.app_user.is_some() {
        event.claim("app_user", Channel::Setting);
    }
    if context_claimed {
        event.claim("context", Channel::Setting);
    }
    if event.application_name.is_some() {
        event.claim("application_name", Channel::Setting);
    }
    Ok(event)
}

/// The key of a row change, from what the trigger stored in `pk`:
///
/// - an object: the key itself (statement mode, row mode before migration
///   3, and row-mode keys whose text the image does not hold);
/// - an array of column names: the key columns, read from the image (the
///   new row, or the old one of a DELETE), values as text. Should one be
///   missing (a key column renamed after tracking, before `pgtrail track`
///   ran again), the whole row identifies the change, as for a table
///   without a key, rather than stopping the drainer;
/// - nothing, for a table without a key: the whole row (the old one of an
///   UPDATE or DELETE, the new one of an INSERT), values as text.
///
/// Returns the key and whether it is the whole row. Called before the
/// UPDATE images are reduced to the changed columns.
fn key(
    id: i64,
    keyless: bool,
    operation: &str,
    pk: Option<Value>,
    (old, new): (Option<&JsonObject>, Option<&JsonObject>),
) -> Result<(Option<JsonObject>, bool), String> {
    let as_text_object = |image: &JsonObject| -> JsonObject {
        image
            .iter()
            .map(|(column, value)| (column.clone(), as_text(value)))
            .collect()
    };
    match pk {
        Some(Value::Object(pk)) if keyless => Ok((Some(as_text_object(&pk)), true)),
        Some(Value::Object(pk)) => Ok((Some(pk), false)),
        Some(Value::Array(columns)) => {
            let image = if operation == "DELETE" { old } else { new };
            let image =
                image.ok_or_else(|| format!("row {id}: key columns given without a row image"))?;
            let mut pk = JsonObject::new();
            for column in &columns {
                let name = column
                    .as_str()
                    .ok_or_else(|| format!("row {id}: key column {column} is not a name"))?;
                match image.get(name) {
                    Some(value) => pk.insert(name.to_string(), as_text(value)),
                    None => return Ok((Some(as_text_object(image)), true)),
                };
            }
            Ok((Some(pk), false))
        }
        None | Some(Value::Null) if keyless => {
            let image = if operation == "INSERT" { new } else { old };
            Ok((image.map(as_text_object), true))
        }
        None | Some(Value::Null) => Ok((None, false)),
        Some(other) => Err(format!(
            "row {id}: pk is neither an object nor key column names: {other}"
        )),
    }
}

/// Drops the columns whose value is the same in both images: row-mode
/// triggers store whole rows (cheaper for them), statement-mode triggers
/// only the changed columns (then nothing is dropped).
fn keep_changed(old: &mut Option<JsonObject>, new: &mut Option<JsonObject>) {
    let (Some(old), Some(new)) = (old.as_mut(), new.as_mut()) else {
        return;
    };
    let same: Vec<String> = old
        .iter()
        .filter(|(column, value)| new.get(*column).is_some_and(|new| json::eq(new, value)))
        .map(|(column, _)| column.clone())
        .collect();
    for column in same {
        old.remove(&column);
        new.remove(&column);
    }
}

fn object(value: Option<Value>, id: i64, what: &str) -> Result<Option<JsonObject>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(other) => Err(format!("row {id}: {what} is not a JSON object: {other}")),
    }
}

/// A value as key text, the way events store keys (written with core's
/// writer: a key column may hold deep JSON).
fn as_text(value: &Value) -> Value {
    match value {
        Value::Null => Value::Null,
        Value::String(text) => Value::String(text.clone()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => Value::String(json::to_string(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(operation: &str) -> InboxRow {
        InboxRow {
            id: 7,
            xid: 1234,
            captured_at: "2026-01-02T03:04:05.123456Z".parse().expect("time"),
            kind: b'r',
            operation: operation.into(),
            schema: Some("public".into()),
            table: Some("users".into()),
            keyless: false,
            pk: Some(json!({"id": "1"})),
            old: None,
            new: None,
            db_user: Some("app".into()),
            role: Some("app".into()),
            app_user: Some("alice@example.com".into()),
            context: Some(r#"{"request_id": "r-1"}"#.into()),
            client_addr: Some("127.0.0.1".into()),
            client_port: Some(5000),
            application_name: Some("web".into()),
            backend_pid: Some(42),
            sql: None,
            detail: None,
            committed_at: None,
            tx_seq: 0,
            duplicates: Vec::new(),
        }
    }

    #[test]
    fn update_lists_changed_columns_from_the_images() {
        let mut r = row("UPDATE");
        r.old = Some(json!({"name": "Bob", "email": "b@x"}));
        r.new = Some(json!({"name": "Robert", "email": "r@x"}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.changed, vec!["email", "name"]);
        assert_eq!(
            e.pk,
            Some(json!({"id": "1"}).as_object().cloned().expect("object"))
        );
        assert_eq!(e.app_user.as_deref(), Some("alice@example.com"));
        let provenance = e.provenance.clone().expect("provenance");
        assert!(provenance.vouched.contains(&"db_user".to_string()));
        assert_eq!(provenance.channels("app_user"), [Channel::Setting]);
        assert_eq!(provenance.channels("context"), [Channel::Setting]);
        assert_eq!(e.context.clone().expect("context")["request_id"], "r-1");
    }

    #[test]
    fn whole_row_update_images_are_reduced_to_the_changed_columns() {
        let mut r = row("UPDATE");
        r.old = Some(json!({"id": 1, "name": "Bob", "plan": "free", "score": 1.50}));
        r.new = Some(json!({"id": 1, "name": "Bob", "plan": "pro", "score": 1.50}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.changed, vec!["plan"]);
        assert_eq!(e.old, json!({"plan": "free"}).as_object().cloned());
        assert_eq!(e.new, json!({"plan": "pro"}).as_object().cloned());
    }

    #[test]
    fn keyless_rows_use_the_row_as_text_key_and_say_so() {
        let mut r = row("DELETE");
        r.keyless = true;
        r.pk = Some(json!({"a": 1, "b": "x", "c": null}));
        r.old = r.pk.clone();
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(
            e.pk.clone().expect("pk"),
            json!({"a": "1", "b": "x", "c": null})
                .as_object()
                .cloned()
                .expect("object")
        );
        assert_eq!(
            e.context.clone().expect("context")[FULL_ROW_IDENTITY_KEY],
            "full_row"
        );
    }

    #[test]
    fn key_column_names_are_read_from_the_new_image_or_the_old_one_of_a_delete() {
        let mut r = row("UPDATE");
        r.pk = Some(json!(["org", "member"]));
        r.old = Some(json!({"org": "acme", "member": 7, "role": "viewer"}));
        r.new = Some(json!({"org": "acme", "member": 8, "role": "viewer"}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(
            e.pk,
            json!({"org": "acme", "member": "8"}).as_object().cloned()
        );
        assert_eq!(e.changed, vec!["member"]);

        let mut r = row("DELETE");
        r.pk = Some(json!(["id"]));
        r.old = Some(serde_json::from_str(r#"{"id": 12.50, "x": null}"#).expect("json"));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.pk, json!({"id": "12.50"}).as_object().cloned());
    }

    #[test]
    fn a_key_column_missing_from_the_image_falls_back_to_the_whole_row_and_says_so() {
        let mut r = row("INSERT");
        r.pk = Some(json!(["id"]));
        r.new = Some(json!({"account_id": 1, "name": "x"}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(
            e.pk,
            json!({"account_id": "1", "name": "x"}).as_object().cloned()
        );
        assert_eq!(
            e.context.clone().expect("context")[FULL_ROW_IDENTITY_KEY],
            "full_row"
        );
    }

    #[test]
    fn keyless_rows_without_a_stored_key_use_the_image_the_old_row_of_an_update() {
        let mut r = row("UPDATE");
        r.keyless = true;
        r.pk = None;
        r.old = Some(json!({"at": "2026-01-01", "n": 1}));
        r.new = Some(json!({"at": "2026-01-01", "n": 2}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(
            e.pk,
            json!({"at": "2026-01-01", "n": "1"}).as_object().cloned()
        );
        assert_eq!(e.new, json!({"n": 2}).as_object().cloned());

        let mut r = row("INSERT");
        r.keyless = true;
        r.pk = None;
        r.new = Some(json!({"n": 3}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.pk, json!({"n": "3"}).as_object().cloned());
    }

    #[test]
    fn settings_stored_as_read_mean_unset_when_empty() {
        let mut r = row("INSERT");
        r.app_user = Some(String::new());
        r.context = Some(String::new());
        r.role = Some("none".into());
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.app_user, None);
        assert_eq!(e.context, None);
    }

    #[test]
    fn a_non_json_context_is_kept_as_text_and_a_switched_role_is_noted() {
        let mut r = row("INSERT");
        r.context = Some("checkout".into());
        r.role = Some("owner".into());
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        let context = e.context.clone().expect("context");
        assert_eq!(context["value"], "checkout");
        assert_eq!(context["current_user"], "owner");
    }

    #[test]
    fn event_ids_are_stable_per_row_and_differ_between_rows_and_installs() {
        let at = row("INSERT").captured_at;
        let install = Uuid::from_u128(1);
        assert_eq!(event_id(&install, 1, at), event_id(&install, 1, at));
        assert_ne!(event_id(&install, 1, at), event_id(&install, 2, at));
        assert_ne!(
            event_id(&install, 1, at),
            event_id(&Uuid::from_u128(2), 1, at)
        );
        assert_eq!(event_id(&install, 1, at).get_version_num(), 7);
    }

    #[test]
    fn ddl_rows_name_their_object() {
        let mut r = row("CREATE TABLE");
        r.kind = b'd';
        r.detail = Some(json!({"object_type": "table", "object_identity": "public.orders"}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.kind, Kind::Ddl);
        assert_eq!(e.objects, vec!["public.orders"]);
        assert_eq!(e.command_tag.as_deref(), Some("CREATE TABLE"));
    }

    #[test]
    fn alarm_rows_keep_their_code_table_and_explanation() {
        let mut r = row("capture_trigger_dropped");
        r.kind = b'a';
        r.pk = None;
        r.detail = Some(json!({"message": "capture trigger gone"}));
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        assert_eq!(e.kind, Kind::Alarm);
        assert_eq!(e.operation.as_deref(), Some("capture_trigger_dropped"));
        assert_eq!(e.table.as_deref(), Some("users"));
        assert_eq!(e.db_user.as_deref(), Some("app"));
        let context = e.context.clone().expect("context");
        assert_eq!(context["alarm"], "capture trigger gone");
        assert_eq!(context["request_id"], "r-1", "the raiser's context stays");
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let mut r = row("INSERT");
        r.new = Some(
            serde_json::from_str(r#"{"amount": 12.50, "big": 123456789012345678901234567890}"#)
                .expect("json"),
        );
        let e = to_event(r, &Uuid::nil(), "db").expect("event");
        let text = serde_json::to_string(&e.new).expect("json");
        assert!(
            text.contains("12.50") && text.contains("123456789012345678901234567890"),
            "{text}"
        );
    }
}
