//! `pgtrail serve`: the dashboard and the HTTP API (`pgtrail_server`) over
//! the configured store, until Ctrl-C.

use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_server::AppState;
use tokio::net::TcpListener;

use super::run::signal;
use super::Invocation;
use crate::cli::ServeArgs;

/// Where `serve` listens when neither the flag nor the config says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

pub async fn run(args: &ServeArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let listen = args
        .listen
        .clone()
        .or_else(|| ctx.config.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let store = ctx.open_existing_store().await?;
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    eprintln!("pgtrail serve: listening on http://{address}");
    let state = AppState::new(store, address.ip().is_loopback());
    pgtrail_server::serve(listener, state, signal()).await?;
    Ok(ExitCode::SUCCESS)
}
