//! The HTTP sink: each batch one POST, to Splunk's HTTP Event Collector,
//! to Elasticsearch/OpenSearch `_bulk`, or to a webhook that checks an
//! HMAC-SHA256 signature.
//!
//! `Ok` only on a 2xx answer (and, for `_bulk`, no failed item): the
//! destination then holds the batch. Timeouts, closed connections, 408,
//! 429 and 5xx are [`SinkError::Unavailable`]; any other answer is
//! [`SinkError::Refused`]. The runner retries both with the same items,
//! so a destination that keeps refusing stalls the sink loudly rather than
//! losing events. The event id is the idempotency key: `_bulk` indexes
//! each event under `_id` = its id (a retry overwrites, never duplicates);
//! HEC and webhook receivers deduplicate by the `id` field.
//!
//! A delivery is split into requests of at most `batch` records, up to
//! `max_in_flight` of them under way at once, each on its own keep-alive
//! HTTP/1.1 connection (hyper); it is `Ok` only once every one of them
//! was. With more than one in flight, requests may arrive out of chain
//! order; a request holding a checkpoint waits for the ones before it.
//! TLS by rustls with the system's roots or `ca_file`.
//!
//! Bodies are assembled as bytes: each record is encoded straight into the
//! body (`jsonl` from the stored event, its seal spliced in, as the file
//! sink writes it: [`Sink::reads_raw`]), and HEC's envelope and `_bulk`'s
//! action line are written around it from prefixes made once, never
//! parsed or serialized again. The secret (HEC
//! token, `_bulk` credentials, HMAC key) is never in an error or log line:
//! answers are quoted with it blanked.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pgtrail_core::Event;
use pgtrail_store::RawEvent;
use rustls::pki_types::ServerName;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::format::{raw, Encoder, Format, FormatError};
use crate::sink::{Item, Sealed, Sink, SinkError};

/// The header carrying the webhook body's signature.
pub const SIGNATURE_HEADER: &str = "x-pgtrail-signature";
/// The header carrying the time the webhook signature covers.
pub const TIMESTAMP_HEADER: &str = "x-pgtrail-timestamp";

/// Which API the batches are posted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Api {
    /// A generic webhook: the records as a JSON array (or NDJSON), signed.
    Webhook {
        /// NDJSON (one record per line) rather than a JSON array.
        ndjson: bool,
    },
    /// Splunk HTTP Event Collector (`/services/collector/event`).
    Splunk {
        /// HEC `sourcetype`.
        sourcetype: String,
        /// HEC `source`.
        source: String,
        /// HEC `index` (`None`: the token's default).
        index: Option<String>,
        /// HEC `host`.
        host: String,
    },
    /// Elasticsearch / OpenSearch `_bulk`.
    Bulk {
        /// The index written to.
        index: String,
    },
}

/// How the HTTP sink posts.
#[derive(Clone)]
pub struct HttpOptions {
    /// The URL posted to (for `Splunk` and `Bulk`, the path is completed).
    pub url: String,
    /// The API.
    pub api: Api,
    /// The secret (token, credentials or HMAC key), if any.
    pub secret: Option<Secret>,
    /// Most time one request may take, connecting included.
    pub timeout: Duration,
    /// CA certificates to trust (PEM), instead of the system's.
    pub ca_file: Option<std::path::PathBuf>,
    /// Most records in one request.
    pub request_events: usize,
    /// Most requests of one delivery under way at once, each on its own
    /// keep-alive connection.
    pub max_in_flight: usize,
}

