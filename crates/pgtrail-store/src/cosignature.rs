//! Witness cosignatures (C2SP `tlog-cosignature`, `cosignature/v1`) and the
//! witnesses' verifier keys (C2SP `signed-note` vkeys).
//!
//! A witness server that checked a checkpoint is consistent with every one
//! it saw before signs `cosignature/v1\ntime <unix seconds>\n` followed by
//! the checkpoint's whole text with its Ed25519 key. The signature line is
//! `— <witness name> base64(key id || 8-byte big-endian time || signature)`
//! where the key id is the first four bytes of
//! `SHA-256(name || "\n" || 0x04 || public key)`: the algorithm byte 0x04
//! keeps a cosignature from ever passing for a plain note signature (0x01).
//! A vkey names the witness and its key: `<name>+<hex key id>+<base64(0x04
//! || public key)>`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::note::{NoteSignature, SignedNote};
use crate::KeyPair;

/// The signed-note algorithm byte of an Ed25519 `cosignature/v1`.
pub const COSIGNATURE_V1: u8 = 0x04;

/// A witness server's cosignature kept in the store beside the checkpoint
/// it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCosignature {
    /// The checkpoint's size (its `seq`).
    pub seq: i64,
    /// The checkpoint's text (the note without its signature lines): the
    /// exact bytes the cosignature covers.
    pub checkpoint: String,
    /// The signature line, `— <witness name> <base64>` with its newline.
    pub line: String,
    /// When the store received it.
    pub received_at: DateTime<Utc>,
}

/// A witness's verifier key: its name and public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessKey {
    /// The witness's name (the key name of its signature lines).
    pub name: String,
    /// Its Ed25519 public key.
    pub key: VerifyingKey,
}

/// Why a vkey or a cosignature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CosignatureError(pub String);

impl WitnessKey {
    /// The key id of its cosignatures.
    pub fn key_id(&self) -> [u8; 4] {
        let mut hasher = Sha256::new();
        hasher.update(self.name.as_bytes());
        hasher.update(b"\n");
        hasher.update([COSIGNATURE_V1]);
        hasher.update(self.key.as_bytes());
        let digest = hasher.finalize();
        [digest[0], digest[1], digest[2], digest[3]]
    }

    /// The vkey text: `<name>+<hex key id>+<base64(0x04 || key)>`.
    pub fn to_vkey(&self) -> String {
        let mut blob = vec![COSIGNATURE_V1];
        blob.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            BASE64.encode(blob)
        )
    }

    /// Parses a vkey; its key id must match its name and key.
    pub fn parse_vkey(text: &str) -> Result<Self, CosignatureError> {
        let bad = |why: &str| CosignatureError(format!("'{text}' is not a witness vkey: {why}"));
        // The base64 key may hold '+' itself: only the first two split.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<key id>+<key>"));
        };
        check_name(name).map_err(|e| bad(&e.0))?;
        let blob = BASE64
            .decode(key)
            .map_err(|_| bad("the key is not base64"))?;
        let Some((&COSIGNATURE_V1, key)) = blob.split_first() else {
            return Err(bad("the key is not of type 0x04 (Ed25519 cosignature/v1)"));
        };
        let key = <[u8; 32]>::try_from(key)
            .ok()
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .ok_or_else(|| bad("the key is not an Ed25519 public key"))?;
        let witness = WitnessKey {
            name: name.to_string(),
            key,
        };
        if hex::encode(witness.key_id()) != id.to_ascii_lowercase() {
            return Err(bad("its key id does not match its name and key"));
        }
        Ok(witness)
    }
}

/// A witness name: a signed-note key name (no spaces, no `+`).
pub fn check_name(name: &str) -> Result<(), CosignatureError> {
    if name.is_empty() || name.contains(|c: char| c == '+' || c.is_whitespace()) {
        return Err(CosignatureError(format!(
            "'{name}' is not a key name: it must be non-empty, without spaces or '+'"
        )));
    }
    Ok(())
}

/// The message a `cosignature/v1` signs.
fn message(checkpoint_text: &str, time: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{checkpoint_text}").into_bytes()
}

/// Cosigns `checkpoint_text` (the note's text, without its signatures) as
/// the witness `name` at `time` (unix seconds).
pub fn cosign(checkpoint_text: &str, name: &str, key: &KeyPair, time: u64) -> NoteSignature {
    let witness = WitnessKey {
        name: name.to_string(),
        key: key.verifying_key(),
    };
    let signature = key.signing_key().sign(&message(checkpoint_text, time));
    let mut bytes = time.to_be_bytes().to_vec();
    bytes.extend_from_slice(&signature.to_bytes());
    NoteSignature {
        name: name.to_string(),
        key_id: witness.key_id(),
        signature: bytes,
    }
}

