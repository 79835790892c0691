//! `pgtrail install`: trigger capture and the store into one database.

use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_store::open::redact_url;
use pgtrail_triggers::install::install_sql;
use pgtrail_triggers::InstallOptions;

use crate::cli::InstallArgs;
use crate::output;
use crate::Invocation;

/// Runs `pgtrail install`.
pub async fn run(args: &InstallArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let options = InstallOptions {
        identity: ctx.config.identity.clone(),
        target_version: None,
    };
    if args.dry_run {
        output::line(&install_sql(&options))?;
        return Ok(crate::exit::ok());
    }
    let location = redact_url(&args.db);
    let report = pgtrail_triggers::install(&args.db, &options)
        .await
        .with_context(|| format!("cannot install pgtrail into {location}"))?;
    let what = if report.applied.is_empty() {
        format!(
            "pgtrail trigger capture is up to date (version {}) in {location}",
            report.to_version
        )
    } else {
        format!(
            "pgtrail trigger capture installed in {location}: version {} -> {} ({} migration(s){})",
            report.from_version,
            report.to_version,
            report.applied.len(),
            if report.regenerated > 0 {
                format!(", {} tracked table(s) regenerated", report.regenerated)
            } else {
                String::new()
            }
        )
    };
    output::line(&what)?;
    output::line("next: pgtrail track --db URL TABLE…   (or --all [--schema S] [--auto])")?;
    Ok(crate::exit::ok())
}