/// Requests in flight at once by default for Splunk HEC and `_bulk`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// A secret that prints as `***`.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Why an HTTP sink could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// The URL is not one the sink can post to.
    #[error("invalid URL {url}: {reason}")]
    Url {
        /// The URL (without credentials).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// TLS could not be set up.
    #[error("TLS for {url}: {reason}")]
    Tls {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The format cannot be posted to this API.
    #[error("{api} takes JSON records: use format jsonl, ocsf or ecs, not {format}")]
    Format {
        /// The API.
        api: &'static str,
        /// The format asked for.
        format: Format,
    },
}

/// Posts batches over HTTP.
pub struct HttpSink {
    endpoint: Arc<Endpoint>,
    encoder: Encoder,
    /// Idle keep-alive connections, reused by the next requests.
    idle: Vec<SendRequest<Full<Bytes>>>,
    /// A record before it is escaped or wrapped.
    record: Vec<u8>,
    /// What goes before each record: HEC's envelope up to `"event":`,
    /// `_bulk`'s action line up to `"_id":` (empty for a webhook).
    envelope: Vec<u8>,
    /// What the envelope needs of each record besides it.
    needs: Needs,
    request_events: usize,
    max_in_flight: usize,
}

/// Where and how requests go; shared by the requests in flight.
struct Endpoint {
    api: Api,
    uri: Uri,
    authority: String,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    secret: Option<Secret>,
    timeout: Duration,
}

impl HttpSink {
    /// A sink posting `format` records as `options` say; connects on the
    /// first delivery.
    pub fn new(options: HttpOptions, format: Format) -> Result<Self, HttpSetupError> {
        let json = is_json(format);
        match &options.api {
            Api::Bulk { .. } if !json => {
                return Err(HttpSetupError::Format {
                    api: "_bulk",
                    format,
                })
            }
            Api::Webhook { ndjson: false } if !json => {
                return Err(HttpSetupError::Format {
                    api:
                        "a webhook with a JSON array body (body = \"ndjson\" takes any line format)",
                    format,
                })
            }
            _ => {}
        }
        let shown = redact(&options.url);
        let bad = |reason: &str| HttpSetupError::Url {
            url: shown.clone(),
            reason: reason.to_string(),
        };
        let given: Uri = options.url.parse().map_err(|_| bad("not a URL"))?;
        let https = match given.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("expected http:// or https://")),
        };
        let host = given.host().ok_or_else(|| bad("no host"))?.to_string();
        if given.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(bad("credentials in the URL: use secret_file or secret_env"));
        }
        let port = given.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = given.path().trim_end_matches('/');
        let path = match &options.api {
            Api::Splunk { .. } if !path.ends_with("/services/collector/event") => {
                format!("{path}/services/collector/event")
            }
            Api::Bulk { .. } if !path.ends_with("/_bulk") => format!("{path}/_bulk"),
            _ if path.is_empty() => "/".to_string(),
            _ => path.to_string(),
        };
        let path_and_query = match given.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let uri = Uri::builder()
            .path_and_query(path_and_query)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
        let tls = match https {
            true => Some(tls_connector(options.ca_file.as_deref()).map_err(|reason| {
                HttpSetupError::Tls {
                    url: shown.clone(),
                    reason,
                }
            })?),
            false => None,
        };
        let authority = match given.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.clone(),
        };
        let envelope = envelope(&options.api);
        Ok(HttpSink {
            needs: Needs {
                id: matches!(options.api, Api::Bulk { .. }),
                time: matches!(options.api, Api::Splunk { .. }),
            },
            envelope,
            endpoint: Arc::new(Endpoint {
                api: options.api,
                uri,
                authority,
                host,
                port,
                tls,
                secret: options.secret,
                timeout: options.timeout,
            }),
            encoder: Encoder::new(format),
            idle: Vec::new(),
            record: Vec::new(),
            request_events: options.request_events.max(1),
            max_in_flight: options.max_in_flight.max(1),
        })
    }

    fn refused(&self, reason: impl std::fmt::Display) -> SinkError {
        self.endpoint.refused(reason)
    }

    /// The request body of a batch, and its content type. Each record is
    /// encoded straight into the body; HEC and `_bulk` wrap it in their
    /// envelope written as bytes (prefixes made once in [`HttpSink::new`]),
    /// never parsed again.
    fn body<E: Postable>(
        &mut self,
        items: &[Item<E>],
    ) -> Result<(Vec<u8>, &'static str), SinkError> {
        let mut body = Vec::with_capacity(items.len() * 700);
        match &self.endpoint.api {
            Api::Webhook { ndjson: true } => {
                for item in items {
                    Self::encode(&self.encoder, self.needs, item, &mut body)?;
                    if body.last() != Some(&b'\n') {
                        body.push(b'\n');
                    }
                }
                Ok((body, "application/x-ndjson"))
            }
            Api::Webhook { ndjson: false } => {
                body.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    Self::encode(&self.encoder, self.needs, item, &mut body)?;
                    trim_newline(&mut body);
                }
                body.push(b']');
                Ok((body, "application/json"))
            }
            Api::Splunk { .. } => {
                let json = is_json(self.encoder.format());
                for item in items {
                    // {"host":…,"source":…,"sourcetype":…,"event":<record>,"time":…}
                    body.extend_from_slice(&self.envelope);
                    let facts = match json {
                        true => {
                            let facts = Self::encode(&self.encoder, self.needs, item, &mut body)?;
                            trim_newline(&mut body);
                            facts
                        }
                        false => {
                            self.record.clear();
                            let facts =
                                Self::encode(&self.encoder, self.needs, item, &mut self.record)?;
                            crate::format::json_string(
                                &mut body,
                                &String::from_utf8_lossy(trim_newline_of(&self.record)),
                            );
                            facts
                        }
                    };
                    let Some(micros) = facts.micros else {
                        return Err(self.refused(format!(
                            "event {} has no captured_at for HEC's time",
                            facts.seq
                        )));
                    };
                    body.extend_from_slice(b",\"time\":");
                    body.extend_from_slice((micros as f64 / 1e6).to_string().as_bytes());
                    body.extend_from_slice(b"}\n");
                }
                Ok((body, "application/json"))
            }
            Api::Bulk { .. } => {
                for item in items {
                    self.record.clear();
                    let facts = Self::encode(&self.encoder, self.needs, item, &mut self.record)?;
                    let Some(id) = facts.id.as_deref() else {
                        return Err(self.refused(format!(
                            "event {} has no plain id for _bulk's _id",
                            facts.seq
                        )));
                    };
                    // {"index":{"_index":…,"_id":…}}, written directly.
                    body.extend_from_slice(&self.envelope);
                    crate::format::json_string(&mut body, id);
                    body.extend_from_slice(b"}}\n");
                    body.extend_from_slice(trim_newline_of(&self.record));
                    body.push(b'\n');
                }
                Ok((body, "application/x-ndjson"))
            }
        }
    }

    /// Appends `item`'s record to `out`; what the envelopes need of it.
    /// (Not a method: `out` may be the sink's own `record` buffer.)
    fn encode<E: Postable>(
        encoder: &Encoder,
        needs: Needs,
        item: &Item<E>,
        out: &mut Vec<u8>,
    ) -> Result<Facts, SinkError> {
        match item {
            Item::Event(event) => Ok(event.encode(encoder, out, needs)?),
            Item::Checkpoint(c) => {
                encoder.encode_checkpoint(c, out)?;
                Ok(Facts {
                    seq: c.seq,
                    id: needs.id.then(|| {
                        format!(
                            "checkpoint-{}-{}-{}",
                            c.kind.as_str(),
                            c.seq,
                            c.created_at.timestamp_micros()
                        )
                    }),
                    micros: Some(c.created_at.timestamp_micros()),
                })
            }
        }
    }

    /// Posts the items in requests of at most `request_events` records,
    /// up to `max_in_flight` at once, and is `Ok` only once every request
    /// was answered with success. A request holding a checkpoint is sent
    /// only after the requests before it succeeded, so a checkpoint never
    /// arrives ahead of an event it covers that may still fail.
    async fn post_all<E: Postable>(&mut self, items: &[Item<E>]) -> Result<(), SinkError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut in_flight = tokio::task::JoinSet::new();
        let mut first_error: Option<(usize, SinkError)> = None;
        for (n, chunk) in items.chunks(self.request_events).enumerate() {
            let barrier = chunk.iter().any(|item| matches!(item, Item::Checkpoint(_)));
            while !in_flight.is_empty() && (barrier || in_flight.len() >= self.max_in_flight) {
                self.settle(&mut in_flight, &mut first_error).await;
            }
            if first_error.is_some() {
                break;
            }
            let (body, content_type) = self.body(chunk)?;
            let records = chunk.len();
            let sender = self.idle.pop();
            let endpoint = Arc::clone(&self.endpoint);
            in_flight.spawn(async move {
                (n, endpoint.send(sender, body, content_type, records).await)
            });
        }
        while !in_flight.is_empty() {
            self.settle(&mut in_flight, &mut first_error).await;
        }
        match first_error {
            Some((_, error)) => Err(error),
            None => Ok(()),
        }
    }
}

