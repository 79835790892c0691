//! Signed checkpoints: the chain's head (or the end of what retention removed)
//! at a point in time, signed with Ed25519 so that rewriting the whole chain
//! after a checkpoint cannot go unnoticed.
//!
//! Since schema v7 (SQLite; v2 Postgres) a checkpoint is a C2SP signed note
//! holding a C2SP tlog checkpoint (see `note`): the store's origin
//! (`pgtrail/store/<store id>`, so a checkpoint of one store never passes
//! for another's), the tree size (the head's `seq`), the RFC 6962 root of
//! the events' hashes (see `merkle`), and one extension line
//! `pgtrail <head|prune> <head event hash> <time>`. The note is the truth;
//! the other columns are copies for readers and are checked against it.
//! Each note checkpoint also stores the tree's frontier at its size, so the
//! root at later sizes can be computed without the events before it (they
//! may have been pruned); `verify` checks the frontier against the root.
//!
//! Checkpoints made before v7 sign `pgtrail-checkpoint-v1` lines (kind,
//! seq, hash, count, time) with the key; they still verify.
//!
//! Keys are files holding hex: the private key (32 bytes, written mode 0600)
//! and the public key (32 bytes). Signing is per checkpoint, not per event:
//! a signature costs ~33 µs, a hash ~0.4 µs.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::merkle::{Frontier, Hash};
use crate::note::{SignedNote, TreeHead};
use crate::StoreError;

/// The origin line of a store's checkpoints.
pub fn origin(store_id: &str) -> String {
    format!("pgtrail/store/{store_id}")
}

/// What a checkpoint vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// The chain's head when the checkpoint was taken: event `seq` had `hash`.
    Head,
    /// Retention removed every event up to `seq`; the last one had `hash`.
    Prune,
}

impl CheckpointKind {
    /// Name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Head => "head",
            CheckpointKind::Prune => "prune",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "head" => Some(CheckpointKind::Head),
            "prune" => Some(CheckpointKind::Prune),
            _ => None,
        }
    }
}

/// A statement about the chain at one moment, optionally signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Head or prune.
    pub kind: CheckpointKind,
    /// The last event covered.
    pub seq: i64,
    /// That event's hash.
    pub hash: String,
    /// Events covered: for a head, the chain's length; for a prune, how many were removed.
    pub count: i64,
    /// When the checkpoint was taken.
    #[serde(with = "pgtrail_core::time::micros")]
    pub created_at: DateTime<Utc>,
    /// The signer's public key (hex), if signed.
    pub public_key: Option<String>,
    /// Ed25519 signature (hex) over [`Checkpoint::message`], if signed the
    /// old way (before notes).
    pub signature: Option<String>,
    /// The signed note (C2SP tlog checkpoint), for checkpoints made since
    /// notes; `None` for older ones.
    pub note: Option<String>,
    /// The Merkle tree's frontier at `seq` ([`Frontier::encode`]), kept
    /// beside a note.
    pub frontier: Option<String>,
}

/// What a note checkpoint says, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteCheckpoint {
    /// The note.
    pub note: SignedNote,
    /// Its tree head.
    pub tree: TreeHead,
    /// Head or prune.
    pub kind: CheckpointKind,
    /// The hash (hex) of the event at the tree's size.
    pub head_hash: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl NoteCheckpoint {
    /// Parses a note checkpoint's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let note = SignedNote::parse(text)?;
        let tree = TreeHead::parse(&note.text)?;
        let line = tree
            .extensions
            .iter()
            .find_map(|l| l.strip_prefix("pgtrail "))
            .ok_or("no pgtrail line")?;
        let mut words = line.split(' ');
        let (Some(kind), Some(hash), Some(time), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("'pgtrail {line}' is not kind, hash and time"));
        };
        Ok(NoteCheckpoint {
            kind: CheckpointKind::parse(kind).ok_or_else(|| format!("unknown kind '{kind}'"))?,
            head_hash: hash.to_string(),
            created_at: DateTime::parse_from_rfc3339(time)
                .map_err(|_| format!("'{time}' is not a time"))?
                .with_timezone(&Utc),
            note,
            tree,
        })
    }

    /// Size as the chain position of the last event covered.
    pub fn seq(&self) -> i64 {
        i64::try_from(self.tree.size).unwrap_or(i64::MAX)
    }
}

impl Checkpoint {
    /// An unsigned checkpoint.
    pub fn new(kind: CheckpointKind, seq: i64, hash: String, count: i64) -> Self {
        Checkpoint {
            kind,
            seq,
            hash,
            count,
            created_at: pgtrail_core::time::truncate_micros(Utc::now()),
            public_key: None,
            signature: None,
            note: None,
            frontier: None,
        }
    }

