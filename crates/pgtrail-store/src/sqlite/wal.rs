//! Copying the write-ahead log back into the database file, beside appends.
//!
//! In WAL mode a commit only appends to the `-wal` file (fsync'd: that is
//! what makes `append` durable). Later a WAL checkpoint copies those pages
//! into the main file and fsyncs it. SQLite does that inside whichever commit
//! crosses `wal_autocheckpoint`, so one append in a few pays for several.
//! Here a thread with its own connection runs a passive checkpoint after
//! appends, on the other core; the writer's own autocheckpoint stays as a
//! backstop (it then finds little left to copy, and lets the log restart).
//! Durability does not depend on this thread: the log is already on disk.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use rusqlite::Connection;

use crate::{Result, StoreError};

/// The checkpoint thread; stops when dropped.
pub struct WalCheckpointer {
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WalCheckpointer {
    /// Starts the thread with `conn`, a connection of its own to `path`.
    pub fn start(conn: Connection, path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        // Capacity 1: appends during a checkpoint coalesce into one more run.
        let (wake, woken) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("pgtrail-sqlite-wal".into())
            .spawn(move || run(&conn, &woken, &location))
            .map_err(|e| StoreError::Open {
                location: path.display().to_string(),
                reason: "cannot start the WAL checkpoint thread".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(WalCheckpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint soon (never blocks).
    pub fn nudge(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(()); // full: one is already pending
        }
    }
}

impl Drop for WalCheckpointer {
    fn drop(&mut self) {
        self.wake.take(); // the thread's receive fails and it returns
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, woken: &Receiver<()>, location: &str) {
    while woken.recv().is_ok() {
        // Passive: copies what it can without waiting for readers or the writer.
        if let Err(e) = conn.query_row("pragma wal_checkpoint(passive)", [], |_| Ok(())) {
            tracing::warn!(location, error = %e, "SQLite WAL checkpoint failed; the writer's autocheckpoint will retry");
        }
    }
}
