//! The tables: keys and replica identity, TOASTable columns (when logical
//! replication's UPDATEs arrive with `partial` values, and what REPLICA
//! IDENTITY FULL would cost in WAL), write rates, and for each table a
//! capture path with its expected cost, quoted from bench/README.md.
//!
//! Needs: nothing beyond what every role may read (`pg_class`,
//! `pg_stat_user_tables`, `pg_trigger`, `pg_publication_tables`,
//! `pg_relation_size`). `pg_stats` shows only columns the role may SELECT;
//! without them the row width comes from the table's size on disk.

use serde::Serialize;

use super::server::ServerFacts;
use super::{bytes_text, qualified, Finding, Look, Options, Severity, Subject};

/// Schemas doctor never advises on: the catalogs and pgtrail's own.
const EXCLUDED_SCHEMAS: &[&str] = pgtrail_cdc::catalog::EXCLUDED_SCHEMAS;

/// A tuple's header and line pointer, added to `pg_stats`' column widths.
const TUPLE_OVERHEAD_BYTES: f64 = 28.0;

/// The benchmark figures recommendations quote (bench/README.md).
mod figures {
    /// bench/triggers, final run on a quiet machine (end of session 3):
    /// backend CPU of a single-row UPDATE, no audit 13.74 µs, row mode 30.37.
    pub const ROW_TRIGGER_US_PER_WRITE: f64 = 30.37 - 13.74;
    /// Same run: statement mode 245.48 µs per single-row UPDATE (17.9×).
    pub const STATEMENT_TRIGGER_US_PER_WRITE: f64 = 245.48 - 13.74;
    /// bench/README.md, bench/triggers, "Quiet machine, after the session-6
    /// merge": the drain's server CPU per event at 1 client.
    pub const DRAIN_US_PER_EVENT: f64 = 36.0;
    /// bench/cdc (a) on a quiet machine: server CPU per writer transaction
    /// 92 µs without a slot, 147 with one consumed (walsender, wake-ups).
    pub const SLOT_US_PER_TRANSACTION: f64 = 147.0 - 92.0;
    pub const ROW: &str = "bench/README.md, bench/triggers: row mode 0.90× of no-audit TPS at 1 client and 0.82× at 2 \
         (quiet machine, after the session-6 merge, fsync on); +16.6 µs of backend CPU per single-row UPDATE \
         (30.37 vs 13.74, final quiet run) and the drain's 36 µs of server CPU per event";
    pub const STATEMENT: &str =
        "bench/README.md, bench/triggers final quiet run: a bulk UPDATE of 200,000 rows \
         2.85× no audit (row mode 3.17×), but 245 µs per single-row UPDATE (17.9×)";
    pub const LOGICAL: &str = "bench/README.md, bench/cdc (a) on a quiet machine, fsync on: single-row UPDATE TPS \
         0.78× of no capture at 1 client and 1.04× at 2; the slot costs ~55 µs of server CPU per writer \
         transaction (92 → 147 µs), nothing runs inside the writer's transaction";
}

/// How a table should be captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capture {
    RowTriggers,
    StatementTriggers,
    LogicalReplication,
}

impl Capture {
    fn text(self) -> &'static str {
        match self {
            Capture::RowTriggers => "row triggers (pgtrail track)",
            Capture::StatementTriggers => "statement triggers (pgtrail track --mode statement)",
            Capture::LogicalReplication => "logical replication (pgtrail replicate --setup)",
        }
    }
}

/// The capture path doctor recommends for a table, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    pub capture: Capture,
    /// Why, in one sentence.
    pub reason: String,
    /// The expected cost at the table's write rate.
    pub cost: String,
    /// Which benchmark figure the cost comes from.
    pub figure: &'static str,
}

