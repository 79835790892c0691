//! What a destination implements, and what it is handed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::Event;
use pgtrail_store::checkpoint::Checkpoint;
use pgtrail_store::RawEvent;

use crate::format::raw::{decode, Members};
use crate::format::FormatError;

/// One thing a sink delivers, in chain order: an event, or a signed
/// checkpoint once every event it covers was delivered (so a witness can
/// live in the SIEM).
/// The event is decoded (`Item`), or as stored (`Item<RawEvent>`, for
/// sinks that [`Sink::reads_raw`]).
#[derive(Debug, Clone)]
// Nearly every item is an event: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Item<E = Event> {
    /// A sealed event (with its `seq` and `hash`).
    Event(E),
    /// A checkpoint the store holds, covering events up to its `seq`.
    Checkpoint(Checkpoint),
}

/// A sealed event, decoded or as stored: what the runner needs of it.
pub trait Sealed: Send + Sync + 'static {
    /// Its `seq`.
    fn seq(&self) -> Option<i64>;
    /// Its `hash`, hex.
    fn hash(&self) -> Option<String>;
    /// When it was captured (for the lag).
    fn captured_at(&self) -> Option<DateTime<Utc>>;
}

impl Sealed for Event {
    fn seq(&self) -> Option<i64> {
        self.seq
    }
    fn hash(&self) -> Option<String> {
        self.hash.clone()
    }
    fn captured_at(&self) -> Option<DateTime<Utc>> {
        Some(self.captured_at)
    }
}

impl Sealed for RawEvent {
    fn seq(&self) -> Option<i64> {
        Some(self.seq)
    }
    fn hash(&self) -> Option<String> {
        Some(self.hash.clone())
    }
    fn captured_at(&self) -> Option<DateTime<Utc>> {
        Members::of(&self.body).ok()?.captured_at()
    }
}

/// Why a delivery failed. Nothing of a failed batch counts as delivered:
/// the runner backs off and hands the same items again.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination could not be reached or did not answer in time.
    #[error("cannot reach {destination}: {reason}")]
    Unavailable {
        /// Where the sink sends to (no secrets).
        destination: String,
        /// What failed.
        reason: String,
    },
    /// The destination answered and refused the batch.
    #[error("{destination} refused the batch: {reason}")]
    Refused {
        /// Where the sink sends to (no secrets).
        destination: String,
        /// What it answered.
        reason: String,
    },
    /// An item could not be written in the sink's format.
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// A destination. Implementations own their connection and their format.
#[async_trait]
pub trait Sink: Send {
    /// Where it sends to, for logs and `status` (never a secret).
    fn destination(&self) -> String;

    /// Delivers `items` (handed in chain order; a sink with requests in
    /// flight at once may have them arrive otherwise, never a checkpoint
    /// ahead of its events); `Ok` only once the destination holds all
    /// of them as durably as it can say (a file fsync'd, an HTTP 2xx, a
    /// JetStream acknowledgement, a TCP stream written and flushed). On
    /// `Err` the same items come again after a back-off.
    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError>;

    /// True when the sink takes events as stored ([`Sink::deliver_raw`]):
    /// it writes the stored JSON as it is, so decoding each event would be
    /// wasted.
    fn reads_raw(&self) -> bool {
        false
    }

    /// [`Sink::deliver`] for events as stored, under the same contract. The
    /// default decodes them and calls `deliver`.
    async fn deliver_raw(&mut self, items: &[Item<RawEvent>]) -> Result<(), SinkError> {
        let mut decoded = Vec::with_capacity(items.len());
        for item in items {
            decoded.push(match item {
                Item::Event(raw) => {
                    Item::Event(decode(raw).map_err(|reason| FormatError::Stored {
                        seq: raw.seq,
                        reason,
                    })?)
                }
                Item::Checkpoint(checkpoint) => Item::Checkpoint(checkpoint.clone()),
            });
        }
        self.deliver(&decoded).await
    }
}
