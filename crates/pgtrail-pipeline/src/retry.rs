//! The one retry policy: what may pass is tried again after a pause that
//! doubles up to a ceiling; what will not pass is returned at once.
//!
//! Whether an error may pass is the error type's own answer
//! ([`Retryable`]), which for Postgres failures comes from one SQLSTATE
//! list (`pgtrail_connect::sqlstate_may_pass`). Waiting always gives way to
//! a stop request, so a part stuck on an unreachable store still stops when
//! asked, with its work left where the source can replay it.

use std::future::Future;
use std::time::Duration;

use pgtrail_store::StoreError;
use tokio::sync::watch;

/// An error that knows whether trying again may succeed.
pub trait Retryable: std::error::Error {
    /// True when the cause may pass by itself (a server restarting, a
    /// store unreachable, a conflict); false when someone must act.
    fn is_retryable(&self) -> bool;
}

impl Retryable for StoreError {
    fn is_retryable(&self) -> bool {
        StoreError::is_retryable(self)
    }
}

/// Failures after which waiting is logged as an error, not a warning.
const LOUD_AFTER: u32 = 10;

/// Pauses between attempts: `first`, doubling up to `max`, back to `first`
/// after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    pause: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at `first` and never waits longer than `max` (nor less than
    /// `first`, if `max` is smaller).
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            pause: first,
            failures: 0,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; returns how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        let pause = self.pause;
        self.pause = (self.pause * 2).min(self.max);
        pause
    }

    /// Records a success; returns how many failures came before it.
    pub fn succeeded(&mut self) -> u32 {
        self.pause = self.first;
        std::mem::take(&mut self.failures)
    }
}

/// Sleeps for `pause` unless a stop is asked first; true when it was. A
/// stop channel whose sender is gone can no longer ask, so it just sleeps.
pub async fn sleep_or_stop(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let asked = tokio::select! {
        _ = tokio::time::sleep(pause) => return false,
        asked = stop.wait_for(|s| *s) => asked.is_ok(),
    };
    if !asked {
        tokio::time::sleep(pause).await;
    }
    asked
}

/// Runs `attempt` until it succeeds (`Ok(Some(value))`), fails in a way that
/// will not pass (`Err`), or a stop is asked while waiting (`Ok(None)`).
/// Each failure is logged once with `what` (what was being tried) and
/// `meanwhile` (what happens to the work while it waits, for the operator).
pub async fn until_done<T, E, F, Fut>(
    what: &str,
    meanwhile: &str,
    backoff: &mut Backoff,
    stop: &mut watch::Receiver<bool>,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(value) => {
                let failures = backoff.succeeded();
                if failures > 0 {
                    tracing::info!(failures, "{what}: works again");
                }
                return Ok(Some(value));
            }
            Err(error) if error.is_retryable() => {
                let pause = backoff.failed();
                log_failure(what, meanwhile, &error, backoff.failures(), pause);
                if sleep_or_stop(pause, stop).await {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error),
        }
    }
}

/// Logs a failure that will be retried: a warning at first, an error once
/// it keeps failing, so monitoring on error lines notices a long outage.
pub fn log_failure(
    what: &str,
    meanwhile: &str,
    error: &dyn std::error::Error,
    failures: u32,
    pause: Duration,
) {
    let error = error_chain(error);
    let pause_ms = pause.as_millis() as u64;
    if failures >= LOUD_AFTER {
        tracing::error!(failures, pause_ms, error = %error, "{what} keeps failing; {meanwhile}. Retrying.");
    } else {
        tracing::warn!(failures, pause_ms, error = %error, "{what} failed; {meanwhile}. Retrying.");
    }
}

/// An error and its sources, one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Failure(&'static str, bool);

    impl Retryable for Failure {
        fn is_retryable(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset_after_success() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<_> = (0..4).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
        assert_eq!(backoff.succeeded(), 4);
        assert_eq!(backoff.failed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn what_may_pass_is_retried_and_what_will_not_is_returned() {
        let (_tx, mut stop) = watch::channel(false);
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        let tries = AtomicU32::new(0);
        let done = until_done(
            "append",
            "nothing is lost",
            &mut backoff,
            &mut stop,
            || async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err(Failure("store down", true)),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!(done.ok().flatten(), Some(7));
        assert_eq!(tries.load(Ordering::SeqCst), 3);

        let tries = AtomicU32::new(0);
        let done: Result<Option<()>, _> = until_done(
            "append",
            "nothing is lost",
            &mut backoff,
            &mut stop,
            || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(Failure("bad input", false))
            },
        )
        .await;
        assert!(matches!(done, Err(Failure("bad input", false))));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait() {
        let (tx, mut stop) = watch::channel(false);
        let mut backoff = Backoff::new(Duration::from_secs(5), Duration::from_secs(30));
        let waiting = tokio::spawn(async move {
            until_done(
                "append",
                "nothing is lost",
                &mut backoff,
                &mut stop,
                || async { Err::<(), _>(Failure("store down", true)) },
            )
            .await
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(true).ok();
        let outcome = waiting.await.expect("the task ends");
        assert!(matches!(outcome, Ok(None)));
    }
}
