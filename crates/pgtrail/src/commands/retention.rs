//! `pgtrail retention`.

use std::process::ExitCode;

use crate::cli::RetentionArgs;
use crate::Context;

/// Runs `pgtrail retention`.
pub async fn run(_args: &RetentionArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
