//! A sink's place in the chain, persisted: one file per sink
//! (`<state dir>/<sink name>.cursor`, JSON), replaced atomically (temp
//! file, fsync, rename, fsync of the directory) only after the destination
//! said `Ok`, so a crash at any moment leaves either the old cursor or the
//! new one: events after it are delivered again, never skipped.
//!
//! The cursor names the store it belongs to (its id) and the hash of the
//! last event delivered. [`Cursor::check`] refuses a cursor of another
//! store, one ahead of the store's head, one whose hash is not the store's
//! event at that `seq` (an edited or foreign cursor), and one whose next
//! events were removed by retention before they were delivered: each of
//! these would otherwise skip events or restart silently.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use pgtrail_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// Where a sink stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The id of the store it reads ([`Store::store_id`]).
    pub store_id: String,
    /// The last event delivered (0: none yet).
    pub seq: i64,
    /// That event's hash (`None` before the first).
    pub hash: Option<String>,
    /// How many of the store's checkpoints (oldest first) were delivered.
    pub checkpoints: usize,
    /// When the destination last acknowledged a batch.
    #[serde(default)]
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last failure, until a batch goes through again.
    #[serde(default)]
    pub last_error: Option<LastError>,
}

/// A delivery that failed, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// When.
    pub at: DateTime<Utc>,
    /// What failed (never a secret: sinks' errors name destinations only).
    pub message: String,
    /// Failures in a row.
    pub failures: u32,
}

/// Why a cursor cannot be used or kept.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    /// The file could not be read or written.
    #[error("cursor {path}: {source}")]
    Io {
        /// The cursor file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a cursor.
    #[error("cursor {path} is not a cursor file: {reason}")]
    Malformed {
        /// The cursor file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cursor was written for another store.
    #[error(
        "cursor {path} belongs to store {cursor_store}, not to {store} (id {store_id}): \
         refusing to restart from the first event or to skip any; point the sink at its \
         own store, or move the cursor away to deliver this store from its first event"
    )]
    OtherStore {
        /// The cursor file.
        path: PathBuf,
        /// The store id in the cursor.
        cursor_store: String,
        /// The store read.
        store: String,
        /// Its id.
        store_id: String,
    },
    /// The cursor does not match the chain (edited, or the store replaced).
    #[error(
        "cursor {path} says event {seq} was delivered, but {reason}: refusing to go on \
         (an edited cursor could skip events). Run `pgtrail verify`; to deliver again from \
         a known point, move the cursor away"
    )]
    NotInChain {
        /// The cursor file.
        path: PathBuf,
        /// The cursor's seq.
        seq: i64,
        /// What disagrees.
        reason: String,
    },
    /// The store has no id to bind a cursor to.
    #[error("store {0} has no id (a store from before signed notes): open it once with this version to upgrade it")]
    NoStoreId(String),
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CursorError {
    /// True when trying again may pass (the store was unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            CursorError::Store(error) => error.is_retryable(),
            CursorError::Io { .. } => true,
            _ => false,
        }
    }
}

/// The cursor file of sink `name` in `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cursor"))
}

/// The directory sink cursors live in: `state_dir` when set, else beside a
/// SQLite store (`<store file>.sinks`). A Postgres store has no place of
/// its own on this host, so it needs `state_dir`.
pub fn state_dir(state_dir: Option<&str>, store_url: &str) -> Result<PathBuf, String> {
    if let Some(dir) = state_dir {
        return Ok(PathBuf::from(dir));
    }
    match store_url
        .strip_prefix("sqlite://")
        .or_else(|| store_url.strip_prefix("sqlite:"))
    {
        Some(file) if !file.is_empty() => Ok(PathBuf::from(format!("{file}.sinks"))),
        _ => Err(
            "a sink reading a PostgreSQL store needs `state_dir` (where its cursor file is kept)"
                .into(),
        ),
    }
}

