//! Checks of each checkpoint: it matches the chain where it claims to, its
//! note's root is the Merkle tree's root at its size, and it carries a valid
//! signature by a trusted key; then the store as a whole against the
//! witness and the limits asked for.

use std::collections::{HashMap, HashSet};

use super::{Problem, ProblemKind, VerifyOptions, VerifyReport};
use crate::checkpoint::{trusted_signer, NoteCheckpoint, TrustedKey};
use crate::merkle::{event_leaf, Frontier, Hash, NODE_HEIGHT_STEP};
use crate::{Checkpoint, CheckpointKind};

/// The Merkle tree, grown while the chain is walked: its roots at the
/// sizes that checkpoints and the witness name, and the interior nodes it
/// completes at the heights the store keeps (`tree_nodes` holds the kept
/// ones to them). One frontier for both, so each leaf is hashed once.
pub(super) struct Tree {
    /// `None` when the walk starts at a prune checkpoint made before notes
    /// (no frontier): roots cannot be computed.
    frontier: Option<Frontier>,
    /// Leaves before the walk: nodes ending there cannot be checked.
    start: u64,
    wanted: HashSet<i64>,
    roots: HashMap<i64, Hash>,
    nodes: HashMap<(u32, u64), Hash>,
}

impl Tree {
    /// The tree where the walk starts: empty, or the frontier kept in the
    /// prune checkpoint `start`.
    pub(super) fn start(
        start: Option<&Checkpoint>,
        origin: Option<&str>,
        keys: &[TrustedKey],
        report: &mut VerifyReport,
    ) -> Tree {
        let frontier = match start {
            None => Some(Frontier::new()),
            Some(c) => {
                if keys.is_empty() {
                    report.unverified_prefix = Some(c.seq);
                }
                match c.parsed_note() {
                    Some(Ok(note)) if Some(note.tree.origin.as_str()) == origin => {
                        c.checked_frontier(&note).ok()
                    }
                    Some(_) => None,
                    None => c
                        .frontier
                        .as_deref()
                        .and_then(|text| Frontier::decode(u64::try_from(c.seq).ok()?, text).ok()),
                }
            }
        };
        let mut roots = HashMap::new();
        if let (Some(c), Some(f)) = (start, &frontier) {
            roots.insert(c.seq, f.root());
        }
        Tree {
            start: frontier.as_ref().map_or(0, Frontier::size),
            frontier,
            wanted: HashSet::new(),
            roots,
            nodes: HashMap::new(),
        }
    }

    /// The tree where an incremental walk resumes: `frontier`, checked
    /// against the remembered root (`consistency::resume`).
    pub(super) fn resumed(frontier: Frontier) -> Tree {
        let size = i64::try_from(frontier.size()).unwrap_or(i64::MAX);
        let roots = HashMap::from([(size, frontier.root())]);
        Tree {
            start: frontier.size(),
            frontier: Some(frontier),
            wanted: HashSet::new(),
            roots,
            nodes: HashMap::new(),
        }
    }

    /// Notes the sizes whose roots will be compared.
    pub(super) fn want(
        &mut self,
        checkpoints: &[Checkpoint],
        witness: Option<&[(String, NoteCheckpoint)]>,
    ) {
        self.wanted.extend(
            checkpoints
                .iter()
                .filter(|c| c.note.is_some())
                .map(|c| c.seq),
        );
        self.wanted
            .extend(witness.into_iter().flatten().map(|(_, n)| n.seq()));
    }

    /// Adds the event at `seq` with `hash` (hex).
    pub(super) fn push(&mut self, seq: i64, hash: &str) {
        let Some(frontier) = self.frontier.as_mut() else {
            return;
        };
        let nodes = &mut self.nodes;
        match event_leaf(hash) {
            Some(leaf) => frontier.push_seeing(leaf, |tree, hash| {
                if tree.height % NODE_HEIGHT_STEP == 0 {
                    nodes.insert((tree.height, tree.index()), *hash);
                }
            }),
            None => {
                // A broken hash is the chain check's to report; the tree
                // stops here so no root is claimed past it.
                self.frontier = None;
                return;
            }
        }
        if self.wanted.contains(&seq) {
            self.roots.insert(seq, frontier.root());
        }
    }

