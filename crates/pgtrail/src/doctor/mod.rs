//! `pgtrail doctor`: what to capture in a database, and how.
//!
//! Three looks, one module each: the [`server`] (settings, slots, pgAudit,
//! managed-service limits), the [`tables`] (keys, replica identity, TOAST,
//! write rates and a capture path for each, with its cost from the
//! benchmarks) and the [`roles`] (privileges that reach past the trail).
//! Each look adds [`Finding`]s: a severity, a stable code, a sentence and
//! the fix.
//!
//! Doctor only reads. Everything runs in one `READ ONLY` transaction, and
//! every name read from the catalog is a value: bound as a parameter when
//! sent back, quoted (`quote_ident`) when written into a fix, never
//! executed; `search_path` is `pg_catalog` alone, so no function or
//! operator someone planted in another schema is called. A query the role may not run (SQLSTATE 42501, or any other
//! server error) becomes a `not_checked` finding naming the privilege it
//! needs, and the run goes on: doctor is meant to run as a role with
//! `pg_monitor` and nothing else.

pub mod roles;
pub mod server;
pub mod tables;

use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};

/// The version of the JSON report's shape (docs/doctor.md). Fields may be
/// added; none is removed or changes meaning without a new version.
pub const REPORT_VERSION: u32 = 1;

/// Every finding code, by area (docs/doctor.md explains each;
/// schema/doctor.schema.json lists them). A code is never reused for
/// another meaning.
pub const CODES: &[&str] = &[
    // server
    "server_version",
    "doctor_role",
    "managed_service",
    "managed_logical_replication_off",
    "superuser_unavailable",
    "wal_level_logical",
    "wal_level_not_logical",
    "track_commit_timestamp_off",
    "max_slot_wal_keep_size_unlimited",
    "max_slot_wal_keep_size",
    "replication_capacity",
    "replication_capacity_exhausted",
    "slot_lost",
    "slot_inactive",
    "slot_lagging",
    "slot_ok",
    "pgaudit_absent",
    "pgaudit_not_loaded",
    "pgaudit_logs_nothing",
    "pgaudit_present",
    "not_checked",
    // tables
    "capture_trigger_disabled",
    "published_without_identity",
    "table_without_primary_key",
    "toast_partial_updates",
    "toastable_columns",
    "capture_recommendation",
    "table_not_captured",
    "stats_window_short",
    // roles
    "bootstrap_superuser",
    "role_superuser",
    "role_replication",
    "role_bypassrls",
    "role_createrole",
    "role_owns_audited_tables",
];

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing to fix.
    Info,
    /// Capture will be incomplete, costly or weaker than it could be.
    Warn,
    /// Capture cannot work, or events are being lost, as things are.
    Fail,
}

impl Severity {
    /// The label plain output prints.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "WARN",
            Severity::Fail => "FAIL",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Subject {
    /// The server as a whole.
    Server,
    /// One server setting.
    Setting { name: String },
    /// One replication slot.
    Slot { name: String },
    /// One table.
    Table { schema: String, name: String },
    /// One role.
    Role { name: String },
}

impl Subject {
    /// The subject as plain output names it: identifiers quoted as SQL
    /// quotes them when they need it, so a hostile name reads as one name.
    pub fn text(&self) -> String {
        match self {
            Subject::Server => "server".into(),
            Subject::Setting { name } => name.clone(),
            Subject::Slot { name } => format!("slot {}", ident(name)),
            Subject::Table { schema, name } => format!("{}.{}", ident(schema), ident(name)),
            Subject::Role { name } => format!("role {}", ident(name)),
        }
    }

    /// A table's subject.
    pub fn table(schema: &str, name: &str) -> Subject {
        Subject::Table {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// A role's subject.
    pub fn role(name: &str) -> Subject {
        Subject::Role { name: name.into() }
    }
}

/// One thing doctor found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Stable code (docs/doctor.md lists every one).
    pub code: &'static str,
    /// How much it matters.
    pub severity: Severity,
    /// What it is about.
    pub subject: Subject,
    /// One plain sentence (or two).
    pub message: String,
    /// The SQL or setting that fixes it, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A finding without a fix.
    pub fn new(
        code: &'static str,
        severity: Severity,
        subject: Subject,
        message: impl Into<String>,
    ) -> Self {
        debug_assert!(CODES.contains(&code), "undocumented finding code {code}");
        Finding {
            code,
            severity,
            subject,
            message: message.into(),
            fix: None,
        }
    }

    /// The same finding with its fix.
    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Counts of findings per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub info: usize,
    pub warn: usize,
    pub fail: usize,
}

/// What doctor reports: the facts it based its findings on, and the findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    pub server: server::ServerFacts,
    pub tables: Vec<tables::TableFacts>,
    pub findings: Vec<Finding>,
    pub summary: Summary,
}

impl Report {
    /// The most severe finding's severity (`Info` when there is none).
    pub fn worst(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}

/// What the caller decides for a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The publication logical replication captures through.
    pub publication: String,
    /// pgtrail's slot (the slots of other consumers are reported too).
    pub slot: String,
    /// A slot lagging more than this many bytes is a warning.
    pub lag_warn_bytes: i64,
    /// A table with at least this many writes per second is busy.
    pub busy_writes_per_second: f64,
    /// Measure write rates over this many seconds now, instead of over the
    /// statistics window.
    pub sample_seconds: Option<u64>,
}

/// Examines the database `client` is connected to. Errors are only those
/// of the connection itself; what the role may not read is a finding.
pub async fn examine(client: &Client, options: &Options) -> Result<Report, tokio_postgres::Error> {
    // Nothing doctor sends can write, whatever a bug in it might build; and
    // only pg_catalog is searched, so a function planted in a schema on the
    // path (`public.pg_relation_size(oid)`, a closer match than the
    // catalog's `regclass` one) never runs as the role doctor runs as.
    client
        .batch_execute("set application_name = 'pgtrail doctor'")
        .await?;
    begin(client).await?;
    let mut look = Look {
        client,
        findings: Vec::new(),
    };
    let examined = async {
        let server = server::examine(&mut look, options).await?;
        let tables = tables::examine(&mut look, &server, options).await?;
        roles::examine(&mut look, &tables).await?;
        Ok::<_, tokio_postgres::Error>((server, tables))
    }
    .await;
    // A read-only transaction has nothing to keep.
    let ended = client.batch_execute("rollback").await;
    let (server, tables) = examined?;
    ended?;
    let mut findings = look.findings;
    // Worst first; within a severity, server, then tables, then roles, as found.
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut summary = Summary::default();
    for f in &findings {
        match f.severity {
            Severity::Info => summary.info += 1,
            Severity::Warn => summary.warn += 1,
            Severity::Fail => summary.fail += 1,
        }
    }
    Ok(Report {
        report_version: REPORT_VERSION,
        server,
        tables,
        findings,
        summary,
    })
}

/// Starts doctor's read-only transaction (see [`examine`]).
async fn begin(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(
            "start transaction read only; \
             set local search_path = pg_catalog, pg_temp; \
             set local statement_timeout = '30s'; \
             set local lock_timeout = '2s'",
        )
        .await
}

/// One run's connection and the findings so far.
pub struct Look<'a> {
    client: &'a Client,
    findings: Vec<Finding>,
}

