//! `pgtrail export`.

use std::process::ExitCode;

use crate::cli::ExportArgs;
use crate::Context;

/// Runs `pgtrail export`.
pub async fn run(_args: &ExportArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
