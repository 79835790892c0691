//! The proof file: one event, its inclusion proof and a signed checkpoint
//! that covers it, checkable offline with the store's public key alone.
//!
//! The layout is C2SP `tlog-proof@v1` (<https://c2sp.org/tlog-proof>), used
//! as a documented superset: its `extra` line, opaque in the spec, holds the
//! event's canonical JSON (`pgtrail_core::canonical::canonical_json`), so
//! the file is self-contained. Nothing in it is trusted as written: the
//! extra bytes hash to the event's hash, whose leaf the inclusion proof
//! leads from to the root the checkpoint's note signs.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the event's canonical JSON>
//! index <seq - 1>
//! <base64 hash>            one line per proof hash, nearest the leaf first
//!
//! <the checkpoint: a C2SP signed note, verbatim>
//! ```
//!
//! Parsing is strict: the file must be exactly what [`ProofFile::to_text`]
//! writes for what was read (no stray byte, no second spelling of a number
//! or a hash), so a proof has one form. No I/O here: the CLI reads and
//! writes the files (`pgtrail prove`, `pgtrail verify-proof`), and
//! `docs/proofs.md` describes the format for independent verifiers.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use pgtrail_core::canonical::{canonical_json, GENESIS_HASH};
use pgtrail_core::Event;
use sha2::{Digest, Sha256};

use crate::checkpoint::{CheckpointKind, NoteCheckpoint};
use crate::merkle::{self, Hash};
use crate::note::{key_id, SignedNote, TreeHead};

/// The key a proof is checked with (re-exported for the CLI).
pub use ed25519_dalek::VerifyingKey as PublicKey;

/// A public key from its 64 hex characters (what a `.pub` file holds).
pub fn public_key_from_hex(text: &str) -> Option<PublicKey> {
    let bytes = pgtrail_core::hex::decode_32(text.trim())?;
    PublicKey::from_bytes(&bytes).ok()
}

/// The first line of a proof file.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a proof file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFileError {
    /// It is not a well-formed proof file.
    #[error("not a valid proof file: {0}")]
    Malformed(String),
    /// It is well formed but does not prove what it says.
    #[error("the proof does not verify: {0}")]
    Invalid(String),
}

fn malformed(reason: impl Into<String>) -> ProofFileError {
    ProofFileError::Malformed(reason.into())
}

fn invalid(reason: impl Into<String>) -> ProofFileError {
    ProofFileError::Invalid(reason.into())
}

/// A proof file's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofFile {
    /// The event's canonical JSON: the bytes its hash is over.
    pub extra: Vec<u8>,
    /// The event's leaf in the tree: its `seq - 1`.
    pub index: u64,
    /// The inclusion proof, nearest the leaf first.
    pub hashes: Vec<Hash>,
    /// The checkpoint's signed note, verbatim.
    pub checkpoint: String,
}

/// What a verified proof shows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Proven {
    /// The event, as its canonical bytes say (masked values stay masked),
    /// with its hash.
    pub event: Event,
    /// Its hash (hex): SHA-256 of the canonical bytes.
    pub event_hash: String,
    /// Its entry in the log, from 1 (its `seq`).
    pub entry: u64,
    /// The log: the checkpoint's origin, `pgtrail/store/<store id>`.
    pub origin: String,
    /// The tree size the checkpoint signs.
    pub tree_size: u64,
    /// Its root (base64, as in the note).
    pub root: String,
    /// Head or prune.
    pub checkpoint_kind: CheckpointKind,
    /// When the checkpoint was made, as it says.
    #[serde(with = "pgtrail_core::time::micros")]
    pub checkpoint_time: DateTime<Utc>,
    /// The signing key's id in the note (hex, 4 bytes).
    pub key_id: String,
}

