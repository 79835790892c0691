//! Preparing a database for capture, checking it, and undoing it: the
//! steps of `pgtrail replicate --setup`, the checks before streaming and
//! `--drop`, over the [`catalog`], the [`publication`], the [`slot`] and
//! the context [`triggers`].
//!
//! Everything here runs on an ordinary connection (`tokio_postgres`), is
//! idempotent, and keeps its functions in schema `pgtrail_cdc` (trigger
//! capture owns schema `pgtrail`; versions before kept `cdc_*` functions
//! there, which the setup moves).

use pgtrail_core::config::IdentityConfig;
use tokio_postgres::Client;

use crate::catalog;
use crate::{publication, slot, triggers, CdcError};

use crate::catalog::{ServerFacts, Table, TableSelection};

/// Checks before streaming: the slot and publication exist, the slot is not
/// in use, and the publication covers the selected tables.
pub async fn check_replication(
    client: &Client,
    slot: &str,
    publication: &str,
    tables: &[Table],
) -> Result<(), CdcError> {
    slot::check_usable(client, slot).await?;
    publication::check(client, publication, tables).await
}

/// Removes the slot, the publication, the actor triggers and functions.
/// Returns what was removed.
pub async fn drop_all(
    client: &Client,
    slot: &str,
    publication: &str,
) -> Result<Vec<String>, CdcError> {
    let mut removed = Vec::new();
    if slot::drop(client, slot).await? {
        removed.push(format!("replication slot {slot}"));
    }
    if publication::drop(client, publication).await? {
        removed.push(format!("publication {publication}"));
    }
    removed.extend(triggers::uninstall_actor(client).await?);
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
    /// Install the actor triggers and DDL event triggers (`--actor`).
    pub actor: bool,
    /// Session settings the actor trigger reads.
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
    /// With `--actor`: roles other than superusers and the connected one
    /// that may still emit logical messages (granted explicitly), and so
    /// forge an actor or a DDL event.
    pub message_emitters: Vec<String>,
}

/// Creates (or completes) the publication, the slot, and optionally the
/// actor triggers; idempotent. The slot is created last, so it starts
/// after every setup change.
pub async fn prepare(
    client: &Client,
    facts: &ServerFacts,
    options: &SetupOptions,
) -> Result<SetupReport, CdcError> {
    let tables = catalog::resolve_tables(client, &options.selection).await?;
    let mut report = SetupReport {
        tables: tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect(),
        ..SetupReport::default()
    };
    if options.replica_identity_full {
        report.identity_full = catalog::set_replica_identity_full(client, &tables).await?;
    } else {
        let keyless: Vec<Table> = tables
            .iter()
            .filter(|t| !t.can_publish_updates())
            .cloned()
            .collect();
        report.identity_full_for_keyless =
            catalog::set_replica_identity_full(client, &keyless).await?;
    }
    publication::ensure_publication(
        client,
        facts,
        &options.publication,
        &options.selection,
        &tables,
    )
    .await?;
    if options.actor {
        report.message_emitters =
            triggers::install_actor(client, &options.identity, &tables).await?;
    }
    if options.create_slot {
        report.slot_created = slot::create_if_missing(client, &options.slot).await?;
    }
    Ok(report)
}
