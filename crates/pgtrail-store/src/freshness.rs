//! How current the trail is, as `pgtrail status` (and the HTTP server) tell
//! it: how far a store's chain ran past its newest signed checkpoint (the
//! events whose removal `verify` could not prove), and how far a
//! logical-replication slot is behind. Pure functions over what a store and
//! `pgtrail_cdc::slot` report, so every reader gives the same verdicts in
//! the same words; the readers only lay them out.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pgtrail_core::{Filter, Source};
use serde::Serialize;

use crate::checkpoint::{Checkpoint, CheckpointKind};
use crate::{ChainHead, Result, Store};

/// Bytes in a MiB, the unit lag limits are configured in.
pub const MIB: u64 = 1024 * 1024;

/// A store's newest head checkpoint, as a reader shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewestCheckpoint {
    /// The last event it covers.
    pub seq: i64,
    /// When it was made.
    #[serde(with = "pgtrail_core::time::micros")]
    pub created_at: DateTime<Utc>,
    /// Its age when looked at.
    pub age_seconds: f64,
    /// Whether it carries a signature (an unsigned one proves nothing).
    pub signed: bool,
}

/// How far a chain ran past its newest head checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFreshness {
    /// The chain's newest `seq` (`None`: empty).
    pub head_seq: Option<i64>,
    /// The newest head checkpoint.
    pub newest: Option<NewestCheckpoint>,
    /// Events after the newest checkpoint (all of them when there is none).
    pub events_since: i64,
    /// Set when that needs attention.
    pub stale: Option<Stale>,
}

/// Why a store's checkpoints need attention.
#[derive(Debug, Clone, PartialEq)]
pub enum Stale {
    /// Events are stored and no checkpoint covers them.
    Uncovered {
        /// How many.
        events: i64,
    },
    /// The newest checkpoint is older than twice the interval it should be
    /// made at, and events arrived after it.
    Old {
        /// The last event it covers.
        seq: i64,
        /// Its age.
        age: Duration,
        /// `[signing] checkpoint_every`.
        every: Duration,
        /// Events after it.
        events_since: i64,
    },
}

impl fmt::Display for Stale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stale::Uncovered { events } => write!(
                f,
                "no checkpoint covers its {events} event(s): removing the newest ones \
                 would go unnoticed; set [signing] private_key so `pgtrail run` signs checkpoints"
            ),
            Stale::Old {
                seq,
                age,
                every,
                events_since,
            } => write!(
                f,
                "the newest checkpoint (event {seq}) is {} old, more than twice checkpoint_every ({}), \
                 and {events_since} event(s) arrived after it: is `pgtrail run` signing (private key, errors in its log)?",
                duration_text(*age),
                duration_text(*every),
            ),
        }
    }
}

/// How far the chain `head` ran past its newest head checkpoint among
/// `checkpoints`, and whether that is stale at `now` for checkpoints made
/// every `every`. A checkpoint older than twice `every` is stale only when
/// events arrived after it: an idle store needs no new one.
pub fn checkpoint_freshness(
    head: Option<&ChainHead>,
    checkpoints: &[Checkpoint],
    every: Duration,
    now: DateTime<Utc>,
) -> CheckpointFreshness {
    let head_seq = head.map(|h| h.seq);
    let newest = checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Head)
        .max_by_key(|c| (c.seq, c.created_at));
    let covered = newest.map_or(0, |c| c.seq);
    let events_since = head_seq.map_or(0, |h| (h - covered).max(0));
    let age = newest.map(|c| (now - c.created_at).to_std().unwrap_or_default());
    let stale = match (newest, age) {
        _ if events_since == 0 => None,
        (None, _) => Some(Stale::Uncovered {
            events: events_since,
        }),
        (Some(c), Some(age)) if age > every * 2 => Some(Stale::Old {
            seq: c.seq,
            age,
            every,
            events_since,
        }),
        _ => None,
    };
    CheckpointFreshness {
        head_seq,
        newest: newest.zip(age).map(|(c, age)| NewestCheckpoint {
            seq: c.seq,
            created_at: c.created_at,
            age_seconds: age.as_secs_f64(),
            signed: c.is_signed(),
        }),
        events_since,
        stale,
    }
}

/// What the server says about a logical-replication slot (the numbers
/// `pgtrail_cdc::slot::slot_status` reads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlotFacts<'a> {
    /// The slot's name.
    pub name: &'a str,
    /// Whether a consumer is streaming from it.
    pub active: bool,
    /// WAL bytes between the insert position and the confirmed one.
    pub lag_bytes: i64,
    /// The server's measure of the connected consumer's delay, if known.
    pub replay_lag_seconds: Option<f64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<&'a str>,
}

impl SlotFacts<'_> {
    /// Whether the lag in seconds must be estimated from the store: the
    /// slot is behind and no consumer is connected, so the server cannot
    /// tell. Only then does [`slot_lag_seconds`] read the newest commit.
    pub fn lag_from_store(&self) -> bool {
        !self.active && self.lag_bytes > 0
    }
}