/// The time of `witness`'s valid cosignature on `note`'s text, if `note`
/// carries one; signature lines of other keys are ignored.
pub fn verify(note: &SignedNote, witness: &WitnessKey) -> Result<DateTime<Utc>, CosignatureError> {
    let id = witness.key_id();
    let mut found = false;
    for line in note
        .signatures
        .iter()
        .filter(|s| s.name == witness.name && s.key_id == id)
    {
        found = true;
        if let Ok(time) = verify_one(&note.text, line, witness) {
            return Ok(time);
        }
    }
    Err(CosignatureError(if found {
        format!(
            "the cosignature of {} does not verify over this checkpoint",
            witness.name
        )
    } else {
        format!("no cosignature of {}", witness.name)
    }))
}

/// Checks one signature line as `witness`'s cosignature of `text`.
pub fn verify_one(
    text: &str,
    line: &NoteSignature,
    witness: &WitnessKey,
) -> Result<DateTime<Utc>, CosignatureError> {
    let bad = |why: &str| CosignatureError(format!("cosignature of {}: {why}", witness.name));
    if line.name != witness.name || line.key_id != witness.key_id() {
        return Err(bad("another key's signature line"));
    }
    if line.signature.len() != 8 + 64 {
        return Err(bad("not a timestamped Ed25519 signature (72 bytes)"));
    }
    let (time, signature) = line.signature.split_at(8);
    let time = u64::from_be_bytes(time.try_into().map_err(|_| bad("no time"))?);
    let signature = <[u8; 64]>::try_from(signature).map_err(|_| bad("no signature"))?;
    witness
        .key
        .verify(&message(text, time), &Signature::from_bytes(&signature))
        .map_err(|_| bad("the signature does not verify"))?;
    i64::try_from(time)
        .ok()
        .and_then(|t| DateTime::from_timestamp(t, 0))
        .ok_or_else(|| bad("its time is out of range"))
}

/// A signature line as text (`— <name> <base64>`), as a witness answers it.
pub fn line_text(line: &NoteSignature) -> String {
    let note = SignedNote {
        text: String::new(),
        signatures: vec![line.clone()],
    };
    note.to_text().trim_start_matches('\n').to_string()
}

/// Parses signature lines (a witness's answer).
pub fn parse_lines(text: &str) -> Result<Vec<NoteSignature>, CosignatureError> {
    // A note with an empty text: a blank line, then the lines.
    SignedNote::parse(&format!("x\n\n{text}"))
        .map(|note| note.signatures)
        .map_err(CosignatureError)
}

/// What `verify --witness-key` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CosignatureCheck {
    /// The newest checkpoint's size, if the store has a note checkpoint.
    pub newest_seq: Option<i64>,
    /// The given witnesses with a valid cosignature of the newest
    /// checkpoint's exact text, and when each cosigned it.
    pub newest_cosigners: Vec<(String, DateTime<Utc>)>,
    /// Older checkpoints with at least one valid cosignature of a given key.
    pub older_cosigned: usize,
    /// What is wrong: too few cosignatures of the newest checkpoint, or a
    /// kept cosignature of a given key that does not verify.
    pub problems: Vec<String>,
}

