//! `pgtrail consistency OLD [NEW]` prints the proof that the log at the new
//! checkpoint extends the old one, so anyone holding the old checkpoint can
//! check that today's log only grew; `pgtrail verify-consistency` checks
//! such a proof offline, with no store, against the old checkpoint and the
//! public key.
//!
//! The proof's text is the body of C2SP tlog-witness's `add-checkpoint`
//! request: a line `old <size>`, one base64 hash per line, an empty line,
//! then the new checkpoint's signed note (see docs/proofs.md, "File
//! formats").

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_store::checkpoint::{load_public_key, NoteCheckpoint};
use pgtrail_store::merkle::verify_consistency;
use pgtrail_store::verify::consistency::ConsistencyProof;
use pgtrail_store::{CheckpointKind, StoreError};
use serde::Serialize;

use crate::cli::{ConsistencyArgs, VerifyConsistencyArgs};
use crate::Invocation;

/// Runs `pgtrail consistency`.
pub async fn run(args: &ConsistencyArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let url = &ctx.config.store.url;
    if let Some(path) = crate::commands::missing_sqlite_file(url) {
        anyhow::bail!("no store at {path}");
    }
    let store = pgtrail_store::open_for_verify(url).await?;
    let origin = store
        .store_id()
        .await?
        .map(|id| pgtrail_store::checkpoint::origin(&id))
        .context("the store has no id (made before signed notes): it has no tree to prove")?;
    let checkpoints = store.checkpoints().await?;
    let notes: Vec<(String, NoteCheckpoint)> = checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Head)
        .filter_map(|c| {
            let text = c.note.clone()?;
            let parsed = c.parsed_note()?.ok()?;
            Some((text, parsed))
        })
        .filter(|(_, n)| n.tree.origin == origin)
        .collect();
    let at = |size: u64| {
        notes
            .iter()
            .rev()
            .find(|(_, n)| n.tree.size == size)
            .with_context(|| format!("the store has no signed head checkpoint of size {size}"))
    };
    let old: NoteCheckpoint = match args.old.parse::<u64>() {
        Ok(size) => at(size)?.1.clone(),
        Err(_) => {
            let text = std::fs::read_to_string(&args.old)
                .with_context(|| format!("cannot read the old checkpoint {}", args.old))?;
            let old = NoteCheckpoint::parse(&text)
                .map_err(|e| anyhow::anyhow!("{} is not a checkpoint: {e}", args.old))?;
            anyhow::ensure!(
                old.tree.origin == origin,
                "{} is a checkpoint of '{}', not of this store ('{origin}')",
                args.old,
                old.tree.origin
            );
            old
        }
    };
    let (note, new) = match args.new {
        Some(size) => at(size)?.clone(),
        None => notes
            .iter()
            .max_by_key(|(_, n)| n.tree.size)
            .cloned()
            .context("the store has no signed head checkpoint")?,
    };
    let hashes =
        match pgtrail_store::proof::consistency(store.as_ref(), old.tree.size, new.tree.size).await
        {
            Ok(hashes) => hashes,
            Err(StoreError::Invalid(reason)) => {
                eprintln!(
                    "FAILED: no proof from {} to {} entries: {reason}",
                    old.tree.size, new.tree.size
                );
                return Ok(crate::exit::check_failed());
            }
            Err(e) => return Err(e.into()),
        };
    // A proof that does not hold is not handed out: this store does not
    // extend the old checkpoint, which is the finding.
    if let Err(e) = verify_consistency(
        old.tree.size,
        new.tree.size,
        &old.tree.root,
        &new.tree.root,
        &hashes,
    ) {
        eprintln!(
            "FAILED: the checkpoint at {} ({}) does not extend the one at {} ({}): {}",
            new.tree.size,
            time(&new),
            old.tree.size,
            time(&old),
            e.0
        );
        return Ok(crate::exit::check_failed());
    }
    let proof = ConsistencyProof {
        old: old.tree.size,
        hashes,
        note,
    };
    print!("{}", proof.to_text());
    Ok(crate::exit::ok())
}

/// What `verify-consistency` found.
#[derive(Debug, Serialize)]
struct Checked {
    ok: bool,
    origin: Option<String>,
    old_size: Option<u64>,
    new_size: Option<u64>,
    problem: Option<String>,
}

/// Runs `pgtrail verify-consistency`.
pub async fn check(args: &VerifyConsistencyArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let keys = args
        .public_key
        .iter()
        .map(|path| load_public_key(path))
        .collect::<Result<Vec<_>, _>>()?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the proof {}", args.file.display()))?;
    let old_text = std::fs::read_to_string(&args.old)
        .with_context(|| format!("cannot read the old checkpoint {}", args.old.display()))?;
    let outcome = ConsistencyProof::check(&text, &old_text, &keys);
    let report = match &outcome {
        Ok((old, new)) => Checked {
            ok: true,
            origin: Some(new.tree.origin.clone()),
            old_size: Some(old.tree.size),
            new_size: Some(new.tree.size),
            problem: None,
        },
        Err(problem) => Checked {
            ok: false,
            origin: None,
            old_size: None,
            new_size: None,
            problem: Some(problem.clone()),
        },
    };
    ctx.output.document(&report, || {
        let mut out = String::new();
        match &outcome {
            Ok((old, new)) => {
                let _ = writeln!(
                    out,
                    "OK: the log {} at {} entries (checkpoint of {}) extends the checkpoint at {} entries ({}): its first {} entries are unchanged, both checkpoints are signed by the key",
                    new.tree.origin,
                    new.tree.size,
                    time(new),
                    old.tree.size,
                    time(old),
                    old.tree.size
                );
            }
            Err(problem) => {
                let _ = writeln!(out, "FAILED: {problem}");
            }
        }
        out
    })?;
    Ok(if outcome.is_ok() {
        crate::exit::ok()
    } else {
        crate::exit::check_failed()
    })
}

fn time(note: &NoteCheckpoint) -> String {
    pgtrail_core::time::format_micros(&note.created_at)
}