impl ProofFile {
    /// The proof file of a sealed `event`, with its inclusion proof
    /// `hashes` in the tree the signed note `checkpoint` covers.
    pub fn build(
        event: &Event,
        hashes: Vec<Hash>,
        checkpoint: &str,
    ) -> Result<Self, ProofFileError> {
        let seq = event
            .seq
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s >= 1)
            .ok_or_else(|| malformed("the event is not sealed (it has no seq)"))?;
        let file = ProofFile {
            extra: canonical_json(event),
            index: seq - 1,
            hashes,
            checkpoint: checkpoint.to_string(),
        };
        // Only what parses back the same is written.
        ProofFile::parse(&file.to_text())?;
        Ok(file)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{HEADER}\nextra {}\nindex {}\n",
            BASE64.encode(&self.extra),
            self.index
        );
        for hash in &self.hashes {
            out.push_str(&BASE64.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a proof file. Strict: any line not in the format, or a
    /// second spelling of a value, is an error.
    pub fn parse(text: &str) -> Result<Self, ProofFileError> {
        let rest = text
            .strip_prefix(HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or_else(|| malformed(format!("the first line is not '{HEADER}'")))?;
        let (extra_line, rest) = next_line(rest, "extra")?;
        let extra = extra_line
            .strip_prefix("extra ")
            .ok_or_else(|| malformed("the second line is not 'extra <base64>'"))?;
        let extra = strict_base64(extra)
            .ok_or_else(|| malformed("the extra line is not standard base64"))?;
        let (index_line, mut rest) = next_line(rest, "index")?;
        let index = index_line
            .strip_prefix("index ")
            .and_then(decimal)
            .ok_or_else(|| malformed("the third line is not 'index <decimal>'"))?;
        let mut hashes = Vec::new();
        loop {
            let (line, after) = next_line(rest, "proof hash")?;
            rest = after;
            if line.is_empty() {
                break;
            }
            let hash = strict_base64(line)
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or_else(|| {
                    malformed(format!(
                        "proof hash {} is not 32 bytes of base64",
                        hashes.len() + 1
                    ))
                })?;
            hashes.push(hash);
        }
        // The checkpoint: one signed note whose text is a tlog checkpoint,
        // each written exactly as it would be written again.
        let note =
            SignedNote::parse(rest).map_err(|e| malformed(format!("the checkpoint: {e}")))?;
        if note.to_text() != rest {
            return Err(malformed(
                "the checkpoint is not a signed note in its one form",
            ));
        }
        let tree =
            TreeHead::parse(&note.text).map_err(|e| malformed(format!("the checkpoint: {e}")))?;
        if tree.to_text() != note.text || tree.extensions.iter().any(String::is_empty) {
            return Err(malformed(
                "the checkpoint's text is not a tlog checkpoint in its one form",
            ));
        }
        NoteCheckpoint::parse(rest).map_err(|e| malformed(format!("the checkpoint: {e}")))?;
        Ok(ProofFile {
            extra,
            index,
            hashes,
            checkpoint: rest.to_string(),
        })
    }

    /// Checks the proof with the store's public key and says what it shows.
    ///
    /// The event's hash is SHA-256 of the extra bytes, which must be the
    /// canonical JSON of an event whose `seq` is `index + 1` (so its seq and
    /// prev_hash are the ones the hash covers); its leaf, with the proof
    /// hashes, must lead to the root of the checkpoint; and the checkpoint
    /// must be signed by `key` under its origin.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Proven, ProofFileError> {
        let checkpoint = NoteCheckpoint::parse(&self.checkpoint)
            .map_err(|e| malformed(format!("the checkpoint: {e}")))?;
        let origin = &checkpoint.tree.origin;
        if !checkpoint.note.verify(origin, key) {
            let expected = hex::encode(key_id(origin, key));
            let found: Vec<String> = checkpoint
                .note
                .signatures
                .iter()
                .map(|s| format!("'{}' key id {}", s.name, hex::encode(s.key_id)))
                .collect();
            return Err(invalid(format!(
                "the checkpoint is not signed by this public key under its origin '{origin}' \
                 (that key's id would be {expected}; the note is signed by {})",
                found.join(", ")
            )));
        }
        if !origin.starts_with("pgtrail/store/") {
            return Err(invalid(format!(
                "the checkpoint's origin '{origin}' is not a pgtrail store"
            )));
        }

        let mut event: Event = serde_json::from_slice(&self.extra)
            .map_err(|e| invalid(format!("the extra bytes are not an event: {e}")))?;
        if canonical_json(&event) != self.extra {
            return Err(invalid(
                "the extra bytes are not the canonical JSON of the event they hold",
            ));
        }
        let seq = event
            .seq
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| invalid("the event has no seq"))?;
        if seq != self.index.saturating_add(1) {
            return Err(invalid(format!(
                "the event says it is entry {seq}, the proof is for index {} (entry {})",
                self.index,
                self.index.saturating_add(1)
            )));
        }
        let prev = event.prev_hash.as_deref().unwrap_or_default();
        if pgtrail_core::hex::decode_32(prev).is_none() || (seq == 1 && prev != GENESIS_HASH) {
            return Err(invalid(
                "the event's prev_hash is not a valid link of a chain",
            ));
        }

        let hash: Hash = Sha256::digest(&self.extra).into();
        let leaf = merkle::leaf_hash(&hash);
        let size = checkpoint.tree.size;
        merkle::verify_inclusion(self.index, size, &leaf, &self.hashes, &checkpoint.tree.root)
            .map_err(|e| invalid(format!("entry {seq} in the tree of {size}: {e}")))?;
        let event_hash = hex::encode(hash);
        if seq == size && checkpoint.head_hash != event_hash {
            return Err(invalid(
                "the checkpoint names another hash for its last event than this event's",
            ));
        }
        event.hash = Some(event_hash.clone());
        Ok(Proven {
            event,
            event_hash,
            entry: seq,
            origin: origin.clone(),
            tree_size: size,
            root: BASE64.encode(checkpoint.tree.root),
            checkpoint_kind: checkpoint.kind,
            checkpoint_time: checkpoint.created_at,
            key_id: hex::encode(key_id(origin, key)),
        })
    }
}

