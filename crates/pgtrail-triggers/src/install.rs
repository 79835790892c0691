//! Installing and removing trigger capture.
//!
//! [`install`] first opens the Postgres store at the same URL (which
//! creates or migrates `pgtrail.events` and the chain), then checks the
//! server and the role, then applies the pending [`crate::migrations`] and
//! the identity functions in **one transaction** under an advisory lock:
//! two installs at once serialize, and a connection lost halfway leaves
//! nothing of it behind.

use pgtrail_core::config::IdentityConfig;
use pgtrail_store::postgres::PostgresStore;
use tokio_postgres::Client;

pub use crate::connection::connect;
pub use crate::migrations::installed_version;
use crate::migrations::{self, MIGRATIONS};
use crate::{Error, Result};

/// Key of the advisory lock that serializes installs ("pgtrtrg" in ASCII).
const INSTALL_LOCK: i64 = 0x7067_7472_7472_6700;

/// The oldest server version supported (`server_version_num`).
const MIN_SERVER_VERSION: i32 = 130_000;

/// How to install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// Which session settings carry the application user and context.
    pub identity: IdentityConfig,
    /// Stop at this migration version instead of the latest (staged
    /// upgrades; `None` installs everything).
    pub target_version: Option<i32>,
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    /// The installed version found (0: none).
    pub from_version: i32,
    /// The version now installed.
    pub to_version: i32,
    /// Names of the migrations applied.
    pub applied: Vec<&'static str>,
    /// Tracked tables whose capture was regenerated.
    pub regenerated: i32,
}

/// Installs (or upgrades) trigger capture and the store in the database at `url`.
pub async fn install(url: &str, options: &InstallOptions) -> Result<InstallReport> {
    let mut client = connect(url).await?;
    check_server(&client).await?;
    PostgresStore::connect(url).await?;
    install_on(&mut client, options).await
}

