//! `pgtrail import`.

use std::process::ExitCode;

use crate::cli::ImportArgs;
use crate::Context;

/// Runs `pgtrail import`.
pub async fn run(_args: &ImportArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
