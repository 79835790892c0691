//! The [`Event`]: one audited thing that happened, whichever path captured it.
//!
//! Field names and meanings are the contract in DESIGN.md and in
//! `schema/event.schema.json`; a test checks every serialized event against
//! that schema. Optional fields that are unset are left out of the JSON, so
//! the canonical form (and so the hash) does not depend on which fields a
//! capture path happens to know about.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A JSON object: key columns, row images, application context.
pub type JsonObject = Map<String, Value>;

/// Which capture path produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Written by pgtrail's triggers inside the audited database.
    Trigger,
    /// Decoded from logical replication (pgoutput).
    Cdc,
    /// Seen on the wire by the pgtrail proxy.
    Proxy,
    /// pgtrail's own HTTP server (`pgtrail serve`): its access records.
    Server,
    /// Brought in from an older audit record (`pgtrail import --from`: a
    /// pgAudit log, an audit table); `context.imported` says from where.
    Import,
}

/// What sort of thing an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An INSERT, UPDATE, DELETE or TRUNCATE of table rows.
    RowChange,
    /// A schema change (CREATE, ALTER, DROP, …).
    Ddl,
    /// One statement as the proxy saw it, reads and failures included.
    Statement,
    /// A session starting or ending, or failing to log in.
    Session,
    /// A row as it was when capture started (the baseline of its history).
    Snapshot,
    /// pgtrail noticed something that may make the trail incomplete: capture
    /// disabled or dropped, a slot lost, pending rows deleted, a gap.
    Alarm,
    /// A value a store could not take as captured: kept as raw bytes with the
    /// reason and the source position, so capture goes on and nothing is lost.
    Quarantine,
    /// Someone read the trail through the dashboard or the HTTP API: who,
    /// what they asked for, how many events it returned.
    Access,
}

/// The way an application's claim about its actor reached pgtrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A session setting: `SET`, `set_config`, startup options
    /// (`PGOPTIONS`), `ALTER ROLE … SET`.
    Setting,
    /// A sqlcommenter comment on the statement.
    Comment,
    /// What a client told pgtrail's proxy.
    Proxy,
    /// Read from an older audit record by `pgtrail import`: pgtrail saw
    /// none of it happen, so every actor field of an imported event is the
    /// record's claim.
    Import,
}

/// Actor fields the database server reports itself: an application cannot
/// choose them (short of logging in as someone else).
pub const SERVER_FIELDS: [&str; 4] = ["backend_pid", "client_addr", "client_port", "db_user"];

/// Who stands behind an event's actor fields: those the database server
/// vouches for, and those the application claims, with the channels each
/// claim came through. Readers show a claim as a claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Claimed fields (`app_user`, `context`, `application_name`) and the
    /// channels they came through, in the order applied. (Fields declared in
    /// key order: the canonical writer serializes this struct as it is.)
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claimed: BTreeMap<String, Vec<Channel>>,
    /// Fields the server reported to pgtrail's own code in the session (of
    /// [`SERVER_FIELDS`], those the event has), in key order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vouched: Vec<String>,
}