/// The next line of `text` (without its newline) and the text after it.
fn next_line<'a>(text: &'a str, what: &str) -> Result<(&'a str, &'a str), ProofFileError> {
    text.split_once('\n')
        .ok_or_else(|| malformed(format!("the file ends before its {what} line")))
}

/// Standard base64 with padding, in its one spelling.
fn strict_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(text).ok()?;
    (BASE64.encode(&bytes) == text).then_some(bytes)
}

/// An ASCII decimal without sign or leading zero.
fn decimal(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{origin, Checkpoint, KeyPair};
    use crate::merkle::{event_leaf, Frontier};
    use pgtrail_core::canonical::seal;
    use pgtrail_core::{Kind, Source};

    /// A sealed chain of `n` events, a checkpoint of it, and the key.
    fn chain(n: i64) -> (Vec<Event>, Vec<Hash>, String, KeyPair) {
        let key = KeyPair::generate().expect("key");
        let mut events = Vec::new();
        let mut prev = GENESIS_HASH.to_string();
        let mut frontier = Frontier::new();
        let mut leaves = Vec::new();
        for seq in 1..=n {
            let mut e = Event::new(Source::Trigger, Kind::RowChange);
            e.schema = Some("public".into());
            e.table = Some("accounts".into());
            e.operation = Some("DELETE".into());
            e.app_user = Some(format!("user{seq}@example.com"));
            seal(&mut e, seq, &prev);
            prev = e.hash.clone().expect("sealed");
            let leaf = event_leaf(&prev).expect("hash");
            frontier.push(leaf);
            leaves.push(leaf);
            events.push(e);
        }
        let checkpoint = Checkpoint::signed_note(
            CheckpointKind::Head,
            &origin("test-store"),
            &frontier,
            &prev,
            n,
            &key,
        );
        (events, leaves, checkpoint.note.expect("note"), key)
    }

    /// The inclusion proof from the leaves, the slow way.
    fn proof(leaves: &[Hash], index: u64) -> Vec<Hash> {
        let ranges = merkle::inclusion_ranges(index, leaves.len() as u64).expect("ranges");
        ranges
            .iter()
            .map(|(start, end)| {
                let mut f = Frontier::new();
                for leaf in &leaves[*start as usize..*end as usize] {
                    f.push(*leaf);
                }
                f.root()
            })
            .collect()
    }

    #[test]
    fn every_event_of_a_chain_round_trips_and_verifies() {
        let (events, leaves, note, key) = chain(13);
        for (i, event) in events.iter().enumerate() {
            let file = ProofFile::build(event, proof(&leaves, i as u64), &note).expect("build");
            let text = file.to_text();
            assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
            let parsed = ProofFile::parse(&text).expect("parse");
            assert_eq!(parsed, file);
            let proven = parsed.verify(&key.verifying_key()).expect("verifies");
            assert_eq!(proven.entry, i as u64 + 1);
            assert_eq!(proven.tree_size, 13);
            assert_eq!(&proven.event, event);
            assert_eq!(Some(&proven.event_hash), event.hash.as_ref());
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (events, leaves, note, key) = chain(6);
        let text = ProofFile::build(&events[2], proof(&leaves, 2), &note)
            .expect("build")
            .to_text();
        let bytes = text.as_bytes();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut changed = bytes.to_vec();
                changed[at] ^= flip;
                let Ok(changed) = String::from_utf8(changed) else {
                    continue;
                };
                let verdict =
                    ProofFile::parse(&changed).and_then(|f| f.verify(&key.verifying_key()));
                assert!(
                    verdict.is_err(),
                    "byte {at} ^ {flip:#x} still verifies: {changed}"
                );
            }
        }
    }

    #[test]
    fn another_key_or_index_or_event_fails() {
        let (events, leaves, note, key) = chain(5);
        let file = ProofFile::build(&events[3], proof(&leaves, 3), &note).expect("build");
        let other = KeyPair::generate().expect("key");
        let wrong_key = file.verify(&other.verifying_key()).expect_err("other key");
        assert!(
            wrong_key
                .to_string()
                .contains("not signed by this public key"),
            "{wrong_key}"
        );

        // The event at another index, with the true index's proof.
        let mut moved = file.clone();
        moved.index = 2;
        assert!(moved.verify(&key.verifying_key()).is_err());

        // An altered event, resealed so its seq and prev_hash stay.
        let mut altered = events[3].clone();
        altered.app_user = Some("mallory@example.com".into());
        let prev = altered.prev_hash.clone().expect("prev");
        seal(&mut altered, 4, &prev);
        let forged = ProofFile::build(&altered, proof(&leaves, 3), &note).expect("build");
        let err = forged.verify(&key.verifying_key()).expect_err("altered");
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn parsing_is_strict() {
        let (events, leaves, note, _) = chain(3);
        let text = ProofFile::build(&events[0], proof(&leaves, 0), &note)
            .expect("build")
            .to_text();
        let broken = [
            text.replacen("index 0", "index 00", 1),
            text.replacen("index 0", "index +0", 1),
            text.replacen("c2sp.org/tlog-proof@v1\n", "c2sp.org/tlog-proof@v2\n", 1),
            text.replacen("\nindex", "\nnote hello\nindex", 1),
            text.replace('\n', "\r\n"),
            format!("{text}\n"),
            format!("{text}trailing"),
            text.replacen("extra ", "extra  ", 1),
            text[..text.len() - 1].to_string(),
        ];
        for b in broken {
            assert!(
                matches!(ProofFile::parse(&b), Err(ProofFileError::Malformed(_))),
                "accepted: {b}"
            );
        }
        assert!(ProofFile::parse(&text).is_ok());
    }
}
