//! `pgtrail witness`: a minimal witness server speaking C2SP `tlog-witness`
//! (`POST /add-checkpoint`), meant to run on another host than the store,
//! under another administrator. It cosigns a log's checkpoint only when it
//! is consistent with the last one it cosigned for that log (see `state`).

mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pgtrail_store::{checkpoint::load_public_key, cosignature, KeyPair};

use super::Invocation;
use crate::cli::WitnessArgs;
use state::{Refusal, Witness};

/// Largest request body: 63 proof lines and a checkpoint with a few
/// signatures fit many times over.
const MAX_BODY: usize = 64 * 1024;

pub async fn run(args: &WitnessArgs, _ctx: &Invocation) -> anyhow::Result<ExitCode> {
    let key = KeyPair::load(&args.key).context("--key")?;
    if args.print_vkey {
        cosignature::check_name(&args.name).context("--name")?;
        let vkey = cosignature::WitnessKey {
            name: args.name.clone(),
            key: key.verifying_key(),
        };
        println!("{}", vkey.to_vkey());
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(listen), Some(dir)) = (&args.listen, &args.state) else {
        anyhow::bail!("pgtrail witness needs --listen and --state (or --print-vkey)");
    };
    if args.log.is_empty() {
        anyhow::bail!("pgtrail witness needs at least one --log ORIGIN=PUBLIC_KEY_FILE");
    }
    let mut logs = Vec::new();
    for log in &args.log {
        let (origin, file) = log
            .split_once('=')
            .with_context(|| format!("--log '{log}': expected ORIGIN=PUBLIC_KEY_FILE"))?;
        let log_key =
            load_public_key(&PathBuf::from(file)).with_context(|| format!("--log '{log}'"))?;
        logs.push((origin.to_string(), log_key));
    }
    let witness = Witness::open(dir, args.name.clone(), key, logs)
        .map_err(anyhow::Error::msg)
        .context("cannot open the witness state")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let address: SocketAddr = listener.local_addr()?;
    tracing::info!(address = %address, vkey = %witness.vkey(), "Witness server listening.");
    // The address on stdout too, for whoever started it with port 0.
    println!("listening on {address}");
    axum::serve(listener, router(Arc::new(witness)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the witness server failed")?;
    Ok(ExitCode::SUCCESS)
}

fn router(witness: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness)
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Bytes) -> Response {
    let Ok(body) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the body is not UTF-8\n").into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match witness.add_checkpoint(body, now).await {
        Ok(line) => {
            tracing::info!("Cosigned a checkpoint.");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                cosignature::line_text(&line),
            )
                .into_response()
        }
        Err(refusal) => {
            tracing::warn!(refusal = %refusal, "Refused a checkpoint.");
            match refusal {
                Refusal::Conflict { size, .. } => (
                    StatusCode::CONFLICT,
                    [(header::CONTENT_TYPE, "text/x.tlog.size")],
                    format!("{size}\n"),
                )
                    .into_response(),
                other => {
                    let status = match other {
                        Refusal::Malformed(_) => StatusCode::BAD_REQUEST,
                        Refusal::Unsigned => StatusCode::FORBIDDEN,
                        Refusal::UnknownLog(_) => StatusCode::NOT_FOUND,
                        Refusal::BadProof(_) => StatusCode::UNPROCESSABLE_ENTITY,
                        Refusal::Storage(_) | Refusal::Conflict { .. } => {
                            StatusCode::INTERNAL_SERVER_ERROR
                        }
                    };
                    (status, format!("{other}\n")).into_response()
                }
            }
        }
    }
}
