//! `pgtrail as-of`.

use std::process::ExitCode;

use crate::cli::AsOfArgs;
use crate::Context;

/// Runs `pgtrail as-of`.
pub async fn run(_args: &AsOfArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