/// What doctor read about one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableFacts {
    pub schema: String,
    pub name: String,
    pub owner: String,
    /// `table` or `partitioned` (counts and sizes are its partitions').
    pub kind: &'static str,
    pub has_primary_key: bool,
    /// `default`, `full`, `index` or `nothing`.
    pub replica_identity: &'static str,
    /// Columns whose values may be stored out of line (TOAST).
    pub toastable_columns: Vec<String>,
    /// Bytes of out-of-line values stored now (the TOAST relations' size).
    pub toast_bytes: i64,
    /// Estimated rows (`reltuples`; `None` before the first ANALYZE).
    pub rows: Option<f64>,
    /// Estimated bytes per row as REPLICA IDENTITY FULL would log it.
    pub row_bytes: Option<f64>,
    /// `pg_stats` (column widths, plus TOAST bytes per row) or `size` (heap
    /// and TOAST bytes over rows, when the role may not read `pg_stats`).
    pub row_bytes_from: Option<&'static str>,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    /// The window the counts cover, in seconds.
    pub window_seconds: f64,
    /// `stats_reset`, `server_start` or `sample`.
    pub window_from: &'static str,
    pub writes_per_second: f64,
    /// Rows written per INSERT, UPDATE or DELETE statement, from
    /// `pg_stat_statements` when it is installed and readable.
    pub rows_per_statement: Option<f64>,
    /// Trigger capture: `row`, `statement`, or `None` when not tracked.
    pub triggers: Option<&'static str>,
    pub triggers_enabled: bool,
    /// Published by pgtrail's publication (logical replication).
    pub in_publication: bool,
    pub recommendation: Recommendation,
}

impl TableFacts {
    fn subject(&self) -> Subject {
        Subject::table(&self.schema, &self.name)
    }

