//! The server: version, `wal_level` and the replication settings, the
//! replication slots and what WAL they hold, pgAudit, and what a managed
//! service allows.
//!
//! Needs: nothing for the settings and slots (`pg_settings`,
//! `pg_replication_slots` are readable by every role), except
//! `shared_preload_libraries`, which only superusers and members of
//! `pg_read_all_settings` (part of `pg_monitor`) may read.

use serde::Serialize;

use super::{bytes_text, ident, Finding, Look, Options, Severity, Subject};

/// What doctor read about the server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFacts {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: i32,
    pub wal_level: String,
    pub max_replication_slots: i32,
    pub max_wal_senders: i32,
    /// Bytes; -1: unlimited.
    pub max_slot_wal_keep_size_bytes: Option<i64>,
    pub track_commit_timestamp: bool,
    /// The role doctor ran as.
    pub role: String,
    pub role_is_superuser: bool,
    /// Whether the role may read every setting and statistic (`pg_monitor`,
    /// or its parts `pg_read_all_settings` and `pg_read_all_stats`).
    pub role_is_monitor: bool,
    /// The managed service the server looks like, if any (`rds`,
    /// `cloudsql`, `alloydb`, `azure`).
    pub managed: Option<&'static str>,
    /// Whether pgAudit is loaded (`None`: could not be told).
    pub pgaudit: Option<bool>,
    pub slots: Vec<SlotFacts>,
    /// Whether pgtrail's publication exists in this database.
    pub publication_exists: bool,
}

/// One replication slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotFacts {
    pub name: String,
    /// `logical` or `physical`.
    pub slot_type: String,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub active: bool,
    /// WAL bytes the slot makes the server keep (insert position − restart_lsn).
    pub retained_bytes: i64,
    /// WAL bytes between the insert position and what the consumer confirmed
    /// (logical slots).
    pub lag_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

const SETTINGS: &str = "\
select current_setting('server_version'), current_setting('server_version_num')::int4, \
       current_setting('wal_level'), current_setting('max_replication_slots')::int4, \
       current_setting('max_wal_senders')::int4, \
       case when current_setting('max_slot_wal_keep_size', true) is null then null \
            when current_setting('max_slot_wal_keep_size', true) = '-1' then -1::int8 \
            else pg_size_bytes(current_setting('max_slot_wal_keep_size', true)) end, \
       current_setting('track_commit_timestamp') = 'on', \
       current_user::text, \
       coalesce((select rolsuper from pg_roles where rolname = current_user), false), \
       pg_has_role(current_user, 'pg_read_all_settings', 'usage') \
         and pg_has_role(current_user, 'pg_read_all_stats', 'usage')";

/// Settings and roles by which managed services tell themselves apart.
const MANAGED: &str = "\
select current_setting('rds.logical_replication', true), \
       current_setting('cloudsql.logical_decoding', true), \
       current_setting('azure.replication_support', true), \
       current_setting('alloydb.logical_decoding', true), \
       array(select rolname::text from pg_roles where rolname in \
             ('rds_superuser', 'rdsadmin', 'cloudsqlsuperuser', 'alloydbsuperuser', 'azure_pg_admin', 'azuresu') \
             order by 1)";

const SLOTS: &str = "\
with here as (select case when pg_is_in_recovery() then pg_last_wal_replay_lsn() \
                          else pg_current_wal_insert_lsn() end as lsn) \
select s.slot_name::text, s.slot_type::text, s.database::text, s.plugin::text, s.active, \
       coalesce(pg_wal_lsn_diff(here.lsn, s.restart_lsn), 0)::int8, \
       pg_wal_lsn_diff(here.lsn, s.confirmed_flush_lsn)::int8, s.wal_status \
from pg_replication_slots s, here order by 1";

const PGAUDIT: &str = "\
select current_setting('pgaudit.log', true), current_setting('pgaudit.role', true), \
       current_setting('pgaudit.log_catalog', true), current_setting('pgaudit.log_parameter', true), \
       current_setting('pgaudit.log_relation', true), current_setting('pgaudit.log_level', true), \
       exists (select 1 from pg_extension where extname = 'pgaudit')";

