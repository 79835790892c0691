//! Hashes in hex, by table.
//!
//! `verify` turns every event's two stored hashes into hex, compares the
//! hash it recomputes in hex and reads each hash back into bytes for the
//! Merkle tree: the `hex` crate's iterator-based `encode` and `decode`
//! (a `char` pushed at a time, a `Vec` collected through an iterator) cost
//! about 5% of a verify. These write through a table into a buffer sized
//! once, and take the same input (`decode` accepts upper case too).

/// The two lowercase hex digits of every byte, in byte order.
const DIGITS: [[u8; 2]; 256] = {
    let hex = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = [hex[byte >> 4], hex[byte & 0xf]];
        byte += 1;
    }
    table
};

/// The value of every hex digit (either case); 0xff for anything else.
const VALUES: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Writes the lowercase hex of `bytes` into `out`, which holds exactly
/// twice as many bytes.
fn encode_into(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&DIGITS[usize::from(*byte)]);
    }
}

/// `bytes` in lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    encode_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// A SHA-256 digest in lowercase hex, without allocating.
pub fn encode_32(hash: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    encode_into(hash, &mut out);
    out
}

/// The 32 bytes that `text` spells in hex (either case); `None` when it is
/// not exactly 64 hex digits.
pub fn decode_32(text: &str) -> Option<[u8; 32]> {
    let text: &[u8; 64] = text.as_bytes().try_into().ok()?;
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let (high, low) = (VALUES[usize::from(pair[0])], VALUES[usize::from(pair[1])]);
        if (high | low) == 0xff {
            return None;
        }
        *byte = high << 4 | low;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_hex_crate_does() {
        let every_byte: Vec<u8> = (0..=255).collect();
        assert_eq!(encode(&every_byte), hex::encode(&every_byte));
        assert_eq!(encode(&[]), "");
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        assert_eq!(encode_32(&hash).as_slice(), hex::encode(hash).as_bytes());
    }

    #[test]
    fn decodes_what_the_hex_crate_decodes_and_refuses_the_rest() {
        let hash: [u8; 32] = std::array::from_fn(|i| (i * 91 + 3) as u8);
        let lower = hex::encode(hash);
        assert_eq!(decode_32(&lower), Some(hash));
        assert_eq!(decode_32(&lower.to_uppercase()), Some(hash));
        for bad in [
            String::new(),
            lower[..62].to_string(),
            format!("{lower}00"),
            format!("g{}", &lower[1..]),
            format!("{} ", &lower[..63]),
            format!("{}é", &lower[..62]),
        ] {
            assert_eq!(decode_32(&bad), None, "{bad}");
            let crate_says: Option<[u8; 32]> =
                hex::decode(&bad).ok().and_then(|v| v.try_into().ok());
            assert_eq!(crate_says, None, "{bad}");
        }
    }
}
