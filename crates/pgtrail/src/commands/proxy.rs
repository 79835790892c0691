//! `pgtrail proxy` (experimental): the statement proxy in front of a
//! server, printing each completed statement as a JSON line. Nothing goes
//! to the store yet; that is the pipeline's part of issue 11.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use pgtrail_proxy::{serve, ClientTls, Outcome, Protocol, Recorded, Upstream};
use pgtrail_sql::Redactor;
use pgtrail_wire::backend::TransactionStatus;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Invocation;
use crate::cli::ProxyArgs;

/// Records waiting to be printed before sessions wait for the printer.
const QUEUE: usize = 1024;

pub async fn run(args: &ProxyArgs, ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let upstream = Upstream::parse(&args.upstream).context("invalid --upstream")?;
    let upstream = client_tls(upstream, args, &ctx.config.proxy)?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr().context("listening address")?;
    eprintln!("pgtrail proxy (experimental): listening on {address}");
    let (sink, mut records) = mpsc::channel(QUEUE);
    let mut server = tokio::spawn(serve(listener, upstream, sink));
    let mut redactor = Redactor::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            record = records.recv() => {
                let Some(record) = record else { break };
                let line = to_json(&record, &mut redactor).to_string();
                let mut out = std::io::stdout().lock();
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(ExitCode::SUCCESS);
                    }
                    return Err(e).context("cannot write to stdout");
                }
            }
            result = &mut server => {
                result.context("the proxy stopped")?.context("the proxy stopped")?;
                break;
            }
            _ = &mut ctrl_c => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// TLS toward clients: the flags, else `[proxy] tls_cert`, `tls_key`,
/// `require_tls`.
fn client_tls(
    upstream: Upstream,
    args: &ProxyArgs,
    config: &pgtrail_core::config::ProxyConfig,
) -> anyhow::Result<Upstream> {
    let files = match (
        &args.tls_cert,
        &args.tls_key,
        &config.tls_cert,
        &config.tls_key,
    ) {
        (Some(cert), Some(key), _, _) => Some((cert.clone(), key.clone())),
        (None, None, Some(cert), Some(key)) => Some((cert.into(), key.into())),
        _ => None,
    };
    let require = args.require_tls || config.require_tls;
    let Some((cert, key)) = files else {
        anyhow::ensure!(
            !require,
            "--require-tls needs a certificate: --tls-cert and --tls-key (or [proxy] tls_cert and tls_key)"
        );
        return Ok(upstream);
    };
    let tls =
        ClientTls::from_pem_files(&cert, &key).context("cannot use the proxy's TLS certificate")?;
    Ok(upstream.with_client_tls(tls).require_tls(require))
}

fn time(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// One statement as JSON: the session, the statement (SQL through the secret
/// redactor; parameter values never printed), the result.
fn to_json(recorded: &Recorded, redactor: &mut Redactor) -> Value {
    let session = &recorded.session;
    let r = &recorded.record;
    let (protocol, part, function_oid) = match r.protocol {
        Protocol::Simple { part } => ("simple", Some(part), None),
        Protocol::Extended => ("extended", None, None),
        Protocol::FunctionCall { oid } => ("function_call", None, Some(oid)),
    };
    let (outcome, step, error) = match &r.outcome {
        Outcome::Completed => ("completed", None, None),
        Outcome::Failed { step, error } => (
            "failed",
            Some(format!("{step:?}").to_lowercase()),
            Some(json!({
                "severity": error.severity(),
                "sqlstate": error.code(),
                "message": error.message(),
                "detail": error.detail(),
            })),
        ),
        Outcome::NotRun => ("not_run", None, None),
        Outcome::Suspended => ("suspended", None, None),
        Outcome::NoReply => ("no_reply", None, None),
    };
    let status = r.transaction_status.map(|s| match s {
        TransactionStatus::Idle => "idle",
        TransactionStatus::InTransaction => "in_transaction",
        TransactionStatus::Failed => "failed",
    });
    let formats: Vec<&str> = (0..r.params.values.len())
        .map(|i| {
            if r.params.format(i) == 1 {
                "binary"
            } else {
                "text"
            }
        })
        .collect();
    let duration_us = r
        .finished_at
        .duration_since(r.started_at)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    json!({
        "session_id": session.id,
        "client_addr": session.client.ip().to_string(),
        "client_port": session.client.port(),
        "db_user": session.user,
        "database": session.database,
        "application_name": session.application_name,
        "backend_pid": r.backend_pid.or(session.backend_pid),
        "protocol": protocol,
        "part": part,
        "function_oid": function_oid,
        "sql": r.sql.as_deref().map(|sql| redactor.redact(sql, false)),
        "statement": r.statement,
        "portal": r.portal,
        "param_formats": formats,
        "command_tag": r.command_tag,
        "rows": r.rows,
        "rows_returned": r.rows_returned,
        "copy_bytes": r.copy_bytes,
        "outcome": outcome,
        "failed_at": step,
        "error": error,
        "started_at": time(r.started_at),
        "duration_us": duration_us,
        "transaction_status": status,
    })
}
