//! The witness: a file outside the store where every signed checkpoint is
//! appended too, so that someone who can rewrite the store (and delete its
//! checkpoints, or put back an older copy of it) still cannot make the
//! store agree with what was signed before.
//!
//! The file is a sequence of signed notes, each followed by a blank line.
//! It is opened `O_APPEND` (created 0600), and each note is fsync'd before
//! the checkpoint counts as written. Keep it on another host, or on storage
//! the store's administrators cannot rewrite (an append-only mount, a log
//! shipper): a witness beside the store guards only against mistakes.

use std::io::Write;
use std::path::Path;

use crate::checkpoint::NoteCheckpoint;
use crate::StoreError;

/// Appends `note` (a signed note's text) to the witness at `path`, durably.
pub fn append(path: &Path, note: &str) -> Result<(), StoreError> {
    let io = |e: std::io::Error| {
        StoreError::Invalid(format!("cannot write the witness {}: {e}", path.display()))
    };
    let created = !path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut record = note.to_string();
    record.push('\n');
    file.write_all(record.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    if created {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
    }
    Ok(())
}

/// Every checkpoint in the witness at `path`, in the order written. A note
/// that does not parse is an error: a witness is never edited by hand.
pub fn read(path: &Path) -> Result<Vec<(String, NoteCheckpoint)>, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Invalid(format!("cannot read the witness {}: {e}", path.display()))
    })?;
    let chunks: Vec<&str> = text.split("\n\n").collect();
    let mut notes = Vec::new();
    let mut pairs = chunks.chunks(2);
    for (i, pair) in pairs.by_ref().enumerate() {
        match pair {
            [body, signatures] => {
                let note = format!("{body}\n\n{signatures}\n");
                let parsed = NoteCheckpoint::parse(&note).map_err(|e| {
                    StoreError::Invalid(format!(
                        "the witness {} is damaged at its checkpoint {}: {e}",
                        path.display(),
                        i + 1
                    ))
                })?;
                notes.push((note, parsed));
            }
            [rest] if rest.trim().is_empty() => {}
            [_] | [] | [..] => {
                return Err(StoreError::Invalid(format!(
                    "the witness {} ends with an incomplete checkpoint",
                    path.display()
                )))
            }
        }
    }
    Ok(notes)
}