impl Provenance {
    /// The channels `field` was claimed through; empty when it was not.
    pub fn channels(&self, field: &str) -> &[Channel] {
        self.claimed.get(field).map_or(&[], Vec::as_slice)
    }
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The name used in JSON, in the stores and on the command line.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($text => Ok(Self::$variant),)*
                    other => Err(format!(
                        "unknown value '{other}' (expected one of: {})",
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

str_enum!(Channel { Setting => "setting", Comment => "comment", Proxy => "proxy", Import => "import" });
str_enum!(Source { Trigger => "trigger", Cdc => "cdc", Proxy => "proxy", Server => "server", Import => "import" });
str_enum!(Kind {
    RowChange => "row_change",
    Ddl => "ddl",
    Statement => "statement",
    Session => "session",
    Snapshot => "snapshot",
    Alarm => "alarm",
    Quarantine => "quarantine",
    Access => "access",
});

/// One audit event. See DESIGN.md, "The event".
///
/// Its JSON fields are read, written, copied, compared and dropped through
/// [`crate::json`], never recursing once per level: a row image may be
/// nested thousands of levels deep (hence the hand-written `Clone`,
/// `PartialEq` and `Drop` below).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    // --- identity
    /// UUIDv7, sortable by creation time; unique across stores.
    pub id: Uuid,
    /// Position in the store's chain, assigned by the store (gap-free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Which capture path produced the event.
    pub source: Source,
    /// What sort of thing the event records.
    pub kind: Kind,
    /// When pgtrail (or the trigger) captured it; microsecond precision.
    #[serde(with = "crate::time::micros")]
    pub captured_at: DateTime<Utc>,

    // --- actor
    /// The Postgres role (session user; `current_user` if it differs is in `context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_user: Option<String>,
    /// The application's end user, from `pgtrail.user` or a sqlcommenter comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_user: Option<String>,
    /// The client's address as Postgres saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The client's TCP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<i32>,
    /// `application_name` of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_name: Option<String>,
    /// The server process that ran the statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_pid: Option<i32>,
    /// Identifies one client session across its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// What the application supplied: request id, endpoint, tenant, …
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::fields::serialize_object",
        deserialize_with = "crate::json::fields::deserialize_object"
    )]
    pub context: Option<JsonObject>,
    /// Which actor fields the server vouches for and which the application
    /// claims, and how; absent on events from before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,

    // --- target
    /// Database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Schema of the table (or of the object, for DDL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Table name, unqualified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// INSERT/UPDATE/DELETE/TRUNCATE, or the command tag (SELECT, CREATE TABLE, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Every relation a statement touched, qualified (`schema.table`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,

