//! From a `[[sinks]]` entry to a running destination: [`open`] makes the
//! [`Sink`], [`runner`] the [`Runner`] that feeds it from its store.

use std::path::PathBuf;
use std::time::Duration;

use pgtrail_core::config::{FileSinkConfig, HttpSinkConfig, SinkConfig, SinkKind};

use crate::cursor;
use crate::file::{FileOptions, FileSink, DEFAULT_ROTATE_BYTES};
use crate::format::{Encoder, Format, FormatError};
use crate::http::{Api, HttpOptions, HttpSetupError, HttpSink, Secret, DEFAULT_MAX_IN_FLIGHT};
use crate::nats::NatsSink;
use crate::runner::{backoff, Runner, IDLE};
use crate::sink::{Sink, SinkError};
use crate::syslog::SyslogSink;

/// Why a sink could not be made from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A key has a value the sink cannot use.
    #[error("sink {sink}: {key}: {reason}")]
    Invalid {
        /// The sink's name.
        sink: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The format is unknown.
    #[error("sink {sink}: {source}")]
    Format {
        /// The sink's name.
        sink: String,
        /// Why.
        source: FormatError,
    },
    /// The HTTP sink could not be set up.
    #[error("sink {sink}: {source}")]
    Http {
        /// The sink's name.
        sink: String,
        /// Why.
        source: HttpSetupError,
    },
    /// The secret could not be read (its value is never in the message).
    #[error("sink {sink}: cannot read the secret from {from}: {reason}")]
    Secret {
        /// The sink's name.
        sink: String,
        /// The file or variable named.
        from: String,
        /// Why.
        reason: String,
    },
    /// A syslog or NATS sink refused its settings or its credentials.
    #[error("sink {sink}: {source}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// Why (no secret in it).
        source: SinkError,
    },
}

/// The sink a `[[sinks]]` entry describes. A NATS sink logs in here (wrong
/// credentials are refused at once); a server that is down is not an error
/// here: delivery connects later, like every sink's retries.
pub async fn open(config: &SinkConfig) -> Result<Box<dyn Sink>, OpenError> {
    let format = format(config)?;
    let refused = |source| OpenError::Sink {
        sink: config.name.clone(),
        source,
    };
    match &config.kind {
        SinkKind::File(file) => Ok(Box::new(FileSink::new(file_options(config, file)?, format))),
        SinkKind::Http(http) => {
            let options = http_options(config, http)?;
            HttpSink::new(options, format)
                .map(|sink| Box::new(sink) as Box<dyn Sink>)
                .map_err(|source| OpenError::Http {
                    sink: config.name.clone(),
                    source,
                })
        }
        SinkKind::Syslog(syslog) => {
            let mut encoder = Encoder::new(format);
            if let Some(host) = &syslog.hostname {
                encoder = encoder.with_host(host);
            }
            SyslogSink::new(syslog, encoder)
                .map(|sink| Box::new(sink) as Box<dyn Sink>)
                .map_err(refused)
        }
        SinkKind::Nats(nats) => NatsSink::connect(nats, Encoder::new(format))
            .await
            .map(|sink| Box::new(sink) as Box<dyn Sink>)
            .map_err(refused),
    }
}

