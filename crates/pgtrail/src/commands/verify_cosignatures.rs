//! `pgtrail verify --witness-key VKEY [--min-cosignatures N]`: the newest
//! checkpoint must carry cosignatures of N of the given witness servers,
//! and every kept cosignature of theirs must verify. Printed after the
//! chain's report (to stderr when the output is a document, which keeps
//! its shape).

use anyhow::Context as _;
use pgtrail_store::cosignature::{self, WitnessKey};
use pgtrail_store::Store;

use crate::cli::VerifyArgs;

/// True when no witness key was given or the cosignatures hold.
pub async fn check(args: &VerifyArgs, store: &dyn Store) -> anyhow::Result<(bool, String)> {
    if args.witness_key.is_empty() {
        return Ok((true, String::new()));
    }
    let keys: Vec<WitnessKey> = args
        .witness_key
        .iter()
        .map(|k| WitnessKey::parse_vkey(k).context("--witness-key"))
        .collect::<anyhow::Result<_>>()?;
    let min = args.min_cosignatures.unwrap_or(1);
    if min > keys.len() {
        anyhow::bail!(
            "--min-cosignatures {min} is more than the {} --witness-key given",
            keys.len()
        );
    }
    let found = cosignature::check(store, &keys, min).await?;
    let mut out = String::new();
    if let Some(seq) = found.newest_seq {
        let names: Vec<String> = found
            .newest_cosigners
            .iter()
            .map(|(name, time)| format!("{name} at {}", time.to_rfc3339()))
            .collect();
        out.push_str(&format!(
            "witnesses: the newest checkpoint (event {seq}) is cosigned by {} of {} given{}{}; {} older checkpoint(s) cosigned\n",
            found.newest_cosigners.len(),
            keys.len(),
            if names.is_empty() { "" } else { ": " },
            names.join(", "),
            found.older_cosigned,
        ));
    }
    if found.problems.is_empty() {
        out.push_str(&format!(
            "OK: at least {min} witness(es) cosigned the newest checkpoint\n"
        ));
    } else {
        out.push_str(&format!(
            "FAILED: {} witness problem(s)\n",
            found.problems.len()
        ));
        for problem in &found.problems {
            out.push_str(&format!("  {problem}\n"));
        }
    }
    Ok((found.problems.is_empty(), out))
}

/// Prints [`check`]'s text after the report: on stdout beside a table,
/// on stderr beside a JSON document (which stays one document).
pub fn print(text: &str, output: &crate::output::Output) {
    if matches!(output.format, crate::output::Format::Table) {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
}
