//! Classic trigger-fed audit tables, as `row_change` events.
//!
//! Two layouts are known, told apart by the table's columns:
//!
//! - **`logged_actions`**: the "audit trigger 91plus" script's
//!   `audit.logged_actions` (`event_id`, `schema_name`, `table_name`,
//!   `session_user_name`, `action_tstamp_*`, `transaction_id`,
//!   `application_name`, `client_addr`, `client_port`, `client_query`,
//!   `action` I/U/D/T, `row_data` and `changed_fields` as `hstore` or
//!   `jsonb`, `statement_only`). `row_data` is the row before an UPDATE or
//!   DELETE and after an INSERT; `changed_fields` the new values of an
//!   UPDATE. Values from `hstore` are text: their types are gone.
//! - **`jsonb`**: the many home-grown `audit_log` tables with JSONB old and
//!   new rows and the application's user (`table_name`, `operation`,
//!   `old_data`/`new_data` or similar, `changed_by`, `changed_at`). The
//!   columns are found by name; the candidates are in [`JSONB_COLUMNS`].
//!
//! Rows are read in key order, a page at a time, so a table of any size
//! imports in bounded memory and an import can resume after its last key.
//! The audited table's primary key is read from today's catalog (the audit
//! rows do not say which columns it was); a table that is gone or has none
//! gives events without `pk`, which `history` cannot find by key.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{Event, Kind, Source};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::{claimed_by_the_record, id, ImportError};

/// Column name candidates of the `jsonb` layout, by role, first match wins.
pub const JSONB_COLUMNS: &[(&str, &[&str])] = &[
    ("id", &["id", "audit_id", "event_id", "log_id"]),
    ("schema", &["schema_name", "table_schema", "schemaname"]),
    ("table", &["table_name", "tablename", "relation"]),
    (
        "operation",
        &["operation", "action", "op", "tg_op", "event"],
    ),
    (
        "old",
        &["old_data", "old_values", "old_row", "old_record", "old"],
    ),
    (
        "new",
        &["new_data", "new_values", "new_row", "new_record", "new"],
    ),
    (
        "user",
        &["changed_by", "app_user", "user_id", "username", "user_name"],
    ),
    (
        "db_user",
        &["db_user", "session_user", "session_user_name", "role_name"],
    ),
    (
        "time",
        &[
            "changed_at",
            "created_at",
            "occurred_at",
            "logged_at",
            "timestamp",
            "ts",
            "action_tstamp",
        ],
    ),
    ("client_addr", &["client_addr", "ip_address", "client_ip"]),
    ("query", &["query", "client_query", "statement"]),
];

/// The layout of an audit table, by its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// `audit.logged_actions` of the 91plus script.
    LoggedActions,
    /// JSONB old/new rows; the column playing each role.
    Jsonb(HashMap<&'static str, String>),
}

impl Layout {
    fn name(&self) -> &'static str {
        match self {
            Layout::LoggedActions => "logged_actions",
            Layout::Jsonb(_) => "jsonb",
        }
    }
}

/// An audit table being read.
#[derive(Debug)]
pub struct AuditTable {
    schema: String,
    name: String,
    layout: Layout,
    database: String,
    select: String,
    keys: HashMap<(String, String), Vec<String>>,
}

/// Splits `schema.table` (or `table`, in `public`); names are taken as
/// written, case and all, and always quoted in the SQL pgtrail writes.
pub fn split_name(qualified: &str) -> Result<(String, String), ImportError> {
    let (schema, name) = match qualified.split_once('.') {
        Some((schema, name)) => (schema, name),
        None => ("public", qualified),
    };
    if schema.is_empty() || name.is_empty() || name.contains('.') {
        return Err(ImportError::Layout(format!(
            "--table {qualified:?}: give it as schema.table"
        )));
    }
    Ok((schema.to_string(), name.to_string()))
}

/// Connects to the audit table's database (a libpq URL, TLS as it says).
/// The session only reads, and never evaluates a row security policy (a
/// function of the table owner's choosing, run with pgtrail's role): a
/// table with a policy that would apply is an error instead.
pub async fn connect(url: &str) -> Result<Client, ImportError> {
    Ok(pgtrail_connect::ConnectConfig::parse(url)?
        .add_options("-c default_transaction_read_only=on -c row_security=off")
        .connect()
        .await?)
}

