//! The SQL that trigger capture installs, as versioned migrations.
//!
//! Each migration is recorded in `pgtrail.trigger_migrations` (the store's
//! own `pgtrail.schema_migrations` is separate: the two evolve apart). A
//! migration only ever runs inside the install transaction, and is written
//! to be re-runnable (`if not exists`, `or replace`), because `uninstall`
//! drops the functions and the version table but keeps the data, and a
//! later install applies everything again on top of it.
//!
//! After the migrations, [`identity_sql`] (re)writes the functions that
//! read application identity (`app_user`, `app_context`) and name the
//! sqlcommenter keys the drainer reads the user from, from configuration:
//! they are not versioned, every install writes them.

use pgtrail_core::config::IdentityConfig;
use tokio_postgres::GenericClient;

use crate::{Error, Result};

/// One versioned step of the installed SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Position in the sequence, from 1, without gaps.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// The SQL, run as one batch.
    pub sql: &'static str,
}

/// The installed migration version, or `None` when not installed.
pub async fn installed_version(client: &impl GenericClient) -> Result<Option<i32>> {
    let exists: bool = client
        .query_one(
            "select to_regclass('pgtrail.trigger_migrations') is not null",
            &[],
        )
        .await
        .map_err(Error::pg("reading the installed version"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_one("select max(version) from pgtrail.trigger_migrations", &[])
        .await
        .map_err(Error::pg("reading the installed version"))?;
    Ok(row.get(0))
}

/// The installed version, or [`Error::NotInstalled`].
pub(crate) async fn require_installed(client: &impl GenericClient) -> Result<i32> {
    installed_version(client).await?.ok_or(Error::NotInstalled)
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "inbox, tracked tables, capture generator, DDL event triggers",
        sql: include_str!("../sql/v1_capture.sql"),
    },
    Migration {
        version: 2,
        name: "roles pgtrail_reader and pgtrail_admin, privileges, guards",
        sql: include_str!("../sql/v2_protection.sql"),
    },
    Migration {
        version: 3,
        name: "leaner row-mode capture: no per-call search_path, keys read from the image",
        sql: include_str!("../sql/v3_lean_row_capture.sql"),
    },
    Migration {
        version: 4,
        name: "row images as typed rows (shapes), converted to JSON by the sealer",
        sql: include_str!("../sql/v4_shaped_row_capture.sql"),
    },
    Migration {
        version: 5,
        name: "no way in but pgtrail's: functions revoked from PUBLIC, pending rows deleted only once sealed, alarms",
        sql: include_str!("../sql/v5_no_way_in.sql"),
    },
];

/// The version this build installs.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Creates the version table (runs before any migration).
pub const VERSION_TABLE_SQL: &str = "create table if not exists pgtrail.trigger_migrations (\n    \
    version int primary key,\n    name text not null,\n    applied_at timestamptz not null default now()\n);\n";

/// Removes trigger capture, keeping the trail.
pub const UNINSTALL_SQL: &str = include_str!("../sql/uninstall.sql");

/// Removes everything in schema `pgtrail`, the trail included.
pub const DROP_DATA_SQL: &str = "drop schema if exists pgtrail cascade;\n";

/// Run after the migrations at every install: what the store's own
/// migrations made for readers, which migration 2's `revoke execute on all
/// functions ... from public` takes away when the store was created first
/// (a fresh install): `pgtrail.client_inet`, which `ip:` searches call,
/// and `pgtrail.sql_words`, `sql_index_words` and `sql_words_query`
/// (store schema 16), which searches of SQL text call;
/// the tables the store keeps beside the events, which readers read and
/// the sealer (`pgtrail_admin`) adds to with each batch: the facet summary
/// (`pgtrail.facet_hours`, store schema 11), the hours' `seq` ranges
/// (`pgtrail.seq_hours`, 13), the relations statements touched
/// (`pgtrail.events_objects`, 15); and for readers only, where each
/// copied column starts (`pgtrail.column_starts`, 17), which `ip:` reads.
/// Only once the roles and the objects exist. Every table the appender
/// writes needs its line here, or every sealed batch fails.
pub const READER_GRANTS_SQL: &str = "do $$
declare
    kept record;
begin
    for kept in select * from (values
            ('pgtrail.client_inet(text)'),
            ('pgtrail.sql_words(text)'),
            ('pgtrail.sql_index_words(text, bigint)'),
            ('pgtrail.sql_words_query(text)')) as t(name)
    loop
        if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader')
            and pg_catalog.to_regprocedure(kept.name) is not null then
            execute pg_catalog.format('grant execute on function %s to pgtrail_reader', kept.name);
        end if;
    end loop;
    for kept in select * from (values
            ('facet_hours', 'select, insert, update'),
            ('seq_hours', 'select, insert, update'),
            ('events_objects', 'select, insert'),
            ('column_starts', null)) as t(name, sealer)
    loop
        if pg_catalog.to_regclass(pg_catalog.format('pgtrail.%I', kept.name)) is not null then
            if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
                execute pg_catalog.format('grant select on pgtrail.%I to pgtrail_reader', kept.name);
            end if;
            if kept.sealer is not null
                and exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_admin') then
                execute pg_catalog.format('grant %s on pgtrail.%I to pgtrail_admin', kept.sealer, kept.name);
            end if;
        end if;
    end loop;
end
$$;
";

/// `pgtrail.app_user()` and `pgtrail.app_context()`: the first non-empty
/// of the configured session settings, else the last one as read. An
/// empty value means unset (what a setting reads as after a `SET LOCAL`
/// ended); the drainer reads it so, which spares the trigger a comparison.
///
/// Row-mode capture functions inline these into their INSERT without a
/// fixed `search_path`, so every name in them is schema-qualified, and
/// no `nullif` (it looks up `=` on the search path).
pub fn identity_sql(identity: &IdentityConfig) -> String {
    let read = |name: &String| format!("pg_catalog.current_setting({}, true)", literal(name));
    let user_expr = match identity.user_settings.split_last() {
        None => "null::pg_catalog.text".to_string(),
        Some((last, first)) => {
            let tried: String = first
                .iter()
                .map(|name| {
                    format!(
                        "when {} operator(pg_catalog.<>) '' then {} ",
                        read(name),
                        read(name)
                    )
                })
                .collect();
            if tried.is_empty() {
                read(last)
            } else {
                format!("case {tried}else {} end", read(last))
            }
        }
    };
    format!(
        "create or replace function pgtrail.app_user() returns text\n\
         language sql stable as $$ select {user_expr} $$;\n\
         create or replace function pgtrail.app_context() returns text\n\
         language sql stable as $$ select {} $$;\n\
         revoke execute on function pgtrail.app_user(), pgtrail.app_context() from public;\n\
         create or replace function pgtrail.comment_user_keys() returns text[]\n\
         language sql immutable as $$ select array[{}]::pg_catalog.text[] $$;\n\
         revoke execute on function pgtrail.comment_user_keys() from public;\n\
         do $$ begin if exists (select 1 from pg_roles where rolname = 'pgtrail_admin') then \
         grant execute on function pgtrail.comment_user_keys() to pgtrail_admin; end if; end $$;\n",
        read(&identity.context_setting),
        identity
            .comment_user_keys
            .iter()
            .map(|key| literal(key))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// A SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_from_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(
                m.version,
                i32::try_from(i).expect("few migrations") + 1,
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn identity_reads_every_configured_setting_in_order() {
        let sql = identity_sql(&IdentityConfig::default());
        let first = sql.find("'pgtrail.user'").expect("pgtrail.user");
        let second = sql.find("'app.current_user'").expect("app.current_user");
        assert!(first < second, "{sql}");
        assert!(sql.contains("'pgtrail.context'"), "{sql}");
    }

    #[test]
    fn identity_functions_name_everything_by_schema() {
        let sql = identity_sql(&IdentityConfig::default());
        assert!(!sql.contains("nullif"), "{sql}");
        assert_eq!(
            sql.matches("current_setting(").count(),
            sql.matches("pg_catalog.current_setting(").count(),
            "{sql}"
        );
    }

    #[test]
    fn identity_quotes_setting_names() {
        let identity = IdentityConfig {
            user_settings: vec!["a.b'c".into()],
            context_setting: "x.y".into(),
            ..IdentityConfig::default()
        };
        assert!(identity_sql(&identity).contains("'a.b''c'"));
    }
}
