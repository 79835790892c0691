//! The segment file format: a magic line, then records
//! `[len: u32 LE][!len: u32 LE][check: 8 bytes][payload: len bytes]`, where
//! `check` is the first 8 bytes of SHA-256 over the length and the payload.
//! The length's complement tells a damaged length (an error) from a record
//! a crash cut short (a torn tail); the check catches accidental damage (a
//! bad sector, a flipped bit), not a deliberate edit: whoever can write the
//! file can recompute it.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::SpoolError;

/// The first bytes of every segment.
pub(super) const MAGIC: &[u8; 8] = b"PGTSPL1\n";
/// Where the first record starts.
pub(super) const HEADER: u64 = MAGIC.len() as u64;
/// Length, its complement and the check in front of each payload.
pub(super) const RECORD_HEADER: u64 = 16;
/// File name suffix of segments.
const SUFFIX: &str = ".seg";

/// The file name of segment `id` (zero-padded, so names sort by id).
pub(super) fn file_name(id: u64) -> String {
    format!("{id:020}{SUFFIX}")
}

/// The id of a segment file name; `None` for other files.
pub(super) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn check(len: [u8; 4], payload: &[u8]) -> [u8; 8] {
    let mut hasher = Sha256::new();
    hasher.update(len);
    hasher.update(payload);
    let digest = hasher.finalize();
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// The record holding `payload`; `None` when it is too long for the
/// 32-bit length.
pub(super) fn record(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?.to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + RECORD_HEADER as usize);
    out.extend_from_slice(&len);
    out.extend_from_slice(&(!u32::from_le_bytes(len)).to_le_bytes());
    out.extend_from_slice(&check(len, payload));
    out.extend_from_slice(payload);
    Some(out)
}

/// The payload length a whole record header announces; `Err` when the
/// length and its complement disagree (damage, not a short write).
pub(super) fn payload_len(header: &[u8]) -> Result<u64, &'static str> {
    let word = |at: usize| {
        let bytes: [u8; 4] = header[at..at + 4].try_into().expect("4 bytes");
        u32::from_le_bytes(bytes)
    };
    if header.len() < RECORD_HEADER as usize {
        return Err("record header cut short");
    }
    let len = word(0);
    if word(4) != !len {
        return Err("record length damaged");
    }
    Ok(u64::from(len))
}

/// Checks one whole record (`bytes` = header and payload); its payload.
pub(super) fn open_record<'a>(
    bytes: &'a [u8],
    path: &Path,
    offset: u64,
) -> Result<&'a [u8], SpoolError> {
    let corrupt = |reason: &str| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    let (header, payload) = bytes
        .split_at_checked(RECORD_HEADER as usize)
        .ok_or_else(|| corrupt("record shorter than its header"))?;
    let len: [u8; 4] = header[..4].try_into().expect("4 bytes");
    if payload_len(header).map_err(corrupt)? != payload.len() as u64 {
        return Err(corrupt("record length does not match"));
    }
    if check(len, payload) != header[8..16] {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(payload)
}

/// What reading a segment found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Scanned {
    /// Whole records from the start offset on.
    pub records: u64,
    /// Their bytes, headers included.
    pub bytes: u64,
    /// Where the last whole record ends.
    pub end: u64,
    /// Bytes after `end` that are an unfinished write (only ever in the
    /// newest segment): to be cut off.
    pub torn: u64,
}

/// Reads the records of a segment from `start` on. In the newest segment
/// (`newest`) an unfinished last record — shorter than its length says, or
/// zeros where a record should begin — is a write a crash interrupted, never
/// acknowledged; anything else that does not check is damage, reported with
/// the file and offset.
pub(super) fn scan(
    bytes: &[u8],
    start: u64,
    newest: bool,
    path: &Path,
) -> Result<Scanned, SpoolError> {
    let corrupt = |offset: u64, reason: &str| SpoolError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.to_string(),
    };
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        return Err(corrupt(0, "not a pgtrail spool segment (bad magic)"));
    }
    let size = bytes.len() as u64;
    if start < HEADER || start > size {
        return Err(corrupt(
            start,
            "the drained position is outside the segment",
        ));
    }
    let mut scanned = Scanned {
        end: start,
        ..Scanned::default()
    };
    let mut at = start;
    while at < size {
        let rest = &bytes[at as usize..];
        let torn = |scanned: Scanned| Scanned {
            torn: size - at,
            ..scanned
        };
        if newest && rest.iter().all(|&b| b == 0) {
            return Ok(torn(scanned));
        }
        if rest.len() < RECORD_HEADER as usize {
            return match newest {
                true => Ok(torn(scanned)),
                false => Err(corrupt(at, "record header cut short")),
            };
        }
        let len = payload_len(rest).map_err(|reason| corrupt(at, reason))?;
        let whole = RECORD_HEADER + len;
        if whole > size - at {
            return match newest {
                true => Ok(torn(scanned)),
                false => Err(corrupt(at, "record runs past the end of the segment")),
            };
        }
        open_record(&rest[..whole as usize], path, at)?;
        at += whole;
        scanned.records += 1;
        scanned.bytes += whole;
        scanned.end = at;
    }
    Ok(scanned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for p in payloads {
            out.extend(record(p).expect("fits"));
        }
        out
    }

    #[test]
    fn names_sort_by_id_and_other_files_are_not_segments() {
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_name("lock"), None);
        assert_eq!(parse_name("42.seg"), None);
    }

    #[test]
    fn whole_records_are_read_and_a_cut_tail_of_the_newest_is_torn() {
        let path = Path::new("s");
        let bytes = segment(&[b"one", b"two"]);
        let whole = scan(&bytes, HEADER, true, path).expect("scan");
        assert_eq!(
            (whole.records, whole.end, whole.torn),
            (2, bytes.len() as u64, 0)
        );
        for cut in 1..(RECORD_HEADER as usize + 3) {
            let short = &bytes[..bytes.len() - cut];
            let s = scan(short, HEADER, true, path).expect("torn");
            assert_eq!(s.records, 1, "cut {cut}");
            assert_eq!(s.end + s.torn, short.len() as u64);
            // The same bytes in an older segment are damage.
            assert!(matches!(
                scan(short, HEADER, false, path),
                Err(SpoolError::Corrupt { .. })
            ));
        }
        let mut zeros = bytes.clone();
        zeros.extend([0; 40]);
        assert_eq!(scan(&zeros, HEADER, true, path).expect("zeros").torn, 40);
    }

    #[test]
    fn a_flipped_byte_is_damage_at_its_record() {
        let path = Path::new("s");
        let bytes = segment(&[b"one", b"two", b"three"]);
        let second = HEADER + RECORD_HEADER + 3;
        // In the length, its complement, the check, the payload.
        for at in [second, second + 5, second + 9, second + RECORD_HEADER + 1] {
            let mut bad = bytes.clone();
            bad[at as usize] ^= 0x01;
            match scan(&bad, HEADER, true, path) {
                Err(SpoolError::Corrupt { offset, .. }) => assert_eq!(offset, second),
                other => panic!("flip at {at}: {other:?}"),
            }
        }
    }
}