    fn quoted(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// Whether UPDATE and DELETE can be published as things are.
    fn can_publish_updates(&self) -> bool {
        match self.replica_identity {
            "full" | "index" => true,
            "default" => self.has_primary_key,
            _ => false,
        }
    }

    fn captured(&self) -> bool {
        self.triggers.is_some() || self.in_publication
    }

    fn changes_per_second(&self) -> f64 {
        if self.window_seconds > 0.0 {
            (self.updates + self.deletes) as f64 / self.window_seconds
        } else {
            0.0
        }
    }
}

const TABLES: &str = "\
select t.oid::int8, n.nspname::text, t.relname::text, t.relkind::text, t.relreplident::text, \
       pg_get_userbyid(t.relowner)::text, \
       exists (select 1 from pg_index i where i.indrelid = t.oid and i.indisprimary), \
       array(select a.attname::text from pg_attribute a \
             where a.attrelid = t.oid and a.attnum > 0 and not a.attisdropped \
               and a.attlen = -1 and a.attstorage <> 'p' order by a.attnum), \
       p.rows::float8, coalesce(p.heap, 0)::int8, coalesce(p.toast, 0)::int8, \
       (select sum(s.avg_width)::int8 from pg_stats s \
         where s.schemaname = n.nspname and s.tablename = t.relname \
           and s.inherited = (t.relkind = 'p')), \
       coalesce(p.ins, 0)::int8, coalesce(p.upd, 0)::int8, coalesce(p.del, 0)::int8, \
       array(select distinct case when (g.tgtype & 1) = 1 then 'row' else 'statement' end \
             from pg_trigger g where g.tgrelid = t.oid \
               and g.tgname in ('pgtrail_capture_insert', 'pgtrail_capture_update', 'pgtrail_capture_delete')), \
       coalesce((select bool_and(g.tgenabled in ('O', 'A')) from pg_trigger g \
                 where g.tgrelid = t.oid and g.tgname like 'pgtrail\\_capture\\_%'), true), \
       exists (select 1 from pg_publication_tables pt \
               where pt.pubname = $2 and pt.schemaname = n.nspname and pt.tablename = t.relname) \
from pg_class t join pg_namespace n on n.oid = t.relnamespace \
left join lateral ( \
  select sum(greatest(c.reltuples, 0)) filter (where c.reltuples >= 0) as rows, \
         sum(pg_relation_size(c.oid)) as heap, \
         sum(coalesce(pg_relation_size(nullif(c.reltoastrelid, 0::oid)), 0)) as toast, \
         sum(s.n_tup_ins) as ins, sum(s.n_tup_upd) as upd, sum(s.n_tup_del) as del \
  from (select t.oid as relid where t.relkind = 'r' \
        union all select pt.relid from pg_partition_tree(t.oid) pt \
        where t.relkind = 'p' and pt.isleaf) leaf \
  join pg_class c on c.oid = leaf.relid \
  left join pg_stat_user_tables s on s.relid = c.oid) p on true \
where t.relkind in ('r', 'p') and not t.relispartition \
  and n.nspname <> all($1) and n.nspname not like 'pg\\_%' \
order by 2, 3";

/// Rows per statement from which a table's writes count as bulk.
const BULK_ROWS_PER_STATEMENT: f64 = 100.0;

/// The rows per write statement of each table that `pg_stat_statements`
/// knows of, `(schema, table, rows per statement)`; empty when it is not
/// installed. Statement texts are parsed with pgtrail's analyzer (the
/// proxy's), never run; an unqualified name is taken as `public`'s.
async fn statements(
    look: &mut Look<'_>,
) -> Result<Vec<(String, String, f64)>, tokio_postgres::Error> {
    let schema: Option<String> = look
        .client
        .query_opt(
            "select n.nspname::text from pg_extension e join pg_namespace n on n.oid = e.extnamespace \
             where e.extname = 'pg_stat_statements'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    let Some(schema) = schema else {
        return Ok(Vec::new());
    };
    let sql = format!(
        "select query, calls, rows from {}.pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
           and calls > 0 and rows > 0 and query ~* '^\\s*(with|insert|update|delete|merge)'",
        pgtrail_cdc::connection::quote_ident(&schema)
    );
    let Some(rows) = look
        .query(
            "pg_stat_statements (rows per write statement)",
            "pg_read_all_stats",
            &sql,
            &[],
        )
        .await?
    else {
        return Ok(Vec::new());
    };
    let analyzer = pgtrail_sql::Analyzer::new(
        0,
        &pgtrail_core::config::IdentityConfig::default(),
        pgtrail_sql::TextPolicy::Constants,
    );
    let mut per_table: Vec<(String, String, i64, i64)> = Vec::new();
    for r in &rows {
        let (text, calls, written): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let analysis = analyzer.analyze_uncached(&text);
        for statement in &analysis.statements {
            for object in statement
                .objects
                .iter()
                .filter(|o| o.access == pgtrail_sql::Access::Write && !o.maybe_cte)
            {
                let schema = object.schema.clone().unwrap_or_else(|| "public".into());
                match per_table
                    .iter_mut()
                    .find(|(s, n, _, _)| *s == schema && *n == object.name)
                {
                    Some(entry) => {
                        entry.2 += calls;
                        entry.3 += written;
                    }
                    None => per_table.push((schema, object.name.clone(), calls, written)),
                }
            }
        }
    }
    Ok(per_table
        .into_iter()
        .map(|(schema, name, calls, written)| (schema, name, written as f64 / calls.max(1) as f64))
        .collect())
}

const WINDOW: &str = "\
select extract(epoch from now() - coalesce(d.stats_reset, pg_postmaster_start_time()))::float8, \
       d.stats_reset is not null \
from pg_stat_database d where d.datname = current_database()";

/// Reads every user table and adds their findings.
pub async fn examine(
    look: &mut Look<'_>,
    server: &ServerFacts,
    options: &Options,
) -> Result<Vec<TableFacts>, tokio_postgres::Error> {
    let excluded: Vec<&str> = EXCLUDED_SCHEMAS.to_vec();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&excluded, &options.publication];
    let Some(rows) = look
        .query("the tables", "pg_monitor", TABLES, &params)
        .await?
    else {
        return Ok(Vec::new());
    };
    let (window_seconds, window_from, counts) = match options.sample_seconds {
        Some(seconds) => {
            look.pause(seconds).await?;
            let later = look
                .query("the tables", "pg_monitor", TABLES, &params)
                .await?
                .unwrap_or_default();
            let counts: Vec<(i64, [i64; 3])> = later
                .iter()
                .map(|r| (r.get(0), [r.get(12), r.get(13), r.get(14)]))
                .collect();
            (seconds.max(1) as f64, "sample", Some(counts))
        }
        None => {
            let row = look.client.query_opt(WINDOW, &[]).await?;
            match row {
                Some(r) => (
                    r.get::<_, f64>(0),
                    if r.get(1) {
                        "stats_reset"
                    } else {
                        "server_start"
                    },
                    None,
                ),
                None => (0.0, "server_start", None),
            }
        }
    };
    let bulk = statements(look).await?;
    let mut tables = Vec::new();
    for r in &rows {
        let oid: i64 = r.get(0);
        let mut writes: [i64; 3] = [r.get(12), r.get(13), r.get(14)];
        if let Some(counts) = &counts {
            let later = counts.iter().find(|(o, _)| *o == oid).map(|(_, c)| *c);
            writes = match later {
                Some(l) => [0, 1, 2].map(|i| (l[i] - writes[i]).max(0)),
                None => [0; 3],
            };
        }
        let rows_estimate: Option<f64> = r.get(8);
        let heap: i64 = r.get(9);
        let toast: i64 = r.get(10);
        let widths: Option<i64> = r.get(11);
        // pg_stats' widths are the stored ones (an out-of-line value counts
        // as its 18-byte pointer), so the TOAST bytes per row are added: FULL
        // logs the old row with its out-of-line values fetched.
        let toast_per_row = match rows_estimate {
            Some(n) if n >= 1.0 => toast as f64 / n,
            _ => 0.0,
        };
        let (row_bytes, row_bytes_from) = match (rows_estimate, widths) {
            (_, Some(w)) => (
                Some(w as f64 + TUPLE_OVERHEAD_BYTES + toast_per_row),
                Some("pg_stats"),
            ),
            (Some(n), None) if n >= 1.0 => (Some((heap + toast) as f64 / n), Some("size")),
            _ => (None, None),
        };
        let total = writes.iter().sum::<i64>() as f64;
        let triggers: Vec<String> = r.get(15);
        let mut table = TableFacts {
            schema: r.get(1),
            name: r.get(2),
            owner: r.get(5),
            kind: if r.get::<_, String>(3) == "p" {
                "partitioned"
            } else {
                "table"
            },
            has_primary_key: r.get(6),
            replica_identity: match r.get::<_, String>(4).as_str() {
                "f" => "full",
                "i" => "index",
                "n" => "nothing",
                _ => "default",
            },
            toastable_columns: r.get(7),
            toast_bytes: toast,
            rows: rows_estimate,
            row_bytes,
            row_bytes_from,
            inserts: writes[0],
            updates: writes[1],
            deletes: writes[2],
            window_seconds,
            window_from,
            writes_per_second: if window_seconds > 0.0 {
                total / window_seconds
            } else {
                0.0
            },
            rows_per_statement: None,
            triggers: if triggers.iter().any(|t| t == "row") {
                Some("row")
            } else if triggers.is_empty() {
                None
            } else {
                Some("statement")
            },
            triggers_enabled: r.get(16),
            in_publication: r.get(17),
            recommendation: Recommendation {
                capture: Capture::RowTriggers,
                reason: String::new(),
                cost: String::new(),
                figure: figures::ROW,
            },
        };
        table.rows_per_statement = bulk
            .iter()
            .find(|(schema, name, _)| *schema == table.schema && *name == table.name)
            .map(|(_, _, per)| *per);
        table.recommendation = recommend(&table, server, options.busy_writes_per_second);
        findings(look, &table);
        tables.push(table);
    }
    if window_from != "sample" && window_seconds < 3_600.0 && !tables.is_empty() {
        look.add(Finding::new(
            "stats_window_short",
            Severity::Info,
            Subject::Server,
            format!(
                "write rates cover only the last {:.0} s (since the statistics were reset or the \
                 server started): they may not be typical; --sample SECONDS measures them now",
                window_seconds
            ),
        ));
    }
    Ok(tables)
}

