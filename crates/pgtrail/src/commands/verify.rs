//! `pgtrail verify`: walks the chain and the checkpoints and reports the
//! first event that was modified, removed, inserted or reordered, every
//! stored value readers use that disagrees with its event, and every
//! checkpoint that does not hold. Exit 1 when anything is wrong, including
//! when there is no store to verify: the store is opened read-only and never
//! created or migrated.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use pgtrail_store::checkpoint::load_public_key;
use pgtrail_store::{StoreError, VerifyReport};

use crate::cli::VerifyArgs;
use crate::Context;

/// Runs `pgtrail verify`.
pub async fn run(args: &VerifyArgs, ctx: &Context) -> anyhow::Result<ExitCode> {
    let key_paths: Vec<PathBuf> = if args.public_key.is_empty() {
        let signing = &ctx.config.signing;
        signing
            .public_key
            .iter()
            .chain(&signing.previous_public_keys)
            .map(PathBuf::from)
            .collect()
    } else {
        args.public_key.clone()
    };
    let keys = key_paths
        .iter()
        .map(|path| load_public_key(path))
        .collect::<Result<Vec<_>, _>>()?;
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
            let mut message = format!("FAILED: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(inner) = cause {
                let _ = write!(message, ": {inner}");
                cause = inner.source();
            }
            eprintln!("{message}");
            return Ok(crate::exit::check_failed());
        }
    };
    let report = pgtrail_store::verify_with_keys(store.as_ref(), &keys).await?;
    let location = store.location();
    ctx.output
        .document(&report, || text(&location, keys.len(), &report))?;
    Ok(if report.ok() {
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
