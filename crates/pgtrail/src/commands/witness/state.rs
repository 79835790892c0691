//! A witness server's memory: the latest checkpoint it cosigned per log,
//! one file per origin, and the check a new checkpoint must pass against
//! it (C2SP `tlog-witness`'s `add-checkpoint`).
//!
//! Each log's file holds the whole signed note the witness last accepted.
//! At start every file is checked again with the log's key: a file edited
//! on disk (its size, root or signature) stops the witness, rather than
//! letting it cosign a fork from a state it never verified. Check and
//! store are one step under the log's lock, and a store is written to a
//! temporary file, synced, renamed over the old one and the directory
//! synced: a crash leaves the old state or the new one, never a mix, and
//! no cosignature is answered before the new state is durable.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use pgtrail_store::cosignature;
use pgtrail_store::merkle::{self, Hash};
use pgtrail_store::note::{NoteSignature, SignedNote, TreeHead};
use pgtrail_store::KeyPair;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Most consistency proof lines a request may carry (the spec's limit).
pub const MAX_PROOF_LINES: usize = 63;

/// Why a checkpoint was not cosigned, as the protocol answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request is not an `add-checkpoint` body.
    Malformed(String),
    /// 403: no signature of the log's key verifies.
    Unsigned,
    /// 404: the witness does not follow this origin.
    UnknownLog(String),
    /// 409: `old` is not the size the witness holds (answered with it), or
    /// the same size with another root.
    Conflict { size: u64, why: String },
    /// 422: the consistency proof does not hold.
    BadProof(String),
    /// 500: the new state could not be stored (nothing was cosigned).
    Storage(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(why) => write!(f, "malformed request: {why}"),
            Refusal::Unsigned => f.write_str("no signature of the log's key verifies"),
            Refusal::UnknownLog(origin) => write!(f, "unknown log '{origin}'"),
            Refusal::Conflict { why, .. } => f.write_str(why),
            Refusal::BadProof(why) => write!(f, "the consistency proof fails: {why}"),
            Refusal::Storage(why) => write!(f, "cannot store the new state: {why}"),
        }
    }
}

/// The newest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone)]
struct Latest {
    size: u64,
    root: Hash,
}

struct Log {
    key: VerifyingKey,
    file: PathBuf,
    latest: Mutex<Option<Latest>>,
}

/// A witness: its name and key, the logs it follows, their state.
pub struct Witness {
    name: String,
    key: KeyPair,
    logs: HashMap<String, Log>,
    /// Held while the witness runs: one process per state directory.
    _lock: File,
}

