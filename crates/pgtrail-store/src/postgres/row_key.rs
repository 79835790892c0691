//! The row key of schema 5: one 64-bit integer per (table, primary key),
//! indexed in place of `(table_name, pk)`.
//!
//! Profiled (`bench/store`, `--drop-index`), the `(table_name, pk)` btree
//! was the dearest index of an append: a quarter of the server's CPU per
//! event, every insert comparing `jsonb` keys down a wide tree. The key is
//! the SQLite store's (`sqlite/keys.rs`, FNV-1a, fixed forever since keys
//! are stored): the table's hash in the high 32 bits and the canonical
//! key's in the low 32, so one table's rows form one key range and
//! `--table` without `--pk` is a range lookup on the same index. Two rows
//! may share a key: queries still compare `table_name` and `pk`, so a
//! collision costs a row read, never a wrong answer. The copy here, and not
//! an import of SQLite's, keeps the Postgres store buildable without the
//! SQLite feature.

use pgtrail_core::filter::canonical_pk;
use pgtrail_core::Event;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 32 bits of the FNV-1a hash of `text`, both halves folded in.
fn fnv1a_32(text: &str) -> u64 {
    let hash = text.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    });
    (hash ^ (hash >> 32)) & 0xffff_ffff
}

/// The key of one row of `table` (`pk` its canonical text, empty for an
/// event of the table without a row, such as a TRUNCATE).
pub(super) fn row_key(table: &str, pk: &str) -> i64 {
    // Reinterpreting the bits keeps one table's keys contiguous in i64 order.
    ((fnv1a_32(table) << 32) | fnv1a_32(pk)) as i64
}

/// The first and last row key of `table`, inclusive.
pub(super) fn table_key_range(table: &str) -> (i64, i64) {
    let high = fnv1a_32(table) << 32;
    (high as i64, (high | 0xffff_ffff) as i64)
}

/// The row key stored for `event`, NULL (`None`) when it names no table;
/// `pk` is its canonical key text when it has one.
pub(super) fn of(event: &Event, pk: Option<&str>) -> Option<i64> {
    event
        .table
        .as_deref()
        .map(|table| row_key(table, pk.unwrap_or("")))
}

/// [`of`], computing the canonical key text.
pub(super) fn of_event(event: &Event) -> Option<i64> {
    let pk = event.pk.as_ref().map(canonical_pk);
    of(event, pk.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are stored: these values may never change (they are the SQLite
    /// store's too).
    #[test]
    fn keys_are_fixed() {
        assert_eq!(
            row_key("accounts", r#"{"id":"1"}"#),
            row_key("accounts", r#"{"id":"1"}"#)
        );
        assert_ne!(
            row_key("accounts", r#"{"id":"1"}"#),
            row_key("accounts", r#"{"id":"2"}"#)
        );
        let (low, high) = table_key_range("accounts");
        let key = row_key("accounts", r#"{"id":"1"}"#);
        assert!(low <= key && key <= high);
        assert_eq!(
            fnv1a_32(""),
            (FNV_OFFSET ^ (FNV_OFFSET >> 32)) & 0xffff_ffff
        );
        assert_eq!(row_key("t", ""), 0x2961_ebef_4fd0_bfc1_u64 as i64);
    }
}
