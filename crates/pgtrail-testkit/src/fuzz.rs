//! Seeded random inputs for the property tests of pgtrail's decoders (the
//! wire codec, pgoutput): a tiny generator and the mutations a valid message
//! goes through. Not a property-testing crate: a failure names its seed and
//! replays exactly, and nothing beyond the standard library is built.
//!
//! `PGTRAIL_FUZZ_SCALE` multiplies case counts and `PGTRAIL_FUZZ_SEED` varies
//! the seeds, for a longer campaign by hand; CI runs the small default.

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
pub struct Rng(u64);

/// `cases` scaled by `PGTRAIL_FUZZ_SCALE` (default 1), for a longer campaign
/// by hand; CI runs the small default.
pub fn cases(cases: usize) -> usize {
    let scale = std::env::var("PGTRAIL_FUZZ_SCALE").ok();
    cases * scale.and_then(|s| s.parse().ok()).unwrap_or(1)
}

/// A generator for `seed`, varied by `PGTRAIL_FUZZ_SEED` when set so a long
/// campaign can explore new cases; a failure prints the seed it ran with.
pub fn rng(seed: u64) -> Rng {
    let extra: u64 = std::env::var("PGTRAIL_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seed = seed ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    println!("seed {seed:#x}");
    Rng(seed.max(1))
}

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n.max(1) as u64).expect("below n fits usize")
    }
    /// Up to `max_len` random bytes.
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// One to four random changes: flip a bit, replace a byte, overwrite four or
/// eight bytes with an extreme length, count, LSN or time, cut the tail, insert junk.
pub fn mutate(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    for _ in 0..=rng.below(3) {
        if out.is_empty() {
            out.push(rng.next_u64() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(5) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = rng.next_u64() as u8,
            2 => {
                let extreme: [i64; 8] = [
                    -1,
                    0,
                    1,
                    0x7fff,
                    0x7fff_ffff,
                    -0x8000_0000,
                    i64::MAX,
                    i64::MIN,
                ];
                let value = extreme[rng.below(extreme.len())];
                // As a 4-byte length or count, or as an 8-byte LSN or time.
                let bytes = value.to_be_bytes();
                let value = if rng.below(2) == 0 {
                    &bytes[4..]
                } else {
                    &bytes[..]
                };
                for (i, b) in value.iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            3 => out.truncate(at),
            _ => {
                let junk = rng.bytes(8);
                out.splice(at..at, junk);
            }
        }
    }
    out
}