    /// Leaves before the walk, and leaves the tree holds now (`None` when
    /// it holds none: no node can be checked).
    pub(super) fn walked(&self) -> Option<(u64, u64)> {
        Some((self.start, self.frontier.as_ref()?.size()))
    }

    /// The node at `height`, `index` if the walk completed it.
    pub(super) fn node(&self, height: u32, index: u64) -> Option<&Hash> {
        self.nodes.get(&(height, index))
    }

    fn root_at(&self, seq: i64) -> Option<&Hash> {
        self.roots.get(&seq)
    }

    /// Whether the walk computed the root at `size` and it is `root`.
    pub(super) fn computed(&self, size: u64, root: &Hash) -> bool {
        i64::try_from(size)
            .ok()
            .and_then(|seq| self.root_at(seq))
            .is_some_and(|r| r == root)
    }
}

pub(super) fn check_checkpoint(
    checkpoint: &Checkpoint,
    seen: &HashMap<i64, String>,
    head_seq: i64,
    trusted: &[TrustedKey],
    tree: &Tree,
    origin: Option<&str>,
) -> Option<Problem> {
    let problem = |detail: String| {
        Some(Problem {
            kind: ProblemKind::Checkpoint,
            seq: checkpoint.seq,
            detail,
        })
    };
    let what = format!(
        "{} checkpoint at event {} ({})",
        checkpoint.kind.as_str(),
        checkpoint.seq,
        pgtrail_core::time::format_micros(&checkpoint.created_at)
    );
    if !trusted.is_empty() {
        if let Err(reason) = trusted_signer(checkpoint, trusted) {
            return problem(format!("{what}: {reason}"));
        }
    }
    if let Some(note) = checkpoint.parsed_note() {
        let note = match note {
            Ok(note) => note,
            Err(reason) => return problem(format!("{what}: {reason}")),
        };
        if Some(note.tree.origin.as_str()) != origin {
            return problem(format!(
                "{what} belongs to another store (origin '{}')",
                note.tree.origin
            ));
        }
        if let Some(root) = tree.root_at(checkpoint.seq) {
            if *root != note.tree.root {
                return problem(format!(
                    "{what}: the Merkle root of the chain at event {} is not the one signed (the chain was rewritten)",
                    checkpoint.seq
                ));
            }
        }
        if checkpoint.kind == CheckpointKind::Prune {
            if let Err(reason) = checkpoint.checked_frontier(&note) {
                return problem(format!("{what}: {reason}"));
            }
        }
    }
    if checkpoint.kind == CheckpointKind::Head {
        if checkpoint.seq > head_seq {
            return problem(format!(
                "{what}: the chain ends at event {head_seq}; events after it were removed"
            ));
        }
        match seen.get(&checkpoint.seq) {
            Some(hash) if hash.is_empty() => {
                return problem(format!("{what}: event {} is missing", checkpoint.seq))
            }
            Some(hash) if *hash != checkpoint.hash => {
                return problem(format!(
                    "{what}: event {} is not the event that was signed (the chain was rewritten)",
                    checkpoint.seq
                ))
            }
            _ => {}
        }
    }
    None
}

