//! Which tables are captured, and how: `track`, `untrack`, `status`.
//!
//! The work is done by SQL functions installed in the database
//! (`pgtrail.track`, `pgtrail.untrack`), so that the DDL event trigger can
//! track new tables of an auto-tracked schema in the transaction that
//! creates them; this module resolves names, maps refusals to clear errors
//! and reads the registry back.

use chrono::{DateTime, Utc};
use pgtrail_core::filter::TableName;
use serde::Serialize;
use tokio_postgres::{Client, Row};

use crate::{Error, Result};

/// How a masked column's values are replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMode {
    /// A keyed hash (HMAC-SHA256 with a per-install key): equal values stay equal.
    #[default]
    Hash,
    /// The constant `***`.
    Redact,
}

impl MaskMode {
    /// The name used in SQL and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskMode::Hash => "hash",
            MaskMode::Redact => "redact",
        }
    }

    fn parse(text: &str) -> MaskMode {
        if text == "redact" {
            MaskMode::Redact
        } else {
            MaskMode::Hash
        }
    }
}

/// How a table's changes are captured (see `install_capture` in the SQL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Row-level triggers: cheapest per statement, for OLTP tables.
    #[default]
    Row,
    /// Statement-level triggers with transition tables: one INSERT … SELECT
    /// per statement, for tables changed by bulk statements.
    Statement,
}

impl CaptureMode {
    /// The name used in SQL and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Row => "row",
            CaptureMode::Statement => "statement",
        }
    }

    fn parse(text: &str) -> CaptureMode {
        if text == "statement" {
            CaptureMode::Statement
        } else {
            CaptureMode::Row
        }
    }
}

/// Options of one tracked table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackOptions {
    /// Columns whose changes alone are not logged (`updated_at`, …).
    pub ignore: Vec<String>,
    /// Columns whose values are masked in the trail.
    pub mask: Vec<String>,
    /// How masked values are replaced.
    pub mask_mode: MaskMode,
    /// Record each change's statement text too.
    pub capture_sql: bool,
    /// Row or statement triggers.
    pub mode: CaptureMode,
}

/// A tracked table as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedTable {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// Primary-key columns; empty when the full row is the identity.
    pub key_columns: Vec<String>,
    /// Ignored columns.
    pub ignored: Vec<String>,
    /// Masked columns.
    pub masked: Vec<String>,
    /// How masked columns are replaced.
    pub mask_mode: MaskMode,
    /// Whether statement text is recorded.
    pub capture_sql: bool,
    /// Tracked automatically because its schema is.
    pub auto: bool,
    /// Row or statement triggers.
    pub mode: CaptureMode,
}

impl TrackedTable {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// How rows are identified, for people: `key (id)` or `full row (no primary key)`.
    pub fn identity(&self) -> String {
        if self.key_columns.is_empty() {
            "full row (no primary key)".into()
        } else {
            format!("key ({})", self.key_columns.join(", "))
        }
    }

    fn from_row(row: &Row) -> TrackedTable {
        TrackedTable {
            schema: row.get("schema_name"),
            table: row.get("table_name"),
            key_columns: row.get("key_columns"),
            ignored: row.get("ignored"),
            masked: row.get("masked"),
            mask_mode: MaskMode::parse(row.get("mask_mode")),
            capture_sql: row.get("capture_sql"),
            auto: row.get("auto"),
            mode: CaptureMode::parse(row.get("mode")),
        }
    }
}

const TRACKED_COLUMNS: &str =
    "schema_name, table_name, key_columns, ignored, masked, mask_mode, capture_sql, auto, mode";

/// Starts capturing `table` (or changes its options).
pub async fn track(
    client: &Client,
    table: &TableName,
    options: &TrackOptions,
) -> Result<TrackedTable> {
    crate::migrations::require_installed(client).await?;
    let oid = resolve(client, table).await?;
    track_oid(client, oid, &table.to_string(), options).await
}