    /// A checkpoint of the tree `frontier` (whose last leaf is the event
    /// with `head_hash`) in the store `origin`, signed as a note by `key`.
    pub fn signed_note(
        kind: CheckpointKind,
        origin: &str,
        frontier: &Frontier,
        head_hash: &str,
        count: i64,
        key: &KeyPair,
    ) -> Self {
        let created_at = pgtrail_core::time::truncate_micros(Utc::now());
        let tree = TreeHead {
            origin: origin.to_string(),
            size: frontier.size(),
            root: frontier.root(),
            extensions: vec![format!(
                "pgtrail {} {head_hash} {}",
                kind.as_str(),
                pgtrail_core::time::format_micros(&created_at)
            )],
        };
        let note = SignedNote::sign(tree.to_text(), origin, &key.signing);
        Checkpoint {
            kind,
            seq: i64::try_from(frontier.size()).unwrap_or(i64::MAX),
            hash: head_hash.to_string(),
            count,
            created_at,
            public_key: Some(key.public_hex()),
            signature: None,
            note: Some(note.to_text()),
            frontier: Some(frontier.encode()),
        }
    }

    /// The note, parsed and checked against the columns beside it (which
    /// readers use); `None` for a checkpoint made before notes.
    pub fn parsed_note(&self) -> Option<Result<NoteCheckpoint, String>> {
        let text = self.note.as_deref()?;
        Some(NoteCheckpoint::parse(text).and_then(|parsed| {
            if parsed.seq() != self.seq
                || parsed.kind != self.kind
                || parsed.head_hash != self.hash
                || parsed.created_at != self.created_at
            {
                return Err("its columns do not match its signed note".into());
            }
            Ok(parsed)
        }))
    }

    /// The frontier stored beside the note, checked against the note's root.
    pub fn checked_frontier(&self, parsed: &NoteCheckpoint) -> Result<Frontier, String> {
        let text = self.frontier.as_deref().ok_or("its frontier is missing")?;
        let frontier = Frontier::decode(parsed.tree.size, text)?;
        if frontier.root() != parsed.tree.root {
            return Err("its frontier does not give its root".into());
        }
        Ok(frontier)
    }

    /// The Merkle root it vouches for, if it is a note.
    pub fn root(&self) -> Option<Hash> {
        self.parsed_note()?.ok().map(|n| n.tree.root)
    }

    /// True when it carries a signature of either format (not checked).
    pub fn is_signed(&self) -> bool {
        self.signature.is_some() || self.note.is_some()
    }

    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "pgtrail-checkpoint-v1\n{}\n{}\n{}\n{}\n{}\n",
            self.kind.as_str(),
            self.seq,
            self.hash,
            self.count,
            pgtrail_core::time::format_micros(&self.created_at)
        )
        .into_bytes()
    }

    /// Signs the checkpoint with `key` the way checkpoints were signed
    /// before notes (kept to read old stores, and to test that they verify).
    pub fn signed(mut self, key: &KeyPair) -> Self {
        let signature = key.signing.sign(&self.message());
        self.public_key = Some(key.public_hex());
        self.signature = Some(hex::encode(signature.to_bytes()));
        self
    }

    /// Checks the signature against `public_key`. `Ok(false)` when unsigned.
    pub fn verify_signature(&self, public_key: &VerifyingKey) -> Result<bool, String> {
        if let Some(parsed) = self.parsed_note() {
            let parsed = parsed?;
            return if parsed.note.verify(&parsed.tree.origin, public_key) {
                Ok(true)
            } else {
                Err("its note's signature does not match the public key".to_string())
            };
        }
        let Some(signature) = &self.signature else {
            return Ok(false);
        };
        let bytes: [u8; 64] = hex::decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("signature is not 64 bytes of hex")?;
        public_key
            .verify(&self.message(), &Signature::from_bytes(&bytes))
            .map(|()| true)
            .map_err(|_| "signature does not match the public key".to_string())
    }
}