/// The runner of a `[[sinks]]` entry: its sink, its store (`store` or
/// `default_store`), its cursor file, its batch size.
pub async fn runner(config: &SinkConfig, default_store: &str) -> Result<Runner, OpenError> {
    if !cursor::valid_name(&config.name) {
        return Err(OpenError::Invalid {
            sink: config.name.clone(),
            key: "name",
            reason: "letters, digits, '-', '_' and '.' only (it names the cursor file)".into(),
        });
    }
    let store_url = config.store.as_deref().unwrap_or(default_store).to_string();
    let dir = cursor::state_dir(config.state_dir.as_deref(), &store_url).map_err(|reason| {
        OpenError::Invalid {
            sink: config.name.clone(),
            key: "state_dir",
            reason,
        }
    })?;
    let default_batch = match config.kind {
        // NATS: a batch's last acknowledgements and its cursor save are a
        // pause each; 1,000 made it half as fast (bench/export).
        SinkKind::File(_) | SinkKind::Nats(_) => 10_000,
        SinkKind::Http(_) => DEFAULT_HTTP_BATCH,
        _ => 1_000,
    };
    let batch = config.batch.unwrap_or(default_batch);
    if batch == 0 {
        return Err(OpenError::Invalid {
            sink: config.name.clone(),
            key: "batch",
            reason: "must be at least 1".into(),
        });
    }
    // An HTTP sink's `batch` is one request; a delivery holds as many
    // requests as may be in flight at once.
    let batch = match &config.kind {
        SinkKind::Http(http) => batch.saturating_mul(max_in_flight(config, http)?),
        _ => batch,
    };
    Ok(Runner {
        name: config.name.clone(),
        store_url,
        sink: open(config).await?,
        cursor_path: cursor::path(&dir, &config.name),
        batch,
        idle: IDLE,
        backoff: backoff(),
    })
}

/// The runners of all the entries, checked together: names unique and
/// valid, each one opens. Made once, before anything starts, so a typo is
/// an error at once and no sink is opened twice.
pub async fn runners(
    configs: &[SinkConfig],
    default_store: &str,
) -> Result<Vec<Runner>, OpenError> {
    let mut seen = std::collections::HashSet::new();
    let mut runners = Vec::with_capacity(configs.len());
    for config in configs {
        if !seen.insert(config.name.as_str()) {
            return Err(OpenError::Invalid {
                sink: config.name.clone(),
                key: "name",
                reason: "two sinks have this name (each has its own cursor)".into(),
            });
        }
        runners.push(runner(config, default_store).await?);
    }
    Ok(runners)
}

fn format(config: &SinkConfig) -> Result<Format, OpenError> {
    match &config.format {
        Some(name) => name.parse().map_err(|source| OpenError::Format {
            sink: config.name.clone(),
            source,
        }),
        // Syslog's own format by default; JSON Lines for the rest.
        None => Ok(match config.kind {
            SinkKind::Syslog(_) => Format::Syslog,
            _ => Format::Jsonl,
        }),
    }
}

fn file_options(config: &SinkConfig, file: &FileSinkConfig) -> Result<FileOptions, OpenError> {
    let invalid = |key, reason: String| OpenError::Invalid {
        sink: config.name.clone(),
        key,
        reason,
    };
    if file.dir.is_empty() {
        return Err(invalid(
            "dir",
            "the directory to write in is required".into(),
        ));
    }
    let prefix = file
        .prefix
        .clone()
        .unwrap_or_else(|| "pgtrail-events".into());
    if prefix.is_empty() || prefix.contains('/') || prefix.starts_with('.') {
        return Err(invalid(
            "prefix",
            "a file name without '/', not hidden".into(),
        ));
    }
    let rotate_bytes = match file.rotate_mb {
        Some(0) => None,
        Some(mb) => Some(mb.saturating_mul(1024 * 1024)),
        None => Some(DEFAULT_ROTATE_BYTES),
    };
    let rotate_every = match &file.rotate_every {
        Some(text) => Some(
            pgtrail_core::time::parse_duration(text)
                .ok()
                .and_then(|d| d.to_std().ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(
                        "rotate_every",
                        format!("{text:?} is not a duration like 1h or 1d"),
                    )
                })?,
        ),
        None => None,
    };
    Ok(FileOptions {
        dir: PathBuf::from(&file.dir),
        prefix,
        rotate_bytes,
        rotate_every,
    })
}

