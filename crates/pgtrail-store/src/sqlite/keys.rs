//! Integer lookup keys for the row and user indexes.
//!
//! Every event goes into each index of `events`, and the row and user
//! indexes are the ones that take random inserts: a batch of events about
//! many rows dirties nearly every page of the row index, and each of those
//! pages is written to the WAL on commit. Indexing a 64-bit integer instead
//! of the text (`"table_7"`, `{"id":"12345"}`, `"user@example.com"`)
//! halves those indexes and makes each comparison an integer comparison:
//! measured, a quarter fewer bytes written per event and faster appends.
//!
//! A key is a hash (FNV-1a, fixed here forever: keys are stored), so two
//! values can share one. Queries therefore look up the key and still compare
//! the text columns, which makes a collision cost one row read, never a
//! wrong answer. A row key is the table's hash in the high 32 bits and the
//! primary key's in the low 32 (a table's events are found through its own
//! index since schema 14, not this key range).

use std::net::IpAddr;

use pgtrail_core::filter::AddrFilter;
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

use crate::{Result, StoreError};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// 32 bits of the hash of `text`, both halves folded in.
fn fnv1a_32(text: &str) -> u64 {
    let hash = fnv1a(text);
    (hash ^ (hash >> 32)) & 0xffff_ffff
}

/// The key of one row of a table (`pk` is its canonical text, empty for
/// an event of the table that has no row).
pub fn row_key(table: &str, pk: &str) -> i64 {
    // Reinterpreting the bits keeps one table's keys contiguous in i64 order.
    ((fnv1a_32(table) << 32) | fnv1a_32(pk)) as i64
}

/// The key of an application or database user name.
pub fn user_key(user: &str) -> i64 {
    fnv1a(user) as i64
}

/// An event's `client_addr` as the `client_addr` column holds it (schema
/// 15): the family (4 or 6) in one byte, then the address's bytes. A
/// family's addresses sort together and in numeric order, so a CIDR block
/// is one range of keys ([`block_range`]); an IPv4-mapped IPv6 address
/// stays IPv6, as `AddrFilter::contains` keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrKey {
    bytes: [u8; 17],
    len: u8,
}

impl AddrKey {
    fn of(addr: IpAddr) -> AddrKey {
        let mut bytes = [0u8; 17];
        let len = match addr {
            IpAddr::V4(v4) => {
                bytes[0] = 4;
                bytes[1..5].copy_from_slice(&v4.octets());
                5
            }
            IpAddr::V6(v6) => {
                bytes[0] = 6;
                bytes[1..].copy_from_slice(&v6.octets());
                17
            }
        };
        AddrKey { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The address this is the key of.
    pub fn addr(&self) -> IpAddr {
        match self.as_bytes() {
            [4, a, b, c, d] => IpAddr::from([*a, *b, *c, *d]),
            _ => {
                let mut v6 = [0u8; 16];
                v6.copy_from_slice(&self.bytes[1..]);
                IpAddr::from(v6)
            }
        }
    }

    /// The key as the column holds it, if it is one.
    pub fn from_bytes(bytes: &[u8]) -> Option<AddrKey> {
        match bytes {
            [4, v4 @ ..] => <[u8; 4]>::try_from(v4).ok().map(|b| AddrKey::of(b.into())),
            [6, v6 @ ..] => <[u8; 16]>::try_from(v6).ok().map(|b| AddrKey::of(b.into())),
            _ => None,
        }
    }
}

/// The key of an event's `client_addr`, read as `AddrFilter::contains`
/// reads it (the address before any `/`): `None` for text that is not an
/// address (a zone id, a host name), which is in no block.
pub fn addr_key(client_addr: &str) -> Option<AddrKey> {
    pgtrail_core::filter::host_addr(client_addr).map(AddrKey::of)
}

/// The first and last keys of `block`'s addresses.
pub fn block_range(block: &AddrFilter) -> (AddrKey, AddrKey) {
    let last = match block.addr {
        IpAddr::V4(v4) => {
            let host_bits = u32::MAX.checked_shr(u32::from(block.prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) | host_bits).into())
        }
        IpAddr::V6(v6) => {
            let host_bits = u128::MAX.checked_shr(u32::from(block.prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) | host_bits).into())
        }
    };
    (AddrKey::of(block.addr), AddrKey::of(last))
}