/// Tracks every table of `schema`; with `auto`, tables created there later
/// are tracked as they are created, with the same options.
pub async fn track_schema(
    client: &Client,
    schema: &str,
    options: &TrackOptions,
    auto: bool,
) -> Result<Vec<TrackedTable>> {
    crate::migrations::require_installed(client).await?;
    let exists: bool = client
        .query_one(
            "select exists (select 1 from pg_namespace where nspname = $1)",
            &[&schema],
        )
        .await
        .map_err(Error::pg("looking up the schema"))?
        .get(0);
    if !exists {
        return Err(Error::NoSuchTable {
            table: format!("{schema}.* (schema {schema} does not exist)"),
        });
    }
    if auto {
        client
            .execute(
                "insert into pgtrail.auto_track (schema_name, ignored, masked, mask_mode, capture_sql, mode) \
                 values ($1, $2, $3, $4, $5, $6) on conflict (schema_name) do update set ignored = excluded.ignored, \
                 masked = excluded.masked, mask_mode = excluded.mask_mode, capture_sql = excluded.capture_sql, \
                 mode = excluded.mode",
                &[
                    &schema,
                    &options.ignore,
                    &options.mask,
                    &options.mask_mode.as_str(),
                    &options.capture_sql,
                    &options.mode.as_str(),
                ],
            )
            .await
            .map_err(Error::pg("recording the auto-tracked schema"))?;
    }
    let tables = client
        .query(
            "select c.oid, c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = $1 and c.relkind in ('r', 'p') and not c.relispartition order by c.relname",
            &[&schema],
        )
        .await
        .map_err(Error::pg("listing the schema's tables"))?;
    let mut tracked = Vec::with_capacity(tables.len());
    for row in tables {
        let (oid, name): (u32, String) = (row.get(0), row.get(1));
        // Columns to ignore or mask apply where the table has them.
        let options = TrackOptions {
            ignore: present_columns(client, oid, &options.ignore).await?,
            mask: present_columns(client, oid, &options.mask).await?,
            ..options.clone()
        };
        tracked.push(track_oid(client, oid, &format!("{schema}.{name}"), &options).await?);
    }
    Ok(tracked)
}

/// Stops capturing `table`; returns whether it was tracked. The trail stays.
pub async fn untrack(client: &Client, table: &TableName) -> Result<bool> {
    crate::migrations::require_installed(client).await?;
    let oid = resolve(client, table).await?;
    let row = client
        .query_one("select pgtrail.untrack($1::oid::regclass)", &[&oid])
        .await
        .map_err(Error::pg(format!("untracking {table}")))?;
    Ok(row.get(0))
}

/// One tracked table's state.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// The table and its options.
    #[serde(flatten)]
    pub tracked: TrackedTable,
    /// How it is captured, in words: the mode and the row identity
    /// (`row triggers, key (id)`). Not `mode`: the flattened table has that.
    pub capture: String,
    /// Sealed events of this table so far.
    pub events: i64,
    /// Captured rows waiting to be sealed.
    pub pending: i64,
    /// When its newest sealed event was captured.
    pub last_event_at: Option<DateTime<Utc>>,
}

/// The state of trigger capture in one database.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Installed migration version.
    pub version: i32,
    /// Tracked tables, by name.
    pub tables: Vec<TableStatus>,
    /// Schemas whose new tables are tracked automatically.
    pub auto_schemas: Vec<String>,
    /// Inbox rows waiting to be sealed (all tables and DDL).
    pub pending: i64,
    /// When the oldest of them was captured.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Whether `track_commit_timestamp` is on (exact commit order when sealing).
    pub commit_timestamps: bool,
}

/// Tracked tables with their event counts, and the inbox backlog.
pub async fn status(client: &Client) -> Result<Status> {
    let version = crate::migrations::require_installed(client).await?;
    let pending = crate::inbox::pending_rows(version);
    let rows = client
        .query(
            &format!(
                "with sealed as ( \
                   select schema_name, table_name, count(*) as n, max(captured_at) as last \
                   from pgtrail.events where source = 'trigger' and kind = 'row_change' group by 1, 2), \
                 pending as ( \
                   select schema_name, table_name, count(*) as n from {pending} where kind = 'r' group by 1, 2) \
                 select {TRACKED_COLUMNS}, coalesce(s.n, 0) as events, coalesce(p.n, 0) as pending, s.last \
                 from pgtrail.tracked t \
                 left join sealed s using (schema_name, table_name) \
                 left join pending p using (schema_name, table_name) \
                 order by schema_name, table_name"
            ),
            &[],
        )
        .await
        .map_err(Error::pg("reading tracked tables"))?;
    let tables = rows
        .iter()
        .map(|row| {
            let tracked = TrackedTable::from_row(row);
            let capture = format!("{} triggers, {}", tracked.mode.as_str(), tracked.identity());
            TableStatus {
                tracked,
                capture,
                events: row.get("events"),
                pending: row.get("pending"),
                last_event_at: row.get("last"),
            }
        })
        .collect();
    let auto_schemas = client
        .query("select schema_name from pgtrail.auto_track order by 1", &[])
        .await
        .map_err(Error::pg("reading auto-tracked schemas"))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let backlog = client
        .query_one(
            &format!(
                "select count(*), min(captured_at), current_setting('track_commit_timestamp') = 'on' from {pending}"
            ),
            &[],
        )
        .await
        .map_err(Error::pg("reading the inbox"))?;
    Ok(Status {
        version,
        tables,
        auto_schemas,
        pending: backlog.get(0),
        oldest_pending_at: backlog.get(1),
        commit_timestamps: backlog.get(2),
    })
}

