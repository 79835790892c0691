//! Supervision of the parts of a long-running process (`pgtrail run`):
//! each part is a task; one stop signal reaches them all.
//!
//! Each part retries by itself what may pass, so a problem in one never
//! pauses the others. A part that fails for good (an operator must act),
//! or ends without being asked to, stops the others cleanly: keeping the
//! rest running would leave that capture path silently dead behind a
//! process that looks healthy. The first such failure is the outcome, for
//! the caller to exit on.

use std::fmt;
use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// The parts, their stop signal and the first failure.
pub struct Supervisor<E> {
    parts: JoinSet<(&'static str, Result<(), E>)>,
    stop: watch::Sender<bool>,
    failure: Option<PartFailure<E>>,
}

/// Why a part ended without being asked to.
#[derive(Debug)]
pub enum PartError<E> {
    /// It failed for good.
    Failed(E),
    /// It returned although no stop was asked.
    EndedUnasked,
    /// It panicked (a bug).
    Panicked(String),
}

/// The first part that ended without being asked to.
#[derive(Debug)]
pub struct PartFailure<E> {
    /// The part's name.
    pub part: &'static str,
    /// What happened.
    pub error: PartError<E>,
}

impl<E: fmt::Display> fmt::Display for PartError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `{:#}` reaches the error's own alternate form (anyhow's chain).
            PartError::Failed(error) if f.alternate() => write!(f, "{error:#}"),
            PartError::Failed(error) => write!(f, "{error}"),
            PartError::EndedUnasked => f.write_str("it ended without being asked to"),
            PartError::Panicked(detail) => write!(f, "it panicked: {detail}"),
        }
    }
}

impl<E> Default for Supervisor<E>
where
    E: fmt::Display + Send + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Supervisor<E>
where
    E: fmt::Display + Send + 'static,
{
    /// No parts yet.
    pub fn new() -> Self {
        Supervisor {
            parts: JoinSet::new(),
            stop: watch::channel(false).0,
            failure: None,
        }
    }

    /// The signal parts stop on: true once a stop is asked.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// What asks every part to stop (a signal handler holds one).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// Runs `part` as a task named `name`.
    pub fn spawn<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.parts.spawn(async move { (name, part.await) });
    }

    /// Waits for every part to end, stopping the others once one fails;
    /// returns the first failure. Cancel-safe: awaiting it again after a
    /// `select!` took another branch goes on where it was.
    pub async fn join(&mut self) -> Option<PartFailure<E>> {
        while let Some(joined) = self.parts.join_next().await {
            let (part, result) = match joined {
                Ok((part, result)) => (part, result.map_err(PartError::Failed)),
                Err(join) => ("a part", Err(PartError::Panicked(join.to_string()))),
            };
            let error = match result {
                Ok(()) if *self.stop.borrow() => continue,
                Ok(()) => PartError::EndedUnasked,
                Err(error) => error,
            };
            tracing::error!(part, error = %format!("{error:#}"), "A part failed for good; stopping the others.");
            self.stop.send_replace(true);
            self.failure.get_or_insert(PartFailure { part, error });
        }
        self.failure.take()
    }
}

#[cfg(test)]
mod tests;
