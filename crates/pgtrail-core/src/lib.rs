//! The model every part of pgtrail shares.
//!
//! Capture paths (triggers, logical replication, the proxy) all produce the
//! same [`Event`]; stores keep it, readers read it. This crate does no I/O:
//! it defines the event, its canonical JSON form and hash (the basis of the
//! tamper-evident chain), the filters readers use, and the config types.

pub mod alarm;
pub mod canonical;
pub mod config;
pub mod diff;
pub mod event;
pub mod filter;
pub mod handover;
pub mod hex;
pub mod json;
pub mod quarantine;
pub mod random;
pub mod search;
pub mod sql_comment;
pub mod time;

pub use canonical::{canonical_json, event_hash, Hash, GENESIS_HASH};
pub use event::{Event, Kind, Source};
pub use filter::{Filter, PkFilter, RowRef};