fn http_options(config: &SinkConfig, http: &HttpSinkConfig) -> Result<HttpOptions, OpenError> {
    let invalid = |key, reason: String| OpenError::Invalid {
        sink: config.name.clone(),
        key,
        reason,
    };
    let secret = secret(config, http)?;
    let api = match http.api.as_deref().unwrap_or("webhook") {
        "webhook" => Api::Webhook {
            ndjson: match http.body.as_deref().unwrap_or("array") {
                "array" => false,
                "ndjson" => true,
                other => return Err(invalid("body", format!("{other:?}: array or ndjson"))),
            },
        },
        "splunk" => {
            if secret.is_none() {
                return Err(invalid(
                    "secret_file",
                    "Splunk HEC needs its token (secret_file or secret_env)".into(),
                ));
            }
            Api::Splunk {
                sourcetype: http
                    .sourcetype
                    .clone()
                    .unwrap_or_else(|| "pgtrail:event".into()),
                source: http.source.clone().unwrap_or_else(|| "pgtrail".into()),
                index: http.index.clone(),
                host: host_name(),
            }
        }
        "elasticsearch" | "opensearch" => Api::Bulk {
            index: http
                .index
                .clone()
                .unwrap_or_else(|| "pgtrail-events".into()),
        },
        other => {
            return Err(invalid(
                "api",
                format!("{other:?}: webhook, splunk or elasticsearch"),
            ))
        }
    };
    if http.body.is_some() && !matches!(api, Api::Webhook { .. }) {
        return Err(invalid("body", "only a webhook takes `body`".into()));
    }
    Ok(HttpOptions {
        url: http.url.clone(),
        api,
        secret,
        timeout: Duration::from_secs(http.timeout_secs.unwrap_or(30).max(1)),
        ca_file: http.ca_file.as_ref().map(PathBuf::from),
        request_events: config.batch.unwrap_or(DEFAULT_HTTP_BATCH).max(1),
        max_in_flight: max_in_flight(config, http)?,
    })
}

/// Events in one HTTP request unless `batch` says otherwise.
const DEFAULT_HTTP_BATCH: usize = 1_000;

/// Requests an HTTP sink keeps in flight (`max_in_flight`, 1 to 64). By
/// default 4 for Splunk HEC and `_bulk`, which index by time and by id, so
/// the order requests arrive in does not matter; 1 for a webhook, whose
/// receiver may rely on getting events in chain order.
fn max_in_flight(config: &SinkConfig, http: &HttpSinkConfig) -> Result<usize, OpenError> {
    match http.max_in_flight {
        None => Ok(match http.api.as_deref() {
            Some("splunk" | "elasticsearch" | "opensearch") => DEFAULT_MAX_IN_FLIGHT,
            _ => 1,
        }),
        Some(n @ 1..=64) => Ok(n),
        Some(n) => Err(OpenError::Invalid {
            sink: config.name.clone(),
            key: "max_in_flight",
            reason: format!("{n}: from 1 to 64"),
        }),
    }
}

/// The secret named by `secret_file` or `secret_env` (one line, the
/// trailing newline dropped).
fn secret(config: &SinkConfig, http: &HttpSinkConfig) -> Result<Option<Secret>, OpenError> {
    let failed = |from: String, reason: String| OpenError::Secret {
        sink: config.name.clone(),
        from,
        reason,
    };
    let value = match (&http.secret_file, &http.secret_env) {
        (Some(_), Some(_)) => {
            return Err(OpenError::Invalid {
                sink: config.name.clone(),
                key: "secret_file",
                reason: "set secret_file or secret_env, not both".into(),
            })
        }
        (Some(file), None) => std::fs::read_to_string(file)
            .map_err(|e| failed(format!("file {file}"), e.kind().to_string()))?,
        (None, Some(var)) => std::env::var(var)
            .map_err(|e| failed(format!("environment variable {var}"), e.to_string()))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(failed(
            http.secret_file
                .clone()
                .or(http.secret_env.clone())
                .unwrap_or_default(),
            "it is empty".into(),
        ));
    }
    Ok(Some(Secret(value)))
}

/// This host's name, for HEC's `host`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
