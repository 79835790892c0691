//! Integration tests of logical-replication capture against real clusters.
//! Each test has its own database, slot and publication.

mod capture;
mod common;
mod context;
mod errors;
mod kill;
mod oracle;
mod restart;
mod secrets;
mod spill;
mod store_outage;