/// Makes `pgtrail_row_key(table, pk)`, `pgtrail_user_key(user)`,
/// `pgtrail_addr_key(client_addr)` and `pgtrail_object_tables(objects)` callable
/// in SQL on `conn` (NULL in, NULL out): the migration that introduced the
/// keys computes them for the events already stored. Nothing in the file
/// refers to these functions, so `sqlite3` still reads it without them.
pub fn register(conn: &Connection, location: &str) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("pgtrail_row_key", 2, flags, |ctx| {
        let table = ctx.get::<Option<String>>(0)?;
        let pk = ctx.get::<Option<String>>(1)?;
        Ok(table.zip(pk).map(|(table, pk)| row_key(&table, &pk)))
    })
    .and_then(|()| {
        conn.create_scalar_function("pgtrail_user_key", 1, flags, |ctx| {
            Ok(ctx.get::<Option<String>>(0)?.map(|user| user_key(&user)))
        })
    })
    .and_then(|()| {
        conn.create_scalar_function("pgtrail_addr_key", 1, flags, |ctx| {
            Ok(ctx
                .get::<Option<String>>(0)?
                .and_then(|addr| addr_key(&addr))
                .map(|key| key.as_bytes().to_vec()))
        })
    })
    .and_then(|()| {
        // A statement's `objects` (a JSON array) as `[schema, table]` pairs
        // (a JSON array): migration 8 indexes the statements already stored.
        conn.create_scalar_function("pgtrail_object_tables", 1, flags, |ctx| {
            let Some(objects) = ctx.get::<Option<String>>(0)? else {
                return Ok(None);
            };
            let objects: Vec<String> = serde_json::from_str(&objects)
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
            let pairs: Vec<(String, String)> = pgtrail_core::filter::object_tables(&objects)
                .into_iter()
                .map(|t| (t.schema.unwrap_or_default(), t.table))
                .collect();
            serde_json::to_string(&pairs)
                .map(Some)
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))
        })
    })
    .map_err(|e| StoreError::backend(location, "registering the key functions", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed() {
        // Stored keys must never change meaning: pinned values.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(user_key("a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
        assert_eq!(
            row_key("a", "b") as u64,
            ((0xaf63_dc4c ^ 0x8601_ec8c) << 32) | (0xaf63_df4c ^ 0x8601_f1a5)
        );
    }

    #[test]
    fn sql_functions_compute_the_same_keys() {
        let conn = Connection::open_in_memory().expect("memory db");
        register(&conn, ":memory:").expect("register");
        let (row, user, none): (i64, i64, Option<i64>) = conn
            .query_row(
                "select pgtrail_row_key('t', '{\"id\":\"1\"}'), pgtrail_user_key('bob'), \
                 pgtrail_row_key('t', null)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("query");
        assert_eq!(row, row_key("t", r#"{"id":"1"}"#));
        assert_eq!(user, user_key("bob"));
        assert_eq!(none, None);
        let (addr, not_addr): (Vec<u8>, Option<Vec<u8>>) = conn
            .query_row(
                "select pgtrail_addr_key('10.0.0.1/32'), pgtrail_addr_key('fe80::1%eth0')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("query");
        assert_eq!(addr, [4, 10, 0, 0, 1]);
        assert_eq!(not_addr, None);
    }

    /// The column's range of a block holds exactly the addresses
    /// `AddrFilter::contains` puts in it: `ip:` keeps its meaning.
    #[test]
    fn a_block_is_the_range_of_the_addresses_it_contains() {
        let blocks = [
            "10.0.4.0/24",
            "10.0.4.7",
            "0.0.0.0/0",
            "10.0.0.0/8",
            "255.255.255.255/32",
            "::/0",
            "::1",
            "2001:db8::/32",
            "::ffff:0:0/96",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "10.1.2.3/31",
        ];
        let addrs = [
            "10.0.4.0",
            "10.0.4.7",
            "10.0.4.255",
            "10.0.5.0",
            "10.0.3.255",
            "10.0.4.7/32",
            "10.0.4.7/8",
            "9.255.255.255",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:10.0.4.7",
            "2001:db8::5",
            "2001:DB8:0:0::5/64",
            "2001:db9::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1%eth0",
            "localhost",
            "",
            " 10.0.4.7",
            "10.0.4.7 ",
            "10.1.2.2",
            "10.1.2.3",
        ];
        for block in blocks {
            let filter = AddrFilter::parse(block).expect(block);
            let (first, last) = block_range(&filter);
            for addr in addrs {
                let in_range = addr_key(addr).is_some_and(|k| first <= k && k <= last);
                assert_eq!(in_range, filter.contains(addr), "{addr} in {block}");
                // SQLite compares blobs as memcmp, then length: as here.
                if let Some(k) = addr_key(addr) {
                    assert_eq!(
                        first.as_bytes() <= k.as_bytes() && k.as_bytes() <= last.as_bytes(),
                        in_range,
                        "{addr} in {block} as bytes"
                    );
                }
            }
        }
    }
}