impl Witness {
    /// Opens the state in `dir` for `logs` (origin and key); an error when
    /// another witness holds the directory or a state file does not verify.
    pub fn open(
        dir: &Path,
        name: String,
        key: KeyPair,
        logs: Vec<(String, VerifyingKey)>,
    ) -> Result<Self, String> {
        cosignature::check_name(&name).map_err(|e| format!("--name: {e}"))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let lock_path = dir.join("witness.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(|_| format!("another witness uses the state directory {}", dir.display()))?;
        let mut opened = HashMap::new();
        for (origin, log_key) in logs {
            let file = dir.join(state_file_name(&origin));
            let latest = load(&file, &origin, &log_key)?;
            if opened
                .insert(
                    origin.clone(),
                    Log {
                        key: log_key,
                        file,
                        latest: Mutex::new(latest),
                    },
                )
                .is_some()
            {
                return Err(format!("the log '{origin}' is named twice"));
            }
        }
        Ok(Witness {
            name,
            key,
            logs: opened,
            _lock: lock,
        })
    }

    /// The witness's vkey.
    pub fn vkey(&self) -> String {
        cosignature::WitnessKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
        .to_vkey()
    }

    /// Checks an `add-checkpoint` body against the state, stores the new
    /// checkpoint and cosigns it at `now` (unix seconds).
    pub async fn add_checkpoint(&self, body: &str, now: u64) -> Result<NoteSignature, Refusal> {
        let request = Request::parse(body)?;
        let head = TreeHead::parse(&request.note.text)
            .map_err(|e| Refusal::Malformed(format!("not a checkpoint: {e}")))?;
        let log = self
            .logs
            .get(&head.origin)
            .ok_or_else(|| Refusal::UnknownLog(head.origin.clone()))?;
        if !request.note.verify(&head.origin, &log.key) {
            return Err(Refusal::Unsigned);
        }
        if request.old > head.size {
            return Err(Refusal::Malformed(format!(
                "old size {} is larger than the checkpoint's {}",
                request.old, head.size
            )));
        }
        let mut latest = log.latest.lock().await;
        let held = latest.as_ref().map_or(0, |l| l.size);
        if request.old != held {
            return Err(Refusal::Conflict {
                size: held,
                why: format!(
                    "the witness holds size {held} of '{}', not {}",
                    head.origin, request.old
                ),
            });
        }
        if let Some(l) = latest.as_ref() {
            if l.size == head.size && l.root != head.root {
                return Err(Refusal::Conflict {
                    size: held,
                    why: format!(
                        "another root for the size {held} the witness holds: the log forked"
                    ),
                });
            }
            merkle::verify_consistency(l.size, head.size, &l.root, &head.root, &request.proof)
                .map_err(|e| Refusal::BadProof(e.0))?;
        } else if !request.proof.is_empty() {
            return Err(Refusal::BadProof(
                "a proof from size 0 has no hashes".into(),
            ));
        }
        store(&log.file, &request.note_text).map_err(Refusal::Storage)?;
        *latest = Some(Latest {
            size: head.size,
            root: head.root,
        });
        Ok(cosignature::cosign(
            &request.note.text,
            &self.name,
            &self.key,
            now,
        ))
    }
}

/// A parsed `add-checkpoint` body.
struct Request {
    old: u64,
    proof: Vec<Hash>,
    note: SignedNote,
    note_text: String,
}

impl Request {
    fn parse(body: &str) -> Result<Self, Refusal> {
        let bad = |why: String| Refusal::Malformed(why);
        let (header, note_text) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint".into()))?;
        let mut lines = header.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .filter(|n| *n == "0" || (!n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit())))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("the first line is not 'old <size>'".into()))?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad(format!("more than {MAX_PROOF_LINES} proof lines")));
            }
            let hash = base64_hash(line)
                .ok_or_else(|| bad(format!("'{line}' is not a base64 SHA-256 hash")))?;
            proof.push(hash);
        }
        let note =
            SignedNote::parse(note_text).map_err(|e| bad(format!("not a signed note: {e}")))?;
        Ok(Request {
            old,
            proof,
            note,
            note_text: note_text.to_string(),
        })
    }
}

fn base64_hash(line: &str) -> Option<Hash> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()
        .and_then(|b| Hash::try_from(b).ok())
}

/// The state file of a log: named after a hash of its origin, which may
/// hold any character.
fn state_file_name(origin: &str) -> String {
    let digest = Sha256::digest(origin.as_bytes());
    format!("{}.checkpoint", hex::encode(&digest[..16]))
}

/// Reads a log's state file, if there is one, and checks it.
fn load(file: &Path, origin: &str, key: &VerifyingKey) -> Result<Option<Latest>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let refuse = |why: String| {
        format!(
            "the state file {} of '{origin}' {why}: it was altered or damaged; the witness \
             refuses to start rather than cosign from a state it cannot trust (restore it, or \
             remove it to start this log afresh)",
            file.display()
        )
    };
    let note =
        SignedNote::parse(&text).map_err(|e| refuse(format!("is not a signed note ({e})")))?;
    let head =
        TreeHead::parse(&note.text).map_err(|e| refuse(format!("is not a checkpoint ({e})")))?;
    if head.origin != origin {
        return Err(refuse(format!("holds the log '{}'", head.origin)));
    }
    if !note.verify(origin, key) {
        return Err(refuse("has no valid signature of the log's key".into()));
    }
    Ok(Some(Latest {
        size: head.size,
        root: head.root,
    }))
}

