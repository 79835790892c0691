//! `pgtrail proxy`: the statement proxy in front of a server, its events
//! through a spool into the store (`pgtrail_pipeline::proxy`). `pgtrail
//! run` runs the same part when `[proxy] listen` is set.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use pgtrail_core::config::{Durability, ProxyConfig};
use pgtrail_pipeline::proxy::{audit_off, spool_options, ProxyPart};
use pgtrail_pipeline::spool::Spool;
use pgtrail_proxy::{ClientTls, Upstream};
use pgtrail_store::open::redact_url;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::run::signal;
use super::Invocation;
use crate::cli::ProxyArgs;

pub async fn run(args: &ProxyArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let mut config = ctx.config.proxy.clone();
    if let Some(listen) = &args.listen {
        config.listen = Some(listen.clone());
    }
    if let Some(upstream) = &args.upstream {
        config.upstream = Some(upstream.clone());
    }
    if let Some(durability) = &args.durability {
        config.durability = match durability.as_str() {
            "strict" => Durability::Strict,
            _ => Durability::Async,
        };
    }
    if !args.log.is_empty() {
        config.log = args.log.clone();
    }
    if let Some(dir) = &args.spool_dir {
        config.spool_dir = Some(dir.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls_cert = Some(cert.display().to_string());
        config.tls_key = Some(key.display().to_string());
    }
    config.require_tls |= args.require_tls;
    let part = proxy_part(&config, ctx).await?;
    let (stop_tx, stop) = watch::channel(false);
    let mut task = tokio::spawn(pgtrail_pipeline::proxy::run(part, stop));
    tokio::select! {
        () = signal() => {
            eprintln!("pgtrail proxy: stopping: no new clients; sessions end once their events are in the spool, which then drains (Ctrl-C again to quit at once)");
            let _ = stop_tx.send(true);
        }
        result = &mut task => {
            result.context("the proxy stopped")??;
            anyhow::bail!("the proxy stopped without being asked to");
        }
    }
    tokio::select! {
        result = &mut task => result.context("the proxy stopped")??,
        () = signal() => anyhow::bail!("interrupted twice: quit without waiting (events in the spool drain at the next start)"),
    }
    eprintln!("pgtrail proxy: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Binds the listener and opens the spool `config` names, and says so on
/// stderr (`pgtrail proxy: listening on ADDR`, which scripts wait for).
pub(crate) async fn proxy_part(
    config: &ProxyConfig,
    ctx: &Invocation,
) -> anyhow::Result<ProxyPart> {
    let listen = config
        .listen
        .as_deref()
        .context("no address to listen on: --listen or [proxy] listen")?;
    let upstream_url = config
        .upstream
        .as_deref()
        .context("no server to proxy to: --upstream or [proxy] upstream")?;
    let upstream = Upstream::parse(upstream_url).context("invalid upstream URL")?;
    let upstream = client_tls(upstream, config)?;
    let spool = if audit_off(config) {
        eprintln!("pgtrail proxy: audit off (log = none): forwarding only, nothing recorded");
        None
    } else {
        let dir = spool_dir(config);
        let spool = Spool::open(&dir, spool_options(config))
            .with_context(|| format!("cannot open the proxy's spool {}", dir.display()))?;
        let waiting = spool.waiting();
        eprintln!(
            "pgtrail proxy: recording into {} through the spool {} ({} batches waiting; durability {}, when full {})",
            redact_url(&ctx.config.store.url),
            dir.display(),
            waiting.batches,
            match config.durability {
                Durability::Async => "async",
                Durability::Strict => "strict",
            },
            match config.when_full {
                pgtrail_core::config::WhenTrailFull::FailClosed => "fail_closed",
                pgtrail_core::config::WhenTrailFull::FailOpen => "fail_open",
            },
        );
        Some(spool)
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr().context("listening address")?;
    eprintln!("pgtrail proxy: listening on {address}");
    Ok(ProxyPart {
        listener,
        upstream,
        proxy: config.clone(),
        identity: ctx.config.identity.clone(),
        spool,
        store_url: ctx.config.store.url.clone(),
        backends: None,
    })
}

/// TLS toward clients: `[proxy] tls_cert`, `tls_key`, `require_tls` (the
/// flags of `pgtrail proxy` land there first).
fn client_tls(upstream: Upstream, config: &ProxyConfig) -> anyhow::Result<Upstream> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        anyhow::ensure!(
            !config.require_tls,
            "--require-tls needs a certificate: --tls-cert and --tls-key (or [proxy] tls_cert and tls_key)"
        );
        return Ok(upstream);
    };
    let tls = ClientTls::from_pem_files(Path::new(cert), Path::new(key))
        .context("cannot use the proxy's TLS certificate")?;
    Ok(upstream
        .with_client_tls(tls)
        .require_tls(config.require_tls))
}

/// `[proxy] spool_dir`, else `pgtrail-proxy-spool` in systemd's
/// `$STATE_DIRECTORY`, else in the working directory.
pub(crate) fn spool_dir(config: &ProxyConfig) -> PathBuf {
    super::state_dir(config.spool_dir.as_deref(), "pgtrail-proxy-spool")
}
