//! Random bytes for event ids and nonces, made in the process: no
//! `getrandom` system call per event (there were 2.3 per proxied statement).
//!
//! Each thread draws from its own ChaCha12 stream (`rand`'s `StdRng`). It
//! must be a cryptographic generator: a nonce keys the salts that hide the
//! values a proof withholds (docs/proofs.md), and whoever holds a proof
//! also sees many other events' ids and nonces; no output may help predict
//! another. The stream is seeded from the OS, seeded again every
//! [`RESEED_AFTER`] draws, and seeded anew whenever the process id changes:
//! a forked child never goes on with its parent's stream. (The process id
//! is read per draw: one `getpid`, the cheapest system call; a fork hook
//! would need `unsafe`, which the workspace forbids.) When the OS source
//! fails, nothing is drawn: the caller falls back.

use std::cell::RefCell;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Draws after which a thread's stream is seeded again from the OS: one
/// `getrandom` per this many events, and what someone who reads a
/// thread's state out of memory can learn is bounded by it.
const RESEED_AFTER: u32 = 1024;

/// One thread's generator and the process it was seeded in.
struct Stream {
    rng: StdRng,
    pid: u32,
    draws: u32,
}

impl Stream {
    fn new(seed: [u8; 32], pid: u32) -> Stream {
        Stream {
            rng: StdRng::from_seed(seed),
            pid,
            draws: 0,
        }
    }
}

thread_local! {
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// Fills `out` with cryptographically random bytes; false when the OS's
/// random source failed (`out` is then not to be used).
pub fn fill(out: &mut [u8]) -> bool {
    let pid = std::process::id();
    STREAM
        .try_with(|stream| draw(&mut stream.borrow_mut(), pid, out, os_seed))
        // A thread being torn down has no stream left: ask the OS directly.
        .unwrap_or_else(|_| getrandom::getrandom(out).is_ok())
}

fn os_seed() -> Option<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).ok()?;
    Some(seed)
}

/// Draws `out` from `stream` for process `pid`, seeding it from `seed`
/// first when it has none, came from another process, or is due. A seed
/// that fails leaves no stream: nothing is drawn from a parent's state.
fn draw(
    stream: &mut Option<Stream>,
    pid: u32,
    out: &mut [u8],
    seed: impl FnOnce() -> Option<[u8; 32]>,
) -> bool {
    let due = match stream {
        Some(s) => s.pid != pid || s.draws >= RESEED_AFTER,
        None => true,
    };
    if due {
        *stream = seed().map(|seed| Stream::new(seed, pid));
    }
    let Some(stream) = stream else {
        return false;
    };
    stream.rng.fill_bytes(out);
    stream.draws += 1;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_copy_is_seeded_anew_not_continued() {
        // A fork copies the parent's stream: same seed, same position.
        let seed = [42u8; 32];
        let mut parent = Some(Stream::new(seed, 100));
        let mut child = Some(Stream::new(seed, 100));
        let mut twin = Some(Stream::new(seed, 100));
        let mut out = [[0u8; 16]; 3];
        let fresh = || Some([9u8; 32]);
        assert!(draw(&mut parent, 100, &mut out[0], fresh));
        assert!(draw(&mut twin, 100, &mut out[1], fresh));
        // The copy in the same process goes on with the same bytes (what a
        // fork would give without the check)...
        assert_eq!(out[0], out[1]);
        // ...the copy that finds another process id does not.
        assert!(draw(&mut child, 101, &mut out[2], fresh));
        assert_ne!(out[0], out[2]);
        assert_eq!(child.as_ref().map(|s| s.pid), Some(101));
    }

    #[test]
    fn a_failed_seed_draws_nothing_even_from_a_parents_state() {
        let mut out = [0u8; 16];
        let mut none = None;
        assert!(!draw(&mut none, 1, &mut out, || None));
        // A forked child whose seeding fails gets no bytes, not the
        // parent's next ones.
        let mut forked = Some(Stream::new([1; 32], 1));
        assert!(!draw(&mut forked, 2, &mut out, || None));
        assert!(forked.is_none());
        // The next draw tries the OS again.
        assert!(draw(&mut forked, 2, &mut out, || Some([3; 32])));
    }

    #[test]
    fn the_stream_is_seeded_again_after_its_draws() {
        let mut stream = Some(Stream::new([5; 32], 1));
        let mut seeded = 0;
        let mut out = [0u8; 16];
        for _ in 0..RESEED_AFTER * 3 {
            assert!(draw(&mut stream, 1, &mut out, || {
                seeded += 1;
                Some([seeded as u8; 32])
            }));
        }
        // The first stream's RESEED_AFTER draws, then two more seeds.
        assert_eq!(seeded, 2);
    }

    #[test]
    fn the_os_seeds_differ_between_threads() {
        let outs: Vec<[u8; 32]> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut out = [0u8; 32];
                    assert!(fill(&mut out));
                    out
                })
                .join()
                .unwrap_or_default()
            })
            .collect();
        for (i, a) in outs.iter().enumerate() {
            assert_ne!(*a, [0u8; 32]);
            for b in &outs[i + 1..] {
                assert_ne!(a, b, "two threads drew the same bytes");
            }
        }
    }
}
