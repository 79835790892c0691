//! Preparing a database for capture, checking it, and undoing it.
//!
//! Everything here runs on an ordinary connection (`tokio_postgres`), is
//! idempotent, and keeps its functions in schema `pgtrail_cdc` (trigger
//! capture owns schema `pgtrail`; versions before kept `cdc_*` functions
//! there, which the setup moves). Identifiers are quoted and
//! values bound as parameters; the only SQL built from text is DDL whose
//! names pass through [`quote_ident`] / [`quote_literal`].

use pgtrail_core::config::IdentityConfig;
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

/// Wraps a catalog query's error with what pgtrail was doing.
pub(crate) fn catalog_error(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> CdcError {
    let context = context.into();
    move |source| CdcError::Catalog { context, source }
}

/// Facts about the server that capture depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `server_version_num`, e.g. 150004.
    pub version_num: i32,
    /// The connected role is a superuser (needed for schema-wide publications).
    pub superuser: bool,
}

/// The oldest server pgtrail captures from: PostgreSQL 14 brought pgoutput's
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
                "server_version_num is {version_num}; pgtrail capture needs PostgreSQL 14 or newer \
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

/// Creates the publication if missing, and adds any selected table or
/// schema it lacks. Schemas use `FOR TABLES IN SCHEMA` (PostgreSQL 15), so
/// tables created later are captured too.
pub async fn ensure_publication(
    client: &Client,
    facts: &ServerFacts,
    publication: &str,
    selection: &TableSelection,
    tables: &[Table],
) -> Result<(), CdcError> {
    let schemas = selected_schemas(client, selection).await?;
    // FOR TABLES IN SCHEMA needs PostgreSQL 15 and a superuser; else list the tables.
    let by_schema = facts.version_num >= 150_000 && facts.superuser && !schemas.is_empty();
    let mut targets: Vec<String> = Vec::new();
    if by_schema {
        targets.extend(
            schemas
                .iter()
                .map(|s| format!("tables in schema {}", quote_ident(s))),
        );
    }
    let named: Vec<&Table> = tables
        .iter()
        .filter(|t| !(by_schema && schemas.contains(&t.schema)))
        .collect();
    if !named.is_empty() {
        let list: Vec<String> = named.iter().map(|t| t.quoted()).collect();
        targets.push(format!("table {}", list.join(", ")));
    }
    if targets.is_empty() {
        return Err(CdcError::NotReady {
            problem: "no tables to capture".into(),
            hint: "create tables first, or name them with --tables / --schema".into(),
        });
    }
    let exists = client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("looking up the publication"))?
        .is_some();
    if !exists {
        let sql = format!(
            "create publication {} for {}",
            quote_ident(publication),
            targets.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error(format!(
                "creating publication '{publication}'"
            )))?;
        return Ok(());
    }
    let missing = publication_missing(client, publication, tables).await?;
    let missing_schemas = if by_schema {
        let rows = client
            .query(
                "select n.nspname::text from pg_publication_namespace pn \
                 join pg_publication p on p.oid = pn.pnpubid join pg_namespace n on n.oid = pn.pnnspid \
                 where p.pubname = $1",
                &[&publication],
            )
            .await
            .map_err(catalog_error("reading publication schemas"))?;
        let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        schemas
            .iter()
            .filter(|s| !have.contains(s))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    for schema in missing_schemas {
        let sql = format!(
            "alter publication {} add tables in schema {}",
            quote_ident(publication),
            quote_ident(&schema)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error("adding a schema to the publication"))?;
    }
    let missing = if by_schema {
        publication_missing(client, publication, &missing).await?
    } else {
        missing
    };
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(|t| t.quoted()).collect();
        let sql = format!(
            "alter publication {} add table {}",
            quote_ident(publication),
            list.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error("adding tables to the publication"))?;
    }
    Ok(())
}