/// What the HEC and `_bulk` envelopes need of a record.
struct Facts {
    /// The event's (or checkpoint's) `seq`, for errors.
    seq: i64,
    /// Its `_bulk` `_id` (only asked for by `_bulk`).
    id: Option<String>,
    /// Its time, microseconds since the epoch (HEC's `time`).
    micros: Option<i64>,
}

/// Which [`Facts`] an API's envelope needs (the others are left `None`).
#[derive(Clone, Copy)]
struct Needs {
    /// `_bulk`'s `_id`.
    id: bool,
    /// HEC's `time`.
    time: bool,
}

/// An event the HTTP sink posts: decoded, or as stored (`jsonl` spliced
/// from the stored body, as the file sink writes it).
trait Postable: Sealed {
    /// Appends its record to `out`, and returns the facts `needs` asks.
    fn encode(
        &self,
        encoder: &Encoder,
        out: &mut Vec<u8>,
        needs: Needs,
    ) -> Result<Facts, FormatError>;
}

impl Postable for Event {
    fn encode(
        &self,
        encoder: &Encoder,
        out: &mut Vec<u8>,
        needs: Needs,
    ) -> Result<Facts, FormatError> {
        encoder.encode(self, out)?;
        Ok(Facts {
            seq: self.seq.unwrap_or_default(),
            id: needs.id.then(|| self.id.to_string()),
            micros: Some(self.captured_at.timestamp_micros()),
        })
    }
}

