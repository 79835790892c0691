//! The proof file: one event, its inclusion proof and a signed checkpoint
//! that covers it, checkable offline with the store's public key alone.
//!
//! The layout is C2SP `tlog-proof@v1` (<https://c2sp.org/tlog-proof>), used
//! as a documented superset: its `extra` line, opaque in the spec, holds the
//! event, so the file is self-contained: for a version 1 event its
//! canonical JSON (`pgtrail_core::canonical::canonical_json`), for a
//! version 2 event a disclosure (`crate::disclosure`: the event without its
//! nonce and any withheld value, with the salts and commitments that rebuild
//! its hash). Nothing in it is trusted as written: the extra rebuilds the
//! event's hash, whose leaf the inclusion proof leads from to the root the
//! checkpoint's note signs.
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
use crate::disclosure::{self, DisclosureError};
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
    /// The proof asked for cannot be made (`--redact` on an event that
    /// cannot withhold those values).
    #[error("cannot make this proof: {0}")]
    Unprovable(String),
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
    /// The event: its canonical JSON (version 1, the bytes its hash is
    /// over) or a disclosure (version 2, see `crate::disclosure`).
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
    /// The event, as the extra shows it (masked values stay masked,
    /// withheld ones are left out), with its hash.
    pub event: Event,
    /// Its hash (hex).
    pub event_hash: String,
    /// The fields the file withholds, as `part.column` (`new.ssn`): their
    /// commitments are in the file, their values are not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub withheld: Vec<String>,
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
        Self::build_redacted(event, &[], hashes, checkpoint)
    }

    /// [`ProofFile::build`], withholding the values of the columns `redact`
    /// names from the event's `pk`, `old` and `new` (version 2 events only;
    /// a column the event does not have is an error).
    pub fn build_redacted(
        event: &Event,
        redact: &[String],
        hashes: Vec<Hash>,
        checkpoint: &str,
    ) -> Result<Self, ProofFileError> {
        let seq = event
            .seq
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s >= 1)
            .ok_or_else(|| malformed("the event is not sealed (it has no seq)"))?;
        let extra = disclosure::disclose(event, redact)
            .map_err(|e| ProofFileError::Unprovable(e.to_string()))?;
        let file = ProofFile {
            extra,
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
    /// The event's hash is rebuilt from the extra: SHA-256 of its bytes when
    /// they are the canonical JSON of a version 1 event, or of the committed
    /// form a disclosure rebuilds (version 2). The event's `seq` must be
    /// `index + 1` (so its seq and prev_hash are the ones the hash covers); its leaf, with the proof
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

        let (mut event, hash, withheld) = self.open_extra()?;
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
            withheld,
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

impl ProofFile {
    /// The event the extra holds, its hash, and the fields it withholds.
    fn open_extra(&self) -> Result<(Event, Hash, Vec<String>), ProofFileError> {
        if disclosure::is_disclosure(&self.extra) {
            let opened = disclosure::open(&self.extra).map_err(|e| match e {
                DisclosureError::Malformed(r) | DisclosureError::Refused(r) => invalid(r),
            })?;
            return Ok((opened.event, opened.hash, opened.withheld));
        }
        let event: Event = serde_json::from_slice(&self.extra)
            .map_err(|e| invalid(format!("the extra bytes are not an event: {e}")))?;
        if canonical_json(&event) != self.extra {
            return Err(invalid(
                "the extra bytes are not the canonical JSON of the event they hold",
            ));
        }
        if event.nonce.is_some() {
            // A version 2 event is hashed over its committed form, and its
            // proof never holds the nonce.
            return Err(invalid(
                "the extra holds an event with its nonce: not a proof pgtrail writes",
            ));
        }
        Ok((event, Sha256::digest(&self.extra).into(), Vec::new()))
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
    use pgtrail_core::canonical::commit;
    use pgtrail_core::canonical::seal;
    use pgtrail_core::{Kind, Source};
    use serde_json::{json, Value};

    /// A sealed chain of `n` events, a checkpoint of it, and the key.
    fn chain(n: i64) -> (Vec<Event>, Vec<Hash>, String, KeyPair) {
        chain_with(n, true)
    }

    /// [`chain`] of events recorded before hash version 2 (no nonce).
    fn chain_v1(n: i64) -> (Vec<Event>, Vec<Hash>, String, KeyPair) {
        chain_with(n, false)
    }

    fn chain_with(n: i64, v2: bool) -> (Vec<Event>, Vec<Hash>, String, KeyPair) {
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
            e.pk = Some(row(json!({"id": seq.to_string()})));
            e.old = Some(row(
                json!({"id": seq, "ssn": SSN, "salary": 85000, "active": true}),
            ));
            e.new = Some(row(
                json!({"id": seq, "ssn": SSN, "salary": 91000.50, "active": false}),
            ));
            if !v2 {
                e.nonce = None;
            }
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

    const SSN: &str = "078-05-1120";

    fn row(value: serde_json::Value) -> pgtrail_core::event::JsonObject {
        value.as_object().cloned().expect("an object")
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
            // Everything but the nonce, which never leaves the store.
            let mut shown = event.clone();
            shown.nonce = None;
            assert_eq!(proven.event, shown);
            assert_eq!(Some(&proven.event_hash), event.hash.as_ref());
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let (events, leaves, note, key) = chain(6);
        for redact in [vec![], vec!["ssn".to_string(), "active".to_string()]] {
            let text = ProofFile::build_redacted(&events[2], &redact, proof(&leaves, 2), &note)
                .expect("build")
                .to_text();
            assert_every_flip_fails(&text, &key);
        }
        // A version 1 event's file, too.
        let (mut v1, leaves, note, key) = chain_v1(4);
        let text = ProofFile::build(&v1.remove(1), proof(&leaves, 1), &note)
            .expect("build")
            .to_text();
        assert_every_flip_fails(&text, &key);
    }

    fn assert_every_flip_fails(text: &str, key: &KeyPair) {
        assert!(ProofFile::parse(text)
            .and_then(|f| f.verify(&key.verifying_key()))
            .is_ok());
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

    fn redact(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| c.to_string()).collect()
    }

    /// The decoded extra of a file as JSON, to edit.
    fn extra_json(file: &ProofFile) -> Value {
        serde_json::from_slice(&file.extra).expect("the extra is JSON")
    }

    /// `file` with `extra` replaced by the canonical text of `value`: a
    /// well-formed file a forger could hand over.
    fn with_extra(file: &ProofFile, value: &Value) -> ProofFile {
        let mut forged = file.clone();
        forged.extra = pgtrail_core::json::to_string(value).into_bytes();
        ProofFile::parse(&forged.to_text()).expect("still a well-formed file")
    }

    #[test]
    fn redacted_proofs_verify_and_name_what_they_withhold() {
        let (events, leaves, note, key) = chain(7);
        for (i, event) in events.iter().enumerate() {
            let hashes = proof(&leaves, i as u64);
            let file = ProofFile::build_redacted(event, &redact(&["ssn", "active"]), hashes, &note)
                .expect("build");
            let proven = ProofFile::parse(&file.to_text())
                .expect("parse")
                .verify(&key.verifying_key())
                .expect("verifies");
            assert_eq!(Some(&proven.event_hash), event.hash.as_ref());
            assert_eq!(
                proven.withheld,
                ["new.active", "new.ssn", "old.active", "old.ssn"]
            );
            let new = proven.event.new.as_ref().expect("new");
            assert_eq!(new.keys().collect::<Vec<_>>(), ["id", "salary"]);
            assert_eq!(new["salary"], event.new.as_ref().expect("new")["salary"]);
            assert_eq!(proven.event.nonce, None);
            assert_eq!(proven.event.app_user, event.app_user);

            // Unredacted, a version 2 event's file shows every value and
            // withholds nothing.
            let whole = ProofFile::build(event, proof(&leaves, i as u64), &note).expect("build");
            let proven = whole.verify(&key.verifying_key()).expect("verifies");
            assert!(proven.withheld.is_empty());
            let mut expected = event.clone();
            expected.nonce = None;
            assert_eq!(proven.event, expected);
        }
    }

    #[test]
    fn a_redacted_file_holds_neither_the_value_nor_the_nonce_nor_its_salt() {
        let (events, leaves, note, _) = chain(3);
        let event = &events[1];
        let text = ProofFile::build_redacted(event, &redact(&["ssn"]), proof(&leaves, 1), &note)
            .expect("build")
            .to_text();
        let extra = ProofFile::parse(&text).expect("parse").extra;
        let extra = String::from_utf8(extra).expect("utf8");
        let nonce = event.nonce.clone().expect("v2");
        let salter = commit::salter_of(event).expect("v2");
        let mut secrets = vec![SSN.to_string(), nonce];
        for part in ["new", "old"] {
            let salt = salter.salt(part, "ssn");
            secrets.push(hex::encode(salt));
            secrets.push(BASE64.encode(salt));
        }
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{secret} in the file");
            assert!(!extra.contains(secret.as_str()), "{secret} in the extra");
        }
        // Not even the value's JSON string or its base64.
        assert!(!extra.contains(&BASE64.encode(SSN)));
        assert!(!text.contains(&BASE64.encode(format!("\"{SSN}\""))));
        assert!(extra.contains("\"withheld\":{\"new\":{\"ssn\":"), "{extra}");
    }

    #[test]
    fn edits_to_a_redacted_file_fail() {
        let (events, leaves, note, key) = chain(4);
        let file =
            ProofFile::build_redacted(&events[2], &redact(&["ssn"]), proof(&leaves, 2), &note)
                .expect("build");
        let genuine = extra_json(&file);
        let salt_of_salary = genuine["salts"]["new"]["salary"].clone();
        let withheld_ssn = genuine["withheld"]["new"]["ssn"].clone();
        let random_hex = Value::String("5a".repeat(32));
        type Edit = Box<dyn Fn(&mut Value)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "a revealed value",
                Box::new(|v| v["event"]["new"]["salary"] = json!(1)),
            ),
            (
                "a revealed key value",
                Box::new(|v| v["event"]["pk"]["id"] = json!("9")),
            ),
            (
                "an actor field",
                Box::new(|v| v["event"]["app_user"] = json!("mallory")),
            ),
            (
                "a salt",
                Box::new({
                    let r = random_hex.clone();
                    move |v| v["salts"]["new"]["salary"] = r.clone()
                }),
            ),
            (
                "a withheld commitment",
                Box::new({
                    let r = random_hex.clone();
                    move |v| v["withheld"]["new"]["ssn"] = r.clone()
                }),
            ),
            (
                "withheld moved to revealed, its commitment as the salt",
                Box::new({
                    let c = withheld_ssn.clone();
                    move |v| {
                        v["withheld"]["new"]
                            .as_object_mut()
                            .expect("o")
                            .remove("ssn");
                        v["event"]["new"]["ssn"] = json!(SSN);
                        v["salts"]["new"]["ssn"] = c.clone();
                    }
                }),
            ),
            (
                "a guessed value for a withheld field, with some salt",
                Box::new({
                    let r = random_hex.clone();
                    move |v| {
                        v["withheld"]["new"]
                            .as_object_mut()
                            .expect("o")
                            .remove("ssn");
                        v["event"]["new"]["ssn"] = json!("123-45-6789");
                        v["salts"]["new"]["ssn"] = r.clone();
                    }
                }),
            ),
            (
                "revealed moved to withheld, its salt as the commitment",
                Box::new({
                    let s = salt_of_salary.clone();
                    move |v| {
                        v["event"]["new"]
                            .as_object_mut()
                            .expect("o")
                            .remove("salary");
                        v["salts"]["new"]
                            .as_object_mut()
                            .expect("o")
                            .remove("salary");
                        v["withheld"]["new"]["salary"] = s.clone();
                    }
                }),
            ),
            (
                "a withheld field dropped",
                Box::new(|v| {
                    v["withheld"]["old"]
                        .as_object_mut()
                        .expect("o")
                        .remove("ssn");
                }),
            ),
            (
                "a salt dropped",
                Box::new(|v| {
                    v["salts"]["old"]
                        .as_object_mut()
                        .expect("o")
                        .remove("salary");
                }),
            ),
            (
                "a column both shown and withheld",
                Box::new({
                    let c = withheld_ssn.clone();
                    move |v| v["withheld"]["new"]["salary"] = c.clone()
                }),
            ),
            (
                "a nonce added",
                Box::new(|v| v["event"]["nonce"] = json!("00".repeat(16))),
            ),
            ("the seq moved", Box::new(|v| v["event"]["seq"] = json!(2))),
            (
                "another part name",
                Box::new(|v| {
                    let old = v["withheld"]["old"].clone();
                    v["withheld"].as_object_mut().expect("o").remove("old");
                    v["withheld"]["context"] = old;
                }),
            ),
            (
                "an uppercase salt",
                Box::new({
                    let s = salt_of_salary.as_str().expect("hex").to_uppercase();
                    move |v| v["salts"]["new"]["salary"] = json!(s.clone())
                }),
            ),
        ];
        for (what, edit) in edits {
            let mut value = genuine.clone();
            edit(&mut value);
            assert_ne!(value, genuine, "{what}: no edit");
            let forged = with_extra(&file, &value);
            let verdict = forged.verify(&key.verifying_key());
            assert!(verdict.is_err(), "{what}: still verifies");
        }
        // The genuine file, re-encoded the same way, still verifies.
        assert!(with_extra(&file, &genuine)
            .verify(&key.verifying_key())
            .is_ok());
        // Whitespace (a second spelling of the same disclosure) is refused.
        let mut spaced = file.clone();
        spaced.extra = serde_json::to_vec_pretty(&genuine).expect("json");
        assert!(spaced.verify(&key.verifying_key()).is_err());
    }

    #[test]
    fn a_holder_can_withhold_more_but_never_reveal_or_change() {
        // Withholding a revealed value needs only its salt and value, which
        // the file gives: anyone holding a proof can hide more of it, as
        // anyone can black out a copy. Revealing or changing one cannot be
        // done (edits_to_a_redacted_file_fail).
        let (events, leaves, note, key) = chain(3);
        let file =
            ProofFile::build_redacted(&events[0], &redact(&["ssn"]), proof(&leaves, 0), &note)
                .expect("build");
        let mut value = extra_json(&file);
        let salt = commit::digest_from_hex(value["salts"]["new"]["salary"].as_str().expect("s"))
            .expect("hex");
        let salary = value["event"]["new"]["salary"].clone();
        let c = hex::encode(commit::commit_value(&salt, &salary));
        value["event"]["new"]
            .as_object_mut()
            .expect("o")
            .remove("salary");
        value["salts"]["new"]
            .as_object_mut()
            .expect("o")
            .remove("salary");
        value["withheld"]["new"]["salary"] = json!(c);
        let proven = with_extra(&file, &value)
            .verify(&key.verifying_key())
            .expect("still the same event");
        assert_eq!(proven.withheld, ["new.salary", "new.ssn", "old.ssn"]);
        assert_eq!(proven.event_hash, events[0].hash.clone().expect("sealed"));
    }

    #[test]
    fn version_1_events_prove_whole_and_refuse_redaction() {
        let (events, leaves, note, key) = chain_v1(3);
        let event = &events[1];
        let file = ProofFile::build(event, proof(&leaves, 1), &note).expect("build");
        assert_eq!(
            file.extra,
            canonical_json(event),
            "the v1 layout, unchanged"
        );
        let proven = file.verify(&key.verifying_key()).expect("verifies");
        assert_eq!(&proven.event, event);
        let err = ProofFile::build_redacted(event, &redact(&["ssn"]), proof(&leaves, 1), &note)
            .expect_err("a v1 event cannot be redacted");
        assert!(matches!(err, ProofFileError::Unprovable(_)), "{err}");
        assert!(err.to_string().contains("before hash version 2"), "{err}");
    }

    #[test]
    fn a_column_the_event_lacks_cannot_be_redacted() {
        let (events, leaves, note, _) = chain(2);
        let err = ProofFile::build_redacted(
            &events[0],
            &redact(&["ssn", "shoe_size"]),
            proof(&leaves, 0),
            &note,
        )
        .expect_err("no such column");
        assert!(err.to_string().contains("no column 'shoe_size'"), "{err}");
    }

    #[test]
    fn a_v1_extra_with_a_nonce_is_refused() {
        // The event's full canonical JSON, nonce included, hashed as v1: not
        // the event's hash, and not a file pgtrail writes.
        let (events, leaves, note, key) = chain(2);
        let file = ProofFile::build(&events[0], proof(&leaves, 0), &note).expect("build");
        let mut forged = file.clone();
        forged.extra = canonical_json(&events[0]);
        let err = forged.verify(&key.verifying_key()).expect_err("refused");
        assert!(err.to_string().contains("nonce"), "{err}");
    }
}