/// Which path suits a table at its write rate, and what it would cost.
fn recommend(table: &TableFacts, server: &ServerFacts, busy: f64) -> Recommendation {
    let rate = table.writes_per_second;
    let row_cost_us = rate * (figures::ROW_TRIGGER_US_PER_WRITE + figures::DRAIN_US_PER_EVENT);
    let share = |us_per_second: f64| format!("{:.1}% of one core", us_per_second / 10_000.0);
    let logical_possible = server.version_num >= pgtrail_cdc::catalog::MIN_VERSION_NUM;
    let rate_text = format!(
        "{rate:.1} writes/s ({} inserts, {} updates, {} deletes over {:.0} s)",
        table.inserts, table.updates, table.deletes, table.window_seconds
    );
    // Already published: logical replication is set up and costs writers
    // the least; keep it.
    if (rate >= busy || table.in_publication) && logical_possible {
        let mut reason = if rate >= busy {
            format!(
                "{rate_text}: busy (≥ {busy} writes/s); logical replication keeps capture out of \
                 the writers' transactions"
            )
        } else {
            format!(
                "{rate_text}: already published; logical replication keeps capture out of the \
                 writers' transactions"
            )
        };
        if !table.can_publish_updates() {
            reason.push_str(
                "; it needs REPLICA IDENTITY FULL (setup sets it) to publish UPDATEs and DELETEs",
            );
        }
        if server.wal_level != "logical" {
            reason.push_str("; wal_level must be logical first (a restart)");
        }
        return Recommendation {
            capture: Capture::LogicalReplication,
            reason,
            cost: format!(
                "~{:.0} µs of server CPU per writer transaction for the whole database, whatever \
                 the table; row triggers here would cost ~{:.0} µs of server CPU per second ({})",
                figures::SLOT_US_PER_TRANSACTION,
                row_cost_us,
                share(row_cost_us)
            ),
            figure: figures::LOGICAL,
        };
    }
    // Bulk statements (pg_stat_statements says so), or a table someone who
    // knew already put in statement mode.
    let bulk = table
        .rows_per_statement
        .is_some_and(|per| per >= BULK_ROWS_PER_STATEMENT);
    if bulk || table.triggers == Some("statement") {
        let why = match table.rows_per_statement {
            Some(per) if bulk => format!(
                "written {per:.0} rows per statement (pg_stat_statements): statement triggers \
                 write each statement's rows in one INSERT … SELECT"
            ),
            _ => "tracked in statement mode, the cheaper mode for bulk statements (and the \
                  dearer one for single rows)"
                .into(),
        };
        let cost_us =
            rate * (figures::STATEMENT_TRIGGER_US_PER_WRITE + figures::DRAIN_US_PER_EVENT);
        return Recommendation {
            capture: Capture::StatementTriggers,
            reason: format!("{rate_text}: {why}"),
            cost: format!(
                "at most ~{cost_us:.0} µs of server CPU per second ({}) if every write were a \
                 single-row statement; far less per row in bulk",
                share(cost_us)
            ),
            figure: figures::STATEMENT,
        };
    }
    let why = if rate >= busy {
        "busy, but this server is too old for pgtrail's logical replication"
    } else {
        "quiet enough that triggers cost little, and they need no server setting, slot or restart"
    };
    Recommendation {
        capture: Capture::RowTriggers,
        reason: format!(
            "{rate_text}: {why}; if its writes come as bulk statements of thousands of rows, \
             statement triggers instead ({})",
            figures::STATEMENT
        ),
        cost: format!(
            "~{row_cost_us:.0} µs of server CPU per second at this rate ({})",
            share(row_cost_us)
        ),
        figure: figures::ROW,
    }
}

