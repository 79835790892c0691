//! Retention: remove the oldest events, keep the chain provable.
//!
//! Events are removed as a prefix of the chain: every event up to the last
//! one that is older than the cutoff with nothing newer before it. Before
//! anything is removed, the chain is checked from the newest trusted
//! checkpoint (see `signing::check_chain`: retention never prunes, and never
//! signs, a prefix that does not agree with what was signed), the events are
//! optionally archived (gzip'd JSONL plus a `.sha256` file) and a prune
//! checkpoint records the last removed event's hash and the Merkle tree's
//! frontier there, so `verify` can start from it and later roots still
//! compute. With a key the prune checkpoint is a signed note (and goes to
//! the witness); without one it is unsigned, and `verify` says the removed
//! prefix is not proven. The Merkle tree's kept nodes (`crate::tree`) are
//! never removed: those over the events about to go are written first.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use pgtrail_core::Event;
use sha2::{Digest, Sha256};

use crate::checkpoint::TrustedKey;
use crate::signing::{check_chain, record, SignError};
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
/// The chain is checked first against the checkpoints signed by `key` or
/// one of `trusted`, and against the `witness`; nothing is removed when it
/// does not agree ([`SignError::Inconsistent`]).
pub async fn apply(
    store: &dyn Store,
    keep: Duration,
    now: DateTime<Utc>,
    archive_dir: Option<&Path>,
    key: Option<&KeyPair>,
    trusted: &[TrustedKey],
    witness: Option<&Path>,
) -> std::result::Result<RetentionOutcome, SignError> {
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

    // From the oldest event stored, not from the newest prune checkpoint:
    // a forged one must not make retention remove events it never archived.
    let Some(start) = store.scan(0, 1).await?.first().and_then(|e| e.seq) else {
        return Ok(outcome);
    };
    let start = start - 1;

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
    let through = last.seq.unwrap_or_default();
    let mut trusted = trusted.to_vec();
    if let Some(key) = key {
        trusted.insert(0, TrustedKey::current(key.verifying_key()));
    }
    let chain = match check_chain(store, &trusted, witness, Some(through)).await {
        Ok(chain) => chain,
        Err(e) => {
            if let Some(archive) = archive {
                archive.discard();
            }
            return Err(e);
        }
    };
    if let Some(archive) = archive {
        outcome.archive = Some(archive.finish(through)?);
    }
    let checkpoint = match (key, &chain.frontier) {
        (Some(key), Some(frontier)) => Checkpoint::signed_note(
            CheckpointKind::Prune,
            &chain.origin,
            frontier,
            &chain.hash,
            removed as i64,
            key,
        ),
        (key, frontier) => {
            // Unsigned, or in a store pruned before notes (no tree).
            let mut checkpoint =
                Checkpoint::new(CheckpointKind::Prune, through, chain.hash, removed as i64);
            checkpoint.frontier = frontier.as_ref().map(|f| f.encode());
            match key {
                Some(key) => checkpoint.signed(key),
                None => checkpoint,
            }
        }
    };
    // The interior nodes over the events about to go are kept first: once
    // their leaves are gone, they (and the prune checkpoint's frontier)
    // are all a proof of an older tree size can be made from.
    store.add_tree_nodes(&chain.nodes).await?;
    record(store, &checkpoint, witness).await?;
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

/// What [`check_archive`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArchiveReport {
    /// Events read from the archive.
    pub events_checked: u64,
    /// The first and last `seq` in it.
    pub first_seq: Option<i64>,
    /// The last one.
    pub last_seq: Option<i64>,
    /// Whether the prune checkpoint that vouches for it is signed by a
    /// trusted key (`false` without keys: not checked).
    pub signed: bool,
    /// What is wrong, one sentence each.
    pub problems: Vec<String>,
}

