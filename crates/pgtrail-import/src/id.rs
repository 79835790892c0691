//! Event ids derived from the record, so importing the same history twice
//! gives the same ids and the store skips the second copy.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A UUIDv7 whose time is the record's and whose other bits are a hash of
/// `key`: what identifies the record in its origin.
pub fn event_id(key: &[&[u8]], at: DateTime<Utc>) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(b"pgtrail import\0");
    for part in key {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut tail = [0u8; 10];
    tail.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &tail).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_record_gets_the_same_id_and_parts_do_not_run_together() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        assert_eq!(event_id(&[b"a", b"bc"], at), event_id(&[b"a", b"bc"], at));
        assert_ne!(event_id(&[b"a", b"bc"], at), event_id(&[b"ab", b"c"], at));
        assert_eq!(event_id(&[b"x"], at).get_version_num(), 7);
    }
}