/// A sink name fit for a file name and a metric label.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Cursor {
    /// The start of a store's chain: nothing delivered yet.
    pub fn start(store_id: &str) -> Self {
        Cursor {
            store_id: store_id.to_string(),
            seq: 0,
            hash: None,
            checkpoints: 0,
            delivered_at: None,
            last_error: None,
        }
    }

    /// Reads the cursor at `path`; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, CursorError> {
        let text = match fs::read(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CursorError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|error| CursorError::Malformed {
                path: path.to_path_buf(),
                reason: error.to_string(),
            })
    }

    /// Replaces the file at `path` with this cursor, durably: a crash
    /// leaves the old cursor or this one, never a mix.
    pub fn save(&self, path: &Path) -> Result<(), CursorError> {
        let io = |source| CursorError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let mut temp = path.as_os_str().to_owned();
        temp.push(".tmp");
        let temp = PathBuf::from(temp);
        let body = serde_json::to_vec_pretty(self).map_err(|error| CursorError::Malformed {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let mut file = fs::File::create(&temp).map_err(io)?;
        file.write_all(&body).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        fs::rename(&temp, path).map_err(io)?;
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io)
    }

    /// Checks this cursor against `store` (whose id is `store_id`), read at
    /// `path`: see the module's list of what is refused.
    pub async fn check(
        &self,
        store: &dyn Store,
        store_id: &str,
        path: &Path,
    ) -> Result<(), CursorError> {
        if self.store_id != store_id {
            return Err(CursorError::OtherStore {
                path: path.to_path_buf(),
                cursor_store: self.store_id.clone(),
                store: store.location(),
                store_id: store_id.to_string(),
            });
        }
        let not_in_chain = |reason: String| CursorError::NotInChain {
            path: path.to_path_buf(),
            seq: self.seq,
            reason,
        };
        if self.seq < 0 {
            return Err(not_in_chain("a seq is never negative".into()));
        }
        // The cursor's event and the one after it.
        let near = store.scan((self.seq - 1).max(0), 2).await?;
        let first = near.first();
        match (self.seq, first) {
            (0, None) => Ok(()),
            (0, Some(event)) if event.seq == Some(1) => Ok(()),
            (0, Some(event)) => Err(not_in_chain(format!(
                "the store's oldest event is {} (retention removed the ones before it, \
                 undelivered)",
                event.seq.unwrap_or_default()
            ))),
            (_, None) => Err(not_in_chain(
                "the store has no event at or after it (the cursor is ahead of the store)".into(),
            )),
            (seq, Some(event)) if event.seq == Some(seq) => {
                if event.hash == self.hash {
                    Ok(())
                } else {
                    Err(not_in_chain(format!(
                        "the store's event {seq} has another hash ({})",
                        event.hash.as_deref().unwrap_or("none")
                    )))
                }
            }
            (seq, Some(event)) if event.seq == Some(seq + 1) => {
                // The cursor's own event was pruned after delivery: its
                // successor still names its hash.
                if event.prev_hash == self.hash {
                    Ok(())
                } else {
                    Err(not_in_chain(format!(
                        "the store's event {} does not follow an event of that hash",
                        seq + 1
                    )))
                }
            }
            (_, Some(event)) => Err(not_in_chain(format!(
                "the store's next event is {} (retention removed the ones between, undelivered)",
                event.seq.unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_cursors_load_back_and_leave_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = path(dir.path(), "siem");
        assert_eq!(Cursor::load(&path).expect("no file is no cursor"), None);
        let mut cursor = Cursor::start("abc");
        cursor.seq = 42;
        cursor.hash = Some("h".into());
        cursor.save(&path).expect("saved");
        cursor.seq = 43;
        cursor.save(&path).expect("replaced");
        assert_eq!(Cursor::load(&path).expect("read"), Some(cursor));
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["siem.cursor"]);
        fs::write(&path, b"{\"seq\": 3").expect("write");
        assert!(matches!(
            Cursor::load(&path),
            Err(CursorError::Malformed { .. })
        ));
    }

    #[test]
    fn cursors_live_beside_a_sqlite_store_or_in_the_state_dir() {
        assert_eq!(
            state_dir(None, "sqlite:/var/lib/pgtrail/trail.db").expect("beside"),
            PathBuf::from("/var/lib/pgtrail/trail.db.sinks")
        );
        assert_eq!(
            state_dir(Some("/s"), "postgres://h/db").expect("set"),
            PathBuf::from("/s")
        );
        assert!(state_dir(None, "postgres://h/db").is_err());
        assert!(valid_name("siem-1.a_b"));
        for bad in ["", ".hidden", "a/b", "../x", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
