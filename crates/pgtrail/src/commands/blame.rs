//! `pgtrail blame`.

use std::process::ExitCode;

use crate::cli::BlameArgs;
use crate::Context;

/// Runs `pgtrail blame`.
pub async fn run(_args: &BlameArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
