//! Logical-replication capture: every committed row change, from the WAL, as
//! `pgtrail_core::Event`s handed to the pipeline (`pgtrail-pipeline`), which
//! stores them. This crate never reads or writes the store.
//!
//! The crate is a pure core with a thin async shell:
//! - [`pgoutput`] decodes the plugin's messages (pure, byte-fixture tested);
//! - [`value`] turns pgoutput's text values into JSON by column type;
//! - [`mask`] masks configured columns with trigger capture's keyed hash;
//! - [`assemble`] builds whole transactions of events, attaching the actor
//!   carried by pgtrail's logical messages (see [`context`]);
//! - [`connection`] is the replication connection on `pgtrail-wire`;
//! - [`baseline`] hands over the rows as of the slot's start as `snapshot` events;
//! - [`setup`] prepares, checks and undoes a database's capture over
//!   [`catalog`] (server facts, tables, types), [`publication`] and [`slot`]
//!   (which also reports a slot's state and lag for operators); [`triggers`]
//!   holds the SQL of the context and DDL triggers;
//! - [`consumer`] runs one session: stream → assemble → hand over → confirm
//!   what the pipeline acknowledged (reconnecting is the pipeline's).
//!
//! The one durability rule: the flush position confirmed to Postgres never
//! passes a transaction whose events the pipeline has not acknowledged as
//! durably appended.
//! Event ids derive from (stream, commit LSN, order in the transaction), so a
//! replay after a crash produces the same ids and the store skips them.

pub mod actor;
pub mod assemble;
pub mod baseline;
pub mod catalog;
pub mod connection;
pub mod consumer;
mod error;
pub mod health;
pub mod mask;
pub mod pgoutput;
pub mod publication;
pub mod setup;
pub mod slot;
pub mod triggers;
pub mod value;

pub use error::{CdcError, RetryPolicy};
