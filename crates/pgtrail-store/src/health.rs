//! What a store itself says about the trail's completeness, for `pgtrail
//! status --check` and `pgtrail run`: the alarms recorded lately, and
//! whether the newest events are numbered without a gap.
//!
//! `verify` proves the whole chain; these are cheap looks at its end that
//! a monitor can run every minute.

use chrono::{DateTime, Utc};
use pgtrail_core::alarm::{self, Alarm};
use pgtrail_core::{Event, Filter, Kind};

use crate::{Result, Store};

/// The `alarm` events captured at or after `since`, newest first, at most `limit`.
pub async fn recent_alarms(
    store: &dyn Store,
    since: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<Event>> {
    store
        .query(&Filter {
            kind: Some(Kind::Alarm),
            since: Some(since),
            limit: Some(limit),
            ..Filter::default()
        })
        .await
}

/// A gap or disorder among the newest `window` events: each must follow
/// the one before it by exactly one, and the last be the chain's head.
/// (The oldest ones may have been pruned by retention: only what follows
/// the first event read is checked.)
pub async fn recent_gap(store: &dyn Store, window: usize) -> Result<Option<Alarm>> {
    let Some(head) = store.head().await? else {
        return Ok(None);
    };
    let after = head
        .seq
        .saturating_sub(i64::try_from(window).unwrap_or(i64::MAX))
        .max(0);
    let events = store.scan(after, window).await?;
    let seqs: Vec<i64> = events.iter().filter_map(|e| e.seq).collect();
    Ok(gap(&seqs, head.seq).map(|message| Alarm::new(alarm::SEQ_GAP, message)))
}

/// The first break in `seqs` (ascending, as scanned) before `head`.
fn gap(seqs: &[i64], head: i64) -> Option<String> {
    if let Some(pair) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Some(format!(
            "events {} to {} are missing from the chain (event {} follows event {})",
            pair[0] + 1,
            pair[1] - 1,
            pair[1],
            pair[0]
        ));
    }
    match seqs.last() {
        Some(&last) if last != head => Some(format!(
            "the chain's head is event {head}, but its newest stored event is {last}"
        )),
        None if head > 0 => Some(format!(
            "the chain's head is event {head}, but no event is stored"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::gap;

    #[test]
    fn consecutive_events_ending_at_the_head_have_no_gap() {
        assert_eq!(gap(&[5, 6, 7], 7), None);
        assert_eq!(gap(&[], 0), None);
    }

    #[test]
    fn a_missing_event_or_a_head_past_the_last_is_named() {
        let missing = gap(&[5, 6, 9], 9).expect("gap");
        assert!(missing.contains("events 7 to 8"), "{missing}");
        let truncated = gap(&[5, 6], 9).expect("gap");
        assert!(truncated.contains("head is event 9"), "{truncated}");
        assert!(gap(&[], 3).is_some());
    }
}
