//! CPU time per stage of the way from a source to the store, so a
//! benchmark (`bench/cdc`) can name the stage that bounds throughput.
//!
//! Each stage adds the CPU time of the thread it ran on
//! (`CLOCK_THREAD_CPUTIME_ID`), taken around its synchronous work
//! ([`measure`]) or around each poll of its future ([`metered`]), so a task
//! that moves between threads is still counted exactly once. A stage
//! measured inside another on the same thread (an append that encodes its
//! own small batch) counts for the inner stage only. The counters are
//! process-wide and cost one atomic add per measured piece; work on threads
//! no stage measures (an async connection's task, freeing memory, the
//! runtime itself) is in none of them.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// A stage of capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Receiving, decoding and assembling changes into events (the source).
    Decode,
    /// Filling unchanged TOAST values (the pipeline's cache).
    Toast,
    /// Canonical JSON, index columns and the chain hash of each event.
    Encode,
    /// The store's write: inserts (SQLite) or COPY (Postgres), and commit.
    Store,
}

const STAGES: usize = 4;

static CPU_NANOS: [AtomicU64; STAGES] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

thread_local! {
    /// CPU of the stages measured inside the one being measured on this
    /// thread, which it must not count again.
    static NESTED: Cell<u64> = const { Cell::new(0) };
}

/// CPU time per stage since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCpu {
    pub decode: Duration,
    pub toast: Duration,
    pub encode: Duration,
    pub store: Duration,
}

impl StageCpu {
    /// What was spent since `earlier`.
    pub fn since(&self, earlier: &StageCpu) -> StageCpu {
        StageCpu {
            decode: self.decode.saturating_sub(earlier.decode),
            toast: self.toast.saturating_sub(earlier.toast),
            encode: self.encode.saturating_sub(earlier.encode),
            store: self.store.saturating_sub(earlier.store),
        }
    }
}

/// The counters now.
pub fn snapshot() -> StageCpu {
    let get =
        |stage: Stage| Duration::from_nanos(CPU_NANOS[stage as usize].load(Ordering::Relaxed));
    StageCpu {
        decode: get(Stage::Decode),
        toast: get(Stage::Toast),
        encode: get(Stage::Encode),
        store: get(Stage::Store),
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// Runs `work`, counting the calling thread's CPU meanwhile for `stage`.
pub fn measure<T>(stage: Stage, work: impl FnOnce() -> T) -> T {
    let outer = NESTED.with(|n| n.replace(0));
    let start = thread_cpu();
    let result = work();
    let spent = nanos(thread_cpu().saturating_sub(start));
    let inner = NESTED.with(|n| n.replace(outer.saturating_add(spent)));
    CPU_NANOS[stage as usize].fetch_add(spent.saturating_sub(inner), Ordering::Relaxed);
    result
}

/// `future`, counting the CPU of each of its polls for `stage`.
pub fn metered<F: Future>(stage: Stage, future: F) -> Metered<F> {
    Metered {
        stage,
        future: Box::pin(future),
    }
}

/// See [`metered`].
pub struct Metered<F> {
    stage: Stage,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let stage = self.stage;
        measure(stage, || self.future.as_mut().poll(cx))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin(d: Duration) {
        let start = thread_cpu();
        while thread_cpu() - start < d {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn a_nested_stage_counts_for_itself_only() {
        let before = snapshot();
        measure(Stage::Store, || {
            spin(Duration::from_millis(20));
            measure(Stage::Encode, || spin(Duration::from_millis(30)));
        });
        let spent = snapshot().since(&before);
        // Other tests may measure too, but none of them spins this long.
        assert!(spent.encode >= Duration::from_millis(30), "{spent:?}");
        assert!(spent.store >= Duration::from_millis(20), "{spent:?}");
        assert!(spent.store < Duration::from_millis(45), "{spent:?}");
    }
}