/// Replaces `file` with `text` durably: temporary file, sync, rename, sync
/// the directory.
fn store(file: &Path, text: &str) -> Result<(), String> {
    let temporary = file.with_extension("tmp");
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", file.display());
    let mut out = File::create(&temporary).map_err(|e| io("creating the new", e))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| io("writing the new", e))?;
    std::fs::rename(&temporary, file).map_err(|e| io("renaming over", e))?;
    if let Some(dir) = file.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgtrail_store::merkle::{leaf_hash, Frontier};
    use pgtrail_store::{Checkpoint, CheckpointKind};

    const ORIGIN: &str = "pgtrail/store/t";

    fn tree(leaves: &[&str]) -> Frontier {
        let mut frontier = Frontier::new();
        for leaf in leaves {
            frontier.push(leaf_hash(leaf.as_bytes()));
        }
        frontier
    }

    fn note(log: &KeyPair, frontier: &Frontier) -> String {
        Checkpoint::signed_note(CheckpointKind::Head, ORIGIN, frontier, "ab", 0, log)
            .note
            .expect("a note")
    }

    /// The RFC 6962 consistency proof between two trees of `leaves`.
    fn proof(leaves: &[&str], old: u64, new: u64) -> Vec<Hash> {
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(l.as_bytes())).collect();
        merkle::consistency_ranges(old, new)
            .expect("ranges")
            .iter()
            .map(|(start, end)| {
                let mut f = Frontier::new();
                for h in &hashes[*start as usize..*end as usize] {
                    f.push(*h);
                }
                f.root()
            })
            .collect()
    }

    fn body(old: u64, proof: &[Hash], note: &str) -> String {
        use base64::Engine as _;
        let mut out = format!("old {old}\n");
        for h in proof {
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(note);
        out
    }

    fn witness(dir: &Path, log: &KeyPair) -> Result<Witness, String> {
        let key = KeyPair::generate().expect("key");
        Witness::open(
            dir,
            "w.example/1".into(),
            key,
            vec![(ORIGIN.into(), log.verifying_key())],
        )
    }

    #[tokio::test]
    async fn grows_refuses_forks_and_rollbacks_and_remembers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KeyPair::generate().expect("key");
        let leaves = ["a", "b", "c", "d", "e", "f", "g"];
        let w = witness(dir.path(), &log).expect("open");
        let first = note(&log, &tree(&leaves[..3]));
        w.add_checkpoint(&body(0, &[], &first), 1)
            .await
            .expect("first");
        // Again from 0: the witness answers with the size it holds.
        assert!(matches!(
            w.add_checkpoint(&body(0, &[], &first), 1).await,
            Err(Refusal::Conflict { size: 3, .. })
        ));
        let grown = note(&log, &tree(&leaves));
        w.add_checkpoint(&body(3, &proof(&leaves, 3, 7), &grown), 2)
            .await
            .expect("grown");
        // A fork at a larger size: its first 7 leaves differ.
        let forked: Vec<&str> = ["a", "b", "c", "X", "e", "f", "g", "h"].to_vec();
        let fork = note(&log, &tree(&forked));
        assert!(matches!(
            w.add_checkpoint(&body(7, &proof(&forked, 7, 8), &fork), 3)
                .await,
            Err(Refusal::BadProof(_))
        ));
        // A fork at the same size.
        let same = note(&log, &tree(&forked[..7]));
        assert!(matches!(
            w.add_checkpoint(&body(7, &[], &same), 3).await,
            Err(Refusal::Conflict { size: 7, .. })
        ));
        // A rollback: the first checkpoint again.
        assert!(w.add_checkpoint(&body(7, &[], &first), 3).await.is_err());
        assert!(matches!(
            w.add_checkpoint(&body(3, &[], &first), 3).await,
            Err(Refusal::Conflict { size: 7, .. })
        ));
        // Another key's checkpoint; another log.
        let stranger = KeyPair::generate().expect("key");
        assert_eq!(
            w.add_checkpoint(&body(7, &[], &note(&stranger, &tree(&leaves))), 3)
                .await
                .err(),
            Some(Refusal::Unsigned)
        );
        drop(w);
        // Restarted, it still holds 7.
        let w = witness(dir.path(), &log).expect("reopen");
        assert!(matches!(
            w.add_checkpoint(&body(3, &[], &first), 4).await,
            Err(Refusal::Conflict { size: 7, .. })
        ));
    }

    /// Two submissions from the same size at once: one is cosigned, the
    /// other finds the size moved (the race the spec warns about).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_never_roll_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KeyPair::generate().expect("key");
        let leaves = ["a", "b", "c", "d", "e", "f", "g"];
        let w = std::sync::Arc::new(witness(dir.path(), &log).expect("open"));
        w.add_checkpoint(&body(0, &[], &note(&log, &tree(&leaves[..3]))), 1)
            .await
            .expect("first");
        // A (size 7) and B (size 3, the size held) both from old 3: if B
        // were checked before A was stored and stored after, it would roll
        // the witness back to 3.
        for _ in 0..10 {
            let small = body(3, &[], &note(&log, &tree(&leaves[..3])));
            let large = body(3, &proof(&leaves, 3, 7), &note(&log, &tree(&leaves)));
            let (a, b) = (w.clone(), w.clone());
            let (x, y) = tokio::join!(
                tokio::spawn(async move { a.add_checkpoint(&large, 2).await }),
                tokio::spawn(async move { b.add_checkpoint(&small, 2).await }),
            );
            let (x, y) = (x.expect("task"), y.expect("task"));
            assert!(x.is_ok(), "{x:?}");
            let latest = w.logs[ORIGIN].latest.lock().await;
            assert_eq!(latest.as_ref().map(|l| l.size), Some(7), "{y:?}");
            drop(latest);
            // Back to a fresh witness at 3 for the next round.
            *w.logs[ORIGIN].latest.lock().await = Some(Latest {
                size: 3,
                root: tree(&leaves[..3]).root(),
            });
        }
    }

    #[tokio::test]
    async fn a_tampered_state_file_stops_the_witness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = KeyPair::generate().expect("key");
        let w = witness(dir.path(), &log).expect("open");
        let leaves = ["a", "b", "c"];
        w.add_checkpoint(&body(0, &[], &note(&log, &tree(&leaves))), 1)
            .await
            .expect("first");
        drop(w);
        let file = dir.path().join(state_file_name(ORIGIN));
        let good = std::fs::read_to_string(&file).expect("read");
        // The size lowered (to make it accept a rollback), then the root.
        for tampered in [
            good.replacen("\n3\n", "\n2\n", 1),
            flip_root(&good),
            good.replacen("\u{2014} ", "\u{2014} x", 1),
            "garbage".to_string(),
        ] {
            assert_ne!(tampered, good);
            std::fs::write(&file, &tampered).expect("write");
            let error = witness(dir.path(), &log).err().expect("refused");
            assert!(error.contains("refuses to start"), "{error}");
        }
        std::fs::write(&file, &good).expect("write");
        witness(dir.path(), &log).expect("the original state opens");
    }

    /// The note with one base64 character of its root changed.
    fn flip_root(note: &str) -> String {
        let mut lines: Vec<String> = note.split('\n').map(str::to_string).collect();
        let root = &mut lines[2];
        let first = if root.starts_with('A') { "B" } else { "A" };
        root.replace_range(0..1, first);
        lines.join("\n")
    }

    #[test]
    fn malformed_bodies_are_told_apart() {
        for body in [
            "",
            "old 01\n\nx\n",
            "old -1\n\n",
            "old 1\nnot-base64\n\n",
            "old 1\n\nno signature\n",
        ] {
            assert!(
                matches!(Request::parse(body), Err(Refusal::Malformed(_))),
                "{body:?}"
            );
        }
    }
}
