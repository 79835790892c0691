//! `pgtrail history`.

use std::process::ExitCode;

use crate::cli::HistoryArgs;
use crate::Context;

/// Runs `pgtrail history`.
pub async fn run(_args: &HistoryArgs, _ctx: &Context) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