impl Look<'_> {
    /// Waits `seconds` outside any transaction (an open one would hold
    /// back vacuum's horizon for as long), named so in `pg_stat_activity`,
    /// then starts a new read-only transaction.
    pub async fn pause(&mut self, seconds: u64) -> Result<(), tokio_postgres::Error> {
        self.client
            .batch_execute("rollback; set application_name = 'pgtrail doctor (sampling)'")
            .await?;
        tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
        self.client
            .batch_execute("set application_name = 'pgtrail doctor'")
            .await?;
        begin(self.client).await
    }

    /// Adds a finding.
    pub fn add(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Runs `sql` inside a savepoint. A server error (most often: permission
    /// denied) becomes a `not_checked` finding about `what`, naming `needs`,
    /// and `None`; only a broken connection is an error.
    pub async fn query(
        &mut self,
        what: &str,
        needs: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Vec<Row>>, tokio_postgres::Error> {
        self.client.batch_execute("savepoint doctor").await?;
        match self.client.query(sql, params).await {
            Ok(rows) => {
                self.client
                    .batch_execute("release savepoint doctor")
                    .await?;
                Ok(Some(rows))
            }
            Err(error) => {
                let Some(db) = error.as_db_error() else {
                    return Err(error);
                };
                self.client
                    .batch_execute("rollback to savepoint doctor")
                    .await?;
                self.not_checked(what, needs, db.message());
                Ok(None)
            }
        }
    }

    /// Records that `what` could not be checked.
    pub fn not_checked(&mut self, what: &str, needs: &str, why: &str) {
        self.add(
            Finding::new(
                "not_checked",
                Severity::Warn,
                Subject::Server,
                format!("could not check {what}: {why}; it needs {needs}"),
            )
            .fix(format!(
                "run doctor as a role with {needs} (GRANT pg_monitor TO <role>; covers it)"
            )),
        );
    }
}

/// An identifier as SQL writes it: bare when that reads back the same,
/// else double-quoted with inner quotes doubled.
pub fn ident(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        pgtrail_cdc::connection::quote_ident(name)
    }
}

/// `"schema"."table"` for SQL in a fix, always quoted.
pub fn qualified(schema: &str, name: &str) -> String {
    format!(
        "{}.{}",
        pgtrail_cdc::connection::quote_ident(schema),
        pgtrail_cdc::connection::quote_ident(name)
    )
}

/// Bytes as people read them (`1.5 MB`, `320 kB`, `12 B`).
pub fn bytes_text(bytes: f64) -> String {
    const UNITS: [(&str, f64); 4] = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (unit, size) in UNITS {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes / size);
        }
    }
    format!("{bytes:.0} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented_and_in_the_schema() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let docs = std::fs::read_to_string(format!("{root}/docs/doctor.md")).expect("docs");
        let schema =
            std::fs::read_to_string(format!("{root}/schema/doctor.schema.json")).expect("schema");
        for code in CODES {
            assert!(
                docs.contains(&format!("`{code}`")),
                "{code} in docs/doctor.md"
            );
            assert!(
                schema.contains(&format!("\"{code}\"")),
                "{code} in the schema"
            );
        }
    }

    #[test]
    fn names_are_quoted_when_they_need_it() {
        assert_eq!(ident("orders"), "orders");
        assert_eq!(ident("Orders"), "\"Orders\"");
        assert_eq!(
            ident("x\"; drop table y; --"),
            "\"x\"\"; drop table y; --\""
        );
        assert_eq!(ident("naïve"), "\"naïve\"");
        assert_eq!(ident(""), "\"\"");
        assert_eq!(qualified("public", "t"), "\"public\".\"t\"");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(bytes_text(12.0), "12 B");
        assert_eq!(bytes_text(1_500.0), "1.5 kB");
        assert_eq!(bytes_text(2_000_000_000.0), "2.0 GB");
    }
}
