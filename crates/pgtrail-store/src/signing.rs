//! Signing a checkpoint only over a chain that is consistent with what was
//! signed before.
//!
//! `pgtrail checkpoint`, the checkpointer of `pgtrail run` and retention all
//! go through [`check_chain`] before they sign or prune: it starts at the
//! newest checkpoint signed by a trusted key (resuming the Merkle tree from
//! the frontier stored with it), checks that every event since links and
//! hashes, that the tree's root at every trusted checkpoint's size is the
//! signed one, that `chain_head` is the last event, and that every
//! checkpoint in the witness is still in the store. Anything else is
//! [`SignError::Inconsistent`], and nothing is signed: tampering done while
//! pgtrail was stopped is refused, not covered by a fresh signature.
//!
//! The cost is the events since the last trusted checkpoint, not the whole
//! chain.

use std::collections::HashMap;
use std::path::Path;

use pgtrail_core::canonical::event_hash;
use pgtrail_core::GENESIS_HASH;

use crate::checkpoint::{origin, trusted_signer, NoteCheckpoint, TrustedKey};
use crate::merkle::{event_leaf, Frontier, Hash, Subtree, NODE_HEIGHT_STEP};
use crate::{Checkpoint, CheckpointKind, KeyPair, Store, StoreError};

/// How many events are read per round trip.
const PAGE: usize = 10_000;

/// Why nothing was signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain does not agree with what was signed before.
    #[error("refusing to sign {location}: {detail}")]
    Inconsistent {
        /// The store.
        location: String,
        /// What does not agree.
        detail: String,
    },
}

/// The chain as checked: its tree at the point asked for.
#[derive(Debug, Clone)]
pub struct CheckedChain {
    /// The checkpoints' origin for this store.
    pub origin: String,
    /// The last event's `seq` at the point asked for (the head, or `through`).
    pub seq: i64,
    /// The tree there; `None` in a store that retention pruned before signed
    /// notes (its prune checkpoint holds no tree): such a store goes on with
    /// checkpoints of the old format.
    pub frontier: Option<Frontier>,
    /// The hash of the event at that point (the genesis hash for none).
    pub hash: String,
    /// The newest trusted checkpoint's size, if any.
    pub newest_trusted: Option<i64>,
    /// The interior nodes for proofs (`merkle::NODE_HEIGHT_STEP`) that the
    /// walk completed, up to the point asked for: [`sign_head`] keeps them.
    pub nodes: Vec<(Subtree, Hash)>,
}