/// The findings about one table.
fn findings(look: &mut Look<'_>, t: &TableFacts) {
    let name = t.subject().text();
    let quoted = t.quoted();
    if !t.triggers_enabled {
        look.add(
            Finding::new(
                "capture_trigger_disabled",
                Severity::Fail,
                t.subject(),
                format!(
                    "{name}: a pgtrail capture trigger is disabled: its writes are not captured"
                ),
            )
            .fix(format!("pgtrail track {name}  -- restores its triggers")),
        );
    }
    if t.in_publication && !t.can_publish_updates() {
        look.add(
            Finding::new(
                "published_without_identity",
                Severity::Fail,
                t.subject(),
                format!(
                    "{name} is in the publication with replica identity {} and no primary key: \
                     PostgreSQL refuses its UPDATEs and DELETEs",
                    t.replica_identity
                ),
            )
            .fix(format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;")),
        );
    }
    if !t.has_primary_key {
        look.add(
            Finding::new(
                "table_without_primary_key",
                Severity::Warn,
                t.subject(),
                format!(
                    "{name} has no primary key: history and blame can only identify its rows by \
                     their whole image, and logical replication must log whole old rows \
                     (REPLICA IDENTITY FULL) to publish its UPDATEs and DELETEs"
                ),
            )
            .fix(format!("ALTER TABLE {quoted} ADD PRIMARY KEY (<columns>);")),
        );
    }
    toast(look, t, &name, &quoted);
    let r = &t.recommendation;
    let current = match (t.triggers, t.in_publication) {
        (Some(mode), true) => format!("tracked by {mode} triggers and published"),
        (Some(mode), false) => format!("tracked by {mode} triggers"),
        (None, true) => "published for logical replication".into(),
        (None, false) => "not captured".into(),
    };
    look.add(Finding::new(
        "capture_recommendation",
        Severity::Info,
        t.subject(),
        format!(
            "{name} ({current}): {}: {}; expected cost {} [{}]",
            r.capture.text(),
            r.reason,
            r.cost,
            r.figure
        ),
    ));
    if !t.captured() {
        look.add(
            Finding::new(
                "table_not_captured",
                Severity::Info,
                t.subject(),
                format!("{name} is neither tracked by triggers nor published: nothing records its changes"),
            )
            .fix(match r.capture {
                Capture::LogicalReplication => format!("pgtrail replicate --db URL --setup --tables {}", cli_name(t)),
                Capture::StatementTriggers => format!("pgtrail track --db URL --mode statement {}", cli_name(t)),
                Capture::RowTriggers => format!("pgtrail track --db URL {}", cli_name(t)),
            }),
        );
    }
}

/// TOASTable columns: partial UPDATEs under logical replication, and the
/// WAL that REPLICA IDENTITY FULL would add.
fn toast(look: &mut Look<'_>, t: &TableFacts, name: &str, quoted: &str) {
    if t.toastable_columns.is_empty() || t.replica_identity == "full" {
        return;
    }
    let columns: Vec<String> = t
        .toastable_columns
        .iter()
        .map(|c| super::ident(c))
        .collect();
    let cost = match t.row_bytes {
        Some(bytes) => format!(
            "REPLICA IDENTITY FULL would add about {} of WAL per UPDATE and DELETE \
             (estimated from {}), ~{}/day at the current {:.2} updates and deletes per second",
            bytes_text(bytes),
            if t.row_bytes_from == Some("size") {
                "the table's size over its rows"
            } else {
                "pg_stats' column widths and the TOAST bytes per row"
            },
            bytes_text(bytes * t.changes_per_second() * 86_400.0),
            t.changes_per_second()
        ),
        None => "REPLICA IDENTITY FULL would log each whole old row on UPDATE and DELETE \
                 (row width unknown: ANALYZE the table for an estimate)"
            .into(),
    };
    let by_logical = t.in_publication || t.recommendation.capture == Capture::LogicalReplication;
    if t.toast_bytes > 0 {
        look.add(
            Finding::new(
                "toast_partial_updates",
                if by_logical {
                    Severity::Warn
                } else {
                    Severity::Info
                },
                t.subject(),
                format!(
                    "{name} stores {} of values out of line (TOAST) in {}: under replica identity \
                     {}, an UPDATE that leaves them unchanged does not write them to the WAL, so \
                     logical replication takes them from its cache or the store, else lists them \
                     in `partial` (trigger capture sees whole rows); {cost}",
                    bytes_text(t.toast_bytes as f64),
                    columns.join(", "),
                    t.replica_identity
                ),
            )
            .fix(format!("ALTER TABLE {quoted} REPLICA IDENTITY FULL;")),
        );
    } else {
        look.add(Finding::new(
            "toastable_columns",
            Severity::Info,
            t.subject(),
            format!(
                "{name} has TOASTable columns ({}) but no value stored out of line yet; once \
                 there are, logical replication's UPDATEs may list them in `partial`; {cost}",
                columns.join(", ")
            ),
        ));
    }
}

/// The table as `pgtrail track` and `--tables` read it: `schema.table`,
/// each part double-quoted when it needs to be (and the whole quoted for
/// the shell).
fn cli_name(t: &TableFacts) -> String {
    let name = format!("{}.{}", super::ident(&t.schema), super::ident(&t.name));
    format!("'{}'", name.replace('\'', "'\\''"))
}
