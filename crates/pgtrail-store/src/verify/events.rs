//! Checks of each stored event: it is stored exactly as it was hashed (the
//! bytes readers see are the canonical encoding of the event), its hash
//! recomputes, it links to the one before, no position is skipped or taken
//! twice, and every stored copy of its fields readers filter on agrees with
//! it.

use pgtrail_core::canonical::CanonicalBody;
use pgtrail_core::Event;

use super::{Problem, ProblemKind};
use crate::StoredEvent;

/// The chain problem of `stored`, if any; `expected_seq` and `prev_hash`
/// say where the chain stands before it.
pub(super) fn check_event(
    stored: &StoredEvent,
    expected_seq: i64,
    prev_hash: &str,
    recent: &std::collections::VecDeque<(i64, String)>,
) -> Option<Problem> {
    let seq = stored.seq;
    let problem = |kind, seq, detail| Some(Problem { kind, seq, detail });
    if seq > expected_seq {
        let detail = if expected_seq == seq - 1 {
            format!("event {expected_seq} is missing: it was removed")
        } else {
            format!(
                "events {expected_seq} to {} are missing: they were removed",
                seq - 1
            )
        };
        return problem(ProblemKind::Removed, expected_seq, detail);
    }
    if seq < expected_seq {
        return problem(
            ProblemKind::Inserted,
            seq,
            format!(
                "a second event {seq} is stored after event {}: a row was added at a position already taken",
                expected_seq - 1
            ),
        );
    }
    let event = match &stored.event {
        Ok(event) => event,
        Err(reason) => {
            return problem(
                ProblemKind::Modified,
                seq,
                format!("event {seq} was modified: {reason}"),
            )
        }
    };
    let body = CanonicalBody::of(event);
    if let Some(stored_body) = &stored.body {
        if stored_body.as_bytes() != body.as_str().as_bytes() {
            return problem(
                ProblemKind::Modified,
                seq,
                format!(
                    "event {seq} (id {}) was modified: its stored body is not the canonical \
                     encoding of the event it parses to ({}), so SQL readers see other \
                     values than were hashed",
                    event.id,
                    first_difference(stored_body, body.as_str())
                ),
            );
        }
    }
    let stored_hash = event.hash.as_deref().unwrap_or_default();
    let stored_prev = event.prev_hash.as_deref().unwrap_or_default();
    let hash = pgtrail_core::hex::encode_32(&body.sealed_hash(seq, stored_prev));
    if hash.as_slice() != stored_hash.as_bytes() {
        return problem(
            ProblemKind::Modified,
            seq,
            format!(
                "event {seq} (id {}) was modified: its content no longer matches its hash",
                event.id
            ),
        );
    }
    if stored_prev != prev_hash {
        if let Some((other, _)) = recent.iter().find(|(_, h)| h == stored_prev) {
            return problem(
                ProblemKind::Reordered,
                seq,
                format!(
                    "event {seq} (id {}) links to event {other}, not to event {}: events were reordered",
                    event.id,
                    seq - 1
                ),
            );
        }
        return problem(
            ProblemKind::Inserted,
            seq,
            format!(
                "event {seq} (id {}) does not link to event {}: an event was inserted here, or the one before was rewritten",
                event.id,
                seq - 1
            ),
        );
    }
    None
}

/// One problem per stored copy of `event`'s fields that disagrees with it.
pub(super) fn check_copies(stored: &StoredEvent) -> impl Iterator<Item = Problem> + '_ {
    let id = stored.event.as_ref().map(|e: &Event| e.id.to_string());
    stored.mismatches.iter().map(move |m| Problem {
        kind: ProblemKind::Index,
        seq: stored.seq,
        detail: format!(
            "event {}{}: {} holds {}, but the event says {}: readers that filter on it are misled",
            stored.seq,
            id.as_ref()
                .map(|id| format!(" (id {id})"))
                .unwrap_or_default(),
            m.column,
            m.found,
            m.expected
        ),
    })
}

/// Where two texts first differ, for a message: a short excerpt of each.
fn first_difference(found: &str, expected: &str) -> String {
    let at = found
        .bytes()
        .zip(expected.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(found.len().min(expected.len()));
    let excerpt = |text: &str| {
        let mut start = at.saturating_sub(20);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (at + 40).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        text[start..end].to_string()
    };
    format!(
        "at byte {at} it holds …{}… where the canonical form has …{}…",
        excerpt(found),
        excerpt(expected)
    )
}