/// Checks `store` from its newest checkpoint signed by one of `trusted`
/// (and, with `witness`, against every checkpoint written there), up to its
/// head, and returns the tree at `through` (the head when `None`).
///
/// With `through` (retention) the check starts at the oldest stored event
/// instead, so every event about to be removed is checked, not only those
/// after the newest checkpoint.
///
/// With no trusted key at all, the newest prune checkpoint with a frontier
/// is where the check starts, signed or not: there is nothing better.
pub async fn check_chain(
    store: &dyn Store,
    trusted: &[TrustedKey],
    witness: Option<&Path>,
    through: Option<i64>,
) -> Result<CheckedChain, SignError> {
    let location = store.location();
    let refuse = |detail: String| SignError::Inconsistent {
        location: location.clone(),
        detail,
    };
    let Some(store_id) = store.store_id().await? else {
        return Err(refuse(
            "the store has no id (it predates signed notes): open it once with this pgtrail to upgrade it".into(),
        ));
    };
    let origin = origin(&store_id);
    // The head first: events appended while the check runs (capture goes
    // on beside the checkpointer) are after it, and left for next time.
    let head = store.head().await?;
    let checkpoints = store.checkpoints().await?;
    let first = store.scan(0, 1).await?.first().and_then(|e| e.seq);
    // Retention starts at the prune point before the oldest stored event.
    let start_at = |seq: i64| through.is_none() || first.is_some_and(|f| seq == f - 1);

    // What is known to be right: trusted checkpoints, and the witness.
    let mut pinned: HashMap<i64, Pin> = HashMap::new();
    let mut base: Option<(i64, String, Option<Frontier>)> = None;
    for checkpoint in &checkpoints {
        let trusted_here = !trusted.is_empty() && trusted_signer(checkpoint, trusted).is_ok();
        let note = match checkpoint.parsed_note() {
            Some(Ok(note)) if note.tree.origin == origin => Some(note),
            Some(Ok(_)) | Some(Err(_)) if trusted_here => {
                return Err(refuse(format!(
                    "the signed checkpoint at event {} does not belong to this store or does not match its note",
                    checkpoint.seq
                )))
            }
            _ => None,
        };
        let usable_unsigned = trusted.is_empty() && checkpoint.kind == CheckpointKind::Prune;
        if !trusted_here && !usable_unsigned {
            continue;
        }
        pinned.insert(
            checkpoint.seq,
            Pin {
                hash: checkpoint.hash.clone(),
                root: note.as_ref().map(|n| n.tree.root),
                what: describe(checkpoint),
            },
        );
        let frontier = note
            .as_ref()
            .and_then(|n| checkpoint.checked_frontier(n).ok())
            .or_else(|| {
                // An unsigned prune checkpoint has only its frontier.
                let text = checkpoint.frontier.as_deref()?;
                let size = u64::try_from(checkpoint.seq).ok()?;
                Frontier::decode(size, text).ok()
            });
        if let Some(frontier) = frontier.filter(|_| start_at(checkpoint.seq)) {
            if through.is_none_or(|t| checkpoint.seq <= t)
                && base
                    .as_ref()
                    .is_none_or(|(seq, _, _)| checkpoint.seq >= *seq)
            {
                base = Some((checkpoint.seq, checkpoint.hash.clone(), Some(frontier)));
            }
        }
    }
    // Pruned before signed notes: the old prune checkpoint gives the hash to
    // link to, but no tree.
    if base.is_none() {
        base = first
            .filter(|f| *f > 1)
            .and_then(|f| {
                checkpoints.iter().rev().find(|c| {
                    c.kind == CheckpointKind::Prune
                        && c.seq == f - 1
                        && c.note.is_none()
                        && (trusted.is_empty() || trusted_signer(c, trusted).is_ok())
                })
            })
            .map(|c| (c.seq, c.hash.clone(), None));
    }
    if let Some(path) = witness.filter(|p| p.exists()) {
        let file = crate::witness::read(path)?;
        if file.damaged > 0 {
            tracing::warn!(witness = %path.display(), damaged = file.damaged, "The witness has records that do not parse (a write torn by a crash, or an edit); they are ignored.");
        }
        for (text, note) in file.notes {
            let signed_by_trusted = trusted.is_empty()
                || trusted
                    .iter()
                    .any(|k| note.note.verify(&note.tree.origin, &k.key));
            if note.tree.origin != origin || !signed_by_trusted {
                continue;
            }
            if !checkpoints.iter().any(|c| c.note.as_deref() == Some(&text)) {
                return Err(refuse(format!(
                    "the store lacks the checkpoint at event {} made at {} that the witness {} recorded: its checkpoints were deleted or an older copy of the store was put back",
                    note.seq(),
                    pgtrail_core::time::format_micros(&note.created_at),
                    path.display()
                )));
            }
            pinned.entry(note.seq()).or_insert_with(|| Pin {
                hash: note.head_hash.clone(),
                root: Some(note.tree.root),
                what: format!("the witnessed checkpoint at event {}", note.seq()),
            });
        }
    }
    let newest_pinned = pinned.keys().max().copied();
    let newest_trusted = checkpoints
        .iter()
        .filter(|c| !trusted.is_empty() && trusted_signer(c, trusted).is_ok())
        .map(|c| c.seq)
        .max();

    // Where the walk starts.
    let (mut expected, mut prev_hash, mut frontier) = match base {
        Some((seq, hash, frontier)) => (seq + 1, hash, frontier),
        None => (1, GENESIS_HASH.to_string(), Some(Frontier::new())),
    };
    if let Some(first) = first.filter(|f| *f > expected) {
        return Err(refuse(if expected == 1 {
            format!(
                "events 1 to {} are missing and no trusted prune checkpoint says retention removed them",
                first - 1
            )
        } else {
            format!("events {expected} to {} are missing", first - 1)
        }));
    }

    let mut at_through = through
        .filter(|t| *t < expected)
        .map(|_| (frontier.clone(), prev_hash.clone()));
    let stop = match through {
        Some(t) => Some(t.max(newest_pinned.unwrap_or(0))),
        None => Some(head.as_ref().map_or(0, |h| h.seq)),
    };
    let mut after = expected - 1;
    let mut nodes = Vec::new();
    let stop_nodes = through;
    'walk: loop {
        let page = store.scan(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq.unwrap_or(after);
        for event in &page {
            let seq = event.seq.unwrap_or_default();
            if stop.is_some_and(|s| seq > s) {
                break 'walk;
            }
            let stored = event.hash.as_deref().unwrap_or_default();
            if seq != expected {
                return Err(refuse(format!(
                    "event {expected} is missing (the next stored event is {seq})"
                )));
            }
            if event_hash(event) != stored {
                return Err(refuse(format!(
                    "event {seq} (id {}) was modified: its content no longer matches its hash",
                    event.id
                )));
            }
            if event.prev_hash.as_deref() != Some(prev_hash.as_str()) {
                return Err(refuse(format!(
                    "event {seq} (id {}) does not link to event {}",
                    event.id,
                    seq - 1
                )));
            }
            let leaf = event_leaf(stored)
                .ok_or_else(|| refuse(format!("event {seq} has no valid hash")))?;
            if let Some(frontier) = frontier.as_mut() {
                frontier.push_seeing(leaf, |tree, hash| {
                    if tree.height % NODE_HEIGHT_STEP == 0 && stop_nodes.is_none_or(|s| seq <= s) {
                        nodes.push((tree, *hash));
                    }
                });
            }
            let root = frontier.as_ref().map(Frontier::root);
            if let Some(pin) = pinned.get(&seq) {
                if pin.hash != stored || pin.root.is_some_and(|r| root.is_some_and(|t| t != r)) {
                    return Err(refuse(format!(
                        "{} does not match the chain: events up to it were rewritten",
                        pin.what
                    )));
                }
            }
            prev_hash = stored.to_string();
            expected = seq + 1;
            if through == Some(seq) {
                at_through = Some((frontier.clone(), prev_hash.clone()));
            }
        }
    }
    let end = expected - 1;
    if let Some(newest) = newest_pinned.filter(|n| *n > end) {
        return Err(refuse(format!(
            "the chain ends at event {end}, but {} covers more: events were removed",
            pinned
                .get(&newest)
                .map_or("a checkpoint", |p| p.what.as_str())
        )));
    }
    if through.is_none() {
        let head_seq = head.as_ref().map_or(0, |h| h.seq);
        if head_seq != end || head.as_ref().is_some_and(|h| h.hash != prev_hash) {
            return Err(refuse(format!(
                "chain_head says event {head_seq}, but the chain ends at event {end}"
            )));
        }
    }
    let (frontier, hash) = match (through, at_through) {
        (None, _) => (frontier, prev_hash.clone()),
        (Some(_), Some(at)) => at,
        (Some(t), None) => {
            return Err(refuse(format!(
                "the chain ends at event {end}, before event {t}"
            )))
        }
    };
    Ok(CheckedChain {
        origin,
        seq: through.unwrap_or(end),
        frontier,
        hash,
        newest_trusted,
        nodes,
    })
}

