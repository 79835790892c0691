//! `pgtrail init`.

use std::process::ExitCode;

use crate::cli::InitArgs;
use crate::Context;

/// Runs `pgtrail init`.
pub async fn run(_args: &InitArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