impl AuditTable {
    /// Looks the table up and tells its layout from its columns.
    pub async fn open(client: &Client, qualified: &str) -> Result<Self, ImportError> {
        let (schema, name) = split_name(qualified)?;
        let db = |what: &str| {
            let what = what.to_string();
            move |source| ImportError::Database { what, source }
        };
        let rows = client
            .query(
                "select column_name::text from information_schema.columns \
                 where table_schema = $1 and table_name = $2 order by ordinal_position",
                &[&schema, &name],
            )
            .await
            .map_err(db("the audit table's columns"))?;
        let columns: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        if columns.is_empty() {
            return Err(ImportError::Layout(format!(
                "no table {schema}.{name} that this role can see"
            )));
        }
        let database: String = client
            .query_one("select current_database()::text", &[])
            .await
            .map_err(db("the database's name"))?
            .get(0);
        let layout = detect(&columns).ok_or_else(|| {
            ImportError::Layout(format!(
                "{schema}.{name} has columns {columns:?}: neither audit.logged_actions' layout \
                 (event_id, schema_name, table_name, action, row_data) nor a JSONB audit log's \
                 (an id, a table name, an operation, old and/or new JSONB, a time)"
            ))
        })?;
        let select = select_sql(&layout, &columns, &schema, &name);
        Ok(AuditTable {
            schema,
            name,
            layout,
            database,
            select,
            keys: HashMap::new(),
        })
    }

    /// The layout found.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Up to `limit` events of the rows after key `after`, with the key of
    /// the last row read (`None` once the table is done).
    pub async fn next_page(
        &mut self,
        client: &Client,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<Event>, Option<i64>), ImportError> {
        let rows = client
            .query(&self.select, &[&after, &limit])
            .await
            .map_err(|source| ImportError::Database {
                what: format!("{}.{}", self.schema, self.name),
                source,
            })?;
        let mut events = Vec::with_capacity(rows.len());
        let mut last = None;
        for row in &rows {
            let record = Record::from_row(row);
            last = Some(record.key);
            let pk_columns = self
                .primary_key(client, &record.schema, &record.table)
                .await?;
            events.push(self.event(record, &pk_columns)?);
        }
        Ok((events, last))
    }

    async fn primary_key(
        &mut self,
        client: &Client,
        schema: &str,
        table: &str,
    ) -> Result<Vec<String>, ImportError> {
        let key = (schema.to_string(), table.to_string());
        if let Some(columns) = self.keys.get(&key) {
            return Ok(columns.clone());
        }
        let regclass = format!(
            "{}.{}",
            pgtrail_sql::quote_ident(schema),
            pgtrail_sql::quote_ident(table)
        );
        let rows = client
            .query(
                "select a.attname::text from pg_index i \
                 join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey) \
                 where i.indrelid = to_regclass($1) and i.indisprimary \
                 order by array_position(i.indkey::int2[], a.attnum)",
                &[&regclass],
            )
            .await
            .map_err(|source| ImportError::Database {
                what: format!("the primary key of {schema}.{table}"),
                source,
            })?;
        let columns: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
        self.keys.insert(key, columns.clone());
        Ok(columns)
    }

    fn event(&self, record: Record, pk_columns: &[String]) -> Result<Event, ImportError> {
        let place = format!("{}.{} key {}", self.schema, self.name, record.key);
        let operation = operation(&record.operation).ok_or_else(|| ImportError::Malformed {
            place: place.clone(),
            reason: format!(
                "operation {:?} is not an INSERT, UPDATE, DELETE or TRUNCATE",
                record.operation
            ),
        })?;
        let at = record.time.ok_or_else(|| ImportError::Malformed {
            place: place.clone(),
            reason: "the row has no time".into(),
        })?;
        let (old, new, changed) = match &self.layout {
            Layout::LoggedActions => logged_actions_images(operation, record.row, record.changes),
            Layout::Jsonb(_) => jsonb_images(operation, record.old, record.new),
        };
        let kind = match (record.statement_only, operation) {
            (true, op) if op != "TRUNCATE" => Kind::Statement,
            _ => Kind::RowChange,
        };
        let mut event = Event::at(Source::Import, kind, at);
        let qualified = format!("{}.{}", self.schema, self.name);
        event.id = id::event_id(
            &[
                b"table",
                self.database.as_bytes(),
                qualified.as_bytes(),
                &record.key.to_be_bytes(),
            ],
            at,
        );
        event.database = Some(self.database.clone());
        event.schema = Some(record.schema.clone());
        event.table = Some(record.table.clone());
        event.operation = Some(operation.to_string());
        event.db_user = record.db_user;
        event.app_user = record.app_user;
        event.client_addr = record.client_addr;
        event.client_port = record.client_port;
        event.application_name = record.application_name;
        event.xid = record.xid;
        event.sql = record
            .query
            .map(|query| pgtrail_sql::redact_secrets(&query).0);
        let image = if operation == "DELETE" {
            old.as_ref()
        } else {
            new.as_ref()
        };
        event.pk = image.and_then(|image| pk_of(image, pk_columns));
        event.old = old;
        event.new = new;
        event.changed = changed;
        let mut context = JsonObject::new();
        context.insert(
            "imported".into(),
            json!({
                "from": "table",
                "table": qualified,
                "layout": self.layout.name(),
                "key": record.key,
            }),
        );
        event.context = Some(context);
        event.provenance = Some(claimed_by_the_record(&event));
        Ok(event)
    }
}

