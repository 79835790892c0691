//! Trigger capture against real Postgres clusters (pgtrail-testkit): each
//! test creates its own database in a shared cluster.

mod capture;
mod ddl;
mod draining;
mod identity;
mod install;
mod no_way_in;
mod protection;
mod secrets;
mod shapes;
mod support;
mod values;
