//! Throwaway PostgreSQL clusters for tests (and for `pgtrail demo`).
//!
//! [`Cluster::start`] runs `initdb` in a temporary directory, starts
//! `postgres` on a free loopback port with `wal_level=logical`, and
//! [`Drop`] stops it and removes the directory, also when a test panics.
//! When running as root (CI does), initdb and postgres run as the
//! `postgres` OS user, because Postgres refuses to run as root.
//!
//! Binaries are found in `PGTRAIL_TEST_PGBIN`, then `PATH`, then
//! `pg_config --bindir`, then the newest `/usr/lib/postgresql/*/bin`.
//! initdb runs once per machine and version: later clusters copy that
//! template directory, which takes milliseconds instead of a second.
//!
//! A process killed before its clusters dropped (SIGKILL, abort, a stack
//! overflow) leaves them running: the next process to start a cluster stops
//! and removes them ([`reap_orphans`]).

mod binaries;
mod cluster;
pub mod fuzz;
pub mod nats;
pub mod proxy_events;
mod reaper;
pub mod rsyslog;
mod tls;

pub use binaries::{find_bindir, PgBinaries};
pub use cluster::{Cluster, ClusterOptions};
pub use reaper::reap_orphans;
pub use tls::{ServerTls, TestCa};

/// Why a cluster could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// No PostgreSQL server binaries were found.
    #[error("PostgreSQL server binaries (initdb, postgres, pg_ctl) not found in PGTRAIL_TEST_PGBIN, PATH, `pg_config --bindir` or /usr/lib/postgresql/*/bin; install them, e.g. `apt-get install postgresql` (Debian/Ubuntu), or set PGTRAIL_TEST_PGBIN")]
    NoBinaries,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its output or the OS error.
        detail: String,
    },
    /// Filesystem work failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to the cluster failed.
    #[error("cannot connect to the test cluster: {0}")]
    Connect(#[from] tokio_postgres::Error),
}