/// One audit row, whichever layout.
struct Record {
    key: i64,
    schema: String,
    table: String,
    operation: String,
    time: Option<DateTime<Utc>>,
    db_user: Option<String>,
    app_user: Option<String>,
    client_addr: Option<String>,
    client_port: Option<i32>,
    application_name: Option<String>,
    xid: Option<i64>,
    query: Option<String>,
    row: Option<Value>,
    changes: Option<Value>,
    old: Option<Value>,
    new: Option<Value>,
    statement_only: bool,
}

impl Record {
    /// Reads a row of [`select_sql`]'s fixed column list.
    fn from_row(row: &tokio_postgres::Row) -> Self {
        let text = |i: usize| row.get::<_, Option<String>>(i);
        // Without a schema column, a log may name the table `schema.table`.
        let (schema, table) = match (text(1), text(2).unwrap_or_default()) {
            (Some(schema), table) => (schema, table),
            (None, table) => match table.split_once('.') {
                Some((schema, name)) => (schema.to_string(), name.to_string()),
                None => ("public".to_string(), table),
            },
        };
        Record {
            key: row.get(0),
            schema,
            table,
            operation: text(3).unwrap_or_default(),
            time: row.get(4),
            db_user: text(5),
            app_user: text(6),
            client_addr: text(7).map(|addr| addr.split('/').next().unwrap_or_default().to_string()),
            client_port: row.get(8),
            application_name: text(9),
            xid: row.get(10),
            query: text(11),
            row: row.get(12),
            changes: row.get(13),
            old: row.get(14),
            new: row.get(15),
            statement_only: row.get::<_, Option<bool>>(16).unwrap_or(false),
        }
    }
}

fn detect(columns: &[String]) -> Option<Layout> {
    let has = |name: &str| columns.iter().any(|c| c == name);
    if [
        "event_id",
        "schema_name",
        "table_name",
        "action",
        "row_data",
    ]
    .iter()
    .all(|c| has(c))
    {
        return Some(Layout::LoggedActions);
    }
    let mut roles = HashMap::new();
    for (role, candidates) in JSONB_COLUMNS {
        if let Some(found) = candidates.iter().find(|c| has(c)) {
            roles.insert(*role, (*found).to_string());
        }
    }
    let complete = ["id", "table", "operation", "time"]
        .iter()
        .all(|role| roles.contains_key(role))
        && (roles.contains_key("old") || roles.contains_key("new"));
    complete.then_some(Layout::Jsonb(roles))
}

/// One `select` for the layout with a fixed column list (`null` where the
/// table lacks a column), keyed pages: `$1` the last key read, `$2` the
/// page size.
fn select_sql(layout: &Layout, columns: &[String], schema: &str, name: &str) -> String {
    let q = pgtrail_sql::quote_ident;
    let has = |name: &str| columns.iter().any(|c| c == name);
    let col = |name: &str, cast: &str| {
        if has(name) {
            format!("({}){cast}", q(name))
        } else {
            format!("null{cast}")
        }
    };
    let list = match layout {
        Layout::LoggedActions => vec![
            format!("{}::bigint", q("event_id")),
            col("schema_name", "::text"),
            col("table_name", "::text"),
            col("action", "::text"),
            format!(
                "coalesce({}, {}, {})",
                col("action_tstamp_clk", "::timestamptz"),
                col("action_tstamp_stm", "::timestamptz"),
                col("action_tstamp_tx", "::timestamptz")
            ),
            col("session_user_name", "::text"),
            "null::text".into(),
            col("client_addr", "::text"),
            col("client_port", "::int4"),
            col("application_name", "::text"),
            col("transaction_id", "::int8"),
            col("client_query", "::text"),
            col("row_data", "::jsonb"),
            col("changed_fields", "::jsonb"),
            "null::jsonb".into(),
            "null::jsonb".into(),
            col("statement_only", "::bool"),
        ],
        Layout::Jsonb(roles) => {
            let role = |role: &str, cast: &str| match roles.get(role) {
                Some(column) => format!("({}){cast}", q(column)),
                None => format!("null{cast}"),
            };
            vec![
                role("id", "::bigint"),
                role("schema", "::text"),
                role("table", "::text"),
                role("operation", "::text"),
                role("time", "::timestamptz"),
                role("db_user", "::text"),
                role("user", "::text"),
                role("client_addr", "::text"),
                "null::int4".into(),
                "null::text".into(),
                "null::int8".into(),
                role("query", "::text"),
                "null::jsonb".into(),
                "null::jsonb".into(),
                role("old", "::jsonb"),
                role("new", "::jsonb"),
                "null::bool".into(),
            ]
        }
    };
    let key = match layout {
        Layout::LoggedActions => q("event_id"),
        Layout::Jsonb(roles) => q(roles.get("id").map_or("id", String::as_str)),
    };
    format!(
        "select {} from {}.{} where {key}::bigint > $1 order by {key} limit $2",
        list.join(", "),
        q(schema),
        q(name)
    )
}

