//! `pgtrail verify`.

use std::process::ExitCode;

use crate::cli::VerifyArgs;
use crate::Context;

/// Runs `pgtrail verify`.
pub async fn run(_args: &VerifyArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
