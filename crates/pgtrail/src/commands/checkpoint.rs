//! `pgtrail checkpoint`.

use std::process::ExitCode;

use crate::cli::CheckpointArgs;
use crate::Context;

/// Runs `pgtrail checkpoint`.
pub async fn run(_args: &CheckpointArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
