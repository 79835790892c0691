//! What logical replication reads from the catalog: the server's facts (version,
//! `wal_level`, the role's rights), the tables a selection names, their
//! keys and replica identity, and the types pgoutput values are decoded by.
//!
//! Ordinary-connection SQL, values bound as parameters; the only SQL built
//! from text is `ALTER TABLE … REPLICA IDENTITY`, whose names pass through
//! [`quote_ident`].

use pgtrail_core::filter::TableName;
use tokio_postgres::Client;

use crate::connection::quote_ident;
use crate::value::TypeRow;
use crate::CdcError;

/// Schemas never captured: the catalogs and pgtrail's own (a Postgres store
/// in the same database would otherwise capture its own writes forever).
pub const EXCLUDED_SCHEMAS: &[&str] =
    &["pg_catalog", "information_schema", "pgtrail", "pgtrail_cdc"];

/// Which tables to capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSelection {
    /// Named tables (`schema.table` or `table`, which means `public.table`).
    pub tables: Vec<TableName>,
    /// Every table of these schemas, including tables created later.
    pub schemas: Vec<String>,
}

impl TableSelection {
    /// Nothing named: every user schema.
    pub fn is_all(&self) -> bool {
        self.tables.is_empty() && self.schemas.is_empty()
    }
}

/// A table, resolved in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// `relreplident`: `d`, `n`, `f` or `i`.
    pub replica_identity: char,
    /// Has a primary key.
    pub has_primary_key: bool,
}

impl Table {
    /// `"schema"."name"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// Whether UPDATE and DELETE can be published: a key or FULL identity.
    pub fn can_publish_updates(&self) -> bool {
        match self.replica_identity {
            'f' | 'i' => true,
            'd' => self.has_primary_key,
            _ => false,
        }
    }
}

/// Wraps a catalog query's error with what pgtrail was doing (its action).
pub(crate) fn catalog_error(
    action: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> CdcError {
    let action = action.into();
    move |source| CdcError::Catalog { action, source }
}

/// Facts about the server that capture depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version_num`, e.g. 150004.
    pub version_num: i32,
    /// The connected role is a superuser (needed for schema-wide publications).
    pub superuser: bool,
}

/// The oldest server pgtrail replicates from: PostgreSQL 14 brought pgoutput's
/// `messages` option (the actor and DDL) and protocol 2 (streaming).
pub const MIN_VERSION_NUM: i32 = 140_000;

impl ServerFacts {
    /// The pgoutput protocol version pgtrail asks for: 2, which streams large
    /// in-progress transactions. (3 adds two-phase decoding, which pgtrail
    /// does not request; 4, on PostgreSQL 16, parallel apply, which it does
    /// not need.)
    pub fn proto_version(&self) -> u32 {
        2
    }
}

/// Checks `wal_level` and the role's REPLICATION privilege, with the fix in the error.
pub async fn check_ready(client: &Client) -> Result<ServerFacts, CdcError> {
    let row = client
        .query_one(
            "select current_setting('wal_level'), current_setting('server_version_num')::int4, \
             (select rolreplication or rolsuper from pg_roles where rolname = current_user), current_user::text, \
             (select rolsuper from pg_roles where rolname = current_user)",
            &[],
        )
        .await
        .map_err(catalog_error("reading server settings"))?;
    let wal_level: String = row.get(0);
    let version_num: i32 = row.get(1);
    let can_replicate: Option<bool> = row.get(2);
    let user: String = row.get(3);
    if wal_level != "logical" {
        return Err(CdcError::NotReady {
            problem: format!("wal_level is '{wal_level}', but logical replication needs 'logical'"),
            hint:
                "run ALTER SYSTEM SET wal_level = logical; as a superuser, then restart PostgreSQL"
                    .into(),
        });
    }
    if can_replicate != Some(true) {
        return Err(CdcError::NotReady {
            problem: format!("role '{user}' lacks the REPLICATION privilege"),
            hint: format!(
                "run ALTER ROLE {} WITH REPLICATION; as a superuser",
                quote_ident(&user)
            ),
        });
    }
    if version_num < MIN_VERSION_NUM {
        return Err(CdcError::NotReady {
            problem: format!(
                "server_version_num is {version_num}; pgtrail replicate needs PostgreSQL 14 or newer \
                 (pgoutput's logical messages and streaming)"
            ),
            hint: "upgrade PostgreSQL, or capture with triggers instead".into(),
        });
    }
    let superuser: Option<bool> = row.get(4);
    Ok(ServerFacts {
        version_num,
        superuser: superuser == Some(true),
    })
}

