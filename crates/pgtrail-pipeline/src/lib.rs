//! Runs capture sources into a store.
//!
//! A source (trigger inbox, logical replication, later the statement proxy)
//! hands over batches of events with the position each batch ends at; the
//! pipeline appends them and tells the source which position it may
//! acknowledge (confirm an LSN, delete inbox rows, free a queue slot) only
//! once the store's `append` returned. Everything that waits for something
//! to come back — a store, a database — waits through [`retry`], so there is
//! one retry policy and one way of logging it.

pub mod retry;
pub mod spool;

pub use retry::{Backoff, Retryable};