/// The tables of `tables` that `publication` does not publish.
pub async fn publication_missing(
    client: &Client,
    publication: &str,
    tables: &[Table],
) -> Result<Vec<Table>, CdcError> {
    let rows = client
        .query(
            "select schemaname::text, tablename::text from pg_publication_tables where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("reading the publication's tables"))?;
    let published: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(tables
        .iter()
        .filter(|t| {
            !published
                .iter()
                .any(|(s, n)| s == &t.schema && n == &t.name)
        })
        .cloned()
        .collect())
}

/// Checks before streaming: the slot and publication exist, the slot is not
/// in use, and the publication covers the selected tables.
pub async fn check_capture(
    client: &Client,
    slot: &str,
    publication: &str,
    tables: &[Table],
) -> Result<(), CdcError> {
    let row = client
        .query_opt(
            "select plugin::text, active, active_pid from pg_replication_slots where slot_name = $1 and database = current_database()",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?;
    let Some(row) = row else {
        return Err(CdcError::NotReady {
            problem: format!("replication slot '{slot}' does not exist in this database"),
            hint: "run pgtrail capture with --setup once to create the slot and publication".into(),
        });
    };
    let plugin: Option<String> = row.get(0);
    if plugin.as_deref() != Some("pgoutput") {
        return Err(CdcError::NotReady {
            problem: format!("slot '{slot}' uses plugin {plugin:?}, pgtrail needs pgoutput"),
            hint: "pick another --slot name, or drop that slot".into(),
        });
    }
    let active: bool = row.get(1);
    if active {
        let pid: Option<i32> = row.get(2);
        return Err(slot_in_use(slot, pid));
    }
    let exists = client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("looking up the publication"))?
        .is_some();
    if !exists {
        return Err(CdcError::NotReady {
            problem: format!("publication '{publication}' does not exist"),
            hint: "run pgtrail capture with --setup to create it".into(),
        });
    }
    let missing = publication_missing(client, publication, tables).await?;
    if !missing.is_empty() {
        let list: Vec<String> = missing
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        return Err(CdcError::NotReady {
            problem: format!(
                "publication '{publication}' lacks table(s) {}",
                list.join(", ")
            ),
            hint: "run pgtrail capture with --setup and the same --tables/--schema to add them"
                .into(),
        });
    }
    Ok(())
}

/// The error for a slot another process is streaming from.
pub fn slot_in_use(slot: &str, pid: Option<i32>) -> CdcError {
    CdcError::SlotInUse {
        slot: slot.to_string(),
        pid,
    }
}

/// Whether the slot exists in this database.
pub async fn slot_exists(client: &Client, slot: &str) -> Result<bool, CdcError> {
    Ok(client
        .query_opt(
            "select 1 from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?
        .is_some())
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

/// Removes the slot, the publication, the context triggers and functions.
/// Returns what was removed.
pub async fn drop_all(
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<Vec<String>, CdcError> {
    let mut removed = Vec::new();
    if let Some(row) = client
        .query_opt(
            "select active_pid from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("looking up the replication slot"))?
    {
        let pid: Option<i32> = row.get(0);
        if pid.is_some() {
            return Err(slot_in_use(slot, pid));
        }
        client
            .execute("select pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(catalog_error(format!("dropping slot '{slot}'")))?;
        removed.push(format!("replication slot {slot}"));
    }
    if client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("looking up the publication"))?
        .is_some()
    {
        client
            .batch_execute(&format!("drop publication {}", quote_ident(publication)))
            .await
            .map_err(catalog_error(format!(
                "dropping publication '{publication}'"
            )))?;
        removed.push(format!("publication {publication}"));
    }
    let triggers = client
        .query(
            "select n.nspname::text, c.relname::text from pg_trigger t join pg_class c on c.oid = t.tgrelid \
             join pg_namespace n on n.oid = c.relnamespace where t.tgname = 'pgtrail_cdc_context'",
            &[],
        )
        .await
        .map_err(catalog_error("listing context triggers"))?;
    for row in &triggers {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let sql = format!(
            "drop trigger if exists pgtrail_cdc_context on {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error("dropping a context trigger"))?;
        removed.push(format!("context trigger on {schema}.{table}"));
    }
    let had_functions: bool = client
        .query_one(
            "select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where (n.nspname = 'pgtrail' and p.proname like 'cdc\\_%') or n.nspname = 'pgtrail_cdc')",
            &[],
        )
        .await
        .map_err(catalog_error("looking up pgtrail functions"))?
        .get(0);
    // PUBLIC's EXECUTE on pg_logical_emit_message stays revoked: whether to
    // give it back is the operator's decision (docs/cdc.md).
    client
        .batch_execute(
            "drop event trigger if exists pgtrail_cdc_ddl; drop event trigger if exists pgtrail_cdc_drop; \
             drop function if exists pgtrail.cdc_context(); drop function if exists pgtrail.cdc_ddl(); \
             drop function if exists pgtrail.cdc_emit(text, text, jsonb); \
             drop function if exists pgtrail.cdc_statement_comment(text); \
             drop function if exists pgtrail.set_context(text, jsonb); \
             drop schema if exists pgtrail_cdc cascade;",
        )
        .await
        .map_err(catalog_error("dropping pgtrail's context functions"))?;
    if had_functions {
        removed.push("context functions and DDL event triggers".into());
    }
    Ok(removed)
}

/// What `--setup` should do.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// Replication slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Which tables.
    pub selection: TableSelection,
    /// Set REPLICA IDENTITY FULL on every captured table (old images, TOAST filled).
    pub replica_identity_full: bool,
    /// Install the context triggers and DDL event triggers.
    pub context: bool,
    /// Session settings the context trigger reads.
    pub identity: IdentityConfig,
    /// Create the slot if missing (off when the baseline creates it with a snapshot).
    pub create_slot: bool,
}

/// What `--setup` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    /// The captured tables, `schema.table`.
    pub tables: Vec<String>,
    /// Whether the slot was created now.
    pub slot_created: bool,
    /// Tables switched to REPLICA IDENTITY FULL.
    pub identity_full: Vec<String>,
    /// Tables without a key switched to FULL so their UPDATEs and DELETEs can be published.
    pub identity_full_for_keyless: Vec<String>,
    /// With `--context`: roles other than superusers and the connected one
    /// that may still emit logical messages (granted explicitly), and so
    /// forge an actor or a DDL event.
    pub message_emitters: Vec<String>,
}

/// Creates (or completes) the publication, the slot, and optionally the
/// context triggers; idempotent. The slot is created last, so it starts
/// after every setup change.
pub async fn prepare(
    client: &Client,
    facts: &ServerFacts,
    options: &SetupOptions,
) -> Result<SetupReport, CdcError> {
    let tables = resolve_tables(client, &options.selection).await?;
    let mut report = SetupReport {
        tables: tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect(),
        ..SetupReport::default()
    };
    if options.replica_identity_full {
        report.identity_full = set_replica_identity_full(client, &tables).await?;
    } else {
        let keyless: Vec<Table> = tables
            .iter()
            .filter(|t| !t.can_publish_updates())
            .cloned()
            .collect();
        report.identity_full_for_keyless = set_replica_identity_full(client, &keyless).await?;
    }
    ensure_publication(
        client,
        facts,
        &options.publication,
        &options.selection,
        &tables,
    )
    .await?;
    if options.context {
        report.message_emitters =
            crate::triggers::install_context(client, &options.identity, &tables).await?;
    }
    if options.create_slot && !slot_exists(client, &options.slot).await? {
        client
            .execute(
                "select pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&options.slot],
            )
            .await
            .map_err(catalog_error(format!(
                "creating replication slot '{}'",
                options.slot
            )))?;
        report.slot_created = true;
    }
    Ok(report)
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

/// How far a slot's confirmed position is behind the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLag {
    /// Bytes of WAL between the current position and the confirmed one.
    pub bytes: i64,
    /// Whether a consumer is connected.
    pub active: bool,
}

/// The lag of `slot`, or `None` if it does not exist.
pub async fn slot_lag(client: &Client, slot: &str) -> Result<Option<SlotLag>, CdcError> {
    let row = client
        .query_opt(
            "select coalesce(pg_wal_lsn_diff(pg_current_wal_insert_lsn(), confirmed_flush_lsn), 0)::int8, active \
             from pg_replication_slots where slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(catalog_error("reading slot lag"))?;
    Ok(row.map(|r| SlotLag {
        bytes: r.get(0),
        active: r.get(1),
    }))
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