/// Checks the cosignatures kept in `store`: the newest note checkpoint of
/// the store's own log must carry valid cosignatures of at least `min` of
/// `witnesses` over its exact text, and no kept cosignature of one of them,
/// on any checkpoint, may fail to verify (it was altered).
pub async fn check<S: crate::Store + ?Sized>(
    store: &S,
    witnesses: &[WitnessKey],
    min: usize,
) -> crate::Result<CosignatureCheck> {
    let mut out = CosignatureCheck::default();
    let Some(id) = store.store_id().await? else {
        out.problems
            .push("the store has no id, so no checkpoint a witness could cosign".into());
        return Ok(out);
    };
    let origin = crate::checkpoint::origin(&id);
    let checkpoints: Vec<_> = store
        .checkpoints()
        .await?
        .into_iter()
        .filter_map(|c| crate::signing::note_of(&c, &origin).map(|n| (c.seq, n)))
        .collect();
    let newest = checkpoints.len().checked_sub(1);
    for (at, (seq, parsed)) in checkpoints.iter().enumerate() {
        let kept = store.cosignatures(*seq).await?;
        let mut cosigners: Vec<(String, DateTime<Utc>)> = Vec::new();
        for stored in kept.iter().filter(|k| k.checkpoint == parsed.note.text) {
            let lines = match parse_lines(&stored.line) {
                Ok(lines) => lines,
                Err(e) => {
                    out.problems.push(format!(
                        "checkpoint at event {seq}: a kept cosignature is not a signature line ({e})"
                    ));
                    continue;
                }
            };
            for line in &lines {
                let Some(witness) = witnesses
                    .iter()
                    .find(|w| w.name == line.name && w.key_id() == line.key_id)
                else {
                    continue;
                };
                match verify_one(&parsed.note.text, line, witness) {
                    Ok(time) if !cosigners.iter().any(|(n, _)| *n == witness.name) => {
                        cosigners.push((witness.name.clone(), time));
                    }
                    Ok(_) => {}
                    Err(e) => out.problems.push(format!(
                        "checkpoint at event {seq}: {e}: the cosignature or the checkpoint was altered"
                    )),
                }
            }
        }
        if Some(at) == newest {
            out.newest_seq = Some(*seq);
            if cosigners.len() < min {
                out.problems.push(format!(
                    "the newest checkpoint (event {seq}) has {} valid cosignature(s) of the given \
                     witnesses, fewer than the {min} required",
                    cosigners.len()
                ));
            }
            out.newest_cosigners = cosigners;
        } else if !cosigners.is_empty() {
            out.older_cosigned += 1;
        }
    }
    if newest.is_none() && min > 0 {
        out.problems
            .push("no signed checkpoint: nothing a witness cosigned".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed from the specs alone with Python's `cryptography`
    /// (`Ed25519PrivateKey.from_private_bytes(bytes(range(32)))`), not with
    /// this code: the vkey, and the cosignature line at time 1700000000 of
    /// the checkpoint `CHECKPOINT`.
    const SEED: [u8; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
        25, 26, 27, 28, 29, 30, 31,
    ];
    const CHECKPOINT: &str =
        "pgtrail/store/test\n5\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n";
    const VKEY: &str = "witness.example/w1+e75f6532+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4";
    const LINE: &str = "\u{2014} witness.example/w1 519lMgAAAABlU/EAh45FpM4JhSwGcSoLFpQThfF05FzP0gXHSBiBYx6LYcrsQBWiNxZ+bH23IaSZ+t4WBAhOgXRyg8SZyEiITQITDQ==\n";

    fn key() -> KeyPair {
        KeyPair::from_secret(SEED)
    }

    #[test]
    fn matches_a_vector_computed_from_the_specs() {
        let key = key();
        let witness = WitnessKey {
            name: "witness.example/w1".into(),
            key: key.verifying_key(),
        };
        assert_eq!(witness.to_vkey(), VKEY);
        assert_eq!(WitnessKey::parse_vkey(VKEY), Ok(witness.clone()));
        let line = cosign(CHECKPOINT, "witness.example/w1", &key, 1_700_000_000);
        assert_eq!(line_text(&line), LINE);
        let note = SignedNote {
            text: CHECKPOINT.into(),
            signatures: parse_lines(LINE).expect("parse"),
        };
        assert_eq!(
            verify(&note, &witness).map(|t| t.timestamp()),
            Ok(1_700_000_000)
        );
    }

    #[test]
    fn a_cosignature_covers_the_text_the_time_and_the_name() {
        let key = key();
        let witness = WitnessKey {
            name: "w".into(),
            key: key.verifying_key(),
        };
        let line = cosign(CHECKPOINT, "w", &key, 42);
        let note = |text: &str, line: NoteSignature| SignedNote {
            text: text.into(),
            signatures: vec![line],
        };
        assert!(verify(&note(CHECKPOINT, line.clone()), &witness).is_ok());
        let other = CHECKPOINT.replace('5', "6");
        assert!(verify(&note(&other, line.clone()), &witness).is_err());
        let mut later = line.clone();
        later.signature[7] ^= 1;
        assert!(verify(&note(CHECKPOINT, later), &witness).is_err());
        let renamed = WitnessKey {
            name: "v".into(),
            key: key.verifying_key(),
        };
        assert!(verify(&note(CHECKPOINT, line), &renamed).is_err());
        // A plain note signature (0x01) by the same key is no cosignature.
        let plain = SignedNote::sign(CHECKPOINT.into(), "w", key.signing_key());
        assert!(verify(&plain, &witness).is_err());
    }

    #[test]
    fn vkeys_are_checked() {
        let vkey = WitnessKey {
            name: "w".into(),
            key: key().verifying_key(),
        }
        .to_vkey();
        assert!(WitnessKey::parse_vkey(&vkey).is_ok());
        let (name, rest) = vkey.split_once('+').expect("plus");
        assert!(WitnessKey::parse_vkey(&format!("x{name}+{rest}")).is_err());
        assert!(WitnessKey::parse_vkey("w+00000000+AQ==").is_err());
        assert!(WitnessKey::parse_vkey("w").is_err());
    }
}