/// Trigger capture's state at a glance, cheap enough for a page load:
/// [`status`] without the per-table event counts (which read every event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Backlog {
    /// Tracked tables.
    pub tables: i64,
    /// Inbox rows waiting to be sealed.
    pub pending: i64,
    /// Seconds since the oldest of them was captured (0 when none waits).
    pub oldest_pending_seconds: f64,
}

/// Tracked tables and the inbox's backlog (what the dashboard's integrity
/// page shows of trigger capture).
pub async fn backlog(client: &Client) -> Result<Backlog> {
    let version = crate::migrations::require_installed(client).await?;
    let pending = crate::inbox::pending_rows(version);
    let row = client
        .query_one(
            &format!(
                "select (select count(*) from pgtrail.tracked), count(*),                  coalesce(extract(epoch from pg_catalog.clock_timestamp() - min(captured_at))::float8, 0)                  from {pending}"
            ),
            &[],
        )
        .await
        .map_err(Error::pg("reading the inbox"))?;
    Ok(Backlog {
        tables: row.get(0),
        pending: row.get(1),
        oldest_pending_seconds: row.get::<_, f64>(2).max(0.0),
    })
}

/// The oid of `table`, or a clear error when there is no such table. An
/// unqualified name is a table in `public`, as for `replicate --tables`:
/// pgtrail's sessions have only the catalog on their search path, and the
/// application's path is not pgtrail's to follow.
async fn resolve(client: &Client, table: &TableName) -> Result<u32> {
    let schema = table.schema.as_deref().unwrap_or("public");
    let row = client
        .query_one(
            "select to_regclass(quote_ident($1) || '.' || quote_ident($2))::oid",
            &[&schema, &table.table],
        )
        .await
        .map_err(Error::pg(format!("looking up {table}")))?;
    row.get::<_, Option<u32>>(0)
        .ok_or_else(|| Error::NoSuchTable {
            table: table.to_string(),
        })
}

async fn track_oid(
    client: &Client,
    oid: u32,
    name: &str,
    options: &TrackOptions,
) -> Result<TrackedTable> {
    let row = client
        .query_one(
            &format!(
                "select {TRACKED_COLUMNS} from pgtrail.track($1::oid::regclass, $2, $3, $4, $5, \
                 exists (select 1 from pgtrail.tracked where relid = $1 and auto), $6)"
            ),
            &[
                &oid,
                &options.ignore,
                &options.mask,
                &options.mask_mode.as_str(),
                &options.capture_sql,
                &options.mode.as_str(),
            ],
        )
        .await
        .map_err(|source| match source.as_db_error() {
            Some(db) if ["42703", "42809", "22023"].contains(&db.code().code()) => Error::Refused {
                table: name.to_string(),
                message: db.message().trim_start_matches("pgtrail: ").to_string(),
            },
            _ => Error::Postgres {
                action: format!("tracking {name}"),
                source,
            },
        })?;
    Ok(TrackedTable::from_row(&row))
}

async fn present_columns(client: &Client, oid: u32, columns: &[String]) -> Result<Vec<String>> {
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "select c from unnest($2::text[]) as c where exists (select 1 from pg_attribute a \
             where a.attrelid = $1 and a.attname = c and a.attnum > 0 and not a.attisdropped)",
            &[&oid, &columns],
        )
        .await
        .map_err(Error::pg("reading columns"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