/// Where a slot's lag in seconds comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LagFrom {
    /// The connected consumer's replay lag as Postgres measures it.
    Server,
    /// Since the newest commit captured into the store (no consumer
    /// connected, so the server cannot tell).
    Store,
}

/// The slot's lag in seconds and where it comes from. `newest_capture_commit`
/// is the commit time of the newest event logical replication stored; it is
/// used only when [`SlotFacts::lag_from_store`]. `None` seconds: not known.
pub fn slot_lag_seconds(
    slot: &SlotFacts<'_>,
    newest_capture_commit: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (Option<f64>, Option<LagFrom>) {
    if slot.active {
        // The server forgets the lag once the consumer has caught up.
        (
            Some(slot.replay_lag_seconds.unwrap_or(0.0)),
            Some(LagFrom::Server),
        )
    } else if slot.lag_from_store() {
        match newest_capture_commit {
            Some(committed) => (
                Some((now - committed).num_milliseconds().max(0) as f64 / 1000.0),
                Some(LagFrom::Store),
            ),
            None => (None, None),
        }
    } else {
        (Some(0.0), None)
    }
}

/// Why a slot needs attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotWarning {
    /// The slot asked about does not exist in the database.
    Missing {
        /// Its name.
        slot: String,
    },
    /// The server removed WAL the slot needed: changes were skipped.
    Lost {
        /// Its name.
        slot: String,
    },
    /// The server is about to remove WAL the slot needs.
    Unreserved {
        /// Its name.
        slot: String,
    },
    /// The slot is further behind than the configured limit.
    Behind {
        /// Its name.
        slot: String,
        /// How far, in bytes of WAL.
        lag_bytes: u64,
        /// `[replication] lag_warn_mb`, in bytes.
        limit_bytes: u64,
        /// Whether a consumer is streaming from it.
        consumer_connected: bool,
    },
}

impl fmt::Display for SlotWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotWarning::Missing { slot } => write!(
                f,
                "slot '{slot}' does not exist in this database (pgtrail replicate --setup creates it)"
            ),
            SlotWarning::Lost { slot } => write!(
                f,
                "slot '{slot}' lost WAL it needed: changes were skipped; recreate it (replicate --drop, then --setup --baseline)"
            ),
            SlotWarning::Unreserved { slot } => write!(
                f,
                "slot '{slot}' is about to lose WAL it needs (max_slot_wal_keep_size): start the consumer"
            ),
            SlotWarning::Behind {
                slot,
                lag_bytes,
                limit_bytes,
                consumer_connected,
            } => write!(
                f,
                "slot '{slot}' is {} behind, more than lag_warn_mb ({}){}",
                megabytes(*lag_bytes),
                megabytes(*limit_bytes),
                if *consumer_connected {
                    ""
                } else {
                    ": no consumer is connected (start `pgtrail run`)"
                }
            ),
        }
    }
}

/// The warning a slot deserves, if any: WAL lost or about to be (whatever
/// the lag), else more than `lag_warn_bytes` behind.
pub fn slot_warning(slot: &SlotFacts<'_>, lag_warn_bytes: u64) -> Option<SlotWarning> {
    let name = slot.name.to_string();
    let lag = u64::try_from(slot.lag_bytes).unwrap_or(0);
    match slot.wal_status {
        Some("lost") => Some(SlotWarning::Lost { slot: name }),
        Some("unreserved") => Some(SlotWarning::Unreserved { slot: name }),
        _ if lag > lag_warn_bytes => Some(SlotWarning::Behind {
            slot: name,
            lag_bytes: lag,
            limit_bytes: lag_warn_bytes,
            consumer_connected: slot.active,
        }),
        _ => None,
    }
}

/// The commit time of the newest event `source` stored in `store`, if any:
/// how far that path's capture got, as far as the store can tell.
pub async fn newest_commit(store: &dyn Store, source: Source) -> Result<Option<DateTime<Utc>>> {
    let filter = Filter {
        source: Some(source),
        limit: Some(1),
        ..Filter::default()
    };
    Ok(store
        .query(&filter)
        .await?
        .into_iter()
        .next()
        .and_then(|newest| newest.committed_at))
}

