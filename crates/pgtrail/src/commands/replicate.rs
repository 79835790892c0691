//! `pgtrail replicate` (formerly `pgtrail capture`, still an alias):
//! logical replication into the store.
//!
//! Thin: parses the options, runs the one-off actions (`--setup`,
//! `--baseline`, `--drop`, `--status`) from `pgtrail_cdc::setup` and
//! `pgtrail_pipeline::cdc::take_baseline`, then runs
//! `pgtrail_pipeline::cdc::run` until Ctrl-C or SIGTERM. Diagnostics go to stderr; `--status` prints its
//! result on stdout. [`replication_part`] is the same consumer as a part of
//! `pgtrail run`; flags and `[replication]` resolve in [`replication_options`]
//! for both.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_cdc::catalog::{self, TableSelection};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::ReplicationOptions;
use pgtrail_cdc::mask::Masking;
use pgtrail_cdc::setup::{self, SetupOptions};
use pgtrail_core::config::{IdentityConfig, ReplicationConfig};
use pgtrail_core::filter::TableName;
use tokio::sync::watch;

use crate::cli::{ReplicateArgs, ReplicationTuning};
use crate::Invocation;

/// The consumer's options: flags over `[replication]`, and `[identity]`'s
/// sqlcommenter keys.
pub(crate) fn replication_options(
    tuning: &ReplicationTuning,
    config: &ReplicationConfig,
    identity: &IdentityConfig,
) -> anyhow::Result<ReplicationOptions> {
    let mut options = ReplicationOptions::new(
        tuning.slot.as_deref().unwrap_or(&config.slot),
        tuning.publication.as_deref().unwrap_or(&config.publication),
    );
    options.comment_user_keys = identity.comment_user_keys.clone();
    let batch_events = tuning.batch_events.unwrap_or(config.batch_events).max(1);
    options.batch_events = usize::try_from(batch_events).unwrap_or(usize::MAX);
    options.batch_wait =
        Duration::from_millis(tuning.batch_wait_ms.unwrap_or(config.batch_wait_ms));
    options.lag_warn_bytes = tuning
        .lag_warn_mb
        .unwrap_or(config.lag_warn_mb)
        .saturating_mul(1024 * 1024);
    let memory_limit_mb = tuning
        .memory_limit_mb
        .unwrap_or(config.memory_limit_mb)
        .max(1);
    options.memory_limit =
        usize::try_from(memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    if let Some(dir) = tuning
        .spill_dir
        .clone()
        .or_else(|| config.spill_dir.clone().map(Into::into))
    {
        options.spill_dir = dir;
    }
    options.masking = Masking::parse(&config.mask, &config.mask_redact)
        .map_err(|reason| anyhow::anyhow!("[replication] mask: {reason}"))?;
    Ok(options)
}

/// Runs `pgtrail replicate`.
pub async fn run(args: &ReplicateArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let Some(db) = args.db.as_deref().or(ctx.config.replication.db.as_deref()) else {
        anyhow::bail!(
            "no database to capture: give --db URL (or PGTRAIL_DB), or set [replication] db"
        );
    };
    let connect = ConnectOptions::parse(db)?;
    let client = connect.connect_sql().await?;
    let mut options =
        replication_options(&args.tuning, &ctx.config.replication, &ctx.config.identity)?;

    if args.status {
        let slots = super::status::slot_reports(
            &client,
            std::slice::from_ref(&options.slot),
            true,
            options.lag_warn_bytes,
            ctx,
        )
        .await?;
        let slot = slots.first().context("the slot's report")?;
        ctx.output
            .document(slot, || super::status::slots_text(&slots))?;
        return Ok(crate::exit::ok());
    }
    if args.drop {
        let removed = setup::drop_all(&client, &options.slot, &options.publication).await?;
        if removed.is_empty() {
            eprintln!(
                "nothing to remove: no slot '{}', publication '{}' or actor triggers",
                options.slot, options.publication
            );
        }
        for what in removed {
            eprintln!("removed {what}");
        }
        return Ok(crate::exit::ok());
    }

    let facts = catalog::check_ready(&client).await?;
    let selection = TableSelection {
        tables: args
            .tables
            .iter()
            .map(|t| TableName::parse(t))
            .collect::<Result<_, _>>()?,
        schemas: args.schemas.clone(),
    };
    if args.baseline && !args.setup {
        anyhow::bail!("--baseline needs --setup (the baseline is taken when the slot is created)");
    }
    if args.setup {
        let full = args.replica_identity.as_deref() == Some("full");
        if full {
            eprintln!(
                "setting REPLICA IDENTITY FULL: every UPDATE and DELETE then writes the whole old row \
                 to the WAL (more WAL and decoding work; see docs/cdc.md for measured costs)"
            );
        }
        let masking = options.masking.clone();
        if masking.needs_key() {
            // The key trigger capture uses, created if trigger capture is not installed.
            pgtrail_cdc::mask::ensure_key(&client).await?;
        }
        let options = SetupOptions {
            slot: options.slot.clone(),
            publication: options.publication.clone(),
            selection: selection.clone(),
            replica_identity_full: full,
            actor: args.actor,
            identity: ctx.config.identity.clone(),
            create_slot: !args.baseline,
        };
        let report = setup::prepare(&client, &facts, &options).await?;
        eprintln!(
            "publication '{}' covers {} table(s): {}",
            options.publication,
            report.tables.len(),
            report.tables.join(", ")
        );
        if !report.identity_full_for_keyless.is_empty() {
            eprintln!(
                "tables without a primary key set to REPLICA IDENTITY FULL so their UPDATEs and DELETEs \
                 can be captured: {}",
                report.identity_full_for_keyless.join(", ")
            );
        }
        if args.actor {
            eprintln!(
                "actor triggers installed (app user from {}); only superusers may emit logical \
                 messages in this database now",
                ctx.config.identity.user_settings.join(", ")
            );
            if !report.message_emitters.is_empty() {
                eprintln!(
                    "warning: these roles may still emit logical messages, and so forge the actor \
                     of their changes: {}",
                    report.message_emitters.join(", ")
                );
            }
        }
        if report.slot_created {
            eprintln!("slot '{}' created", options.slot);
        }
        if args.baseline {
            let store = ctx.open_store().await?;
            let tables = catalog::resolve_tables(&client, &selection).await?;
            let rows = pgtrail_pipeline::cdc::take_baseline(
                &connect,
                &client,
                &options.slot,
                &tables,
                &masking,
                store,
                stop_on_signal(),
            )
            .await
            .context("cannot take the baseline")?;
            eprintln!(
                "slot '{}' created; baseline: {rows} row(s) stored as snapshot events",
                options.slot
            );
        }
    }
    if args.no_stream {
        return Ok(crate::exit::ok());
    }

    let store = ctx.open_store().await?;
    options.selection = selection;
    let shutdown = stop_on_signal();
    eprintln!(
        "capturing database '{}' (slot '{}', publication '{}') into {}; Ctrl-C to stop",
        connect.dbname(),
        options.slot,
        options.publication,
        store.location()
    );
    pgtrail_pipeline::cdc::run(&connect, &options, store, shutdown, None).await?;
    eprintln!("stopped; everything received so far is stored and confirmed");
    Ok(crate::exit::ok())
}

/// What the logical-replication part of `pgtrail run` does.
#[derive(Debug, Clone)]
pub(crate) struct ReplicationPart {
    /// The database to capture.
    pub connect: ConnectOptions,
    /// Slot, publication, batching, lag warning.
    pub options: ReplicationOptions,
}

/// Streams into the store until `stop` turns true; the batch in hand is
/// stored and confirmed before it returns. Lost connections and store
/// outages are waited out inside (`pgtrail_pipeline`); what an operator
/// must fix is returned.
pub(crate) async fn replication_part(
    part: ReplicationPart,
    ctx: Invocation,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let url = &ctx.config.store.url;
    let opened = pgtrail_pipeline::store::open_patiently(
        url,
        "logical replication waits (the slot keeps the WAL)",
        stop.clone(),
    )
    .await?;
    let Some(store) = opened else {
        return Ok(());
    };
    pgtrail_pipeline::cdc::run(&part.connect, &part.options, store, stop, None)
        .await
        .with_context(|| format!("capture from slot '{}' stopped", part.options.slot))
}

/// A stop signal that turns true on Ctrl-C or SIGTERM.
fn stop_on_signal() -> watch::Receiver<bool> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        super::run::signal().await;
        let _ = stop_tx.send(true);
    });
    stop
}
