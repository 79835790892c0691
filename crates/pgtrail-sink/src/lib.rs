//! Sinks: readers of the sealed store that send its events on to the tools
//! teams already run (a file a collector tails, syslog, HTTP collectors,
//! NATS JetStream).
//!
//! A sink is a reader like any other (DESIGN.md): it follows the chain with
//! its own persisted cursor, so capture never waits for a sink, and a sink
//! that was down, slow or killed resumes where it stopped. Delivery is
//! at least once; the event id is the key a destination deduplicates by.
//!
//! - [`format`]: one event as one record in a SIEM format, shared by
//!   `pgtrail export --format` and the sinks.
//! - [`sink`]: the [`sink::Sink`] trait each destination implements, and
//!   what it delivers ([`sink::Item`]).
//! - [`syslog`]: RFC 5424 messages over UDP, TCP or TLS (octet counting).
//! - [`nats`]: NATS JetStream, the event id as `Nats-Msg-Id`.
//! - [`runner`]: one sink's delivery loop in `pgtrail run`; [`cursor`]: its
//!   persisted place; [`open`]: a sink and its runner from `[[sinks]]`.
//! - [`file`]: a rotating line file; [`http`]: Splunk HEC, `_bulk`, a
//!   signed webhook.

pub mod cursor;
pub mod file;
pub mod format;
pub mod http;
pub mod nats;
pub mod open;
pub mod runner;
pub mod sink;
pub mod syslog;
