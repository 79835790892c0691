//! `pgtrail run`: the one long-running process.
//!
//! It runs each configured part as its own task, side by side, until Ctrl-C
//! or SIGTERM: draining trigger capture's inbox (`drain::drain_part`),
//! streaming logical replication into the store
//! (`replicate::replication_part`) and, with `[proxy] listen`, the
//! statement proxy (`pgtrail_pipeline::proxy`, through its spool into
//! `[store] url`) and, with `[server] listen`, the dashboard and HTTP API
//! (`serve::server_part`), which serves `/metrics` too; with `[metrics]
//! listen` and no server, a listener for `/metrics` alone (docs/metrics.md).
//! Each part
//! retries by itself what may pass — a database restarting, a store outage
//! — and says so in the log, so a problem in one never pauses the other.
//!
//! A part that fails for good (an operator must act: a dropped slot, lost
//! privileges) stops the others cleanly (`pgtrail_pipeline::supervise`)
//! and the process exits with status 2. Keeping the rest running would
//! leave that capture path silently dead behind a process that looks
//! healthy; exiting hands the decision to the service manager (systemd's
//! `Restart=on-failure`) and to whoever reads its log.
//!
//! Stopping is graceful: the stop signal reaches every part through one
//! `watch` channel; the drain runs once more, the consumer stores and
//! confirms the batch in hand. A second Ctrl-C exits at once, which loses
//! nothing either: the slot and the inbox keep whatever was not confirmed.
//!
//! Beside them, `alarms.rs` watches both paths for what leaves the trail
//! incomplete (a capture trigger dropped, the slot lost, …) and records
//! each condition once, as an `alarm` event.
//!
//! Each `[[sinks]]` entry runs as its own part (`pgtrail_sink::runner`):
//! it only reads its store after its cursor, so capture never waits for
//! it, and a sink that fails keeps retrying (stalled, logged, its lag in
//! `status`) without stopping the others.
//!
//! With a private key, `pgtrail_pipeline::checkpointer` signs the head of
//! each store the parts write to; it stops last, so its final checkpoint
//! covers their final events. A key that is named but cannot be read stops
//! `run` before anything starts: running on unsigned after an operator asked
//! for signatures would hide exactly what they wanted to catch.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_pipeline::checkpointer::{Checkpointer, Keys, Target};
use pgtrail_pipeline::supervise::{PartError, PartFailure, Supervisor};
use pgtrail_store::open::redact_url;

use super::alarms::{watch_part, ReplicationTarget, Watch};
use super::checkpoint::{signing_key, trusted_keys, witness_path, witness_servers};
use super::drain::{drain_part, DrainPart};
use super::replicate::{replication_options, replication_part, ReplicationPart};
use crate::cli::RunArgs;
use crate::Invocation;

