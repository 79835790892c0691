//! Retention: remove the oldest events, keep the chain provable.
//!
//! Events are removed as a prefix of the chain: every event up to the last
//! one that is older than the cutoff with nothing newer before it. Before
//! anything is removed, the events are optionally archived (gzip'd JSONL plus
//! a `.sha256` file) and a prune checkpoint records the last removed event's
//! hash, signed when a key is given, so `verify` can start from it.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use pgtrail_core::Event;
use sha2::{Digest, Sha256};

use crate::{Checkpoint, CheckpointKind, KeyPair, Result, Store, StoreError};

/// How far ahead Postgres partitions are created.
const PREPARE_AHEAD_DAYS: i64 = 92;
const PAGE: usize = 10_000;

/// What a retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetentionOutcome {
    /// Events older than the window, removed.
    pub removed: u64,
    /// The last removed event's `seq`, if any were removed.
    pub through_seq: Option<i64>,
    /// The archive written, if any.
    pub archive: Option<PathBuf>,
    /// Partitions created ahead.
    pub created_partitions: Vec<String>,
    /// Partitions dropped.
    pub dropped_partitions: Vec<String>,
}

/// Removes events captured before `now - keep`, archiving them into
/// `archive_dir` first when given, and signing the prune checkpoint with `key`.
pub async fn apply(
    store: &dyn Store,
    keep: Duration,
    now: DateTime<Utc>,
    archive_dir: Option<&Path>,
    key: Option<&KeyPair>,
) -> Result<RetentionOutcome> {
    // `now - keep` panics past chrono's range (about 262,000 years).
    let cutoff = now
        .checked_sub_signed(keep)
        .filter(|_| keep >= Duration::zero())
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "cannot keep events for {} days: the cut-off falls outside the calendar",
                keep.num_days()
            ))
        })?;
    let mut outcome = RetentionOutcome {
        created_partitions: store
            .prepare_until(now + Duration::days(PREPARE_AHEAD_DAYS))
            .await?,
        ..Default::default()
    };

    let start = store
        .checkpoints()
        .await?
        .iter()
        .filter(|c| c.kind == CheckpointKind::Prune)
        .map(|c| c.seq)
        .max()
        .unwrap_or(0);

    let mut archive = match archive_dir {
        Some(dir) => Some(Archive::create(dir, start + 1, now)?),
        None => None,
    };
    let mut last: Option<Event> = None;
    let mut removed = 0u64;
    let mut after = start;
    'scan: loop {
        let page = store.scan(after, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for event in page {
            if event.captured_at >= cutoff {
                break 'scan;
            }
            after = event.seq.unwrap_or(after);
            if let Some(archive) = archive.as_mut() {
                archive.write(&event)?;
            }
            removed += 1;
            last = Some(event);
        }
    }
    let Some(last) = last else {
        if let Some(archive) = archive {
            archive.discard();
        }
        return Ok(outcome);
    };
    let (through, hash) = (
        last.seq.unwrap_or_default(),
        last.hash.clone().unwrap_or_default(),
    );
    if let Some(archive) = archive {
        outcome.archive = Some(archive.finish(through)?);
    }
    let mut checkpoint = Checkpoint::new(CheckpointKind::Prune, through, hash, removed as i64);
    if let Some(key) = key {
        checkpoint = checkpoint.signed(key);
    }
    store.add_checkpoint(&checkpoint).await?;
    let pruned = store.prune(through).await?;
    outcome.removed = pruned.removed;
    outcome.through_seq = Some(through);
    outcome.dropped_partitions = pruned.dropped_partitions;
    Ok(outcome)
}

/// A gzip'd JSONL file being written, with its running SHA-256.
struct Archive {
    dir: PathBuf,
    temp: PathBuf,
    first: i64,
    writer: flate2::write::GzEncoder<std::fs::File>,
}

impl Archive {
    fn create(dir: &Path, first: i64, now: DateTime<Utc>) -> Result<Self> {
        let io = |e: std::io::Error| {
            StoreError::Invalid(format!("cannot write archive in {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let temp = dir.join(format!(
            ".pgtrail-archive-{}.partial",
            now.timestamp_micros()
        ));
        let file = std::fs::File::create(&temp).map_err(io)?;
        Ok(Archive {
            dir: dir.to_path_buf(),
            temp,
            first,
            writer: flate2::write::GzEncoder::new(file, flate2::Compression::default()),
        })
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let line = serde_json::to_vec(event).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.writer
            .write_all(&line)
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(|e| {
                StoreError::Invalid(format!("cannot write archive {}: {e}", self.temp.display()))
            })
    }

    /// Flushes, fsyncs, renames into place and writes the checksum file.
    fn finish(self, last: i64) -> Result<PathBuf> {
        let io = |e: std::io::Error| {
            StoreError::Invalid(format!(
                "cannot finish archive in {}: {e}",
                self.dir.display()
            ))
        };
        let file = self.writer.finish().map_err(io)?;
        file.sync_all().map_err(io)?;
        let name = format!("pgtrail-{:012}-{:012}.jsonl.gz", self.first, last);
        let path = self.dir.join(&name);
        std::fs::rename(&self.temp, &path).map_err(io)?;
        let digest = hex::encode(Sha256::digest(std::fs::read(&path).map_err(io)?));
        let sum = self.dir.join(format!("{name}.sha256"));
        std::fs::write(&sum, format!("{digest}  {name}\n")).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        Ok(path)
    }

    fn discard(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.temp);
    }
}