    // --- row change
    /// Key columns and their values as text (composite keys: several entries).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::fields::serialize_object",
        deserialize_with = "crate::json::fields::deserialize_object"
    )]
    pub pk: Option<JsonObject>,
    /// The row before the change (UPDATE, DELETE).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::fields::serialize_object",
        deserialize_with = "crate::json::fields::deserialize_object"
    )]
    pub old: Option<JsonObject>,
    /// The row after the change (INSERT, UPDATE, snapshot).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::fields::serialize_object",
        deserialize_with = "crate::json::fields::deserialize_object"
    )]
    pub new: Option<JsonObject>,
    /// 16 random bytes (lowercase hex) that salt the commitments of the
    /// `pk`, `old` and `new` values: an event with a nonce is hashed as
    /// version 2 (`canonical::commit`), so a proof can withhold a value.
    /// Absent on events from before hash version 2; never in a proof file.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::json::fields::deserialize_nonce"
    )]
    pub nonce: Option<String>,
    /// Columns whose value changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
    /// Columns whose values the source could not see (never reported as NULL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial: Vec<String>,

    // --- statement
    /// Statement text, redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// Bound parameters, redacted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::json::fields::serialize_params",
        deserialize_with = "crate::json::fields::deserialize_params"
    )]
    pub params: Option<Vec<Value>>,
    /// The statement's class in pgAudit's vocabulary (`READ`, `WRITE`,
    /// `FUNCTION`, `ROLE`, `DDL`, `MISC`, `MISC_SET`, or `UNKNOWN` when the
    /// parser rejected the text); an EXECUTE is classed by what it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// The command tag the server returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_tag: Option<String>,
    /// Rows returned or affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// How long the statement ran, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<i64>,
    /// SQLSTATE of a failed statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    /// Error message of a failed statement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,

    // --- transaction
    /// Transaction id (64-bit, epoch included where known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<i64>,
    /// WAL position of the change or commit, as `X/X`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// When the transaction committed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::micros_opt"
    )]
    pub committed_at: Option<DateTime<Utc>>,
    /// Order of the event inside its transaction, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_seq: Option<i64>,

    // --- seal
    /// Hash of the previous event in the store's chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<String>,
    /// SHA-256 (hex) of the canonical JSON of this event without `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl Clone for Event {
    fn clone(&self) -> Self {
        let object = |o: &Option<JsonObject>| o.as_ref().map(crate::json::clone_object);
        // Destructured without `..`: a new field must be placed here.
        let Event {
            id,
            seq,
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
            prev_hash,
            hash,
        } = self;
        Event {
            id: *id,
            seq: *seq,
            source: *source,
            kind: *kind,
            captured_at: *captured_at,
            db_user: db_user.clone(),
            app_user: app_user.clone(),
            client_addr: client_addr.clone(),
            client_port: *client_port,
            application_name: application_name.clone(),
            backend_pid: *backend_pid,
            session_id: session_id.clone(),
            context: object(context),
            provenance: provenance.clone(),
            database: database.clone(),
            schema: schema.clone(),
            table: table.clone(),
            operation: operation.clone(),
            objects: objects.clone(),
            pk: object(pk),
            old: object(old),
            new: object(new),
            nonce: nonce.clone(),
            changed: changed.clone(),
            partial: partial.clone(),
            sql: sql.clone(),
            params: params
                .as_ref()
                .map(|params| params.iter().map(crate::json::clone).collect()),
            class: class.clone(),
            command_tag: command_tag.clone(),
            rows: *rows,
            duration_us: *duration_us,
            sqlstate: sqlstate.clone(),
            error: error.clone(),
            xid: *xid,
            lsn: lsn.clone(),
            committed_at: *committed_at,
            tx_seq: *tx_seq,
            prev_hash: prev_hash.clone(),
            hash: hash.clone(),
        }
    }
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        let object = |a: &Option<JsonObject>, b: &Option<JsonObject>| match (a, b) {
            (Some(a), Some(b)) => crate::json::eq_object(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        let params = match (&self.params, &other.params) {
            (Some(a), Some(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| crate::json::eq(a, b))
            }
            (a, b) => a.is_none() && b.is_none(),
        };
        let Event {
            id,
            seq,
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
            params: _,
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
            prev_hash,
            hash,
        } = self;
        *id == other.id
            && *seq == other.seq
            && *source == other.source
            && *kind == other.kind
            && *captured_at == other.captured_at
            && *db_user == other.db_user
            && *app_user == other.app_user
            && *client_addr == other.client_addr
            && *client_port == other.client_port
            && *application_name == other.application_name
            && *backend_pid == other.backend_pid
            && *session_id == other.session_id
            && object(context, &other.context)
            && *provenance == other.provenance
            && *database == other.database
            && *schema == other.schema
            && *table == other.table
            && *operation == other.operation
            && *objects == other.objects
            && object(pk, &other.pk)
            && object(old, &other.old)
            && object(new, &other.new)
            && *nonce == other.nonce
            && *changed == other.changed
            && *partial == other.partial
            && *sql == other.sql
            && params
            && *class == other.class
            && *command_tag == other.command_tag
            && *rows == other.rows
            && *duration_us == other.duration_us
            && *sqlstate == other.sqlstate
            && *error == other.error
            && *xid == other.xid
            && *lsn == other.lsn
            && *committed_at == other.committed_at
            && *tx_seq == other.tx_seq
            && *prev_hash == other.prev_hash
            && *hash == other.hash
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        for object in [
            &mut self.context,
            &mut self.pk,
            &mut self.old,
            &mut self.new,
        ] {
            if let Some(object) = object.take() {
                crate::json::drop_object(object);
            }
        }
        for param in self.params.take().into_iter().flatten() {
            crate::json::drop_deep(param);
        }
    }
}

impl Event {
    /// A new event of `kind` from `source`, stamped now, with a fresh UUIDv7.
    pub fn new(source: Source, kind: Kind) -> Self {
        Self::at(source, kind, Utc::now())
    }

    /// A new event captured at `captured_at` (truncated to microseconds).
    pub fn at(source: Source, kind: Kind, captured_at: DateTime<Utc>) -> Self {
        let mut random = [0u8; RANDOM_BYTES];
        let (id, nonce) = identity(crate::random::fill(&mut random).then_some(&random));
        Event {
            id,
            seq: None,
            source,
            kind,
            captured_at: crate::time::truncate_micros(captured_at),
            db_user: None,
            app_user: None,
            client_addr: None,
            client_port: None,
            application_name: None,
            backend_pid: None,
            session_id: None,
            context: None,
            provenance: None,
            database: None,
            schema: None,
            table: None,
            operation: None,
            objects: Vec::new(),
            pk: None,
            old: None,
            new: None,
            nonce,
            changed: Vec::new(),
            partial: Vec::new(),
            sql: None,
            params: None,
            class: None,
            command_tag: None,
            rows: None,
            duration_us: None,
            sqlstate: None,
            error: None,
            xid: None,
            lsn: None,
            committed_at: None,
            tx_seq: None,
            prev_hash: None,
            hash: None,
        }
    }

