//! Spill files: the pending items of a large open transaction, on disk.
//!
//! A transaction's events get their ids and commit time only at commit, so
//! the assembler holds them until then. Past its memory budget it moves the
//! items of the largest open transaction into that transaction's spill file
//! and reads them back, in order, when the transaction commits (see
//! [`super::Assembler::with_spill`]).
//!
//! One file per transaction, append-only, in a directory only the consumer's
//! user may enter (0700, files 0600), owned by that user, in a parent no one
//! else can swap it out of (see [`SpillDir::open`]). A record is a small binary header —
//! kind (`E` event, `A` actor), the (sub)transaction id, the body length —
//! then the body as JSON. JSON because `Event` already round-trips through it
//! exactly (the stores rely on that): numeric digits kept as written, NULL a
//! `null`, a missing or unchanged-TOAST column absent or listed in `partial`.
//! The xid lets a subtransaction aborted after its items were spilled be
//! skipped on reading back.
//!
//! Files are removed when their transaction is emitted or aborted (on drop),
//! and every leftover `*.spill` file of a crashed run when the directory is
//! opened; the directory itself when the consumer stops, if it is empty.
//! Any I/O failure — a full disk above all — is a [`SpillError`]: the
//! consumer stops with nothing confirmed past what the store holds, and the
//! slot replays the transaction on the next start. A change is never dropped.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Item;
use crate::actor::Actor;
use crate::pgoutput::Xid;

/// Buffer of a spill file's reader and writer.
const BUFFER_BYTES: usize = 256 * 1024;
/// Extension of spill files; only these are removed at start.
const EXTENSION: &str = "spill";

const TAG_EVENT: u8 = b'E';
const TAG_ACTOR: u8 = b'A';

/// A spill file could not be created, written or read back.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub struct SpillError {
    /// What pgtrail was doing.
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error (`StorageFull` when the disk is full).
    #[source]
    pub source: io::Error,
}

impl SpillError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        SpillError {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The directory of one consumer's spill files.
#[derive(Debug)]
pub struct SpillDir {
    path: PathBuf,
    files_created: u64,
}

impl SpillDir {
    /// Creates `path` (and its parents) with mode 0700 and removes the
    /// spill files a crashed run left there. Refuses a directory this user
    /// does not own or that is a symbolic link, and one whose parent another
    /// user could swap it in (owned by someone else than this user or root,
    /// or writable by others without the sticky bit): whoever controls the
    /// directory could feed forged changes into the trail. Give each
    /// consumer (slot) its own directory: opening it removes what is in it.
    pub fn open(path: impl Into<PathBuf>) -> Result<SpillDir, SpillError> {
        let path = path.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| SpillError::new("create the spill directory", &path, e))?;
        check_private(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
            .map_err(|e| SpillError::new("restrict (chmod 0700) the spill directory", &path, e))?;
        let entries = fs::read_dir(&path)
            .map_err(|e| SpillError::new("list the spill directory", &path, e))?;
        let mut removed = 0u32;
        for entry in entries {
            let entry = entry.map_err(|e| SpillError::new("list the spill directory", &path, e))?;
            let file = entry.path();
            if file.extension().is_some_and(|e| e == EXTENSION) {
                fs::remove_file(&file)
                    .map_err(|e| SpillError::new("remove the leftover spill file", &file, e))?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(dir = %path.display(), files = removed, "Removed spill files of an earlier run");
        }
        Ok(SpillDir {
            path,
            files_created: 0,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new, empty spill file for top-level transaction `xid`.
    pub(super) fn create(&mut self, xid: Xid) -> Result<SpillFile, SpillError> {
        self.files_created += 1;
        let path = self
            .path
            .join(format!("tx-{xid}-{}.{EXTENSION}", self.files_created));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SpillError::new("create spill file", &path, e))?;
        Ok(SpillFile {
            writer: BufWriter::with_capacity(BUFFER_BYTES, file),
            path: Removal(path),
            records: 0,
            bytes: 0,
            body: Vec::new(),
        })
    }
}

/// The checks of [`SpillDir::open`] on the directory and its parent.
fn check_private(path: &Path) -> Result<(), SpillError> {
    let me = rustix::process::geteuid().as_raw();
    let refuse = |path: &Path, why: String| {
        SpillError::new(
            "use the spill directory",
            path,
            io::Error::new(io::ErrorKind::PermissionDenied, why),
        )
    };
    let stat = |path: &Path| {
        fs::symlink_metadata(path)
            .map_err(|e| SpillError::new("inspect the spill directory", path, e))
    };
    let own = stat(path)?;
    if !own.file_type().is_dir() {
        return Err(refuse(
            path,
            "it is a symbolic link or not a directory".into(),
        ));
    }
    if own.uid() != me {
        return Err(refuse(
            path,
            format!("it belongs to uid {}, not to this user (uid {me}); remove it or set [capture] spill_dir", own.uid()),
        ));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let up = fs::metadata(parent)
            .map_err(|e| SpillError::new("inspect the spill directory's parent", parent, e))?;
        let mode = up.mode();
        if up.uid() != me && up.uid() != 0 {
            return Err(refuse(
                parent,
                format!("the spill directory's parent belongs to uid {}, who could replace it; remove it or set [capture] spill_dir", up.uid()),
            ));
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(refuse(
                parent,
                format!("the spill directory's parent is writable by others (mode {:04o}) without the sticky bit", mode & 0o7777),
            ));
        }
    }
    Ok(())
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // Only when empty: a consumer that stopped cleanly leaves nothing behind.
        let _ = fs::remove_dir(&self.path);
    }
}

/// Removes its file when dropped: after reading back, on abort, on error.
#[derive(Debug)]
struct Removal(PathBuf);

impl Drop for Removal {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.0) {
            if error.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.0.display(), %error, "Cannot remove a spill file");
            }
        }
    }
}

