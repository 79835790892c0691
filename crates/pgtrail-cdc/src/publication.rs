//! The publication: which tables' changes the server sends pgtrail's slot.
//! Created or completed by `--setup`, checked before streaming, dropped by
//! `--drop`. Names in DDL pass through [`quote_ident`].

use tokio_postgres::Client;

use crate::catalog::{catalog_error, selected_schemas, ServerFacts, Table, TableSelection};
use crate::connection::quote_ident;
use crate::CdcError;

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

/// Checks that `publication` exists and publishes every table of `tables`.
pub async fn check(client: &Client, publication: &str, tables: &[Table]) -> Result<(), CdcError> {
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
            hint: "run pgtrail replicate with --setup to create it".into(),
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
            hint: "run pgtrail replicate with --setup and the same --tables/--schema to add them"
                .into(),
        });
    }
    Ok(())
}

/// Drops `publication` if it exists; returns whether it did.
pub async fn drop(client: &Client, publication: &str) -> Result<bool, CdcError> {
    if client
        .query_opt(
            "select 1 from pg_publication where pubname = $1",
            &[&publication],
        )
        .await
        .map_err(catalog_error("looking up the publication"))?
        .is_none()
    {
        return Ok(false);
    }
    client
        .batch_execute(&format!("drop publication {}", quote_ident(publication)))
        .await
        .map_err(catalog_error(format!(
            "dropping publication '{publication}'"
        )))?;
    Ok(true)
}