/// Reads the server's facts and adds its findings.
pub async fn examine(
    look: &mut Look<'_>,
    options: &Options,
) -> Result<ServerFacts, tokio_postgres::Error> {
    let row = look.client.query_one(SETTINGS, &[]).await?;
    let mut facts = ServerFacts {
        version: row.get(0),
        version_num: row.get(1),
        wal_level: row.get(2),
        max_replication_slots: row.get(3),
        max_wal_senders: row.get(4),
        max_slot_wal_keep_size_bytes: row.get(5),
        track_commit_timestamp: row.get(6),
        role: row.get(7),
        role_is_superuser: row.get(8),
        role_is_monitor: row.get(9),
        managed: None,
        pgaudit: None,
        slots: Vec::new(),
        publication_exists: false,
    };
    facts.publication_exists = look
        .client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&options.publication],
        )
        .await?
        .is_some();
    version(look, &facts);
    role(look, &facts);
    managed(look, &mut facts).await?;
    wal(look, &facts);
    slots(look, &mut facts, options).await?;
    pgaudit(look, &mut facts).await?;
    Ok(facts)
}

fn version(look: &mut Look<'_>, facts: &ServerFacts) {
    let (severity, note) = match facts.version_num {
        n if n < 130_000 => (
            Severity::Fail,
            "trigger capture needs PostgreSQL 13 or newer, logical replication 14",
        ),
        n if n < 140_000 => (
            Severity::Warn,
            "trigger capture works; pgtrail's logical replication needs PostgreSQL 14 or newer",
        ),
        _ => (Severity::Info, "both capture paths are supported"),
    };
    let mut finding = Finding::new(
        "server_version",
        severity,
        Subject::Server,
        format!("PostgreSQL {}: {note}", facts.version),
    );
    if severity != Severity::Info {
        finding = finding.fix("upgrade PostgreSQL");
    }
    look.add(finding);
}

fn role(look: &mut Look<'_>, facts: &ServerFacts) {
    let message = if facts.role_is_superuser {
        format!(
            "doctor ran as superuser {}; it needs only pg_monitor",
            ident(&facts.role)
        )
    } else if facts.role_is_monitor {
        format!(
            "doctor ran as {} with pg_monitor's reads: every check could run",
            ident(&facts.role)
        )
    } else {
        format!(
            "doctor ran as {} without pg_monitor: some checks may be reported as not checked",
            ident(&facts.role)
        )
    };
    look.add(Finding::new(
        "doctor_role",
        Severity::Info,
        Subject::Server,
        message,
    ));
}