/// How much of the chain signatures cover: with keys, at least one
/// checkpoint must be signed by them; with a limit, at most that many
/// events may follow the newest signed checkpoint.
pub(super) fn check_coverage(
    checkpoints: &[Checkpoint],
    options: &VerifyOptions,
    report: &mut VerifyReport,
) {
    let signed = |c: &&Checkpoint| {
        if options.keys.is_empty() {
            c.is_signed()
        } else {
            trusted_signer(c, &options.keys).is_ok()
        }
    };
    report.newest_signed_seq = checkpoints.iter().filter(signed).map(|c| c.seq).max();
    report.unsigned_events = (report.head_seq - report.newest_signed_seq.unwrap_or(0)).max(0);
    if !options.keys.is_empty() && report.newest_signed_seq.is_none() && report.head_seq > 0 {
        report.problems.push(Problem {
            kind: ProblemKind::Unsigned,
            seq: report.head_seq,
            detail: "no checkpoint is signed by the given public key: nothing proves the chain is the one that was written (its checkpoints may have been deleted)".into(),
        });
    }
    if let Some(limit) = options.max_unsigned {
        if u64::try_from(report.unsigned_events).unwrap_or(0) > limit {
            report.problems.push(Problem {
                kind: ProblemKind::Unsigned,
                seq: report.head_seq,
                detail: format!(
                    "{} events follow the newest signed checkpoint ({}), more than the {limit} allowed",
                    report.unsigned_events,
                    report
                        .newest_signed_seq
                        .map_or("there is none".to_string(), |s| format!("at event {s}"))
                ),
            });
        }
    }
}

/// The store against the witness: every checkpoint of this store written
/// there must be in the store, unchanged, and the chain must still reach
/// and match it.
pub(super) fn check_witness(
    witness: &crate::witness::WitnessFile,
    checkpoints: &[Checkpoint],
    tree: &Tree,
    origin: Option<&str>,
    options: &VerifyOptions,
    report: &mut VerifyReport,
) {
    let mut push = |kind, seq, detail| {
        report.problems.push(Problem { kind, seq, detail });
    };
    if witness.damaged > 0 {
        push(
            ProblemKind::Witness,
            report.head_seq,
            format!(
                "the witness has {} record(s) that are not checkpoints: a write torn by a crash, or the witness was edited",
                witness.damaged
            ),
        );
    }
    let ours: Vec<&(String, NoteCheckpoint)> = witness
        .notes
        .iter()
        .filter(|(_, n)| Some(n.tree.origin.as_str()) == origin)
        .collect();
    let head_seq = report.head_seq;
    report.witnessed = Some(ours.len());
    if ours.is_empty() {
        push(
            ProblemKind::Witness,
            head_seq,
            format!(
                "the witness holds no checkpoint of this store ({}): it is another store's witness, or this store was replaced",
                origin.unwrap_or("a store without an id")
            ),
        );
        return;
    }
    let mut missing: Vec<&NoteCheckpoint> = Vec::new();
    for (text, note) in &ours {
        let seq = note.seq();
        let when = pgtrail_core::time::format_micros(&note.created_at);
        if !options.keys.is_empty()
            && !options.keys.iter().any(|k| {
                note.note.verify(&note.tree.origin, &k.key)
                    && k.through_seq.is_none_or(|t| seq <= t)
            })
        {
            push(
                ProblemKind::Witness,
                seq,
                format!("the witness's checkpoint at event {seq} ({when}) is not signed by a trusted key: the witness was written by someone else"),
            );
            continue;
        }
        if seq > head_seq {
            push(
                ProblemKind::Removed,
                seq,
                format!("the witness saw the chain at event {seq} ({when}), but the store ends at event {head_seq}: events were removed, or an older copy of the store was put back"),
            );
        } else if tree.root_at(seq).is_some_and(|r| *r != note.tree.root) {
            push(
                ProblemKind::Witness,
                seq,
                format!("the chain up to event {seq} is not the one the witness saw ({when}): it was rewritten"),
            );
        }
        if !checkpoints.iter().any(|c| c.note.as_deref() == Some(text)) {
            missing.push(note);
        }
    }
    if let Some(newest) = missing.last() {
        push(
            ProblemKind::Witness,
            newest.seq(),
            format!(
                "the store lacks {} checkpoint(s) the witness recorded, the newest at event {} ({}): checkpoints were deleted, or an older copy of the store was put back",
                missing.len(),
                newest.seq(),
                pgtrail_core::time::format_micros(&newest.created_at)
            ),
        );
    }
}
