//! The `pgtrail` binary, run as a user runs it, against a temporary SQLite
//! file and a Postgres store on a throwaway cluster.
//!
//! - `support`: the harness (a store per test, running the binary).
//! - `queries`: log, history, as-of and blame on the sample trail, the same
//!   assertions on both backends.
//! - `reports`: `pgtrail report`, the dashboard's reports from the CLI.
//! - `transfer`: import and export, round trips, bad input.
//! - `formats`: `export --format` in each record format and `--follow`
//!   (events appended while it runs, each written once; Ctrl-C).
//! - `integrity`: verify, tampering, keys, checkpoints, retention.
//! - `memory`: verify's state file (incremental verify, a rollback named)
//!   and `pgtrail consistency` / `verify-consistency`.
//! - `failures`: every error path a user can hit: one clear line, exit 2.
//! - `setup`: init, the configuration layers, help text.
//! - `run`: `pgtrail run` sealing and streaming side by side, restarts,
//!   a part failing for good, a store outage; `pgtrail status` on slots.
//! - `running`: what the run and checkpoint tests share: a database on its own
//!   cluster with a directory (`Service`), a `pgtrail run` process (`Running`).
//! - `demo`: `pgtrail demo` end to end: the trail it prints, the commands it
//!   suggests run against the database it keeps, Ctrl-C.
//! - `alarms`: `status --check` and `run` on what leaves the trail
//!   incomplete (a capture trigger dropped, an event trigger disabled, the
//!   publication narrowed, the slot dropped).
//! - `connections`: passwords from `PGPASSWORD` and password files (scram
//!   and md5), TLS at each `sslmode`, no cleartext password without TLS.
//! - `events`: one event model on every path: the same rows captured by
//!   triggers and logical replication carry the same values, and every
//!   event either path stores fits `schema/event.schema.json`.
//! - `kill`: `pgtrail replicate` killed with SIGKILL during a write load and in
//!   the middle of a huge spilled transaction: the store holds exactly the
//!   changes the writer's ground-truth log says it committed.
//! - `link`: `pgtrail run` with the proxy and trigger capture of one
//!   database: statements linked to their transactions' row changes (`log
//!   --tx`, `history`), a claimed link refused, a write around the proxy
//!   raising the bypass alarm.
//! - `proxy`: `pgtrail proxy` recording through its spool into the store:
//!   kill -9 under load in both durability modes, the store stopped while
//!   clients run, a full spool failing closed (53400) and open (an alarm),
//!   each statement whose result reached a client stored exactly once; TLS
//!   toward clients from `--tls-cert`/`--tls-key`/`--require-tls`.
//! - `clients` (with `clients_rust`): the client matrix: psql, pgbench,
//!   psycopg 3, asyncpg, node-postgres, tokio-postgres and sqlx run their
//!   suites (`tests/clients/`) direct and through `pgtrail proxy`, must see
//!   the same results, and their marked statements must be in the trail.
//! - `tokens`: `pgtrail token` create/list/revoke, each recorded in the
//!   trail, a running `pgtrail serve` obeying a revocation at once, no
//!   plain HTTP off loopback, and a server killed with SIGKILL right after
//!   answering searches: every one recorded once after a restart.
//! - `doctor`: `pgtrail doctor` on clusters set up to trigger each finding
//!   (and a clean one), its JSON schema and exit codes, a `pg_monitor`-only
//!   run that sends nothing but reads, and hostile table and role names.
//! - `sinks`: `pgtrail run` delivering to a file and a signed webhook,
//!   killed with SIGKILL mid-delivery while events are appended: every
//!   event at each destination, in order; a failing collector's log
//!   without its token.
//! - `capture_status`: the dashboard's integrity page reading tracked
//!   tables, the inbox's backlog and the slot from the configured databases.
//! - `witnesses`: two `pgtrail witness` processes cosigning what the
//!   checkpointer submits, and refusing a fork and a rollback of the log;
//!   `verify --witness-key --min-cosignatures`.
//! - `checkpoints`: `pgtrail run` signing checkpoints (while events arrive,
//!   not when idle, at stop), what they catch, `pgtrail status` on their age.
//! - `metrics`: `/metrics` scraped from a real `pgtrail run` after trigger
//!   and proxy capture: counters moved by exactly what was captured, the
//!   text format, the token rule, no access event per scrape, no label
//!   from data and no secret in the exposition.
//! - `planted`: an application role shadows every built-in function
//!   pgtrail's sources call, and common operators, in `public` and puts
//!   `public` first on its database's path; install, track, both capture
//!   paths, drain, status, doctor, import and verify run none of them;
//!   an audit table's row security policy never runs inside an import.

mod alarms;
mod capture_status;
mod checkpoints;
mod clients;
mod clients_rust;
mod connections;
mod demo;
mod doctor;
mod events;
mod failures;
mod formats;
mod imports;
mod integrity;
mod kill;
mod link;
mod memory;
mod metrics;
mod planted;
mod proofs;
mod proxy;
mod quarantine;
mod queries;
mod reports;
mod run;
mod running;
mod setup;
mod sinks;
mod statements;
mod support;
mod tokens;
mod transfer;
mod witnesses;