async fn managed(
    look: &mut Look<'_>,
    facts: &mut ServerFacts,
) -> Result<(), tokio_postgres::Error> {
    let row = look.client.query_one(MANAGED, &[]).await?;
    let rds: Option<String> = row.get(0);
    let cloudsql: Option<String> = row.get(1);
    let azure: Option<String> = row.get(2);
    let alloydb: Option<String> = row.get(3);
    let roles: Vec<String> = row.get(4);
    let has = |name: &str| roles.iter().any(|r| r == name);
    let (service, name, setting, value, admin) = if rds.is_some() || has("rds_superuser") {
        (
            "rds",
            "Amazon RDS / Aurora",
            "rds.logical_replication",
            rds,
            "rds_superuser",
        )
    } else if alloydb.is_some() || has("alloydbsuperuser") {
        (
            "alloydb",
            "AlloyDB",
            "alloydb.logical_decoding",
            alloydb,
            "alloydbsuperuser",
        )
    } else if cloudsql.is_some() || has("cloudsqlsuperuser") {
        (
            "cloudsql",
            "Google Cloud SQL",
            "cloudsql.logical_decoding",
            cloudsql,
            "cloudsqlsuperuser",
        )
    } else if azure.is_some() || has("azure_pg_admin") {
        (
            "azure",
            "Azure Database for PostgreSQL",
            "azure.replication_support",
            azure,
            "azure_pg_admin",
        )
    } else {
        return Ok(());
    };
    facts.managed = Some(service);
    look.add(Finding::new(
        "managed_service",
        Severity::Info,
        Subject::Server,
        format!(
            "this looks like {name} (found {}): superuser is not available; \
             {admin} is the most a customer role gets",
            if roles.is_empty() {
                setting.to_string()
            } else {
                roles.join(", ")
            }
        ),
    ));
    let logical_on = matches!(
        value.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("on" | "1" | "true" | "logical")
    );
    if value.is_some() && !logical_on {
        let fix = match service {
            "rds" => "set rds.logical_replication = 1 in the DB parameter group, then reboot the instance",
            "cloudsql" => "set the database flag cloudsql.logical_decoding = on (the instance restarts)",
            "alloydb" => "set the database flag alloydb.logical_decoding = on (the instance restarts)",
            _ => "set the server parameter azure.replication_support = logical, then restart",
        };
        look.add(
            Finding::new(
                "managed_logical_replication_off",
                Severity::Warn,
                Subject::Setting {
                    name: setting.into(),
                },
                format!(
                    "{setting} is {}: logical replication is off on this {name} server; \
                     only trigger capture can run until it is turned on",
                    value.as_deref().unwrap_or("unset")
                ),
            )
            .fix(fix),
        );
    }
    if !facts.role_is_superuser {
        look.add(Finding::new(
            "superuser_unavailable",
            Severity::Info,
            Subject::Server,
            format!(
                "no superuser here: `pgtrail install` needs the rights to create event triggers \
                 (a member of {admin} where the service allows it); logical replication needs a \
                 role with REPLICATION (on RDS, GRANT rds_replication)"
            ),
        ));
    }
    Ok(())
}

