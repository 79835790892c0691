//! `pgtrail keygen`.

use std::process::ExitCode;

use crate::cli::KeygenArgs;
use crate::Context;

/// Runs `pgtrail keygen`.
pub async fn run(_args: &KeygenArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
