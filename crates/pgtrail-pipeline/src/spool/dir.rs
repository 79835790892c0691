//! The spool directory: private to the user running pgtrail (0700, files
//! 0600), refused when anyone else could read or change it, and locked so
//! one process at a time writes it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::{segment, SpoolError};

const LOCK_FILE: &str = "lock";

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError {
    let path = path.to_path_buf();
    move |source| SpoolError::Io {
        action,
        path,
        source,
    }
}

/// Refuses `path` unless it belongs to this process's user and no one else
/// may read or write it (audit events are as sensitive as the store).
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), SpoolError> {
    let not_private = |reason: String| SpoolError::NotPrivate {
        path: path.to_path_buf(),
        reason,
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(not_private(format!(
            "it belongs to uid {}, not to the user running pgtrail (uid {me})",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(not_private(format!(
            "its mode is {mode:04o}; others may read or change it (chmod go-rwx)"
        )));
    }
    Ok(())
}

/// Creates `dir` (0700) if missing, checks it is private and takes its lock.
pub(super) fn prepare(dir: &Path) -> Result<File, SpoolError> {
    match DirBuilder::new().recursive(true).mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", dir)(e)),
    }
    let meta = std::fs::metadata(dir).map_err(io("read", dir))?;
    if !meta.is_dir() {
        return Err(SpoolError::NotPrivate {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    check_private(dir, &meta)?;
    let lock = open_private(&dir.join(LOCK_FILE))?;
    match flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(lock),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(SpoolError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(io("lock", &dir.join(LOCK_FILE))(e.into())),
    }
}

/// Opens (creating 0600) a file for reading and writing in place, refusing
/// one someone else could change.
pub(super) fn open_private(path: &Path) -> Result<File, SpoolError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(io("open", path))?;
    let meta = file.metadata().map_err(io("read", path))?;
    check_private(path, &meta)?;
    Ok(file)
}

/// Creates a new file (0600) for appending; fails if it exists.
pub(super) fn create_private(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(super) fn sync(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// The ids of the segment files in `dir`, oldest first; each checked to be
/// private.
pub(super) fn segment_ids(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("list", dir))? {
        let entry = entry.map_err(io("list", dir))?;
        let Some(id) = entry.file_name().to_str().and_then(segment::parse_name) else {
            continue;
        };
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(io("read", &path))?;
        if !meta.is_file() {
            return Err(SpoolError::NotPrivate {
                path,
                reason: "a segment that is not a regular file".into(),
            });
        }
        check_private(&path, &meta)?;
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}