impl Postable for RawEvent {
    fn encode(
        &self,
        encoder: &Encoder,
        out: &mut Vec<u8>,
        needs: Needs,
    ) -> Result<Facts, FormatError> {
        let stored = |reason| FormatError::Stored {
            seq: self.seq,
            reason,
        };
        if encoder.format() == Format::Jsonl {
            // One pass over the stored body gives the line, the id and the
            // time. A line break edited into a stored body would be a line
            // of its own in an NDJSON or `_bulk` body (an action run with
            // the sink's credentials): such an event goes through the
            // decoder below, which writes it on one line or refuses it.
            let members = raw::Members::of(&self.body).map_err(stored)?;
            if raw::jsonl_on_one_line(self, &members, out) {
                return Ok(Facts {
                    seq: self.seq,
                    id: match needs.id {
                        true => members.plain_str("id").map(str::to_string),
                        false => None,
                    },
                    // Parsed only for HEC: the text to a time costs.
                    micros: match needs.time {
                        true => members.captured_at().map(|t| t.timestamp_micros()),
                        false => None,
                    },
                });
            }
        }
        let event = raw::decode(self).map_err(stored)?;
        Postable::encode(&event, encoder, out, needs)
    }
}

fn is_json(format: Format) -> bool {
    matches!(format, Format::Jsonl | Format::Ocsf | Format::Ecs)
}

impl Endpoint {
    fn unavailable(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Unavailable {
            destination: self.destination(),
            reason: self.blank(&reason.to_string()),
        }
    }

    fn refused(&self, reason: impl std::fmt::Display) -> SinkError {
        SinkError::Refused {
            destination: self.destination(),
            reason: self.blank(&reason.to_string()),
        }
    }