impl ArchiveReport {
    /// True when nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a retention archive (gzip'd JSONL) against `store`'s prune
/// checkpoints: its `.sha256` file, every event's hash and link, that it
/// starts where the previous prune (or the chain) started, and that the
/// Merkle root and last hash at its end are the ones its prune checkpoint
/// vouches for, signed by one of `trusted` when keys are given.
pub async fn check_archive(
    store: &dyn Store,
    path: &Path,
    trusted: &[TrustedKey],
) -> Result<ArchiveReport> {
    use std::io::BufRead;
    let mut report = ArchiveReport::default();
    let io = |e: std::io::Error| {
        StoreError::Invalid(format!("cannot read the archive {}: {e}", path.display()))
    };
    let bytes = std::fs::read(path).map_err(io)?;
    let sum_path = PathBuf::from(format!("{}.sha256", path.display()));
    match std::fs::read_to_string(&sum_path) {
        Ok(sum) => {
            let digest = hex::encode(Sha256::digest(&bytes));
            if sum.split_whitespace().next() != Some(digest.as_str()) {
                report.problems.push(format!(
                    "the archive's SHA-256 is not the one in {}",
                    sum_path.display()
                ));
            }
        }
        Err(_) => report.problems.push(format!(
            "its checksum file {} is missing",
            sum_path.display()
        )),
    }
    let checkpoints = store.checkpoints().await?;
    let origin = store
        .store_id()
        .await?
        .map(|id| crate::checkpoint::origin(&id));
    let prune_at = |seq: i64| {
        checkpoints
            .iter()
            .rev()
            .find(|c| c.kind == CheckpointKind::Prune && c.seq == seq)
    };
    let reader = std::io::BufReader::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut prev: Option<(i64, String)> = None;
    let mut frontier: Option<crate::merkle::Frontier> = None;
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        let event: Event = serde_json::from_str(&line).map_err(|e| {
            StoreError::Invalid(format!(
                "line {} of the archive is not an event: {e}",
                n + 1
            ))
        })?;
        let seq = event.seq.unwrap_or_default();
        let hash = event.hash.clone().unwrap_or_default();
        if prev.is_none() {
            report.first_seq = Some(seq);
            // Where it starts: the chain's beginning or the previous prune.
            let (start_hash, start_frontier) = if seq == 1 {
                (
                    pgtrail_core::GENESIS_HASH.to_string(),
                    Some(crate::merkle::Frontier::new()),
                )
            } else if let Some(c) = prune_at(seq - 1) {
                let frontier = match c.parsed_note() {
                    Some(Ok(note)) => c.checked_frontier(&note).ok(),
                    _ => None,
                };
                (c.hash.clone(), frontier)
            } else {
                report.problems.push(format!(
                    "it starts at event {seq}, and no prune checkpoint ends at event {}",
                    seq - 1
                ));
                (String::new(), None)
            };
            prev = Some((seq - 1, start_hash));
            frontier = start_frontier;
        }
        let Some((prev_seq, prev_hash)) = prev.as_ref() else {
            continue;
        };
        if seq != prev_seq + 1 {
            report
                .problems
                .push(format!("event {} is missing from it", prev_seq + 1));
            break;
        }
        if pgtrail_core::canonical::event_hash(&event) != hash {
            report.problems.push(format!(
                "event {seq} was modified: its content no longer matches its hash"
            ));
            break;
        }
        if !prev_hash.is_empty() && event.prev_hash.as_deref() != Some(prev_hash.as_str()) {
            report
                .problems
                .push(format!("event {seq} does not link to event {prev_seq}"));
            break;
        }
        if let Some(f) = frontier.as_mut() {
            match crate::merkle::event_leaf(&hash) {
                Some(leaf) => f.push(leaf),
                None => frontier = None,
            }
        }
        report.events_checked += 1;
        prev = Some((seq, hash));
    }
    if !report.ok() {
        return Ok(report);
    }
    let Some((last, last_hash)) = prev else {
        report.problems.push("it holds no event".into());
        return Ok(report);
    };
    report.last_seq = Some(last);
    let Some(checkpoint) = prune_at(last) else {
        report.problems.push(format!(
            "the store has no prune checkpoint at event {last}, where the archive ends"
        ));
        return Ok(report);
    };
    if checkpoint.hash != last_hash {
        report.problems.push(format!(
            "its last event is not the one the prune checkpoint at event {last} names"
        ));
    }
    if let Some(note) = checkpoint.parsed_note() {
        match note {
            Ok(note) if Some(&note.tree.origin) != origin.as_ref() => report
                .problems
                .push("its prune checkpoint belongs to another store".into()),
            Ok(note) => {
                if frontier.is_some_and(|f| f.root() != note.tree.root) {
                    report.problems.push(format!(
                        "the Merkle root of the archive's events is not the one the prune checkpoint at event {last} signed"
                    ));
                }
            }
            Err(reason) => report
                .problems
                .push(format!("its prune checkpoint: {reason}")),
        }
    }
    if !trusted.is_empty() {
        match crate::checkpoint::trusted_signer(checkpoint, trusted) {
            Ok(_) => report.signed = true,
            Err(reason) => report
                .problems
                .push(format!("its prune checkpoint at event {last}: {reason}")),
        }
    }
    Ok(report)
}
