//! Submitting checkpoints to witness servers (C2SP `tlog-witness`): after
//! the checkpointer signs a store's head, each `[signing] witnesses` entry
//! gets it with a consistency proof from the size that witness last
//! cosigned, and its cosignature is checked with its vkey and kept in the
//! store beside the checkpoint.
//!
//! A witness that is down, slow or refusing never holds up capture or
//! checkpointing: each submission has its own timeout, a failure is logged
//! and counted (`pgtrail_witness_submissions_total{result="failed"}`), and
//! the next round submits the next checkpoint. The size each witness holds
//! is learned from its answers (a 409 carries it), so a restarted `pgtrail
//! run` needs no memory of its own.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::rt::TokioIo;
use pgtrail_store::cosignature::{self, StoredCosignature, WitnessKey};
use pgtrail_store::note::NoteSignature;
use pgtrail_store::{checkpoint::NoteCheckpoint, Checkpoint, Store};

/// Longest a witness may take to answer one submission.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from a witness.
const MAX_ANSWER: usize = 64 * 1024;

/// Counter of submissions, by `witness` (its name) and `result`.
pub const SUBMISSIONS: &str = "pgtrail_witness_submissions_total";

/// A witness server from `[signing] witnesses`.
#[derive(Debug, Clone)]
pub struct WitnessServer {
    /// Its submission prefix (`http://host:port`).
    pub url: String,
    /// Its name and key.
    pub key: WitnessKey,
}

impl WitnessServer {
    /// Reads a `[signing] witnesses` entry: the URL must be plain HTTP
    /// (see docs/proofs.md) and the vkey valid.
    pub fn parse(url: &str, vkey: &str) -> Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("witness url '{url}': {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "witness url '{url}': expected http://host:port (a cosignature needs no \
                 secrecy, and its key, not the channel, authenticates it)"
            ));
        }
        Ok(WitnessServer {
            url: url.trim_end_matches('/').to_string(),
            key: WitnessKey::parse_vkey(vkey).map_err(|e| e.0)?,
        })
    }
}

/// The witnesses, and the size each holds of each log (by origin).
#[derive(Debug, Default)]
pub struct Witnesses {
    servers: Vec<(WitnessServer, HashMap<String, u64>)>,
}

impl Witnesses {
    /// Witnesses to submit to.
    pub fn new(servers: Vec<WitnessServer>) -> Self {
        Witnesses {
            servers: servers.into_iter().map(|s| (s, HashMap::new())).collect(),
        }
    }

    /// Submits `checkpoint` of `store` to every witness and keeps their
    /// cosignatures; logs and counts failures, never fails. What each
    /// witness did, by name.
    pub async fn submit(
        &mut self,
        store: &dyn Store,
        checkpoint: &Checkpoint,
        location: &str,
    ) -> Vec<(String, Result<(), String>)> {
        let mut outcomes = Vec::new();
        let Some(Ok(parsed)) = checkpoint.parsed_note() else {
            // A checkpoint from before notes: nothing a witness reads.
            return outcomes;
        };
        for (server, sizes) in &mut self.servers {
            let name = server.key.name.clone();
            let outcome =
                tokio::time::timeout(SUBMIT_TIMEOUT, submit_one(server, sizes, store, &parsed))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "no answer within {} seconds",
                            SUBMIT_TIMEOUT.as_secs()
                        ))
                    });
            let kept = match outcome {
                Ok(line) => store
                    .add_cosignature(&StoredCosignature {
                        seq: checkpoint.seq,
                        checkpoint: parsed.note.text.clone(),
                        line: cosignature::line_text(&line),
                        received_at: chrono::Utc::now(),
                    })
                    .await
                    .map_err(|e| format!("cannot keep its cosignature: {e}")),
                Err(error) => Err(error),
            };
            match &kept {
                Ok(()) => {
                    metrics::counter!(SUBMISSIONS, "witness" => name.clone(), "result" => "ok")
                        .increment(1);
                    tracing::info!(store = %location, witness = %name, seq = checkpoint.seq, "A witness cosigned the checkpoint.");
                }
                Err(error) => {
                    metrics::counter!(SUBMISSIONS, "witness" => name.clone(), "result" => "failed")
                        .increment(1);
                    tracing::warn!(store = %location, witness = %name, url = %server.url, error = %error, "A witness did not cosign the checkpoint; the next checkpoint is submitted next round.");
                }
            }
            outcomes.push((name, kept));
        }
        outcomes
    }
}

/// One submission, retried once from the size a 409 names.
async fn submit_one(
    server: &WitnessServer,
    sizes: &mut HashMap<String, u64>,
    store: &dyn Store,
    checkpoint: &NoteCheckpoint,
) -> Result<NoteSignature, String> {
    let origin = &checkpoint.tree.origin;
    let size = checkpoint.tree.size;
    let mut old = sizes.get(origin).copied().unwrap_or(0);
    for _ in 0..2 {
        if old > size {
            return Err(format!(
                "the witness holds a larger tree of this log ({old} entries) than this \
                 checkpoint's {size}: the store was rolled back, or another signer used the key"
            ));
        }
        let proof = if old == 0 || old == size {
            Vec::new()
        } else {
            pgtrail_store::proof::consistency(store, old, size)
                .await
                .map_err(|e| format!("cannot build the consistency proof from {old}: {e}"))?
        };
        let body = request_body(old, &proof, &checkpoint.note.to_text());
        let (status, answer) = post(&server.url, body).await?;
        match status {
            200 => {
                let lines = cosignature::parse_lines(&answer)
                    .map_err(|e| format!("its answer is not signature lines: {e}"))?;
                let line = lines
                    .into_iter()
                    .find(|l| {
                        cosignature::verify_one(&checkpoint.note.text, l, &server.key).is_ok()
                    })
                    .ok_or("its answer holds no valid cosignature of its key")?;
                sizes.insert(origin.clone(), size);
                return Ok(line);
            }
            409 => {
                let held = answer
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| format!("409 without a size: {}", answer.trim()))?;
                if held == old {
                    return Err(format!(
                        "409: the witness holds another root for size {held}: the log forked"
                    ));
                }
                sizes.insert(origin.clone(), held);
                old = held;
            }
            status => return Err(format!("{status}: {}", answer.trim())),
        }
    }
    Err("the witness moved twice during one submission".into())
}

/// An `add-checkpoint` body: `old <size>`, the proof's hashes, a blank
/// line, the signed checkpoint.
pub fn request_body(old: u64, proof: &[pgtrail_store::merkle::Hash], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for hash in proof {
        body.push_str(&BASE64.encode(hash));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

/// POSTs `body` to `<url>/add-checkpoint`; the status and the answer.
pub async fn post(url: &str, body: String) -> Result<(u16, String), String> {
    let uri: hyper::Uri = format!("{url}/add-checkpoint")
        .parse()
        .map_err(|e| format!("bad url: {e}"))?;
    let host = uri.host().ok_or("no host in the url")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| host.clone());
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::post(uri.path())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending: {e}"))?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