    /// `text` with the secret blanked, should a destination echo it.
    fn blank(&self, text: &str) -> String {
        match &self.secret {
            Some(Secret(secret)) if !secret.is_empty() => text.replace(secret.as_str(), "***"),
            _ => text.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SinkError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| self.unavailable(format!("cannot connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| self.refused(format!("not a TLS server name: {e}")))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.unavailable(format!("TLS: {e}")))?;
                self.handshake(stream).await
            }
            None => self.handshake(tcp).await,
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, SinkError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unavailable(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes.
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Posts `body` on `sender` (a new connection when `None` or closed)
    /// within the timeout and judges the answer. Returns the connection
    /// for reuse when the exchange completed.
    async fn send(
        self: Arc<Self>,
        sender: Option<SendRequest<Full<Bytes>>>,
        body: Vec<u8>,
        content_type: &'static str,
        records: usize,
    ) -> (Result<(), SinkError>, Option<SendRequest<Full<Bytes>>>) {
        let answer =
            tokio::time::timeout(self.timeout, self.post(sender, body, content_type)).await;
        let (status, body, sender) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return (Err(error), None),
            Err(_) => {
                let error =
                    self.unavailable(format!("no answer within {} s", self.timeout.as_secs_f64()));
                return (Err(error), None);
            }
        };
        (self.judge(status, &body, records), Some(sender))
    }

    /// `Ok` for a 2xx answer (for `_bulk`: an outcome for each of the
    /// `records` sent, none failed).
    fn judge(&self, status: StatusCode, body: &[u8], records: usize) -> Result<(), SinkError> {
        if status.is_success() {
            return match self.api {
                Api::Bulk { .. } => self.bulk_failures(body, records),
                _ => Ok(()),
            };
        }
        let reason = format!("HTTP {status}: {}", clip(&String::from_utf8_lossy(body)));
        if status.is_server_error()
            || status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
        {
            Err(self.unavailable(reason))
        } else {
            Err(self.refused(reason))
        }
    }

    async fn post(
        &self,
        sender: Option<SendRequest<Full<Bytes>>>,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(StatusCode, Bytes, SendRequest<Full<Bytes>>), SinkError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::HOST, &self.authority)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("pgtrail/", env!("CARGO_PKG_VERSION")),
            );
        match (&self.api, &self.secret) {
            (Api::Splunk { .. }, Some(Secret(token))) => {
                request = request.header(header::AUTHORIZATION, format!("Splunk {token}"));
            }
            (Api::Bulk { .. }, Some(Secret(credentials))) => {
                request = request.header(header::AUTHORIZATION, bulk_authorization(credentials));
            }
            (Api::Webhook { .. }, Some(Secret(key))) => {
                let timestamp = chrono::Utc::now().timestamp().to_string();
                request = request
                    .header(
                        SIGNATURE_HEADER,
                        signature(key.as_bytes(), &timestamp, &body),
                    )
                    .header(TIMESTAMP_HEADER, timestamp);
            }
            _ => {}
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.refused(format!("cannot build the request: {e}")))?;
        // A kept connection the peer closed is replaced before sending.
        let mut sender = match sender {
            Some(mut sender) => match sender.ready().await {
                Ok(()) => sender,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unavailable(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unavailable(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok((status, body, sender))
    }

    /// What a `_bulk` answer says: `Ok` when it has an outcome for every
    /// one of the `records` sent and `errors: false`; else the failed
    /// items and whether all of them may pass by themselves. An answer
    /// with fewer outcomes than records (a proxy's, a truncated one) does
    /// not say the others were indexed: refused, the batch sent again.
    fn bulk_failures(&self, body: &[u8], records: usize) -> Result<(), SinkError> {
        let answer: BulkAnswer = serde_json::from_slice(body).map_err(|e| {
            self.refused(format!(
                "_bulk answered something that is not its JSON: {e}"
            ))
        })?;
        if !answer.errors {
            return match answer.items.len() == records {
                true => Ok(()),
                false => Err(self.refused(format!(
                    "_bulk answered {} outcomes for {records} items: the others are not known to be indexed",
                    answer.items.len()
                ))),
            };
        }
        let failed: Vec<(u16, String)> = answer
            .items
            .iter()
            .filter_map(|item| item.values().next())
            .filter(|outcome| !(200..300).contains(&outcome.status))
            .map(|outcome| {
                let reason = outcome
                    .error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                (outcome.status, reason)
            })
            .collect();
        let transient = failed
            .iter()
            .all(|(status, _)| *status == 429 || *status >= 500);
        let first = failed
            .first()
            .map(|(status, reason)| format!("{status} {}", clip(reason)))
            .unwrap_or_else(|| "errors flag set without a failed item".into());
        let reason = format!(
            "{} of {} items failed (the batch is sent again whole; the event id as _id makes it idempotent), first: {first}",
            failed.len(),
            answer.items.len()
        );
        Err(match transient && !failed.is_empty() {
            true => self.unavailable(reason),
            false => self.refused(reason),
        })
    }
}

#[derive(serde::Deserialize)]
struct BulkAnswer {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkOutcome>>,
}

#[derive(serde::Deserialize)]
struct BulkOutcome {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// What goes before each record (see [`HttpSink::envelope`]), made once.
fn envelope(api: &Api) -> Vec<u8> {
    use crate::format::json_string;
    let mut out = Vec::new();
    match api {
        Api::Webhook { .. } => {}
        Api::Splunk {
            sourcetype,
            source,
            index,
            host,
        } => {
            out.extend_from_slice(b"{\"host\":");
            json_string(&mut out, host);
            out.extend_from_slice(b",\"source\":");
            json_string(&mut out, source);
            out.extend_from_slice(b",\"sourcetype\":");
            json_string(&mut out, sourcetype);
            if let Some(index) = index {
                out.extend_from_slice(b",\"index\":");
                json_string(&mut out, index);
            }
            out.extend_from_slice(b",\"event\":");
        }
        Api::Bulk { index } => {
            out.extend_from_slice(b"{\"index\":{\"_index\":");
            json_string(&mut out, index);
            out.extend_from_slice(b",\"_id\":");
        }
    }
    out
}

/// Drops the record's line end at the end of `body`.
fn trim_newline(body: &mut Vec<u8>) {
    if body.last() == Some(&b'\n') {
        body.pop();
    }
}

fn trim_newline_of(record: &[u8]) -> &[u8] {
    record.strip_suffix(b"\n").unwrap_or(record)
}

/// `_bulk` credentials: `user:password` is HTTP basic, anything else an
/// Elasticsearch API key (its encoded form).
fn bulk_authorization(credentials: &str) -> String {
    use base64::Engine as _;
    match credentials.contains(':') {
        true => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ),
        false => format!("ApiKey {credentials}"),
    }
}

/// The webhook signature: `sha256=` and the hex HMAC-SHA256, keyed with
/// `key`, of `<timestamp>.<body>`: the time is signed with the body, so a
/// receiver that refuses old timestamps refuses a replayed request.
pub fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a webhook request as a receiver should: the signature over the
/// timestamp and body (in constant time), and the timestamp within `skew`
/// of `now` (Unix seconds). For receivers written in Rust, and the tests.
pub fn verify_signature(
    key: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: i64,
    skew: i64,
) -> bool {
    let Ok(sent) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now - sent).abs() > skew {
        return false;
    }
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// A short quote of an answer.
fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `url` without a user or password, for messages.
fn redact(url: &str) -> String {
    pgtrail_store::open::redact_url(url)
}

fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<TlsConnector, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("{}: no certificate", path.display()));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(loaded.certs);
            if added == 0 {
                return Err("no system CA certificate found: set ca_file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl Endpoint {
    fn destination(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.uri)
    }
}

#[async_trait]
impl Sink for HttpSink {
    fn destination(&self) -> String {
        self.endpoint.destination()
    }

    /// Posts the items: see [`HttpSink::post_all`].
    async fn deliver(&mut self, items: &[Item]) -> Result<(), SinkError> {
        self.post_all(items).await
    }

    /// `jsonl` records are the stored bodies with their seal spliced in
    /// (as the file sink writes them): no event is decoded.
    fn reads_raw(&self) -> bool {
        self.encoder.format() == Format::Jsonl
    }

    async fn deliver_raw(&mut self, items: &[Item<RawEvent>]) -> Result<(), SinkError> {
        self.post_all(items).await
    }
}

type Answer = (
    usize,
    (Result<(), SinkError>, Option<SendRequest<Full<Bytes>>>),
);

impl HttpSink {
    /// Waits for one request in flight: its connection goes back to the
    /// idle ones, its error is kept (the first request's, in order).
    async fn settle(
        &mut self,
        in_flight: &mut tokio::task::JoinSet<Answer>,
        first_error: &mut Option<(usize, SinkError)>,
    ) {
        let (n, outcome) = match in_flight.join_next().await {
            Some(Ok((n, (outcome, sender)))) => {
                self.idle.extend(sender);
                (n, outcome)
            }
            Some(Err(joined)) => (
                usize::MAX,
                Err(self
                    .endpoint
                    .unavailable(format!("a request's task ended: {joined}"))),
            ),
            None => return,
        };
        if let Err(error) = outcome {
            if first_error.as_ref().is_none_or(|(first, _)| n < *first) {
                *first_error = Some((n, error));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_checks_only_with_its_key_body_and_a_fresh_timestamp() {
        let signed = signature(b"key", "1000", b"[1]");
        assert!(signed.starts_with("sha256=") && signed.len() == 7 + 64);
        assert!(verify_signature(b"key", "1000", b"[1]", &signed, 1010, 300));
        assert!(
            !verify_signature(b"key", "1000", b"[2]", &signed, 1010, 300),
            "forged body"
        );
        assert!(
            !verify_signature(b"other", "1000", b"[1]", &signed, 1010, 300),
            "other key"
        );
        assert!(
            !verify_signature(b"key", "1001", b"[1]", &signed, 1010, 300),
            "other time"
        );
        assert!(
            !verify_signature(b"key", "1000", b"[1]", &signed, 2000, 300),
            "replayed late"
        );
    }

    #[test]
    fn bulk_credentials_are_basic_or_an_api_key() {
        assert_eq!(bulk_authorization("elastic:pw"), "Basic ZWxhc3RpYzpwdw==");
        assert_eq!(bulk_authorization("a2V5"), "ApiKey a2V5");
    }
}
