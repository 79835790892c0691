//! Runs capture sources into a store.
//!
//! A source (trigger inbox, logical replication, later the statement proxy)
//! hands over batches of events with the position each batch ends at
//! (`pgtrail_core::handover`); the [`writer`] stage appends them and tells
//! the source which position it may acknowledge (confirm an LSN, delete
//! inbox rows, free a queue slot) only once the store's `append` returned.
//! Everything that waits for something to come back — a store, a database
//! — waits through [`retry`], so there is one retry policy and one way of
//! logging it.
//!
//! - [`writer`]: the bounded queue, append with retry, acknowledgement;
//! - [`toast`]: filling unchanged TOAST values from a bounded row cache;
//! - [`cdc`]: logical-replication sessions with reconnects, and the baseline;
//! - [`checkpointer`]: signing the head of each store `pgtrail run` writes to;
//! - [`proxy`]: the statement proxy's events through the spool into the store;
//! - [`store`]: opening a store, waiting while a Postgres store is down;
//! - [`supervise`]: the parts of `pgtrail run`, one stop signal, the first
//!   failure for good.

pub mod bypass;
pub mod cdc;
pub mod checkpointer;
mod error;
pub mod proxy;
pub mod retry;
pub mod spool;
pub mod store;
pub mod supervise;
pub mod toast;
pub mod witnesses;
pub mod writer;

pub use error::PipelineError;
pub use retry::{Backoff, Retryable};
