//! `pgtrail serve`: the dashboard and the HTTP API (`pgtrail_server`) over
//! the configured store, until Ctrl-C; also a part of `pgtrail run` when
//! `[server] listen` is set.
//!
//! Off loopback, plain HTTP would carry tokens and session cookies in
//! clear: the server refuses to start so unless `--insecure-http` (or
//! `[server] insecure_http`) says the operator means it (a TLS-terminating
//! proxy in front, say).

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use pgtrail_core::config::ServerConfig;
use pgtrail_server::access_spool::{self, AccessSpool, DRAIN_ON_STOP};
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{AppState, ServerTls};
use pgtrail_store::Store;
use tokio::net::TcpListener;

use super::run::signal;
use super::token::tokens_path;
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
    // `/metrics`: what this process does (its reads, its verify runs).
    pgtrail_server::metrics::install()?;
    let access = access_spool(&listen, store.clone(), ctx)?;
    let part = server_part(&listen, args, store, access.clone(), ctx).await?;
    let served = part.run(signal()).await;
    access.finish(DRAIN_ON_STOP).await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `[server] access_spool_dir`, else `pgtrail-server-spool-<listen>` in
/// systemd's `$STATE_DIRECTORY`, else in the working directory: apart from
/// the proxy's spool, and one per address (two servers cannot listen on
/// one address, so they never want the same spool; a server that listens
/// there again drains what a crash left).
pub(crate) fn access_spool_dir(config: &ServerConfig, listen: &str) -> PathBuf {
    let address: String = listen
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '.' {
            true => c,
            false => '-',
        })
        .collect();
    super::state_dir(
        config.access_spool_dir.as_deref(),
        &format!("pgtrail-server-spool-{address}"),
    )
}

/// Opens the access spool of a server listening on `listen` and starts its
/// drainer into `store` (which first drains what a previous run left).
pub(crate) fn access_spool(
    listen: &str,
    store: Arc<dyn Store>,
    ctx: &Invocation,
) -> anyhow::Result<AccessSpool> {
    let dir = access_spool_dir(&ctx.config.server, listen);
    AccessSpool::open(&dir, access_spool::spool_options(), store).with_context(|| {
        format!(
            "cannot open the access spool {} ([server] access_spool_dir)",
            dir.display()
        )
    })
}

/// A bound, configured server, ready to run.
pub struct ServerPart {
    listener: TcpListener,
    address: std::net::SocketAddr,
    tls: Option<ServerTls>,
    state: AppState,
    /// Serves `/metrics` alone (`[metrics] listen`).
    metrics_only: bool,
}

impl ServerPart {
    /// Where it listens.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Serves `/metrics` and nothing else, under the same rules.
    pub fn metrics_only(mut self) -> Self {
        self.metrics_only = true;
        self
    }

    /// Serves until `stop` completes.
    pub async fn run(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), pgtrail_server::ServerError> {
        if self.metrics_only {
            return pgtrail_server::serve_metrics(self.listener, self.tls, self.state, stop).await;
        }
        match self.tls {
            Some(tls) => pgtrail_server::serve_tls(self.listener, tls, self.state, stop).await,
            None => pgtrail_server::serve(self.listener, self.state, stop).await,
        }
    }
}

/// Binds `listen` and loads what the server needs (TLS, the tokens file);
/// refuses plain HTTP off loopback unless asked for. Flags in `args`
/// override `[server]`. Reads are recorded into `access` (its caller
/// finishes it once the part stopped).
pub async fn server_part(
    listen: &str,
    args: &ServeArgs,
    store: Arc<dyn Store>,
    access: AccessSpool,
    ctx: &Invocation,
) -> anyhow::Result<ServerPart> {
    let config = &ctx.config.server;
    let cert = args
        .tls_cert
        .clone()
        .or_else(|| config.tls_cert.as_ref().map(PathBuf::from));
    let key = args
        .tls_key
        .clone()
        .or_else(|| config.tls_key.as_ref().map(PathBuf::from));
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(
            ServerTls::from_pem_files(&cert, &key)
                .context("cannot serve HTTPS ([server] tls_cert, tls_key)")?,
        ),
        (None, None) => None,
        _ => anyhow::bail!("[server] tls_cert and tls_key go together: set both or neither"),
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener
        .local_addr()
        .context("the listener has no address")?;
    let loopback = address.ip().is_loopback();
    if !loopback && tls.is_none() && !(args.insecure_http || config.insecure_http) {
        anyhow::bail!(
            "refusing to serve plain HTTP on {address}: tokens and session cookies would cross \
             the network in clear. Give a certificate (--tls-cert/--tls-key, [server] tls_cert/tls_key), \
             listen on loopback, or, behind a proxy that terminates TLS, pass --insecure-http"
        );
    }
    let tokens = tokens_path(ctx);
    let count = TokenSet::load(&tokens)
        .with_context(|| format!("cannot use the tokens file {}", tokens.display()))?
        .entries()
        .len();
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("pgtrail serve: listening on {scheme}://{address}");
    match (count, loopback) {
        (0, true) => eprintln!(
            "pgtrail serve: no tokens: requests are the local operator's (an auditor) \
             until `pgtrail token create` makes one"
        ),
        (0, false) => eprintln!(
            "pgtrail serve: no tokens in {}: nobody can get in until `pgtrail token create` makes one",
            tokens.display()
        ),
        (n, _) => eprintln!("pgtrail serve: {n} token(s) in {}", tokens.display()),
    }
    let mut state = AppState::new(store, loopback)
        .with_tokens_file(tokens)
        .with_access_spool(access);
    if let Some(probe) = super::capture_probe::ConfigProbe::from_config(&ctx.config) {
        state = state.with_capture_probe(Arc::new(probe));
    }
    Ok(ServerPart {
        listener,
        address,
        tls,
        state,
        metrics_only: false,
    })
}
