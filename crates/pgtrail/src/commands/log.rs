//! `pgtrail log`.

use std::process::ExitCode;

use crate::cli::LogArgs;
use crate::Context;

/// Runs `pgtrail log`.
pub async fn run(_args: &LogArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