/// A position whose hash (and root) is known from a trusted checkpoint or
/// the witness.
struct Pin {
    hash: String,
    root: Option<Hash>,
    what: String,
}

fn describe(checkpoint: &Checkpoint) -> String {
    format!(
        "the {} checkpoint at event {} ({})",
        checkpoint.kind.as_str(),
        checkpoint.seq,
        pgtrail_core::time::format_micros(&checkpoint.created_at)
    )
}

/// Who signs, which earlier checkpoints they trust, and where the witness is.
pub struct Signer<'a> {
    /// The signing key.
    pub key: &'a KeyPair,
    /// Keys whose checkpoints are trusted besides the signing key (a
    /// rotation's retired keys, with their limits).
    pub trusted: &'a [TrustedKey],
    /// The witness file, if one is kept.
    pub witness: Option<&'a Path>,
}

impl Signer<'_> {
    /// The signing key and the other trusted keys.
    pub fn all_trusted(&self) -> Vec<TrustedKey> {
        let own = self.key.verifying_key();
        let mut keys = vec![TrustedKey::current(own)];
        keys.extend(self.trusted.iter().filter(|k| k.key != own).cloned());
        keys
    }
}

/// What [`sign_head`] did.
#[derive(Debug)]
pub enum Signed {
    /// The store holds no event yet.
    Empty,
    /// The head is the one last signed with this key, and a new checkpoint
    /// was not asked for.
    Unchanged,
    /// A checkpoint of the head was signed, stored and witnessed.
    New(Checkpoint),
}

