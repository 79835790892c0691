//! Failed logins slow their sender down: after a few failures from one
//! client, each further attempt must wait twice as long as the last (up to
//! [`MAX_DELAY`]), and attempts during the wait are refused unchecked. A
//! token has 256 random bits: this is not what makes guessing hopeless,
//! but it keeps a guesser from filling the trail with failed logins.
//! IPv6 clients count per /64, the block one host usually holds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before the delays start.
pub const FREE_FAILURES: u32 = 3;
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Most clients tracked; past it, those whose wait is over are forgotten.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Instant,
}

/// Failed logins per client.
#[derive(Debug, Default)]
pub struct Throttle {
    clients: Mutex<HashMap<Option<IpAddr>, Failures>>,
}

impl Throttle {
    /// `Err(wait)` when `client` must wait before its next attempt.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get(&key(client)) {
            Some(f) => match f.until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failure of `client`; returns how long it must now wait.
    pub fn fail(&self, client: Option<IpAddr>) -> Duration {
        let now = Instant::now();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_CLIENTS {
            clients.retain(|_, f| f.until > now);
        }
        let entry = clients.entry(key(client)).or_insert(Failures {
            count: 0,
            until: now,
        });
        entry.count = entry.count.saturating_add(1);
        let delay = delay(entry.count);
        entry.until = now + delay;
        delay
    }

    /// Forgets `client`'s failures after a success.
    pub fn succeed(&self, client: Option<IpAddr>) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key(client));
    }
}

/// The wait after the `count`th failure: none for the first few, then 1 s,
/// 2 s, 4 s, … up to [`MAX_DELAY`].
pub fn delay(count: u32) -> Duration {
    if count <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (count - FREE_FAILURES - 1).min(20);
    Duration::from_secs(1u64 << doublings).min(MAX_DELAY)
}

fn key(client: Option<IpAddr>) -> Option<IpAddr> {
    match client? {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                Some(IpAddr::V6(octets.into()))
            }
        },
        v4 => Some(v4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_after_the_free_failures_and_stop_at_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [0, 0, 0, 1, 2, 4, 8, 16]);
        assert_eq!(delay(1000), MAX_DELAY);
    }

    #[test]
    fn one_client_waits_others_do_not_and_a_v6_block_counts_as_one() {
        let throttle = Throttle::default();
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let a2: IpAddr = "2001:db8::ffff:2".parse().expect("ip");
        let b: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.fail(Some(a)), Duration::ZERO);
        }
        assert!(throttle.check(Some(a)).is_ok());
        assert!(throttle.fail(Some(a2)) >= Duration::from_secs(1));
        assert!(throttle.check(Some(a)).is_err());
        assert!(throttle.check(Some(b)).is_ok());
        throttle.succeed(Some(a));
        assert!(throttle.check(Some(a2)).is_ok());
    }
}
