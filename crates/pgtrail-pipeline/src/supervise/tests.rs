use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// A part that runs until stopped, then says it stopped cleanly.
async fn patient(mut stop: watch::Receiver<bool>, stopped: Arc<AtomicBool>) -> Result<(), String> {
    let _ = stop.wait_for(|s| *s).await;
    stopped.store(true, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn a_part_failing_for_good_stops_the_others_and_is_the_outcome() {
    let mut supervisor = Supervisor::<String>::new();
    let stopped = Arc::new(AtomicBool::new(false));
    supervisor.spawn(
        "sealing",
        patient(supervisor.stop_signal(), stopped.clone()),
    );
    supervisor.spawn("capture", async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err("slot dropped".to_string())
    });
    let failure = supervisor.join().await.expect("a failure");
    assert_eq!(failure.part, "capture");
    assert_eq!(failure.error.to_string(), "slot dropped");
    assert!(
        stopped.load(Ordering::SeqCst),
        "sealing was asked to stop and did"
    );
}

#[tokio::test]
async fn a_part_ending_unasked_counts_as_a_failure() {
    let mut supervisor = Supervisor::<String>::new();
    let stopped = Arc::new(AtomicBool::new(false));
    supervisor.spawn("alarms", patient(supervisor.stop_signal(), stopped.clone()));
    supervisor.spawn("capture", async { Ok(()) });
    let failure = supervisor.join().await.expect("a failure");
    assert_eq!(failure.part, "capture");
    assert!(matches!(failure.error, PartError::EndedUnasked));
    assert!(stopped.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_panic_is_a_failure_too() {
    let mut supervisor = Supervisor::<String>::new();
    supervisor.spawn("capture", async { panic!("a bug") });
    let failure = supervisor.join().await.expect("a failure");
    assert!(
        matches!(failure.error, PartError::Panicked(_)),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_stop_asked_ends_every_part_without_failure() {
    let mut supervisor = Supervisor::<String>::new();
    let stopped = Arc::new(AtomicBool::new(false));
    supervisor.spawn(
        "sealing",
        patient(supervisor.stop_signal(), stopped.clone()),
    );
    supervisor.spawn(
        "capture",
        patient(supervisor.stop_signal(), stopped.clone()),
    );
    supervisor.stopper().send_replace(true);
    assert!(supervisor.join().await.is_none());
    assert!(stopped.load(Ordering::SeqCst));
}
