//! `pgtrail seal` (once), and the sealing part of `pgtrail run`: move
//! captured changes of finished transactions into the chain, in commit order.
//!
//! The sealing part retries what may pass — the database restarting or
//! unreachable, a conflict — with back-off, logging each failure; the inbox
//! keeps every captured row meanwhile, so waiting loses nothing. Anything
//! else (privileges, an inbox row that cannot be sealed, trigger capture
//! removed) ends the part with the error, and `pgtrail run` exits.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::Store;
use tokio::sync::watch;

use crate::cli::SealArgs;
use crate::output;
use crate::Context;

/// Resolves on Ctrl-C or SIGTERM (`demo` waits on it too).
pub(crate) use super::run::signal as shutdown;

/// How often the sealing part creates the store's monthly partitions ahead.
const PREPARE_EVERY: Duration = Duration::from_secs(3600);

/// Longest pause between two attempts after failures.
const MAX_PAUSE: Duration = Duration::from_secs(30);

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

/// What the sealing part of `pgtrail run` does.
#[derive(Debug, Clone)]
pub(crate) struct SealPart {
    /// The database with trigger capture installed.
    pub db: String,
    /// Pause between seals.
    pub interval: Duration,
    /// Whether another part runs beside it: then a database without
    /// trigger capture is waited for instead of being an error.
    pub alone: bool,
}

/// Seals every `interval` until `stop` turns true, then once more.
pub(crate) async fn seal_part(
    part: SealPart,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut session = None;
    let mut prepared_at: Option<Instant> = None;
    let mut pause = part.interval;
    let mut failures = 0u32;
    let mut said_not_installed = false;
    loop {
        let stopping = *stop.borrow();
        match seal_round(&part, &mut session, &mut prepared_at).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::warn!(failures, "Sealing works again.");
                }
                failures = 0;
                pause = part.interval;
            }
            Err(pgtrail_triggers::Error::NotInstalled) if !part.alone => {
                if !said_not_installed {
                    tracing::warn!(
                        db = %pgtrail_store::open::redact_url(&part.db),
                        "Trigger capture is not installed in this database; sealing waits for `pgtrail install`."
                    );
                    said_not_installed = true;
                }
                session = None;
            }
            Err(error) if error.is_retryable() && !stopping => {
                failures += 1;
                session = None;
                let message = format!("{:#}", anyhow::Error::new(error));
                if failures >= 10 {
                    tracing::error!(failures, pause_ms = pause.as_millis() as u64, error = %message, "Sealing keeps failing; captured rows wait in the inbox. Retrying.");
                } else {
                    tracing::warn!(failures, pause_ms = pause.as_millis() as u64, error = %message, "Sealing failed; retrying.");
                }
                // Never below the interval, never above it or MAX_PAUSE, whichever is longer.
                pause = (pause * 2).min(MAX_PAUSE.max(part.interval));
            }
            Err(error) if stopping => {
                return Err(anyhow::Error::new(error).context("the last seal before stopping failed (the rows wait in the inbox for the next run)"));
            }
            Err(error) => return Err(anyhow::Error::new(error).context("sealing failed")),
        }
        if stopping {
            return Ok(());
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// A connection to the audited database, and its store for partitions.
struct Session {
    client: tokio_postgres::Client,
    store: Option<PostgresStore>,
}

/// Connects if needed, creates partitions ahead hourly, seals what is final.
async fn seal_round(
    part: &SealPart,
    session: &mut Option<Session>,
    prepared_at: &mut Option<Instant>,
) -> Result<(), pgtrail_triggers::Error> {
    let session = match session {
        Some(session) => session,
        None => session.insert(Session {
            client: pgtrail_triggers::connect(&part.db).await?,
            store: None,
        }),
    };
    if prepared_at.is_none_or(|at| at.elapsed() >= PREPARE_EVERY) {
        // Only once trigger capture is there: connecting the store would create it.
        if pgtrail_triggers::install::installed_version(&session.client)
            .await?
            .is_none()
        {
            return Err(pgtrail_triggers::Error::NotInstalled);
        }
        if session.store.is_none() {
            session.store = Some(PostgresStore::connect(&part.db).await?);
        }
        // Without partitions ahead, events land in the default partition:
        // a failure here (e.g. not the owner) must not stop sealing.
        let until = Utc::now() + chrono::Duration::days(62);
        if let Some(store) = &session.store {
            if let Err(e) = store.prepare_until(until).await {
                tracing::warn!(error = %e, "Cannot create partitions ahead; events go to the default partition.");
            }
        }
        *prepared_at = Some(Instant::now());
    }
    let report = pgtrail_triggers::seal_all(&mut session.client).await?;
    if report.events > 0 {
        tracing::info!(
            events = report.events,
            transactions = report.transactions,
            "Sealed."
        );
    }
    Ok(())
}
