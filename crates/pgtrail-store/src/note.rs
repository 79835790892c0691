//! C2SP signed notes (`signed-note`) carrying C2SP tlog checkpoints
//! (`tlog-checkpoint`): the format transparency logs and their witnesses
//! share, so a checkpoint of a pgtrail store can be read by their tools.
//!
//! A note is text lines, a blank line, then one line per signature:
//! `— <key name> <base64(key id || signature)>`. For Ed25519 the key id is
//! the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`
//! and the signature covers the text. A checkpoint's text is the log's
//! origin, the tree size, the base64 root hash, then extension lines.
//!
//! Written here (about 200 lines, checked against the Go `sumdb/note`
//! reference note) rather than with `signed_note`/`tlog_tiles`: those were
//! never built on this machine kind and pull in more than these two formats.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Starts a signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// The signed-note algorithm byte of Ed25519.
const ED25519: u8 = 0x01;

/// The key id of an Ed25519 key named `name`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key's name.
    pub name: String,
    /// The key's id (see [`key_id`]).
    pub key_id: [u8; 4],
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// A signed note: the text and its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, ending with a newline.
    pub text: String,
    /// Its signatures, in order.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Signs `text` (which must end with a newline) as `name`.
    pub fn sign(text: String, name: &str, key: &SigningKey) -> Self {
        let signature = key.sign(text.as_bytes());
        SignedNote {
            signatures: vec![NoteSignature {
                name: name.to_string(),
                key_id: key_id(name, &key.verifying_key()),
                signature: signature.to_bytes().to_vec(),
            }],
            text,
        }
    }

    /// The note as text: its text, a blank line, its signature lines.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            let mut blob = s.key_id.to_vec();
            blob.extend_from_slice(&s.signature);
            out.push_str(SIGNATURE_PREFIX);
            out.push_str(&s.name);
            out.push(' ');
            out.push_str(&BASE64.encode(blob));
            out.push('\n');
        }
        out
    }

    /// Parses a note; it must have at least one signature line.
    pub fn parse(note: &str) -> Result<Self, String> {
        if !note.ends_with('\n') {
            return Err("a signed note ends with a newline".into());
        }
        let split = note
            .trim_end_matches('\n')
            .rfind("\n\n")
            .ok_or("a signed note has a blank line before its signatures")?;
        let text = &note[..=split];
        let mut signatures = Vec::new();
        for line in note[split + 2..].lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| format!("'{line}' is not a signature line"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| format!("'{line}' has no signature"))?;
            let blob = BASE64
                .decode(blob)
                .map_err(|_| format!("the signature of '{name}' is not base64"))?;
            if blob.len() < 5 || name.is_empty() || name.contains(['+', ' ']) {
                return Err(format!("'{line}' is not a valid signature line"));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: [blob[0], blob[1], blob[2], blob[3]],
                signature: blob[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err("a signed note has at least one signature".into());
        }
        Ok(SignedNote {
            text: text.to_string(),
            signatures,
        })
    }

    /// True when a signature by `key` named `name` verifies.
    pub fn verify(&self, name: &str, key: &VerifyingKey) -> bool {
        let id = key_id(name, key);
        self.signatures
            .iter()
            .filter(|s| s.name == name && s.key_id == id)
            .any(|s| {
                <[u8; 64]>::try_from(s.signature.as_slice())
                    .map(|bytes| {
                        key.verify(self.text.as_bytes(), &Signature::from_bytes(&bytes))
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
    }
}

/// The text of a C2SP tlog checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeHead {
    /// Which log: the same for every checkpoint of one store, and no other.
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// Its RFC 6962 root.
    pub root: Hash,
    /// Extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl TreeHead {
    /// The checkpoint's text.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root)
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let origin = lines.next().filter(|l| !l.is_empty()).ok_or("no origin")?;
        let size = lines
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .ok_or("no tree size")?;
        let root = lines
            .next()
            .and_then(|l| BASE64.decode(l).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or("no root hash")?;
        Ok(TreeHead {
            origin: origin.to_string(),
            size,
            root,
            extensions: lines.map(str::to_string).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `golang.org/x/mod/sumdb/note` example: key, text and note.
    const GO_SIGNER: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VERIFIER: &str = "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_NOTE_SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_keys() -> (SigningKey, VerifyingKey) {
        let secret = BASE64.decode(GO_SIGNER).expect("base64");
        let public = BASE64.decode(GO_VERIFIER).expect("base64");
        assert_eq!((secret[0], public[0]), (ED25519, ED25519));
        let signing = SigningKey::from_bytes(&secret[1..].try_into().expect("32 bytes"));
        let verifying =
            VerifyingKey::from_bytes(&public[1..].try_into().expect("32 bytes")).expect("key");
        (signing, verifying)
    }

    #[test]
    fn signs_the_go_reference_note_byte_for_byte() {
        let (signing, verifying) = go_keys();
        assert_eq!(signing.verifying_key(), verifying);
        assert_eq!(hex::encode(key_id("PeterNeumann", &verifying)), "c74f20a3");
        let note = SignedNote::sign(GO_TEXT.to_string(), "PeterNeumann", &signing);
        let expected = format!("{GO_TEXT}\n{GO_NOTE_SIGNATURE}");
        assert_eq!(note.to_text(), expected);
        let parsed = SignedNote::parse(&expected).expect("parse");
        assert!(parsed.verify("PeterNeumann", &verifying));
        assert!(!parsed.verify("EnochRoot", &verifying), "the name is bound");
        let forged = expected.replace("cryptography", "Cryptography");
        assert!(!SignedNote::parse(&forged)
            .expect("parse")
            .verify("PeterNeumann", &verifying));
        assert!(SignedNote::parse(GO_TEXT).is_err(), "no signature");
    }

    #[test]
    fn a_checkpoint_text_round_trips() {
        let head = TreeHead {
            origin: "pgtrail/store/1".into(),
            size: 8,
            root: [7; 32],
            extensions: vec!["pgtrail head ab 2026".into()],
        };
        assert_eq!(
            head.to_text(),
            "pgtrail/store/1\n8\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\npgtrail head ab 2026\n"
        );
        assert_eq!(TreeHead::parse(&head.to_text()), Ok(head));
        assert!(TreeHead::parse("o\nx\n").is_err());
    }
}
