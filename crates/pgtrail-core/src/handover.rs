//! What a capture source hands to the pipeline, and what it gets back.
//!
//! A source (logical replication, the trigger inbox, later the statement
//! proxy) groups its events into [`Batch`]es, each carrying the source
//! position it ends at: an LSN, an inbox watermark, a queue slot. The
//! pipeline appends them in order and publishes [`Acknowledged`]: the
//! newest position whose events the store made durable. A source releases
//! its own copy of a change (confirms the LSN, deletes inbox rows) only up
//! to that position, so a crash replays what was not stored.
//!
//! Plain data, no I/O: the channels that carry them are the caller's.

use chrono::{DateTime, Utc};

use crate::Event;

/// Events that end at `end`, in the order they must be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch<P> {
    /// The events, in order.
    pub events: Vec<Event>,
    /// The position the source may release once these are stored. A part
    /// of a larger unit (a transaction split over batches) carries the end
    /// of the last unit it completes, so the unit is released only with
    /// its last batch.
    pub end: P,
    /// Commit time of the newest unit the batch completes, for lag.
    pub last_commit: Option<DateTime<Utc>>,
}

/// What the store made durable, newest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Acknowledged<P> {
    /// End of the newest batch the store's `append` returned for.
    pub position: P,
    /// Commit time of the newest unit stored.
    pub last_commit: Option<DateTime<Utc>>,
    /// Events stored since the pipeline started.
    pub events: u64,
    /// Batches stored since the pipeline started.
    pub batches: u64,
}
