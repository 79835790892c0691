//! Checks of each stored event: its hash recomputes, it links to the one
//! before, and no position is skipped.

use pgtrail_core::canonical::event_hash;

use super::{Problem, ProblemKind};

pub(super) fn check_link(
    event: &pgtrail_core::Event,
    seq: i64,
    expected_seq: i64,
    prev_hash: &str,
    stored_prev: &str,
    stored_hash: &str,
    recent: &std::collections::VecDeque<(i64, String)>,
) -> Option<Problem> {
    if seq > expected_seq {
        let detail = if expected_seq == seq - 1 {
            format!("event {expected_seq} is missing: it was removed")
        } else {
            format!(
                "events {expected_seq} to {} are missing: they were removed",
                seq - 1
            )
        };
        return Some(Problem {
            kind: ProblemKind::Removed,
            seq: expected_seq,
            detail,
        });
    }
    if event_hash(event) != stored_hash {
        return Some(Problem {
            kind: ProblemKind::Modified,
            seq,
            detail: format!(
                "event {seq} (id {}) was modified: its content no longer matches its hash",
                event.id
            ),
        });
    }
    if stored_prev != prev_hash {
        if let Some((other, _)) = recent.iter().find(|(_, h)| h == stored_prev) {
            return Some(Problem {
                kind: ProblemKind::Reordered,
                seq,
                detail: format!("event {seq} (id {}) links to event {other}, not to event {}: events were reordered", event.id, seq - 1),
            });
        }
        return Some(Problem {
            kind: ProblemKind::Inserted,
            seq,
            detail: format!(
                "event {seq} (id {}) does not link to event {}: an event was inserted here, or the one before was rewritten",
                event.id,
                seq - 1
            ),
        });
    }
    None
}