fn wal(look: &mut Look<'_>, facts: &ServerFacts) {
    if facts.wal_level == "logical" {
        look.add(Finding::new(
            "wal_level_logical",
            Severity::Info,
            Subject::Setting {
                name: "wal_level".into(),
            },
            "wal_level is logical: logical replication can capture this database",
        ));
    } else {
        // Logical replication set up but impossible is a failure; not set up, a choice.
        let severity = if facts.publication_exists {
            Severity::Fail
        } else {
            Severity::Warn
        };
        let fix = match facts.managed {
            Some("rds") => "set rds.logical_replication = 1 in the DB parameter group, then reboot",
            Some("cloudsql") => "set the database flag cloudsql.logical_decoding = on",
            Some("alloydb") => "set the database flag alloydb.logical_decoding = on",
            Some(_) => "set wal_level (or azure.replication_support) = logical in the server parameters, then restart",
            None => "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        };
        look.add(
            Finding::new(
                "wal_level_not_logical",
                severity,
                Subject::Setting {
                    name: "wal_level".into(),
                },
                format!(
                    "wal_level is '{}': logical replication cannot run (trigger capture can); \
                     changing it needs a restart",
                    facts.wal_level
                ),
            )
            .fix(fix),
        );
    }
    if !facts.track_commit_timestamp {
        look.add(
            Finding::new(
                "track_commit_timestamp_off",
                Severity::Warn,
                Subject::Setting {
                    name: "track_commit_timestamp".into(),
                },
                "track_commit_timestamp is off: trigger capture seals events in transaction-id \
                 order, which can differ from commit order, and without commit times",
            )
            .fix("ALTER SYSTEM SET track_commit_timestamp = on; then restart PostgreSQL"),
        );
    }
    match facts.max_slot_wal_keep_size_bytes {
        Some(-1) => look.add(
            Finding::new(
                "max_slot_wal_keep_size_unlimited",
                Severity::Warn,
                Subject::Setting { name: "max_slot_wal_keep_size".into() },
                "max_slot_wal_keep_size is -1 (unlimited): a slot whose consumer stops keeps \
                 WAL until the disk fills and the server stops; with a limit the slot is \
                 invalidated instead (pgtrail records slot_invalidated and the gap is known)",
            )
            .fix("ALTER SYSTEM SET max_slot_wal_keep_size = '20GB'; SELECT pg_reload_conf();  -- size it to hours of WAL"),
        ),
        Some(bytes) => look.add(Finding::new(
            "max_slot_wal_keep_size",
            Severity::Info,
            Subject::Setting { name: "max_slot_wal_keep_size".into() },
            format!(
                "max_slot_wal_keep_size is {}: a slot that falls further behind is invalidated",
                bytes_text(bytes as f64)
            ),
        )),
        None => {}
    }
}

async fn slots(
    look: &mut Look<'_>,
    facts: &mut ServerFacts,
    options: &Options,
) -> Result<(), tokio_postgres::Error> {
    let Some(rows) = look
        .query("replication slots", "pg_monitor", SLOTS, &[])
        .await?
    else {
        return Ok(());
    };
    facts.slots = rows
        .iter()
        .map(|r| SlotFacts {
            name: r.get(0),
            slot_type: r.get(1),
            database: r.get(2),
            plugin: r.get(3),
            active: r.get(4),
            retained_bytes: r.get(5),
            lag_bytes: r.get(6),
            wal_status: r.get(7),
        })
        .collect();
    let used = i32::try_from(facts.slots.len()).unwrap_or(i32::MAX);
    let free = facts.max_replication_slots - used;
    let senders = if facts.max_wal_senders <= used {
        "; max_wal_senders is no more than the slots in use, so a new consumer may find no WAL sender"
    } else {
        ""
    };
    let severity = if free <= 0 || !senders.is_empty() {
        Severity::Warn
    } else {
        Severity::Info
    };
    let mut finding = Finding::new(
        if severity == Severity::Info {
            "replication_capacity"
        } else {
            "replication_capacity_exhausted"
        },
        severity,
        Subject::Setting {
            name: "max_replication_slots".into(),
        },
        format!(
            "{used} of max_replication_slots = {} in use, max_wal_senders = {}{senders}",
            facts.max_replication_slots, facts.max_wal_senders
        ),
    );
    if severity != Severity::Info {
        finding = finding.fix(format!(
            "ALTER SYSTEM SET max_replication_slots = {}; ALTER SYSTEM SET max_wal_senders = {}; then restart",
            facts.max_replication_slots.max(used) + 2,
            facts.max_wal_senders.max(used) + 2
        ));
    }
    look.add(finding);
    for slot in &facts.slots {
        let subject = Subject::Slot {
            name: slot.name.clone(),
        };
        let held = bytes_text(slot.retained_bytes as f64);
        let ours = if slot.name == options.slot {
            " (pgtrail's)"
        } else {
            ""
        };
        let name = ident(&slot.name);
        let drop = format!(
            "SELECT pg_drop_replication_slot({});  -- only if no consumer will come back",
            pgtrail_cdc::connection::quote_literal(&slot.name)
        );
        if slot.wal_status.as_deref() == Some("lost") {
            look.add(
                Finding::new(
                    "slot_lost",
                    Severity::Fail,
                    subject,
                    format!(
                        "{} slot {name}{ours} is invalidated: the WAL it needed is gone and its \
                         consumer skipped changes",
                        slot.slot_type
                    ),
                )
                .fix("recreate it: pgtrail replicate --drop, then --setup --baseline"),
            );
        } else if !slot.active {
            look.add(
                Finding::new(
                    "slot_inactive",
                    Severity::Warn,
                    subject,
                    format!(
                        "{} slot {name}{ours} has no consumer and holds {held} of WAL, growing \
                         with every write{}",
                        slot.slot_type,
                        if facts.max_slot_wal_keep_size_bytes == Some(-1) {
                            " until the disk fills (max_slot_wal_keep_size is unlimited)"
                        } else {
                            ""
                        }
                    ),
                )
                .fix(if ours.is_empty() {
                    drop
                } else {
                    "start its consumer (pgtrail run --replication-db URL)".into()
                }),
            );
        } else if slot.retained_bytes > options.lag_warn_bytes
            || slot.wal_status.as_deref() == Some("unreserved")
        {
            look.add(
                Finding::new(
                    "slot_lagging",
                    Severity::Warn,
                    subject,
                    format!(
                        "{} slot {name}{ours} is connected but holds {held} of WAL (wal_status {})",
                        slot.slot_type,
                        slot.wal_status.as_deref().unwrap_or("unknown")
                    ),
                )
                .fix("look at the consumer's throughput (pgtrail status --db URL)"),
            );
        } else {
            look.add(Finding::new(
                "slot_ok",
                Severity::Info,
                subject,
                format!(
                    "{} slot {name}{ours} is connected and holds {held} of WAL",
                    slot.slot_type
                ),
            ));
        }
    }
    Ok(())
}

async fn pgaudit(
    look: &mut Look<'_>,
    facts: &mut ServerFacts,
) -> Result<(), tokio_postgres::Error> {
    let row = look.client.query_one(PGAUDIT, &[]).await?;
    let log: Option<String> = row.get(0);
    let role: Option<String> = row.get(1);
    let extension: bool = row.get(6);
    // shared_preload_libraries is hidden from roles without pg_read_all_settings.
    let preload = look
        .query(
            "shared_preload_libraries (is pgAudit loaded)",
            "pg_read_all_settings",
            "select current_setting('shared_preload_libraries')",
            &[],
        )
        .await?
        .and_then(|rows| rows.first().map(|r| r.get::<_, String>(0)));
    let preloaded = preload.as_ref().map(|libraries| {
        libraries
            .split(',')
            .any(|l| l.trim().trim_matches('"').eq_ignore_ascii_case("pgaudit"))
    });
    // The settings exist once the library is loaded; with the library list
    // unreadable, that is the best sign there is.
    let loaded = preloaded.or(log.as_ref().map(|_| true));
    facts.pgaudit = loaded.or(Some(false));
    let subject = || Subject::Setting {
        name: "pgaudit".into(),
    };
    if loaded != Some(true) {
        let mut finding = Finding::new(
            "pgaudit_absent",
            Severity::Info,
            subject(),
            "pgAudit is not loaded: the server logs no statement audit; pgtrail's proxy \
             (pgtrail proxy) records statements, its capture paths record row changes",
        );
        if extension {
            finding = Finding::new(
                "pgaudit_not_loaded",
                Severity::Warn,
                subject(),
                "the pgaudit extension is created but the library is not in \
                 shared_preload_libraries: it logs nothing",
            )
            .fix("add pgaudit to shared_preload_libraries, then restart PostgreSQL");
        }
        look.add(finding);
        return Ok(());
    }
    let setting = |i: usize| {
        row.get::<_, Option<String>>(i)
            .unwrap_or_else(|| "-".into())
    };
    let logs_nothing = log
        .as_deref()
        .is_none_or(|l| l.trim().eq_ignore_ascii_case("none"))
        && role.as_deref().is_none_or(|r| r.trim().is_empty());
    let message = format!(
        "pgAudit is loaded: pgaudit.log = '{}', role = '{}', log_catalog = {}, \
         log_parameter = {}, log_relation = {}, log_level = {}",
        setting(0),
        setting(1),
        setting(2),
        setting(3),
        setting(4),
        setting(5)
    );
    if logs_nothing {
        look.add(
            Finding::new(
                "pgaudit_logs_nothing",
                Severity::Warn,
                subject(),
                format!("{message}: it logs no session class and no object audit role"),
            )
            .fix("ALTER SYSTEM SET pgaudit.log = 'write, ddl, role'; SELECT pg_reload_conf();"),
        );
    } else {
        look.add(Finding::new(
            "pgaudit_present",
            Severity::Info,
            subject(),
            message,
        ));
    }
    Ok(())
}
