//! pgtrail-store's integration tests, against real SQLite files and real
//! throwaway Postgres clusters.
//!
//! - `conformance`: one suite of behaviours every backend must show, run
//!   against both (the same test bodies).
//! - `sqlite`, `postgres`: what only one backend has (files, partitions,
//!   migrations, tampering with the raw storage).
//! - `tamper`: one suite of attacks on the stored data, run against both;
//!   `verify` must name each.

mod conformance;
mod postgres;
mod sqlite;
mod tamper;