/// `95s` → `1m 35s`; whole seconds.
pub fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// Bytes as MB with one decimal.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / MIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(seq: i64, created_at: DateTime<Utc>) -> Checkpoint {
        let mut c = Checkpoint::new(CheckpointKind::Head, seq, "ab".repeat(32), seq);
        c.created_at = created_at;
        c
    }

    fn head(seq: i64) -> ChainHead {
        ChainHead {
            seq,
            hash: "cd".repeat(32),
        }
    }

    #[test]
    fn a_stale_checkpoint_warns_only_when_events_came_after_it() {
        let now = Utc::now();
        let every = Duration::from_secs(600);
        let old = [checkpoint(10, now - chrono::Duration::minutes(30))];
        let report = |head_seq, checkpoints: &[Checkpoint]| {
            checkpoint_freshness(Some(&head(head_seq)), checkpoints, every, now)
        };

        let idle = report(10, &old);
        assert_eq!(idle.events_since, 0);
        assert!(idle.stale.is_none(), "nothing arrived: {idle:?}");

        let behind = report(15, &old);
        assert_eq!(behind.events_since, 5);
        let newest = behind.newest.as_ref().expect("newest");
        assert_eq!((newest.seq, newest.signed), (10, false));
        assert!((newest.age_seconds - 1800.0).abs() < 1.0, "{newest:?}");
        let warning = behind.stale.expect("stale").to_string();
        assert!(
            warning.contains("event 10") && warning.contains("30m 0s"),
            "{warning}"
        );

        let fresh = [checkpoint(10, now - chrono::Duration::minutes(19))];
        assert!(
            report(15, &fresh).stale.is_none(),
            "within twice the interval"
        );

        let none = report(3, &[]);
        assert_eq!(none.events_since, 3);
        assert_eq!(none.stale, Some(Stale::Uncovered { events: 3 }));
        assert!(none
            .stale
            .is_some_and(|w| w.to_string().contains("no checkpoint")));
        let empty = checkpoint_freshness(None, &[], every, now);
        assert!(empty.stale.is_none() && empty.head_seq.is_none());
    }

    #[test]
    fn the_newest_head_checkpoint_counts_not_a_prune_checkpoint() {
        let now = Utc::now();
        let every = Duration::from_secs(60);
        let head_checkpoint = checkpoint(10, now);
        let mut prune = checkpoint(40, now);
        prune.kind = CheckpointKind::Prune;
        let report = checkpoint_freshness(
            Some(&head(50)),
            &[prune, head_checkpoint, checkpoint(5, now)],
            every,
            now,
        );
        assert_eq!(report.newest.map(|c| c.seq), Some(10));
        assert_eq!(report.events_since, 40);
        assert!(report.stale.is_none(), "made just now");
    }

    fn slot(active: bool, lag_bytes: i64, wal_status: Option<&str>) -> SlotFacts<'_> {
        SlotFacts {
            name: "pgtrail",
            active,
            lag_bytes,
            replay_lag_seconds: None,
            wal_status,
        }
    }

    #[test]
    fn lost_or_unreserved_wal_warns_whatever_the_lag() {
        let limit = 10 * MIB;
        assert!(matches!(
            slot_warning(&slot(true, 0, Some("lost")), limit),
            Some(SlotWarning::Lost { .. })
        ));
        let unreserved = slot_warning(&slot(false, 1, Some("unreserved")), limit).expect("warns");
        assert!(unreserved.to_string().contains("max_slot_wal_keep_size"));
        assert_eq!(slot_warning(&slot(false, 1, Some("reserved")), limit), None);
    }

    #[test]
    fn a_slot_further_behind_than_the_limit_warns_and_says_whether_anyone_consumes() {
        let limit = 10 * MIB;
        let at_limit = slot(true, 10 * 1024 * 1024, Some("reserved"));
        assert_eq!(slot_warning(&at_limit, limit), None, "not more than");
        let behind = slot_warning(&slot(true, 15 * 1024 * 1024, None), limit).expect("warns");
        assert_eq!(
            behind.to_string(),
            "slot 'pgtrail' is 15.0 MB behind, more than lag_warn_mb (10.0 MB)"
        );
        let idle = slot_warning(&slot(false, 15 * 1024 * 1024, None), limit).expect("warns");
        assert!(idle
            .to_string()
            .ends_with("no consumer is connected (start `pgtrail run`)"));
    }

    #[test]
    fn lag_seconds_come_from_the_server_while_connected_else_from_the_store() {
        let now = Utc::now();
        let committed = now - chrono::Duration::milliseconds(2500);
        let mut connected = slot(true, 100, None);
        assert_eq!(
            slot_lag_seconds(&connected, Some(committed), now),
            (Some(0.0), Some(LagFrom::Server)),
            "caught up: the server forgot the lag"
        );
        connected.replay_lag_seconds = Some(1.5);
        assert_eq!(
            slot_lag_seconds(&connected, None, now),
            (Some(1.5), Some(LagFrom::Server))
        );

        let idle_behind = slot(false, 100, None);
        assert!(idle_behind.lag_from_store());
        assert_eq!(
            slot_lag_seconds(&idle_behind, Some(committed), now),
            (Some(2.5), Some(LagFrom::Store))
        );
        assert_eq!(
            slot_lag_seconds(&idle_behind, None, now),
            (None, None),
            "nothing captured yet: unknown"
        );

        let idle_caught_up = slot(false, 0, None);
        assert!(!idle_caught_up.lag_from_store());
        assert_eq!(
            slot_lag_seconds(&idle_caught_up, Some(committed), now),
            (Some(0.0), None)
        );
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(Duration::from_secs(59)), "59s");
        assert_eq!(duration_text(Duration::from_secs(95)), "1m 35s");
        assert_eq!(duration_text(Duration::from_secs(7260)), "2h 1m");
        assert_eq!(megabytes(3 * MIB / 2), "1.5 MB");
    }
}
