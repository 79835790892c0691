//! `pgtrail capture`: logical-replication capture into the store.
//!
//! Thin: parses the options, runs the one-off actions (`--setup`,
//! `--baseline`, `--drop`, `--status`) from `pgtrail_cdc::setup` and
//! `pgtrail_cdc::baseline`, then runs `pgtrail_cdc::consumer::run` until
//! Ctrl-C or SIGTERM. Diagnostics go to stderr; `--status` prints its
//! result on stdout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::{self, CaptureOptions};
use pgtrail_cdc::setup::{self, SetupOptions, TableSelection};
use pgtrail_core::filter::TableName;
use pgtrail_core::{Filter, Source};
use serde::Serialize;
use tokio::sync::watch;

use crate::cli::CaptureArgs;
use crate::Context;

/// What `--status` reports.
#[derive(Debug, Serialize)]
struct Status {
    slot: String,
    exists: bool,
    active: bool,
    lag_bytes: i64,
    /// Seconds since the commit of the newest captured change, when behind.
    lag_seconds: Option<f64>,
}

/// Runs `pgtrail capture`.
pub async fn run(args: &CaptureArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let connect = ConnectOptions::parse(&args.db)?;
    let client = connect.connect_sql().await?;

    if args.status {
        let lag = setup::slot_lag(&client, &args.slot).await?;
        let behind = lag.as_ref().is_some_and(|l| l.bytes > 0);
        let lag_seconds = if behind {
            seconds_since_last_capture(ctx).await
        } else {
            None
        };
        let status = Status {
            slot: args.slot.clone(),
            exists: lag.is_some(),
            active: lag.as_ref().is_some_and(|l| l.active),
            lag_bytes: lag.as_ref().map_or(0, |l| l.bytes),
            lag_seconds,
        };
        ctx.output.document(&status, || match &lag {
            Some(lag) => format!(
                "slot {}: {} bytes behind{}, {}\n",
                args.slot,
                lag.bytes,
                lag_seconds.map_or(String::new(), |s| format!(
                    " (newest captured commit {s:.1} s ago)"
                )),
                if lag.active {
                    "a consumer is connected"
                } else {
                    "no consumer connected"
                }
            ),
            None => format!("slot {} does not exist\n", args.slot),
        })?;
        return Ok(crate::exit::ok());
    }
    if args.drop {
        let removed = setup::drop_all(&client, &args.slot, &args.publication).await?;
        if removed.is_empty() {
            eprintln!(
                "nothing to remove: no slot '{}', publication '{}' or context triggers",
                args.slot, args.publication
            );
        }
        for what in removed {
            eprintln!("removed {what}");
        }
        return Ok(crate::exit::ok());
    }

    let facts = setup::check_ready(&client).await?;
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
        let options = SetupOptions {
            slot: args.slot.clone(),
            publication: args.publication.clone(),
            selection: selection.clone(),
            replica_identity_full: full,
            context: args.context,
            identity: ctx.config.identity.clone(),
            create_slot: !args.baseline,
        };
        let report = setup::prepare(&client, &facts, &options).await?;
        eprintln!(
            "publication '{}' covers {} table(s): {}",
            args.publication,
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
        if args.context {
            eprintln!(
                "context triggers installed (app user from {})",
                ctx.config.identity.user_settings.join(", ")
            );
        }
        if report.slot_created {
            eprintln!("slot '{}' created", args.slot);
        }
        if args.baseline {
            let store = ctx.open_store().await?;
            let tables = setup::resolve_tables(&client, &selection).await?;
            let rows = pgtrail_cdc::baseline::create_slot_with_baseline(
                &connect, &client, &args.slot, &tables, &store,
            )
            .await
            .context("cannot take the baseline")?;
            eprintln!(
                "slot '{}' created; baseline: {rows} row(s) stored as snapshot events",
                args.slot
            );
        }
    }
    if args.no_stream {
        return Ok(crate::exit::ok());
    }

    let store = ctx.open_store().await?;
    let mut options = CaptureOptions::new(&args.slot, &args.publication);
    options.selection = selection;
    options.batch_events = args.batch_events.max(1);
    options.batch_wait = Duration::from_millis(args.batch_wait_ms);
    options.lag_warn_bytes = args.lag_warn_mb.saturating_mul(1024 * 1024);
    let (shutdown_tx, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    });
    eprintln!(
        "capturing database '{}' (slot '{}', publication '{}') into {}; Ctrl-C to stop",
        connect.dbname(),
        args.slot,
        args.publication,
        store.location()
    );
    consumer::run(&connect, &options, store, shutdown, None).await?;
    eprintln!("stopped; everything received so far is stored and confirmed");
    Ok(crate::exit::ok())
}

/// Seconds since the commit of the newest `cdc` event in the store, if any.
async fn seconds_since_last_capture(ctx: &Context) -> Option<f64> {
    let store = ctx.open_existing_store().await.ok()?;
    let filter = Filter {
        source: Some(Source::Cdc),
        limit: Some(1),
        ..Filter::default()
    };
    let newest = store.query(&filter).await.ok()?.into_iter().next()?;
    let committed = newest.committed_at?;
    Some((chrono::Utc::now() - committed).num_milliseconds().max(0) as f64 / 1000.0)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