/// Checks the chain (see [`check_chain`]) and signs its head as a note,
/// stores it, then appends it to the witness. With `only_if_moved`, a head
/// already signed with this key is left alone; otherwise an unchanged head
/// is signed again (a heartbeat: a quiet period asserted, not assumed).
pub async fn sign_head(
    store: &dyn Store,
    signer: &Signer<'_>,
    only_if_moved: bool,
) -> Result<Signed, SignError> {
    let trusted = signer.all_trusted();
    let chain = check_chain(store, &trusted, signer.witness, None).await?;
    let size = chain.seq;
    if size == 0 {
        return Ok(Signed::Empty);
    }
    if only_if_moved {
        let own = [TrustedKey::current(signer.key.verifying_key())];
        let checkpoints = store.checkpoints().await?;
        if checkpoints
            .iter()
            .any(|c| c.seq == size && trusted_signer(c, &own).is_ok())
        {
            return Ok(Signed::Unchanged);
        }
    }
    let checkpoint = match &chain.frontier {
        Some(frontier) => Checkpoint::signed_note(
            CheckpointKind::Head,
            &chain.origin,
            frontier,
            &chain.hash,
            size,
            signer.key,
        ),
        // Pruned before notes: the old format, which the witness cannot hold.
        None => Checkpoint::new(CheckpointKind::Head, size, chain.hash, size).signed(signer.key),
    };
    // The nodes first: a checkpoint is never stored without the nodes its
    // proofs read (a crash between the two leaves nodes, which are kept
    // as they are and checked by verify).
    store.add_tree_nodes(&chain.nodes).await?;
    record(store, &checkpoint, signer.witness).await?;
    Ok(Signed::New(checkpoint))
}

/// Stores `checkpoint`, then appends it to the witness: in that order, so
/// the witness never holds a checkpoint the store never had.
pub async fn record(
    store: &dyn Store,
    checkpoint: &Checkpoint,
    witness: Option<&Path>,
) -> Result<(), StoreError> {
    store.add_checkpoint(checkpoint).await?;
    if let (Some(path), Some(note)) = (witness, checkpoint.note.as_deref()) {
        crate::witness::append(path, note)?;
    }
    Ok(())
}

/// The parsed note of `checkpoint` when it belongs to `origin`.
pub fn note_of(checkpoint: &Checkpoint, origin: &str) -> Option<NoteCheckpoint> {
    checkpoint
        .parsed_note()?
        .ok()
        .filter(|n| n.tree.origin == origin)
}