/// An Ed25519 key pair for signing checkpoints.
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    /// A fresh key pair from the operating system's randomness.
    pub fn generate() -> Result<Self, StoreError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| StoreError::Invalid(format!("no randomness available for a key: {e}")))?;
        Ok(KeyPair {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// The public half, hex.
    pub fn public_hex(&self) -> String {
        hex::encode(self.signing.verifying_key().to_bytes())
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The key pair of a 32-byte secret (test vectors).
    #[cfg(test)]
    pub(crate) fn from_secret(secret: [u8; 32]) -> Self {
        KeyPair {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// The private half, for signing other formats than checkpoints (a
    /// witness server's cosignatures).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// Reads a private key file written by [`KeyPair::save`].
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let bytes = read_hex_key(path, "private")?;
        Ok(KeyPair {
            signing: SigningKey::from_bytes(&bytes),
        })
    }

    /// Writes the private key (mode 0600, refusing to overwrite) and the public key.
    pub fn save(&self, private: &Path, public: &Path) -> Result<(), StoreError> {
        use std::io::Write;
        let io_err = |path: &Path, e: std::io::Error| {
            StoreError::Invalid(format!("cannot write key file {}: {e}", path.display()))
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(private).map_err(|e| io_err(private, e))?;
        writeln!(file, "{}", hex::encode(self.signing.to_bytes()))
            .map_err(|e| io_err(private, e))?;
        std::fs::write(public, format!("{}\n", self.public_hex()))
            .map_err(|e| io_err(public, e))?;
        Ok(())
    }
}

/// A public key whose checkpoints are trusted.
///
/// A key that was rotated out is trusted only up to the tree size it had
/// signed when it was retired (`through_seq`): someone who later gets hold
/// of that old key can sign only checkpoints at or below that size, and
/// those are pinned by every checkpoint the new key signed after it (their
/// roots cover the same leaves), so a forgery shows. Its own notes' times
/// cannot be the limit: whoever holds the key writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key.
    pub key: VerifyingKey,
    /// For a retired key, the last `seq` its checkpoints may cover.
    pub through_seq: Option<i64>,
}

impl TrustedKey {
    /// A current key, trusted for any size.
    pub fn current(key: VerifyingKey) -> Self {
        TrustedKey {
            key,
            through_seq: None,
        }
    }
}

/// Which of `trusted` signed `checkpoint` (its index), or why none did.
pub fn trusted_signer(checkpoint: &Checkpoint, trusted: &[TrustedKey]) -> Result<usize, String> {
    if !checkpoint.is_signed() {
        return Err("it is not signed".into());
    }
    let mut first_failure = None;
    for (i, key) in trusted.iter().enumerate() {
        match checkpoint.verify_signature(&key.key) {
            Ok(true) => {
                return match key.through_seq {
                    Some(through) if checkpoint.seq > through => Err(format!(
                        "it is signed by the retired key {}, which is trusted only up to event {through}",
                        hex::encode(key.key.as_bytes())
                    )),
                    _ => Ok(i),
                }
            }
            Ok(false) => return Err("it is not signed".into()),
            Err(reason) => {
                first_failure.get_or_insert(reason);
            }
        }
    }
    match first_failure {
        Some(_) if trusted.len() > 1 => Err(format!(
            "its signature matches none of the {} trusted public keys",
            trusted.len()
        )),
        Some(reason) => Err(reason),
        None => Err("no public key to check it with".into()),
    }
}

/// Reads a public key file (hex).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, StoreError> {
    let bytes = read_hex_key(path, "public")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| {
        StoreError::Invalid(format!(
            "{} is not a valid Ed25519 public key",
            path.display()
        ))
    })
}

fn read_hex_key(path: &Path, which: &str) -> Result<[u8; 32], StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Invalid(format!("cannot read {which} key {}: {e}", path.display()))
    })?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "{} is not a {which} key file (expected 64 hex characters)",
                path.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_every_field() {
        let key = KeyPair::generate().expect("key");
        let cp = Checkpoint::new(CheckpointKind::Head, 10, "ab".repeat(32), 10).signed(&key);
        assert_eq!(cp.verify_signature(&key.verifying_key()), Ok(true));
        let mut forged = cp.clone();
        forged.seq = 9;
        assert!(forged.verify_signature(&key.verifying_key()).is_err());
        let other = KeyPair::generate().expect("key");
        assert!(cp.verify_signature(&other.verifying_key()).is_err());
    }

    #[test]
    fn keys_round_trip_through_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (private, public) = (dir.path().join("k"), dir.path().join("k.pub"));
        let key = KeyPair::generate().expect("key");
        key.save(&private, &public).expect("save");
        assert!(
            key.save(&private, &public).is_err(),
            "never overwrites a key"
        );
        assert_eq!(
            KeyPair::load(&private).expect("load").public_hex(),
            key.public_hex()
        );
        assert_eq!(load_public_key(&public).expect("load"), key.verifying_key());
        std::fs::write(&public, "zz").expect("write");
        assert!(load_public_key(&public).is_err());
    }
}
