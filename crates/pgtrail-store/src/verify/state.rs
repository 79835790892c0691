//! The verifier's memory: the last checkpoint a verify found sound, kept in
//! a file of the verifier's own, outside the store. The next verify demands
//! that the store still extends it (a consistency proof from its size to
//! the newest checkpoint, against its root) and walks only the events after
//! it. Someone who can write the store but not this file cannot roll the
//! store back or rewrite what was verified without verify naming it.
//!
//! The file is JSON (see docs/proofs.md, "File formats"): the checkpoint's
//! origin, size, root (base64, as in the note), its time, when it was
//! verified, and the signed note itself. Every field is checked against the
//! note when read, and a file that does not parse is an error, never a
//! fresh start: a damaged memory must not silently forget.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::checkpoint::NoteCheckpoint;
use crate::merkle::Hash;
use crate::StoreError;

/// The version of the state file's layout.
const VERSION: u32 = 1;

/// The last checkpoint a verify found sound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierState {
    /// The layout's version (1).
    pub version: u32,
    /// The log: `pgtrail/store/<store id>`.
    pub origin: String,
    /// The checkpoint's tree size (the `seq` of its last event).
    pub size: u64,
    /// The tree's root at that size, base64 as in the note.
    pub root: String,
    /// When the checkpoint was made (RFC 3339 UTC).
    pub checkpoint_time: String,
    /// When the verify that found it sound ran (RFC 3339 UTC).
    pub verified_at: String,
    /// The checkpoint's signed note, as stored.
    pub note: String,
}

/// A [`VerifierState`] whose fields agree with its note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    /// As read.
    pub state: VerifierState,
    /// Its note, parsed.
    pub checkpoint: NoteCheckpoint,
}

impl Remembered {
    /// The tree size.
    pub fn size(&self) -> u64 {
        self.checkpoint.tree.size
    }

    /// The root at that size.
    pub fn root(&self) -> &Hash {
        &self.checkpoint.tree.root
    }

    /// The checkpoint's time and the verify's, for messages.
    pub fn when(&self) -> String {
        format!(
            "checkpoint of {}, verified {}",
            self.state.checkpoint_time, self.state.verified_at
        )
    }
}

impl VerifierState {
    /// The state that remembers the checkpoint whose note is `note`,
    /// verified at `verified_at`.
    pub fn of(note: &str, verified_at: DateTime<Utc>) -> Result<Self, String> {
        let parsed = NoteCheckpoint::parse(note)?;
        Ok(VerifierState {
            version: VERSION,
            origin: parsed.tree.origin.clone(),
            size: parsed.tree.size,
            root: BASE64.encode(parsed.tree.root),
            checkpoint_time: pgtrail_core::time::format_micros(&parsed.created_at),
            verified_at: pgtrail_core::time::format_micros(&verified_at),
            note: note.to_string(),
        })
    }

    /// Checks the fields against the note.
    pub fn checked(self) -> Result<Remembered, String> {
        if self.version != VERSION {
            return Err(format!(
                "layout version {} is not {VERSION}, the one this pgtrail writes",
                self.version
            ));
        }
        let checkpoint = NoteCheckpoint::parse(&self.note)
            .map_err(|e| format!("its note is not a checkpoint: {e}"))?;
        let tree = &checkpoint.tree;
        if tree.origin != self.origin
            || tree.size != self.size
            || BASE64.encode(tree.root) != self.root
        {
            return Err(format!(
                "its origin, size or root ({}, {}, {}) are not its note's ({}, {}, {})",
                self.origin,
                self.size,
                self.root,
                tree.origin,
                tree.size,
                BASE64.encode(tree.root)
            ));
        }
        Ok(Remembered {
            state: self,
            checkpoint,
        })
    }

    /// Reads the state at `path`; `None` when there is no file yet. A file
    /// that is there but does not parse, or disagrees with its own note, is
    /// an error: verify must not start afresh from a damaged memory.
    pub fn load(path: &Path) -> Result<Option<Remembered>, StoreError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StoreError::Invalid(format!(
                    "cannot read the verifier state {}: {e}",
                    path.display()
                )))
            }
        };
        let damaged = |reason: String| {
            StoreError::Invalid(format!(
                "the verifier state {} is damaged ({reason}): restore it from a copy, or, knowing the store's history is then not checked against it, remove it or pass --no-state",
                path.display()
            ))
        };
        let state: VerifierState =
            serde_json::from_str(&text).map_err(|e| damaged(e.to_string()))?;
        state.checked().map(Some).map_err(damaged)
    }

    /// Writes the state to `path` atomically and durably: a temporary file
    /// beside it (mode 0600), fsync'd, renamed over it, and the directory
    /// fsync'd. Creates the directory when missing.
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let io = |e: std::io::Error| {
            StoreError::Invalid(format!(
                "cannot write the verifier state {}: {e}",
                path.display()
            ))
        };
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut text = serde_json::to_string_pretty(self)
            .map_err(|e| StoreError::Invalid(format!("cannot encode the verifier state: {e}")))?;
        text.push('\n');
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&temp).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(io(e));
        }
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(())
    }
}

/// Where the state of the log `origin` is kept by default:
/// `$XDG_STATE_HOME/pgtrail/verify/<origin, '/' as '_'>.json`, or
/// `~/.local/state/...` without it. `None` with neither set.
pub fn default_path(origin: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    let name: String = origin
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        base.join("pgtrail")
            .join("verify")
            .join(format!("{name}.json")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, CheckpointKind, KeyPair};
    use crate::merkle::Frontier;

    fn note() -> String {
        let key = KeyPair::generate().expect("key");
        let mut frontier = Frontier::new();
        frontier.push([1; 32]);
        Checkpoint::signed_note(
            CheckpointKind::Head,
            "pgtrail/store/x",
            &frontier,
            &"ab".repeat(32),
            1,
            &key,
        )
        .note
        .expect("note")
    }

    #[test]
    fn a_state_round_trips_atomically_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a").join("state.json");
        assert_eq!(VerifierState::load(&path).expect("load"), None);
        let state = VerifierState::of(&note(), Utc::now()).expect("state");
        state.save(&path).expect("save");
        let read = VerifierState::load(&path).expect("load").expect("some");
        assert_eq!(read.state, state);
        assert_eq!(read.size(), 1);
        // No temporary file is left beside it.
        assert_eq!(
            std::fs::read_dir(dir.path().join("a"))
                .expect("dir")
                .count(),
            1
        );

        std::fs::write(&path, "{\"version\": 1, \"origin\"").expect("write");
        let err = VerifierState::load(&path).expect_err("torn file");
        assert!(err.to_string().contains("damaged"), "{err}");

        // The size edited to a smaller one, the note left: caught.
        let edited = serde_json::to_string(&VerifierState { size: 0, ..state }).expect("json");
        std::fs::write(&path, edited).expect("write");
        let err = VerifierState::load(&path).expect_err("edited size");
        assert!(err.to_string().contains("not its note's"), "{err}");
    }

    #[test]
    fn the_default_path_names_the_origin() {
        let path = default_path("pgtrail/store/ab-12").expect("a home");
        assert!(
            path.ends_with("pgtrail/verify/pgtrail_store_ab-12.json"),
            "{}",
            path.display()
        );
    }
}