/// Applies the pending migrations over an open connection; the store's
/// schema must exist already (see [`install`]).
pub async fn install_on(client: &mut Client, options: &InstallOptions) -> Result<InstallReport> {
    check_server(client).await?;
    let target = options
        .target_version
        .unwrap_or_else(migrations::latest_version);
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("starting the install"))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&INSTALL_LOCK])
        .await
        .map_err(Error::pg("taking the install lock"))?;
    // pgtrail's own DDL is not audit-worthy: event triggers stay quiet in
    // this transaction (only; other sessions are unaffected).
    tx.batch_execute("set local session_replication_role = replica")
        .await
        .map_err(Error::pg("preparing the install"))?;
    let store_ready: bool = tx
        .query_one("select to_regclass('pgtrail.events') is not null", &[])
        .await
        .map_err(Error::pg("looking for the store"))?
        .get(0);
    if !store_ready {
        return Err(Error::Refused {
            table: "pgtrail.events".into(),
            message: "the store's schema is missing: install through pgtrail_triggers::install"
                .into(),
        });
    }
    tx.batch_execute(migrations::VERSION_TABLE_SQL)
        .await
        .map_err(Error::pg("creating pgtrail.trigger_migrations"))?;
    let from_version = installed_version(&tx).await?.unwrap_or(0);
    if from_version > migrations::latest_version() {
        return Err(Error::Refused {
            table: "pgtrail.trigger_migrations".into(),
            message: format!(
                "installed by a newer pgtrail (version {from_version}; this build knows up to {})",
                migrations::latest_version()
            ),
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS
        .iter()
        .filter(|m| m.version > from_version && m.version <= target)
    {
        let context = format!(
            "applying migration {} ({})",
            migration.version, migration.name
        );
        tx.batch_execute(migration.sql)
            .await
            .map_err(Error::pg(&context))?;
        tx.execute(
            "insert into pgtrail.trigger_migrations (version, name) values ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(Error::pg(&context))?;
        applied.push(migration.name);
    }
    let to_version = from_version.max(target.min(migrations::latest_version()));
    tx.batch_execute(&migrations::identity_sql(&options.identity))
        .await
        .map_err(Error::pg("writing the identity functions"))?;
    tx.batch_execute(migrations::READER_GRANTS_SQL)
        .await
        .map_err(Error::pg("granting readers the store's functions"))?;
    let regenerated: i32 = if applied.is_empty() {
        0
    } else {
        tx.query_one("select pgtrail.reinstall_captures()", &[])
            .await
            .map_err(Error::pg("regenerating capture triggers"))?
            .get(0)
    };
    tx.commit()
        .await
        .map_err(Error::pg("committing the install"))?;
    Ok(InstallReport {
        from_version,
        to_version,
        applied,
        regenerated,
    })
}

/// The SQL [`install`] would run on a database without pgtrail (`--dry-run`).
pub fn install_sql(options: &InstallOptions) -> String {
    let mut sql = String::from(
        "-- pgtrail install: the store's own schema (pgtrail.events, chain_head, checkpoints)\n\
         -- is created first by the store's migrations; then, in one transaction:\n\
         begin;\n",
    );
    sql.push_str(&format!("select pg_advisory_xact_lock({INSTALL_LOCK});\n"));
    sql.push_str(migrations::VERSION_TABLE_SQL);
    for migration in MIGRATIONS {
        sql.push_str(&format!(
            "\n-- migration {}: {}\n",
            migration.version, migration.name
        ));
        sql.push_str(migration.sql);
        sql.push_str(&format!(
            "insert into pgtrail.trigger_migrations (version, name) values ({}, '{}');\n",
            migration.version,
            migration.name.replace('\'', "''")
        ));
    }
    sql.push_str("\n-- application identity, from [identity] in pgtrail.toml\n");
    sql.push_str(&migrations::identity_sql(&options.identity));
    sql.push_str(migrations::READER_GRANTS_SQL);
    sql.push_str("select pgtrail.reinstall_captures();\ncommit;\n");
    sql
}

/// The SQL [`uninstall`] runs (`--dry-run`).
pub fn uninstall_sql(drop_data: bool) -> String {
    if drop_data {
        format!(
            "begin;\n{}{}commit;\n",
            migrations::UNINSTALL_SQL,
            migrations::DROP_DATA_SQL
        )
    } else {
        format!("begin;\n{}commit;\n", migrations::UNINSTALL_SQL)
    }
}

/// Removes trigger capture from the database at `url`. Pending inbox rows
/// are sealed first, so nothing captured is lost; the trail stays unless
/// `drop_data`, which removes schema `pgtrail` entirely.
pub async fn uninstall(url: &str, drop_data: bool) -> Result<()> {
    let mut client = connect(url).await?;
    if !drop_data && installed_version(&client).await?.is_some() {
        crate::drain::drain_all(&mut client).await?;
    }
    let tx = client
        .transaction()
        .await
        .map_err(Error::pg("starting the uninstall"))?;
    tx.execute("select pg_advisory_xact_lock($1)", &[&INSTALL_LOCK])
        .await
        .map_err(Error::pg("taking the install lock"))?;
    tx.batch_execute(migrations::UNINSTALL_SQL)
        .await
        .map_err(Error::pg("removing trigger capture"))?;
    if drop_data {
        tx.batch_execute(migrations::DROP_DATA_SQL)
            .await
            .map_err(Error::pg("dropping schema pgtrail"))?;
    }
    tx.commit()
        .await
        .map_err(Error::pg("committing the uninstall"))
}

/// Checks the server version and the connected role's privileges, listing
/// everything that is missing at once.
pub async fn check_server(client: &Client) -> Result<()> {
    let row = client
        .query_one(
            "select current_setting('server_version_num')::int, current_setting('server_version'), \
                    current_user::text, r.rolsuper, r.rolcreaterole, \
                    has_database_privilege(current_database(), 'CREATE'), \
                    (select count(*) from pg_roles where rolname in ('pgtrail_reader', 'pgtrail_admin')) = 2 \
             from pg_roles r where r.rolname = current_user",
            &[],
        )
        .await
        .map_err(Error::pg("checking the server"))?;
    // A value of an unexpected type (a planted stand-in's) is an error, not a panic.
    let get = |source| Error::Postgres {
        action: "checking the server".into(),
        source,
    };
    let version_num: i32 = row.try_get(0).map_err(get)?;
    if version_num < MIN_SERVER_VERSION {
        return Err(Error::UnsupportedVersion {
            found: row.try_get(1).map_err(get)?,
        });
    }
    let (role, superuser, createrole, create_db, roles_exist): (String, bool, bool, bool, bool) = (
        row.try_get(2).map_err(get)?,
        row.try_get(3).map_err(get)?,
        row.try_get(4).map_err(get)?,
        row.try_get(5).map_err(get)?,
        row.try_get(6).map_err(get)?,
    );
    let missing = missing_privileges(superuser, createrole, create_db, roles_exist);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingPrivileges { role, missing })
    }
}

/// What a role lacks to install, each with the reason.
fn missing_privileges(
    superuser: bool,
    createrole: bool,
    create_db: bool,
    roles_exist: bool,
) -> Vec<String> {
    let mut missing = Vec::new();
    if superuser {
        return missing;
    }
    missing.push("SUPERUSER (or your cloud's equivalent, e.g. rds_superuser): to create the event triggers that record DDL".into());
    if !create_db {
        missing.push("CREATE on the database: to create schema pgtrail".into());
    }
    if !createrole && !roles_exist {
        missing.push("CREATEROLE: to create the roles pgtrail_reader and pgtrail_admin".into());
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_superuser_lacks_nothing() {
        assert!(missing_privileges(true, false, false, false).is_empty());
    }

    #[test]
    fn a_plain_role_is_told_everything_it_lacks() {
        let missing = missing_privileges(false, false, false, false);
        assert_eq!(missing.len(), 3, "{missing:?}");
        assert!(missing.iter().any(|m| m.contains("event triggers")));
        assert!(missing.iter().any(|m| m.contains("CREATE on the database")));
        assert!(missing.iter().any(|m| m.contains("CREATEROLE")));
    }

    #[test]
    fn dry_run_sql_holds_every_migration_in_one_transaction() {
        let sql = install_sql(&InstallOptions::default());
        assert!(sql.contains("begin;") && sql.trim_end().ends_with("commit;"));
        for m in MIGRATIONS {
            assert!(sql.contains(&format!("-- migration {}:", m.version)));
        }
    }

    #[test]
    fn old_servers_are_named_with_the_supported_range() {
        let text = Error::UnsupportedVersion {
            found: "12.9".into(),
        }
        .to_string();
        assert!(
            text.contains("12.9") && text.contains("13 or newer"),
            "{text}"
        );
    }
}
