//! `pgtrail seal` (once) and `pgtrail run` (continuously): move captured
//! changes of finished transactions into the chain, in commit order.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::Store;

use crate::cli::{RunArgs, SealArgs};
use crate::output;
use crate::Context;

/// How often `run` creates the store's monthly partitions ahead.
const PREPARE_EVERY: Duration = Duration::from_secs(3600);

/// Runs `pgtrail seal`.
pub async fn run(args: &SealArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    let mut client = pgtrail_triggers::connect(&args.db).await?;
    let report = pgtrail_triggers::seal_all(&mut client)
        .await
        .context("sealing failed")?;
    output::line(&format!(
        "sealed {} event(s) from {} transaction(s)",
        report.events, report.transactions
    ))?;
    Ok(crate::exit::ok())
}

/// Runs `pgtrail run`: seals every interval until Ctrl-C or SIGTERM.
pub async fn run_forever(args: &RunArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    let store = PostgresStore::connect(&args.db).await?;
    let interval = Duration::from_millis(args.interval_ms);
    let mut client = pgtrail_triggers::connect(&args.db).await?;
    let mut prepared_at: Option<std::time::Instant> = None;
    eprintln!("sealing every {} ms; Ctrl-C to stop", args.interval_ms);
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        if prepared_at.is_none_or(|at| at.elapsed() >= PREPARE_EVERY) {
            // Without partitions ahead, events land in the default partition:
            // a failure here (e.g. not the owner) must not stop sealing.
            let until = Utc::now() + chrono::Duration::days(62);
            if let Err(e) = store.prepare_until(until).await {
                tracing::warn!(error = %e, "Cannot create partitions ahead; events go to the default partition.");
            }
            prepared_at = Some(std::time::Instant::now());
        }
        let report = pgtrail_triggers::seal_all(&mut client)
            .await
            .context("sealing failed")?;
        if report.events > 0 {
            tracing::info!(
                events = report.events,
                transactions = report.transactions,
                "Sealed."
            );
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    let report = pgtrail_triggers::seal_all(&mut client)
        .await
        .context("final seal failed")?;
    eprintln!("stopped after a last seal ({} event(s))", report.events);
    Ok(crate::exit::ok())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown() {
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