    /// `schema.table`, or just `table` when the schema is unknown.
    pub fn qualified_table(&self) -> Option<String> {
        let table = self.table.as_deref()?;
        Some(match self.schema.as_deref() {
            Some(schema) => format!("{schema}.{table}"),
            None => table.to_string(),
        })
    }

    /// Whether the event records a failure (a statement with an error or SQLSTATE).
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self
                .sqlstate
                .as_deref()
                .is_some_and(|s| !s.starts_with("00"))
    }

    /// The user to show: the application user if known, else the database role.
    pub fn actor(&self) -> Option<&str> {
        self.app_user.as_deref().or(self.db_user.as_deref())
    }

    /// Records that the application claimed `field` through `channel`.
    pub fn claim(&mut self, field: &str, channel: Channel) {
        let channels = self
            .provenance
            .get_or_insert_with(Provenance::default)
            .claimed
            .entry(field.to_string())
            .or_default();
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }

    /// Records that the server vouches for the [`SERVER_FIELDS`] the event
    /// has: call it where they were read by pgtrail's own code in the session.
    pub fn vouch_server_fields(&mut self) {
        let present = [
            self.backend_pid.is_some(),
            self.client_addr.is_some(),
            self.client_port.is_some(),
            self.db_user.is_some(),
        ];
        let vouched: Vec<String> = SERVER_FIELDS
            .iter()
            .zip(present)
            .filter(|(_, present)| *present)
            .map(|(field, _)| field.to_string())
            .collect();
        if !vouched.is_empty() {
            self.provenance
                .get_or_insert_with(Provenance::default)
                .vouched = vouched;
        }
    }

    /// The event as it was before a store sealed it: no `seq`, `prev_hash` or `hash`.
    pub fn unsealed(mut self) -> Self {
        self.seq = None;
        self.prev_hash = None;
        self.hash = None;
        self
    }
}

/// Random bytes an event takes: 16 for its nonce, 10 for its id.
const RANDOM_BYTES: usize = 16 + 10;

/// A new event's id (UUIDv7: the time now in milliseconds, 74 random bits)
/// and nonce (16 random bytes in lowercase hex), from `random`.
///
/// Should the system's random source fail (it does not on a working
/// Linux), there is no `random`: the event is left without a nonce and is
/// hashed whole (version 1): it is still sealed and verified, it only
/// cannot be proven with values withheld. Its id is then made unique by a
/// counter of this process instead (an id is not secret).
fn identity(random: Option<&[u8; RANDOM_BYTES]>) -> (Uuid, Option<String>) {
    let millis = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    match random {
        Some(random) => {
            let (nonce, id_bits) = random.split_at(16);
            let mut bits = [0u8; 10];
            bits.copy_from_slice(id_bits);
            let id = uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid();
            (id, Some(crate::hex::encode(nonce)))
        }
        None => {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut bits = [0u8; 10];
            bits[..4].copy_from_slice(&std::process::id().to_be_bytes());
            bits[4..].copy_from_slice(&count.to_be_bytes()[2..]);
            let id = uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid();
            (id, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_random_bytes_an_event_has_no_nonce_and_still_a_unique_id() {
        let made: Vec<(Uuid, Option<String>)> = (0..1_000).map(|_| identity(None)).collect();
        assert!(made.iter().all(|(_, nonce)| nonce.is_none()));
        assert!(made.iter().all(|(id, _)| id.get_version_num() == 7));
        let ids: std::collections::HashSet<Uuid> = made.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), made.len(), "fallback ids repeated");
        // Such an event is hashed whole (version 1), as before nonces.
        let mut event = Event::new(Source::Proxy, Kind::Statement);
        event.nonce = made[0].1.clone();
        assert!(crate::canonical::commit::salter_of(&event).is_none());
    }
}
