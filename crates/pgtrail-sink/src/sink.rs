//! What a destination implements, and what it is handed.

use async_trait::async_trait;
use pgtrail_core::Event;
use pgtrail_store::checkpoint::Checkpoint;

use crate::format::FormatError;

/// One thing a sink delivers, in chain order: an event, or a signed
/// checkpoint once every event it covers was delivered (so a witness can
/// live in the SIEM).
#[derive(Debug, Clone)]
// Nearly every item is an event: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    /// A sealed event (with its `seq` and `hash`).
    Event(Event),
    /// A checkpoint the store holds, covering events up to its `seq`.
    Checkpoint(Checkpoint),
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
}
