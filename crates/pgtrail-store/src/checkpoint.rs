//! Signed checkpoints: the chain's head (or the end of what retention removed)
//! at a point in time, signed with Ed25519 so that rewriting the whole chain
//! after a checkpoint cannot go unnoticed.
//!
//! Keys are files holding hex: the private key (32 bytes, written mode 0600)
//! and the public key (32 bytes). Signing is per checkpoint, not per event:
//! a signature costs ~33 µs, a hash ~0.4 µs.

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::StoreError;

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
    /// Ed25519 signature (hex) over [`Checkpoint::message`], if signed.
    pub signature: Option<String>,
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
        }
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

    /// Signs the checkpoint with `key`.
    pub fn signed(mut self, key: &KeyPair) -> Self {
        let signature = key.signing.sign(&self.message());
        self.public_key = Some(key.public_hex());
        self.signature = Some(hex::encode(signature.to_bytes()));
        self
    }

    /// Checks the signature against `public_key`. `Ok(false)` when unsigned.
    pub fn verify_signature(&self, public_key: &VerifyingKey) -> Result<bool, String> {
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
