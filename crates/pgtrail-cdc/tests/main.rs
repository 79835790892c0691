//! Integration tests of logical-replication capture against real clusters.
//! Each test has its own database, slot and publication.

mod capture;
mod common;
mod connect;
mod context;
mod ddl;
mod errors;
mod forgery;
mod health;
mod oracle;
mod restart;
mod secrets;
mod spill;
mod store_outage;
mod values;
