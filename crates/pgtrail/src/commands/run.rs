//! `pgtrail run`: the one long-running process.
//!
//! It runs each configured part as its own task, side by side, until Ctrl-C
//! or SIGTERM: sealing trigger capture (`seal::seal_part`) and streaming
//! logical replication into the store (`capture::capture_part`). Each part
//! retries by itself what may pass — a database restarting, a store outage
//! — and says so in the log, so a problem in one never pauses the other.
//!
//! A part that fails for good (an operator must act: a dropped slot, lost
//! privileges) stops the others cleanly (`pgtrail_pipeline::supervise`)
//! and the process exits with status 2. Keeping the rest running would
//! leave that capture path silently dead behind a process that looks
//! healthy; exiting hands the decision to the service manager (systemd's
//! `Restart=on-failure`) and to whoever reads its log.
//!
//! Stopping is graceful: the stop signal reaches every part through one
//! `watch` channel; the sealer seals once more, the consumer stores and
//! confirms the batch in hand. A second Ctrl-C exits at once, which loses
//! nothing either: the slot and the inbox keep whatever was not confirmed.
//!
//! Beside them, `alarms.rs` watches both paths for what leaves the trail
//! incomplete (a capture trigger dropped, the slot lost, …) and records
//! each condition once, as an `alarm` event.
//!
//! With a private key, `checkpointer.rs` signs the head of each store the
//! parts write to; it stops last, so its final checkpoint covers their final
//! events.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_pipeline::supervise::{PartError, PartFailure, Supervisor};
use pgtrail_store::open::redact_url;

use super::alarms::{watch_part, CaptureTarget, Watch};
use super::capture::{capture_options, capture_part, CapturePart};
use super::checkpointer::{Checkpointer, Target};
use super::seal::{seal_part, SealPart};
use crate::cli::RunArgs;
use crate::Context;

/// Runs `pgtrail run`.
pub async fn run(args: &RunArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let seal_db = args.db.as_deref().or(ctx.config.triggers.db.as_deref());
    let capture_db = args
        .capture_db
        .as_deref()
        .or(ctx.config.capture.db.as_deref());
    if seal_db.is_none() && capture_db.is_none() {
        anyhow::bail!(
            "nothing to run: name the database to seal (--db, PGTRAIL_DB or [triggers] db) \
             and/or the one to capture by logical replication (--capture-db or [capture] db)"
        );
    }
    let capture = match capture_db {
        Some(db) => Some(CapturePart {
            connect: ConnectOptions::parse(db).context("invalid capture database URL")?,
            options: capture_options(&args.capture, &ctx.config.capture, &ctx.config.identity)?,
        }),
        None => None,
    };
    let seal = seal_db.map(|db| SealPart {
        db: db.to_string(),
        interval: Duration::from_millis(
            args.interval_ms
                .unwrap_or(ctx.config.triggers.seal_interval_ms)
                .max(1),
        ),
        alone: capture.is_none(),
    });
    // Every store written to: the sealer's in its database, capture's at [store] url.
    let targets = seal
        .iter()
        .map(|part| Target::Sealed(part.db.clone()))
        .chain(
            capture
                .iter()
                .map(|_| Target::Capture(ctx.config.store.url.clone())),
        )
        .collect();
    let checkpointer = Checkpointer::start(args.private_key.as_deref(), targets, ctx).await?;

    let alarm_watch = Watch {
        seal_db: seal.as_ref().map(|part| part.db.clone()),
        capture: capture.as_ref().map(|part| CaptureTarget {
            connect: part.connect.clone(),
            slot: part.options.slot.clone(),
            publication: part.options.publication.clone(),
        }),
    };

    let mut parts = Supervisor::<anyhow::Error>::new();
    let stop = parts.stop_signal();
    let stop_tx = parts.stopper();
    if let Some(part) = seal {
        eprintln!(
            "sealing trigger capture of {} every {} ms",
            redact_url(&part.db),
            part.interval.as_millis()
        );
        parts.spawn("sealing", seal_part(part, stop.clone()));
    }
    if let Some(part) = capture {
        eprintln!(
            "capturing database '{}' (slot '{}', publication '{}') into {}",
            part.connect.dbname(),
            part.options.slot,
            part.options.publication,
            redact_url(&ctx.config.store.url)
        );
        parts.spawn("capture", capture_part(part, ctx.clone(), stop.clone()));
    }
    parts.spawn("alarms", watch_part(alarm_watch, ctx.clone(), stop));
    eprintln!("running; Ctrl-C to stop");

    let mut signals = signal_count();
    let failure = loop {
        tokio::select! {
            count = signals.recv() => match count {
                Some(1) => {
                    eprintln!("stopping: storing what is in hand (Ctrl-C again to quit at once)");
                    let _ = stop_tx.send(true);
                }
                _ => anyhow::bail!("interrupted twice: quit without waiting (unconfirmed changes stay in the slot and the inbox)"),
            },
            failure = parts.join() => break failure,
        }
    };
    // Signed after the parts stored what they had in hand, so it covers it.
    if let Some(checkpointer) = checkpointer {
        tokio::select! {
            () = checkpointer.finish() => {}
            _ = signals.recv() => anyhow::bail!("interrupted again: quit without the last checkpoint"),
        }
    }
    match failure {
        Some(PartFailure { part, error }) => {
            let error = match error {
                PartError::Failed(error) => error,
                other => anyhow::anyhow!("{other}"),
            };
            Err(error.context(format!("{part} failed")))
        }
        None => {
            eprintln!("stopped; everything captured so far is stored and confirmed");
            Ok(crate::exit::ok())
        }
    }
}

/// Counts Ctrl-C / SIGTERM deliveries: 1, 2, …
fn signal_count() -> tokio::sync::mpsc::Receiver<u32> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            signal().await;
            count += 1;
            if tx.send(count).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