/// The tables `selection` names, as they are in the catalog now. Unknown
/// tables are an error naming them.
pub async fn resolve_tables(
    client: &Client,
    selection: &TableSelection,
) -> Result<Vec<Table>, CdcError> {
    let rows = client
        .query(
            "select n.nspname::text, c.relname::text, c.relreplident::text, \
                    exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary) \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p') and n.nspname <> all($1) and n.nspname not like 'pg\\_%' \
             order by 1, 2",
            &[&EXCLUDED_SCHEMAS],
        )
        .await
        .map_err(catalog_error("listing tables"))?;
    let all: Vec<Table> = rows
        .iter()
        .map(|r| Table {
            schema: r.get(0),
            name: r.get(1),
            replica_identity: r.get::<_, String>(2).chars().next().unwrap_or('d'),
            has_primary_key: r.get(3),
        })
        .collect();
    if selection.is_all() {
        return Ok(all);
    }
    let mut chosen: Vec<Table> = Vec::new();
    for wanted in &selection.tables {
        let schema = wanted.schema.as_deref().unwrap_or("public");
        let table = all
            .iter()
            .find(|t| t.schema == schema && t.name == wanted.table)
            .ok_or_else(|| CdcError::NotReady {
                problem: format!(
                    "table {schema}.{} does not exist (or is not capturable)",
                    wanted.table
                ),
                hint: "check --tables; names are case-sensitive, quote mixed-case names".into(),
            })?;
        if !chosen.contains(table) {
            chosen.push(table.clone());
        }
    }
    for schema in &selection.schemas {
        for table in all.iter().filter(|t| &t.schema == schema) {
            if !chosen.contains(table) {
                chosen.push(table.clone());
            }
        }
    }
    Ok(chosen)
}

/// The schemas a publication for `selection` should cover by schema: the
/// named ones, or every user schema for "all".
pub async fn selected_schemas(
    client: &Client,
    selection: &TableSelection,
) -> Result<Vec<String>, CdcError> {
    if !selection.is_all() {
        return Ok(selection.schemas.clone());
    }
    let rows = client
        .query(
            "select nspname::text from pg_namespace \
             where nspname <> all($1) and nspname not like 'pg\\_%' order by 1",
            &[&EXCLUDED_SCHEMAS],
        )
        .await
        .map_err(catalog_error("listing schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Sets REPLICA IDENTITY FULL on `tables` that lack it.
pub async fn set_replica_identity_full(
    client: &Client,
    tables: &[Table],
) -> Result<Vec<String>, CdcError> {
    let mut changed = Vec::new();
    for table in tables.iter().filter(|t| t.replica_identity != 'f') {
        let sql = format!("alter table {} replica identity full", table.quoted());
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error(format!(
                "setting replica identity on {}",
                table.quoted()
            )))?;
        changed.push(format!("{}.{}", table.schema, table.name));
    }
    Ok(changed)
}

/// The primary-key columns of table `oid`, in key order; `None` if it has none.
pub async fn primary_key(client: &Client, oid: u32) -> Result<Option<Vec<String>>, CdcError> {
    let rows = client
        .query(
            "select a.attname::text from pg_index i \
             join lateral unnest(i.indkey) with ordinality k(attnum, ord) on true \
             join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum \
             where i.indrelid = $1::int8::oid and i.indisprimary order by k.ord",
            &[&i64::from(oid)],
        )
        .await
        .map_err(catalog_error("reading a primary key"))?;
    let columns: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok((!columns.is_empty()).then_some(columns))
}

/// Every row of `pg_type`, for [`crate::value::TypeRegistry::load`].
pub async fn load_types(client: &Client) -> Result<Vec<TypeRow>, CdcError> {
    let rows = client
        .query(crate::value::TYPE_ROWS_SQL, &[])
        .await
        .map_err(catalog_error("reading pg_type"))?;
    let ch = |s: String| s.chars().next().unwrap_or(' ');
    Ok(rows
        .iter()
        .map(|r| TypeRow {
            oid: u32::try_from(r.get::<_, i64>(0)).unwrap_or(0),
            typtype: ch(r.get(1)),
            category: ch(r.get(2)),
            element: u32::try_from(r.get::<_, i64>(3)).unwrap_or(0),
            base: u32::try_from(r.get::<_, i64>(4)).unwrap_or(0),
            delimiter: ch(r.get(5)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_that_cannot_publish_updates() {
        let t = |identity, pk| Table {
            schema: "s".into(),
            name: "t".into(),
            replica_identity: identity,
            has_primary_key: pk,
        };
        assert!(t('d', true).can_publish_updates());
        assert!(!t('d', false).can_publish_updates());
        assert!(t('f', false).can_publish_updates());
        assert!(!t('n', true).can_publish_updates());
        assert_eq!(t('d', true).quoted(), "\"s\".\"t\"");
    }
}