fn operation(text: &str) -> Option<&'static str> {
    match text.trim().to_ascii_uppercase().as_str() {
        "I" | "INSERT" => Some("INSERT"),
        "U" | "UPDATE" => Some("UPDATE"),
        "D" | "DELETE" => Some("DELETE"),
        "T" | "TRUNCATE" => Some("TRUNCATE"),
        _ => None,
    }
}

fn object(value: Option<Value>) -> Option<JsonObject> {
    match value {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// `row_data` is the row before an UPDATE or DELETE and after an INSERT;
/// `changed_fields` holds an UPDATE's new values of the columns it changed.
fn logged_actions_images(
    operation: &str,
    row: Option<Value>,
    changes: Option<Value>,
) -> (Option<JsonObject>, Option<JsonObject>, Vec<String>) {
    let row = object(row);
    match operation {
        "INSERT" => (None, row, Vec::new()),
        "DELETE" => (row, None, Vec::new()),
        "UPDATE" => {
            let changes = object(changes).unwrap_or_default();
            let changed: Vec<String> = changes.keys().cloned().collect();
            let new = row.as_ref().map(|old| {
                let mut new = old.clone();
                for (column, value) in changes {
                    new.insert(column, value);
                }
                new
            });
            (row, new, changed)
        }
        _ => (None, None, Vec::new()),
    }
}

fn jsonb_images(
    operation: &str,
    old: Option<Value>,
    new: Option<Value>,
) -> (Option<JsonObject>, Option<JsonObject>, Vec<String>) {
    let (old, new) = (object(old), object(new));
    let changed = match (operation, &old, &new) {
        ("UPDATE", Some(old), Some(new)) => new
            .iter()
            .filter(|(column, value)| old.get(*column) != Some(value))
            .map(|(column, _)| column.clone())
            .collect(),
        _ => Vec::new(),
    };
    match operation {
        "INSERT" => (None, new, changed),
        "DELETE" => (old, None, changed),
        _ => (old, new, changed),
    }
}

/// The key columns' values as text, as capture writes `pk`.
fn pk_of(image: &JsonObject, columns: &[String]) -> Option<JsonObject> {
    if columns.is_empty() {
        return None;
    }
    let mut pk = JsonObject::new();
    for column in columns {
        let value = match image.get(column)? {
            Value::String(text) => text.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        pk.insert(column.clone(), Value::String(value));
    }
    Some(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_told_by_their_columns() {
        let cols = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            detect(&cols(&[
                "event_id",
                "schema_name",
                "table_name",
                "relid",
                "action",
                "row_data",
                "changed_fields"
            ])),
            Some(Layout::LoggedActions)
        );
        let Some(Layout::Jsonb(roles)) = detect(&cols(&[
            "id",
            "table_name",
            "operation",
            "old_data",
            "new_data",
            "changed_by",
            "changed_at",
        ])) else {
            panic!("a JSONB audit log");
        };
        assert_eq!(roles["user"], "changed_by");
        assert_eq!(detect(&cols(&["id", "payload"])), None);
        assert!(split_name("audit.logged_actions").is_ok());
        assert!(split_name("a.b.c").is_err());
    }

    #[test]
    fn an_update_row_is_the_old_row_and_its_changes_the_new_values() {
        let (old, new, changed) = logged_actions_images(
            "UPDATE",
            Some(json!({"id": "1", "name": "a", "n": "5"})),
            Some(json!({"name": "b"})),
        );
        assert_eq!(old.expect("old")["name"], "a");
        assert_eq!(new.expect("new")["name"], "b");
        assert_eq!(changed, ["name"]);
    }
}
