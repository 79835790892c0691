//! pgtrail-store's integration tests, against real SQLite files and real
//! throwaway Postgres clusters.
//!
//! - `conformance`: one suite of behaviours every backend must show, run
//!   against both (the same test bodies).
//! - `attacks`: someone with the store (and no signing key) removes,
//!   rewrites or replays what was signed; run against both backends.
//! - `memory`: consistency between checkpoints, and the verifier's memory
//!   of the last sound checkpoint (rollback, fork, incremental verify).
//! - `sqlite`, `postgres`: what only one backend has (files, partitions,
//!   migrations, tampering with the raw storage).
//! - `postgres_keyed`: the Postgres store's keyed searches (schema 12)
//!   answer as SQLite's do; hostile keys and the reader role.
//! - `postgres_window`: the Postgres store's time windows (schema 13,
//!   `seq_hours`): out-of-order capture, the migration, prune, attacks.
//! - `reports`: the compliance reports, shaped data on both backends.
//! - `tamper`: one suite of attacks on the stored data, run against both;
//!   `verify` must name each.
//! - `tree`: the Merkle tree's kept nodes, proofs made from them, and
//!   attacks on them; run against both.

mod attacks;
mod conformance;
mod memory;
mod postgres;
mod postgres_keyed;
mod postgres_window;
mod reads;
mod reports;
mod revert;
mod sqlite;
mod tamper;
mod tree;
