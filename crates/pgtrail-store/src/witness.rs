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

use std::io::Write as _;
use std::path::Path;

use crate::checkpoint::NoteCheckpoint;
use crate::StoreError;

/// Appends `note` (a signed note's text) to the witness at `path`, durably.
/// A record torn by a crash (no newline at the end) is closed first, so it
/// cannot swallow the note appended after it.
pub fn append(path: &Path, note: &str) -> Result<(), StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| {
        StoreError::Invalid(format!("cannot write the witness {}: {e}", path.display()))
    };
    let created = !path.exists();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    let mut record = String::new();
    if file.metadata().map_err(io)?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1)).map_err(io)?;
        file.read_exact(&mut last).map_err(io)?;
        if last[0] != b'\n' {
            record.push_str("\n\n");
        }
    }
    record.push_str(note);
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

/// What a witness holds.
#[derive(Debug, Clone, Default)]
pub struct WitnessFile {
    /// Every checkpoint that parses, in the order written: the note's text
    /// and what it says.
    pub notes: Vec<(String, NoteCheckpoint)>,
    /// Records that do not parse (a write torn by a crash, or an edit).
    pub damaged: usize,
}

/// Reads the witness at `path`: signed notes, each followed by a blank line.
pub fn read(path: &Path) -> Result<WitnessFile, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Invalid(format!("cannot read the witness {}: {e}", path.display()))
    })?;
    Ok(parse(&text))
}

fn parse(text: &str) -> WitnessFile {
    let mut out = WitnessFile::default();
    let mut body: Vec<&str> = Vec::new();
    let mut signatures: Vec<&str> = Vec::new();
    // After the blank line that ends a note's text.
    let mut in_signatures = false;
    let mut finish = |body: &mut Vec<&str>, signatures: &mut Vec<&str>| {
        if body.is_empty() && signatures.is_empty() {
            return;
        }
        let note = format!("{}\n\n{}\n", body.join("\n"), signatures.join("\n"));
        match NoteCheckpoint::parse(&note) {
            Ok(parsed) if !body.is_empty() && !signatures.is_empty() => {
                out.notes.push((note, parsed))
            }
            _ => out.damaged += 1,
        }
        body.clear();
        signatures.clear();
    };
    for line in text.split('\n') {
        let signature = line.starts_with('\u{2014}');
        match (in_signatures, line.is_empty()) {
            (false, true) => in_signatures = !body.is_empty(),
            (false, false) if signature => {
                // A signature with no text before it.
                signatures.push(line);
                finish(&mut body, &mut signatures);
            }
            (false, false) => body.push(line),
            (true, false) if signature => signatures.push(line),
            (true, _) => {
                // A blank line ends the note; anything else breaks its shape.
                finish(&mut body, &mut signatures);
                in_signatures = false;
                if !line.is_empty() {
                    body.push(line);
                }
            }
        }
    }
    finish(&mut body, &mut signatures);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::Frontier;
    use crate::{Checkpoint, CheckpointKind, KeyPair};

    fn note(size: u32) -> String {
        let key = KeyPair::generate().expect("key");
        let mut frontier = Frontier::new();
        for i in 0..size {
            frontier.push(crate::merkle::leaf_hash(&i.to_be_bytes()));
        }
        Checkpoint::signed_note(
            CheckpointKind::Head,
            "pgtrail/store/t",
            &frontier,
            "ab",
            1,
            &key,
        )
        .note
        .expect("note")
    }

    #[test]
    fn notes_round_trip_and_a_torn_write_loses_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w");
        let (a, b, c) = (note(1), note(2), note(3));
        append(&path, &a).expect("append");
        append(&path, &b).expect("append");
        let read_back = read(&path).expect("read");
        assert_eq!(read_back.damaged, 0);
        assert_eq!(
            read_back
                .notes
                .iter()
                .map(|(t, _)| t.clone())
                .collect::<Vec<_>>(),
            [a.clone(), b.clone()]
        );
        // A crash in the middle of the next write.
        let torn = &c[..c.len() - 20];
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(torn.as_bytes()).expect("write");
        drop(file);
        append(&path, &c).expect("append after the torn write");
        let read_back = read(&path).expect("read");
        assert_eq!(read_back.damaged, 1);
        assert_eq!(
            read_back
                .notes
                .iter()
                .map(|(t, _)| t.clone())
                .collect::<Vec<_>>(),
            [a, b, c]
        );
    }
}