/// A transaction's spilled items, being written.
#[derive(Debug)]
pub(super) struct SpillFile {
    writer: BufWriter<File>,
    path: Removal,
    records: u64,
    bytes: u64,
    /// Reused buffer for one record's body.
    body: Vec<u8>,
}

/// The actor's fields as written to a spill file; read back by `Actor`'s
/// own `Deserialize`, which uses the same names.
#[derive(Serialize)]
struct ActorRecord<'a> {
    app_user: &'a Option<String>,
    context: &'a Option<String>,
    db_user: &'a Option<String>,
    current_user: &'a Option<String>,
    client_addr: &'a Option<String>,
    client_port: Option<i32>,
    application_name: &'a Option<String>,
    backend_pid: Option<i32>,
    comment: &'a Vec<(String, String)>,
}

impl<'a> From<&'a Actor> for ActorRecord<'a> {
    fn from(actor: &'a Actor) -> Self {
        let Actor {
            app_user,
            context,
            db_user,
            current_user,
            client_addr,
            client_port,
            application_name,
            backend_pid,
            comment,
        } = actor;
        ActorRecord {
            app_user,
            context,
            db_user,
            current_user,
            client_addr,
            client_port: *client_port,
            application_name,
            backend_pid: *backend_pid,
            comment,
        }
    }
}

impl SpillFile {
    /// Appends one item of (sub)transaction `xid`.
    pub(super) fn write(&mut self, xid: Xid, item: &Item) -> Result<(), SpillError> {
        self.body.clear();
        let (tag, encoded) = match item {
            Item::Event(event) => (TAG_EVENT, serde_json::to_writer(&mut self.body, event)),
            Item::Actor(actor) => (
                TAG_ACTOR,
                serde_json::to_writer(&mut self.body, &ActorRecord::from(actor)),
            ),
        };
        encoded.map_err(|e| SpillError::new("encode an item for", &self.path.0, e.into()))?;
        let length = u64::try_from(self.body.len()).expect("a buffer's length fits in u64");
        let mut header = [0u8; 13];
        header[0] = tag;
        header[1..5].copy_from_slice(&xid.to_le_bytes());
        header[5..13].copy_from_slice(&length.to_le_bytes());
        self.writer
            .write_all(&header)
            .and_then(|()| self.writer.write_all(&self.body))
            .map_err(|e| SpillError::new("write spill file", &self.path.0, e))?;
        self.records += 1;
        self.bytes += 13 + length;
        Ok(())
    }

    /// Items written so far.
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Finishes writing; the items can then be read back from the start.
    pub(super) fn into_reader(self) -> Result<SpillReader, SpillError> {
        let SpillFile {
            writer,
            path,
            records,
            ..
        } = self;
        let mut file = writer
            .into_inner()
            .map_err(|e| SpillError::new("write spill file", &path.0, e.into_error()))?;
        file.seek(SeekFrom::Start(0))
            .map_err(|e| SpillError::new("rewind spill file", &path.0, e))?;
        Ok(SpillReader {
            reader: BufReader::with_capacity(BUFFER_BYTES, file),
            path,
            remaining: records,
            body: Vec::new(),
        })
    }
}

/// A transaction's spilled items, read back in the order written.
#[derive(Debug)]
pub(super) struct SpillReader {
    reader: BufReader<File>,
    path: Removal,
    remaining: u64,
    body: Vec<u8>,
}

impl SpillReader {
    /// Items not read yet.
    pub(super) fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next item with its (sub)transaction and size on disk, or `None`
    /// after the last.
    pub(super) fn next_item(&mut self) -> Result<Option<(Xid, Item, usize)>, SpillError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let read_error = |e| SpillError::new("read back spill file", &self.path.0, e);
        let mut header = [0u8; 13];
        self.reader.read_exact(&mut header).map_err(read_error)?;
        let xid = Xid::from_le_bytes(header[1..5].try_into().expect("4 bytes"));
        let length = u64::from_le_bytes(header[5..13].try_into().expect("8 bytes"));
        let length = usize::try_from(length).map_err(|_| {
            read_error(io::Error::new(
                io::ErrorKind::InvalidData,
                "record too long",
            ))
        })?;
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).map_err(read_error)?;
        let item = match header[0] {
            TAG_EVENT => serde_json::from_slice(&self.body).map(|e| Item::Event(Box::new(e))),
            TAG_ACTOR => Actor::parse(&self.body).map(Item::Actor),
            other => {
                return Err(read_error(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown record kind {other}"),
                )))
            }
        }
        .map_err(|e| read_error(e.into()))?;
        self.remaining -= 1;
        Ok(Some((xid, item, 13 + length)))
    }
}

#[cfg(test)]
mod tests;
