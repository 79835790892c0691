//! `pgtrail verify`: walks the chain, the Merkle tree and the checkpoints
//! and reports the first event that was modified, removed, inserted or
//! reordered, every stored value readers use that disagrees with its event,
//! every checkpoint that does not hold, and where the store disagrees with
//! the witness. Exit 1 when anything is wrong, including when there is no
//! store to verify: the store is opened read-only and never created or
//! migrated. `--archive FILE` checks a retention archive instead.
//!
//! The verifier remembers the last checkpoint it found sound in a state
//! file of its own (`--state`, by default under the user's state
//! directory): the next run fails, naming a rollback or a fork, unless the
//! store extends it, and walks only the events after it (`--full` walks
//! them all). The store is never written.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_store::retention::ArchiveReport;
use pgtrail_store::verify::state::{self, VerifierState};
use pgtrail_store::{StoreError, TrustedKey, VerifyOptions, VerifyReport};

use super::checkpoint::{parse_trusted_key, trusted_keys, witness_path};
use crate::cli::VerifyArgs;
use crate::Invocation;

/// Runs `pgtrail verify`.
pub async fn run(args: &VerifyArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let keys: Vec<TrustedKey> = if args.public_key.is_empty() {
        trusted_keys(&ctx.config.signing)?
    } else {
        args.public_key
            .iter()
            .map(|entry| parse_trusted_key(entry))
            .collect::<anyhow::Result<_>>()?
    };
    let url = &ctx.config.store.url;
    if let Some(path) = crate::commands::missing_sqlite_file(url) {
        eprintln!("FAILED: no store at {path}: there is nothing to verify");
        return Ok(crate::exit::check_failed());
    }
    let store = match pgtrail_store::open_for_verify(url).await {
        Ok(store) => store,
        Err(e @ (StoreError::Url { .. } | StoreError::Backend { .. })) => return Err(e.into()),
        Err(e) => {
            // Nothing there to vouch for is a failed check, not a new store.
            eprintln!("FAILED: {:#}", anyhow::Error::from(e));
            return Ok(crate::exit::check_failed());
        }
    };
    let location = store.location();
    if let Some(archive) = &args.archive {
        let report =
            pgtrail_store::retention::check_archive(store.as_ref(), archive, &keys).await?;
        let name = archive.display().to_string();
        ctx.output
            .document(&report, || archive_text(&name, keys.len(), &report))?;
        return Ok(if report.ok() {
            crate::exit::ok()
        } else {
            crate::exit::check_failed()
        });
    }
    let state_path = if args.no_state {
        None
    } else if let Some(path) = &args.state {
        Some(path.clone())
    } else {
        match store.store_id().await? {
            Some(id) => state::default_path(&pgtrail_store::checkpoint::origin(&id)),
            // A store from before signed notes has no tree to remember.
            None => None,
        }
    };
    let remembered = match &state_path {
        Some(path) => VerifierState::load(path)?,
        None => None,
    };
    let options = VerifyOptions {
        keys,
        witness: witness_path(args.witness.as_deref(), &ctx.config.signing),
        max_unsigned: args.max_unsigned,
        remembered,
        full: args.full,
    };
    let report = pgtrail_store::verify_with(store.as_ref(), &options).await?;
    // Only a sound store is remembered; a failed run leaves the memory as
    // it was, so the next run is held to the same checkpoint.
    let mut saved = None;
    let (cosigned, witnesses) = super::verify_cosignatures::check(args, store.as_ref()).await?;
    if let (true, Some(path), Some(note)) =
        (report.ok() && cosigned, &state_path, &report.newest_note)
    {
        let state = VerifierState::of(note, chrono::Utc::now())
            .map_err(|e| anyhow::anyhow!("the newest checkpoint does not parse: {e}"))?;
        state.save(path).with_context(|| {
            format!(
                "cannot remember the verified checkpoint in {}",
                path.display()
            )
        })?;
        saved = Some((state.size, path.clone()));
    }
    ctx.output.document(&report, || {
        let mut out = text(&location, options.keys.len(), &report);
        if let Some((size, path)) = &saved {
            let _ = writeln!(
                out,
                "remembered: the checkpoint at event {size}, in {}",
                path.display()
            );
        }
        out
    })?;
    super::verify_cosignatures::print(&witnesses, &ctx.output);
    Ok(if report.ok() && cosigned {
        crate::exit::ok()
    } else {
        crate::exit::check_failed()
    })
}

fn text(location: &str, keys: usize, report: &VerifyReport) -> String {
    let mut out = String::new();
    let signatures = if keys > 0 {
        format!(", {} with a valid signature", report.checkpoints_signed)
    } else {
        " (signatures not checked: no public key given)".to_string()
    };
    let _ = writeln!(
        out,
        "{location}: checked {} events up to #{}, {} checkpoints{signatures}",
        report.events_checked, report.head_seq, report.checkpoints
    );
    if let Some(size) = report.remembered_size {
        let _ = match report.resumed_after {
            Some(after) => writeln!(
                out,
                "resumed after event {after}, the checkpoint this verifier saw sound before: events up to it were checked then and are not read again (--full walks them all)"
            ),
            None => writeln!(
                out,
                "checked against the checkpoint at event {size} this verifier saw sound before"
            ),
        };
    }
    if let Some(witnessed) = report.witnessed {
        let _ = writeln!(out, "witness: {witnessed} checkpoints of this store");
    }
    if report.unsigned_events > 0 {
        let _ = writeln!(
            out,
            "{} events after the newest signed checkpoint are not covered by a signature",
            report.unsigned_events
        );
    }
    if let Some(prefix) = report.unverified_prefix {
        let _ = writeln!(
            out,
            "warning: events 1 to {prefix} were removed under a prune checkpoint whose signature was not checked: their removal is not proven (pass --public-key)"
        );
    }
    if report.ok() {
        out.push_str("OK: the chain is intact\n");
    } else {
        let _ = writeln!(out, "FAILED: {} problem(s)", report.problems.len());
        for problem in &report.problems {
            let _ = writeln!(out, "  event {}: {}", problem.seq, problem.detail);
        }
    }
    out
}

fn archive_text(name: &str, keys: usize, report: &ArchiveReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: checked {} events ({} to {}){}",
        report.events_checked,
        report.first_seq.map_or("-".into(), |s| s.to_string()),
        report.last_seq.map_or("-".into(), |s| s.to_string()),
        if keys == 0 {
            " (signature not checked: no public key given)"
        } else {
            ""
        }
    );
    if report.ok() {
        out.push_str("OK: the archive is what its prune checkpoint vouches for\n");
    } else {
        let _ = writeln!(out, "FAILED: {} problem(s)", report.problems.len());
        for problem in &report.problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    out
}
