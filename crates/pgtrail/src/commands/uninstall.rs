//! `pgtrail uninstall`: remove trigger capture, keeping the trail by default.

use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_store::open::redact_url;
use pgtrail_triggers::install::uninstall_sql;

use crate::cli::UninstallArgs;
use crate::output;
use crate::Invocation;

/// Runs `pgtrail uninstall`.
pub async fn run(args: &UninstallArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        output::line(&uninstall_sql(args.drop_data))?;
        return Ok(crate::exit::ok());
    }
    let location = redact_url(&args.db);
    pgtrail_triggers::uninstall(&args.db, args.drop_data)
        .await
        .with_context(|| format!("cannot uninstall pgtrail from {location}"))?;
    if args.drop_data {
        output::line(&format!(
            "pgtrail removed from {location}, with its trail (schema pgtrail dropped)"
        ))?;
    } else {
        output::line(&format!(
            "pgtrail trigger capture removed from {location}; pending changes were sealed and the trail \
             (schema pgtrail) is kept"
        ))?;
    }
    Ok(crate::exit::ok())
}
