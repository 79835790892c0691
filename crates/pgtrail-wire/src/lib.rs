//! PostgreSQL's frontend/backend protocol (version 3), as a sans-IO codec.
//!
//! Nothing here touches a socket or a runtime. Decoders take a `&mut BytesMut`
//! holding whatever bytes have arrived and return `Ok(None)` until a whole
//! message is there; encoders append one message to a `BytesMut`. The shells
//! that own sockets (the replication client in `pgtrail-cdc`, later the proxy)
//! feed bytes in and write bytes out, so every byte-level rule is tested here
//! with fixtures and no database.
//!
//! Design choices:
//! - Framing ([`frame`]) is separate from meaning ([`backend`], [`frontend`]):
//!   a proxy forwards frames unchanged and decodes only the ones it needs.
//! - Only what pgtrail needs is decoded into typed messages; any other message
//!   is kept as [`backend::BackendMessage::Other`] with its raw body, never lost.
//! - Authentication is a small state machine ([`auth::Authenticator`]) that
//!   answers server requests with bytes to send; SCRAM-SHA-256 comes from
//!   `postgres-protocol`.
//! - Logical replication payloads inside CopyData (`w`, `k`, `r`) live in
//!   [`replication`].

pub mod auth;
pub mod backend;
mod error;
pub mod frame;
pub mod frontend;
pub mod replication;

pub use error::WireError;

/// A WAL position (log sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses Postgres's `X/X` text form (two hexadecimal halves).
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.trim().split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::Lsn;

    #[test]
    fn lsn_text_round_trips() {
        for (text, value) in [
            ("0/0", 0u64),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            assert_eq!(Lsn::parse(text), Some(Lsn(value)));
            assert_eq!(Lsn(value).to_string(), text);
        }
        for bad in ["", "1", "x/1", "1/", "1/2/3"] {
            assert_eq!(Lsn::parse(bad), None, "{bad}");
        }
    }
}
