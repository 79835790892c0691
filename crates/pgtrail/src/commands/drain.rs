//! `pgtrail seal` (once), and the sealing part of `pgtrail run`: move
//! captured changes of finished transactions into the chain, in commit order.
//!
//! The sealing part retries what may pass — the database restarting or
//! unreachable, a conflict — through the pipeline's one retry policy; the
//! inbox keeps every captured row meanwhile, so waiting loses nothing.
//! Anything else (privileges, an inbox row that cannot be sealed, trigger
//! capture removed) ends the part with the error, and `pgtrail run` exits.
//! Connecting, checking the install, partitions and sealing itself are
//! [`pgtrail_triggers::Drainer`]'s.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_pipeline::retry::{self, Backoff};
use pgtrail_triggers::Drainer;
use tokio::sync::watch;

use crate::cli::DrainArgs;
use crate::commands::Invocation;
use crate::output;

/// Resolves on Ctrl-C or SIGTERM (`demo` waits on it too).
pub(crate) use super::run::signal as shutdown;

/// Longest pause between two attempts after failures.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Runs `pgtrail drain`.
pub async fn run(args: &DrainArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let report = Drainer::new(&args.db)
        .drain()
        .await
        .context("sealing failed")?;
    output::line(&format!(
        "sealed {} event(s) from {} transaction(s)",
        report.events, report.transactions
    ))?;
    Ok(crate::exit::ok())
}

/// What the sealing part of `pgtrail run` does.
#[derive(Debug, Clone)]
pub(crate) struct DrainPart {
    /// The database with trigger capture installed.
    pub db: String,
    /// Pause between seals.
    pub interval: Duration,
    /// Whether another part runs beside it: then a database without
    /// trigger capture is waited for instead of being an error.
    pub alone: bool,
}

/// Seals every `interval` until `stop` turns true, then once more.
pub(crate) async fn drain_part(
    part: DrainPart,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut drainer = Drainer::new(&part.db);
    // After a failure: the interval, doubling up to MAX_PAUSE (or the
    // interval, if longer).
    let mut backoff = Backoff::new(part.interval, MAX_PAUSE);
    let mut said_not_installed = false;
    loop {
        let stopping = *stop.borrow();
        let pause = match drainer.drain().await {
            Ok(report) => {
                let failures = backoff.succeeded();
                if failures > 0 {
                    tracing::warn!(failures, "Sealing works again.");
                }
                if report.events > 0 {
                    tracing::info!(
                        events = report.events,
                        transactions = report.transactions,
                        "Sealed."
                    );
                }
                part.interval
            }
            Err(pgtrail_triggers::Error::NotInstalled) if !part.alone => {
                if !said_not_installed {
                    tracing::warn!(
                        db = %drainer.target(),
                        "Trigger capture is not installed in this database; sealing waits for `pgtrail install`."
                    );
                    said_not_installed = true;
                }
                part.interval
            }
            Err(error) if stopping => {
                return Err(anyhow::Error::new(error).context("the last seal before stopping failed (the rows wait in the inbox for the next run)"));
            }
            Err(error) if error.is_retryable() => {
                let pause = backoff.failed();
                retry::log_failure(
                    "Sealing",
                    "captured rows wait in the inbox",
                    &error,
                    backoff.failures(),
                    pause,
                );
                pause
            }
            Err(error) => return Err(anyhow::Error::new(error).context("sealing failed")),
        };
        if stopping {
            return Ok(());
        }
        // A stop ends the pause early: the loop seals once more, then returns.
        retry::sleep_or_stop(pause, &mut stop).await;
    }
}
