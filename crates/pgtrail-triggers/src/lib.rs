//! Trigger capture: pgtrail installed as plain SQL inside the audited
//! database, for any Postgres (managed clouds included) from 13 on.
//!
//! Design, from the write path outwards:
//!
//! - **Generated capture triggers, two modes** ([`track`]). Each tracked
//!   table gets one generated PL/pgSQL function with the table's columns,
//!   key, ignored and masked columns baked in. `row` mode (default) uses
//!   row-level triggers with one cached `INSERT … VALUES` each, the
//!   cheapest per statement; `statement` mode uses statement-level
//!   triggers with transition tables, one `INSERT … SELECT` however many
//!   rows a statement touched, for tables changed in bulk. An UPDATE keeps
//!   only the columns that changed, so the trail stays small. Row-mode
//!   functions carry no per-call `search_path` (measured at ~6% of the
//!   trigger's instructions); every name in them is schema-qualified instead.
//! - **A lean inbox.** Triggers write into `pgtrail.inbox`: no index, no
//!   key, nothing derived. Hashing, chaining, `changed`, event ids and
//!   commit times are all computed later, off the application's write path.
//! - **Row images as typed rows** (migration 4). Where a *shape* (a
//!   composite type pgtrail makes with the table's columns) reproduces the
//!   JSON exactly, row-mode triggers copy OLD/NEW into it and insert them
//!   into the shape's narrow `pgtrail.inbox_<n>`, leaving `row_to_json`
//!   (most of the trigger's cost before) to the drainer, which reads both
//!   through the view `pgtrail.pending`. A DDL event trigger makes a new
//!   shape when a table's columns change, so each row is sealed with the
//!   columns of its time.
//! - **Sealing after commit, in commit order** ([`seal`]). Only rows of
//!   finished transactions are moved, through the store's own append (so
//!   they are hashed and chained like every other event), and deleted from
//!   the inbox in the same transaction.
//! - **Versioned, re-runnable migrations** ([`install`]) create the inbox,
//!   the generator functions, DDL event triggers, roles and guards, in one
//!   transaction: a lost connection leaves nothing behind.

mod connection;
pub mod drain;
mod error;
pub mod health;
pub mod inbox;
pub mod install;
pub mod migrations;
pub mod track;

pub use connection::connect;
pub use drain::{drain_all, drain_once, DrainReport, Drainer};
pub use error::Error;
pub use install::{install, uninstall, InstallOptions, InstallReport};
pub use track::{
    status, track, track_schema, untrack, CaptureMode, MaskMode, Status, TableStatus, TrackOptions,
    TrackedTable,
};

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