/// Runs `pgtrail run`.
pub async fn run(args: &RunArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let drain_db = args.db.as_deref().or(ctx.config.triggers.db.as_deref());
    let replication_db = args
        .replication_db
        .as_deref()
        .or(ctx.config.replication.db.as_deref());
    let proxy = ctx.config.proxy.listen.is_some();
    let server = ctx.config.server.listen.clone();
    let sinks = &ctx.config.sinks;
    if drain_db.is_none()
        && replication_db.is_none()
        && !proxy
        && server.is_none()
        && sinks.is_empty()
    {
        anyhow::bail!(
            "nothing to run: name the database to drain (--db, PGTRAIL_DB or [triggers] db), \
             the one to capture by logical replication (--replication-db or [replication] db), \
             the proxy's address ([proxy] listen), the dashboard's ([server] listen) \
             and/or [[sinks]]"
        );
    }
    // Every sink checked and opened before anything starts: a typo is an
    // error now, not a sink that silently never delivers.
    let sink_runners = pgtrail_sink::open::runners(sinks, &ctx.config.store.url).await?;
    let replication = match replication_db {
        Some(db) => Some(ReplicationPart {
            connect: ConnectOptions::parse(db).context("invalid replication database URL")?,
            options: replication_options(
                &args.replication,
                &ctx.config.replication,
                &ctx.config.identity,
            )?,
        }),
        None => None,
    };
    let drain = drain_db.map(|db| DrainPart {
        db: db.to_string(),
        interval: Duration::from_millis(
            args.interval_ms
                .unwrap_or(ctx.config.triggers.drain_interval_ms)
                .max(1),
        ),
        alone: replication.is_none(),
    });
    // Every store written to: the drained database's own, and [store] url.
    let targets = drain
        .iter()
        .map(|part| Target::InDatabase(part.db.clone()))
        .chain(
            replication
                .iter()
                .map(|_| Target::Url(ctx.config.store.url.clone())),
        )
        .chain((proxy && replication.is_none()).then(|| Target::Url(ctx.config.store.url.clone())))
        .collect();
    // Before any part looks its metrics up (docs/metrics.md).
    pgtrail_server::metrics::install()?;
    let checkpointer = start_checkpointer(args, targets, ctx).await?;

    let alarm_watch = Watch {
        drain_db: drain.as_ref().map(|part| part.db.clone()),
        replication: replication.as_ref().map(|part| ReplicationTarget {
            connect: part.connect.clone(),
            slot: part.options.slot.clone(),
            publication: part.options.publication.clone(),
        }),
    };

    // Bound before anything starts: a port in use stops `run` at once.
    let mut proxy_part = match proxy {
        true => Some(super::proxy::proxy_part(&ctx.config.proxy, ctx).await?),
        false => None,
    };
    // One store and one access spool (apart from the proxy's) for the
    // dashboard and the `/metrics` listener, the spool named after the
    // first; finished once they stopped.
    let served = match server.as_ref().or(ctx.config.metrics.listen.as_ref()) {
        Some(listen) => {
            let store = ctx.open_store().await?;
            let access = super::serve::access_spool(listen, store.clone(), ctx)?;
            Some((store, access))
        }
        None => None,
    };
    let flags = crate::cli::ServeArgs {
        listen: None,
        tls_cert: None,
        tls_key: None,
        insecure_http: false,
    };
    let server_part = match (&server, &served) {
        (Some(listen), Some((store, access))) => Some(
            super::serve::server_part(listen, &flags, store.clone(), access.clone(), ctx).await?,
        ),
        _ => None,
    };
    // `/metrics` on its own listener (the server's serves it too).
    let metrics_part = match (&ctx.config.metrics.listen, &served) {
        (Some(listen), Some((store, access))) => {
            let part =
                super::serve::server_part(listen, &flags, store.clone(), access.clone(), ctx)
                    .await
                    .context("[metrics] listen")?
                    .metrics_only();
            eprintln!("metrics: serving /metrics on {}", part.address());
            Some(part)
        }
        _ => None,
    };
    // The proxy and trigger capture both on: a row change from a backend
    // the proxy never opened is a write around it (pgtrail_pipeline::bypass).
    let bypass = match (&mut proxy_part, &drain) {
        (Some(proxy), Some(drain)) if ctx.config.proxy.bypass_alarm => {
            let backends = pgtrail_pipeline::bypass::Backends::new();
            proxy.backends = Some(backends.clone());
            Some(pgtrail_pipeline::bypass::BypassWatch {
                store_url: drain.db.clone(),
                backends,
                roles: ctx.config.proxy.bypass_roles.clone(),
                skew: pgtrail_store::link::default_skew(),
                interval: drain.interval,
            })
        }
        _ => None,
    };

    let mut parts = Supervisor::<anyhow::Error>::new();
    let stop = parts.stop_signal();
    let stop_tx = parts.stopper();
    if let Some(part) = proxy_part {
        let stop = stop.clone();
        parts.spawn("proxy", async move {
            pgtrail_pipeline::proxy::run(part, stop)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(part) = server_part {
        let mut stop = stop.clone();
        parts.spawn("dashboard", async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            part.run(stopped).await.map_err(anyhow::Error::from)
        });
    }
    if let Some(part) = metrics_part {
        let mut stop = stop.clone();
        parts.spawn("metrics", async move {
            let stopped = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            part.run(stopped).await.map_err(anyhow::Error::from)
        });
    }
    if let Some(part) = drain {
        eprintln!(
            "draining trigger capture of {} every {} ms",
            redact_url(&part.db),
            part.interval.as_millis()
        );
        parts.spawn("draining", drain_part(part, stop.clone()));
    }
    if let Some(part) = replication {
        eprintln!(
            "capturing database '{}' (slot '{}', publication '{}') into {}",
            part.connect.dbname(),
            part.options.slot,
            part.options.publication,
            redact_url(&ctx.config.store.url)
        );
        parts.spawn(
            "logical replication",
            replication_part(part, ctx.clone(), stop.clone()),
        );
    }
    if let Some(watch) = bypass {
        eprintln!("raising an alarm for writes around the proxy");
        let stop = stop.clone();
        parts.spawn("bypass alarm", async move {
            pgtrail_pipeline::bypass::watch(watch, stop)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    for runner in sink_runners {
        eprintln!(
            "sink {}: delivering {} to {} (cursor {})",
            runner.name,
            redact_url(&runner.store_url),
            runner.sink.destination(),
            runner.cursor_path.display()
        );
        // A part's name lives as long as the process; a few sinks at most.
        let name: &'static str = Box::leak(format!("sink {}", runner.name).into_boxed_str());
        let stop = stop.clone();
        parts.spawn(name, async move {
            runner.run(stop).await;
            Ok(())
        });
    }
    parts.spawn("alarms", watch_part(alarm_watch, ctx.clone(), stop));
    eprintln!("running; Ctrl-C to stop");

    let mut signals = signal_count();
    let failure = loop {
        tokio::select! {
            count = signals.recv() => match count {
                Some(1) => {
                    eprintln!("stopping: storing what is in hand (Ctrl-C again to quit at once)");
                    let _ = stop_tx.send(true);
                }
                _ => anyhow::bail!("interrupted twice: quit without waiting (unconfirmed changes stay in the slot and the inbox)"),
            },
            failure = parts.join() => break failure,
        }
    };
    // The servers stopped answering: their last access records drain.
    if let Some((_, access)) = &served {
        tokio::select! {
            _ = access.finish(pgtrail_server::access_spool::DRAIN_ON_STOP) => {}
            _ = signals.recv() => anyhow::bail!("interrupted again: quit with access records in the spool (they reach the store at the next start)"),
        }
    }
    // Signed after the parts stored what they had in hand, so it covers it.
    if let Some(checkpointer) = checkpointer {
        tokio::select! {
            signed = checkpointer.finish() => {
                for (store, head) in signed {
                    eprintln!(
                        "signed a last checkpoint of {store} at event {} (hash {})",
                        head.seq, head.hash
                    );
                }
            }
            _ = signals.recv() => anyhow::bail!("interrupted again: quit without the last checkpoint"),
        }
    }
    match failure {
        Some(PartFailure { part, error }) => {
            let error = match error {
                PartError::Failed(error) => error,
                other => anyhow::anyhow!("{other}"),
            };
            Err(error.context(format!("{part} failed")))
        }
        None => {
            eprintln!("stopped; everything captured so far is stored and confirmed");
            Ok(crate::exit::ok())
        }
    }
}

/// Loads the signing key and starts the checkpointer on `targets`; `None`,
/// after saying so, when no key is configured. A key that cannot be read,
/// or a store whose chain disagrees with its signed checkpoints, is an
/// error: nothing may run.
async fn start_checkpointer(
    args: &RunArgs,
    targets: Vec<Target>,
    ctx: &Invocation,
) -> anyhow::Result<Option<Checkpointer>> {
    let signing = &ctx.config.signing;
    let every = signing
        .checkpoint_interval()
        .context("invalid [signing] checkpoint_every")?;
    let Some((path, key)) = signing_key(args.private_key.as_deref(), signing)? else {
        eprintln!(
            "checkpoints: off, no private key (the newest events can then be removed unnoticed); \
             make one with `pgtrail keygen --out FILE` and set [signing] private_key, \
             PGTRAIL_SIGNING__PRIVATE_KEY or --private-key"
        );
        return Ok(None);
    };
    let keys = Keys {
        key,
        trusted: trusted_keys(signing)?,
        witness: witness_path(None, signing),
        witness_servers: witness_servers(signing)?,
    };
    let mut stores: Vec<String> = Vec::new();
    for target in &targets {
        let store = redact_url(target.location());
        if !stores.contains(&store) {
            stores.push(store);
        }
    }
    eprintln!(
        "signing checkpoints of {} every {} with {}",
        stores.join(" and "),
        signing.checkpoint_every,
        path.display()
    );
    let checkpointer = Checkpointer::start(keys, targets, every).await.context(
        "the store does not agree with its signed checkpoints: not starting. \
             Run `pgtrail verify` to see what changed",
    )?;
    Ok(Some(checkpointer))
}

/// Counts Ctrl-C / SIGTERM deliveries: 1, 2, …
fn signal_count() -> tokio::sync::mpsc::Receiver<u32> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            signal().await;
            count += 1;
            if tx.send(count).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
