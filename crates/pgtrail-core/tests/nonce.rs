//! The attacker: someone who holds a redacted proof and many other events
//! with their nonces (an auditor, a SIEM that receives exports) and tries
//! to predict the nonce of the proven event, whose salts hide its withheld
//! values (docs/proofs.md). Nonces and ids are drawn in the process
//! (`pgtrail_core::random`), so these check that no output gives another
//! away: none repeats across threads or reseeds, none follows from the one
//! before by a counter or a shared state, and the ids drawn beside them
//! hold none of their bytes.

use std::collections::HashSet;

use pgtrail_core::{Event, Kind, Source};

const THREADS: usize = 8;
/// Per thread: past the stream's reseed, several times.
const PER_THREAD: usize = 5_000;

fn nonce_of(event: &Event) -> [u8; 16] {
    let text = event.nonce.as_deref().unwrap_or_default();
    pgtrail_core::canonical::commit::nonce_bytes(text).unwrap_or_else(|| {
        panic!(
            "event {} has no nonce of 32 lowercase hex: {text:?}",
            event.id
        )
    })
}

/// Every thread's events, in the order each made them.
fn events_by_thread() -> Vec<Vec<Event>> {
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                (0..PER_THREAD)
                    .map(|_| Event::new(Source::Proxy, Kind::Statement))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}

#[test]
fn nonces_and_ids_never_repeat_across_threads() {
    let threads = events_by_thread();
    let all: Vec<&Event> = threads.iter().flatten().collect();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    let nonces: HashSet<[u8; 16]> = all.iter().map(|e| nonce_of(e)).collect();
    assert_eq!(nonces.len(), all.len(), "a nonce repeated");
    let ids: HashSet<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), all.len(), "an id repeated");
    // Nor do 8-byte halves repeat (a stream restarted from the same state
    // would repeat whole blocks; two nonces sharing a half would not be
    // seen by comparing nonces whole).
    let halves: HashSet<[u8; 8]> = all
        .iter()
        .flat_map(|e| {
            let n = nonce_of(e);
            let (a, b) = n.split_at(8);
            [a, b].map(|h| h.try_into().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        halves.len(),
        2 * all.len(),
        "an 8-byte half of a nonce repeated"
    );
}

#[test]
fn a_nonce_does_not_follow_from_the_one_before() {
    for events in events_by_thread() {
        let nonces: Vec<u128> = events
            .iter()
            .map(|e| u128::from_be_bytes(nonce_of(e)))
            .collect();
        for pair in nonces.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            // Not a counter (in either byte order), not a fixed step.
            let step = b.wrapping_sub(a);
            assert!(
                step > 1 << 64 && step.wrapping_neg() > 1 << 64,
                "consecutive nonces {a:032x}, {b:032x} differ by a small step"
            );
            let (la, lb) = (a.swap_bytes(), b.swap_bytes());
            assert!(lb.wrapping_sub(la) > 1 << 64 && la.wrapping_sub(lb) > 1 << 64);
            // About half of the bits change from one to the next (a
            // shared or slowly moving state changes few of them): 128
            // bits, mean 64, standard deviation 5.7; 24 is seven deviations.
            let changed = (a ^ b).count_ones();
            assert!(
                (24..=104).contains(&changed),
                "{changed} of 128 bits changed between consecutive nonces"
            );
        }
        // Each bit is set in about half of a thread's nonces (5,000
        // draws: the standard deviation of the share is 0.007).
        for bit in 0..128 {
            let set = nonces.iter().filter(|n| (*n >> bit) & 1 == 1).count();
            let share = set as f64 / nonces.len() as f64;
            assert!(
                (0.44..=0.56).contains(&share),
                "bit {bit} set in {share:.3} of the nonces"
            );
        }
    }
}

#[test]
fn an_id_holds_none_of_its_events_nonce() {
    // The id is public (a proof names its event); its random bits come
    // from the same stream as the nonce, so they must be other bytes.
    for event in events_by_thread().iter().flatten().take(2_000) {
        let nonce = nonce_of(event);
        let id = event.id.as_bytes();
        assert_eq!(event.id.get_version_num(), 7);
        for window in nonce.windows(6) {
            assert!(
                !id.windows(6).any(|w| w == window),
                "id {} holds 6 bytes of its nonce",
                event.id
            );
        }
    }
}

#[test]
fn ids_carry_the_time_they_were_made() {
    let before = chrono::Utc::now().timestamp_millis();
    let event = Event::new(Source::Proxy, Kind::Statement);
    let after = chrono::Utc::now().timestamp_millis();
    let (secs, nanos) = event
        .id
        .get_timestamp()
        .map(|t| t.to_unix())
        .unwrap_or_default();
    let millis = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
    assert!(
        (before..=after).contains(&millis),
        "id time {millis} outside {before}..={after}"
    );
}
