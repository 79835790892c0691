//! `/metrics`: what this process recorded, in Prometheus's text format
//! (0.0.4), for a scraper (docs/metrics.md).
//!
//! The capture paths, the pipeline, the proxy and the sinks record with
//! the `metrics` crate's macros (static names, labels from fixed word
//! lists: never a table, a user or any other value from the data); this
//! module installs the one recorder that keeps them ([`install`], called
//! by `pgtrail run` and `pgtrail serve` before anything records) and
//! renders it. Every other command installs nothing, so its recording
//! calls do nothing.
//!
//! Who may scrape: the route is behind `auth::authenticate`, the rule of
//! every other page (the local operator on a loopback listener without
//! tokens; anyone else with a token, a viewer's suffices). A scrape reads
//! no event, so it records no access event: a scraper every 15 s would
//! otherwise fill the trail with its own reads. The metrics hold counts,
//! sizes and times, and no connection string, token or captured value.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::auth::Principal;
use crate::AppState;

/// Every metric pgtrail records, as `(name, type, help)`: the catalogue
/// docs/metrics.md explains and the example dashboard is checked against.
/// The `pgtrail_sink_*` ones are recorded by the sinks' runner.
pub const METRICS: &[(&str, &str, &str)] = &[
    (
        "pgtrail_events_appended_total",
        "counter",
        "Events appended to a store by this process, by source and kind, once the append was durable.",
    ),
    (
        "pgtrail_append_seconds",
        "histogram",
        "Seconds one durable append took (a trigger seal: its appends and commit).",
    ),
    (
        "pgtrail_append_batch_events",
        "histogram",
        "Events per durable append.",
    ),
    (
        "pgtrail_replication_lag_bytes",
        "gauge",
        "WAL bytes the server has past the position the consumer confirmed.",
    ),
    (
        "pgtrail_replication_lag_seconds",
        "gauge",
        "Seconds since the commit of the newest stored transaction, while WAL waits (0 when caught up).",
    ),
    (
        "pgtrail_trigger_pending_rows",
        "gauge",
        "Trigger capture's inbox rows waiting to be sealed, measured after a drain pass.",
    ),
    (
        "pgtrail_trigger_oldest_pending_seconds",
        "gauge",
        "Age of the oldest inbox row waiting to be sealed (0 when none waits).",
    ),
    (
        "pgtrail_proxy_sessions",
        "gauge",
        "Client connections the proxy holds open now.",
    ),
    (
        "pgtrail_proxy_sessions_total",
        "counter",
        "Client connections the proxy ended, by outcome.",
    ),
    (
        "pgtrail_proxy_statements_total",
        "counter",
        "Statements the proxy saw complete, by class (whether or not the log rules kept them).",
    ),
    (
        "pgtrail_proxy_added_latency_seconds",
        "histogram",
        "Seconds from a server's reply reaching the proxy to its release to the client (decoding, the event's write to the spool, the write to the client).",
    ),
    (
        "pgtrail_proxy_refused_total",
        "counter",
        "Statements the proxy refused (SQLSTATE 53400) because the spool was full.",
    ),
    (
        "pgtrail_spool_bytes",
        "gauge",
        "Bytes of the spool's segment files (what [proxy] spool_max_mb bounds).",
    ),
    (
        "pgtrail_access_spool_bytes",
        "gauge",
        "Bytes of the server's access spool: reads' access records not yet in the store (refused when it is full, at 256 MiB).",
    ),
    (
        "pgtrail_alarms_total",
        "counter",
        "Alarm events appended by this process, by alarm code.",
    ),
    (
        "pgtrail_verify_last_ok",
        "gauge",
        "1 when the last verify run by this process found the chain intact, 0 when it did not or could not run.",
    ),
    (
        "pgtrail_verify_last_timestamp_seconds",
        "gauge",
        "When the last verify run by this process finished (Unix time).",
    ),
    (
        "pgtrail_sink_delivered_total",
        "counter",
        "Events a sink delivered, by sink.",
    ),
    (
        "pgtrail_sink_failures_total",
        "counter",
        "Failed deliveries of a sink (retried after a back-off), by sink.",
    ),
    (
        "pgtrail_sink_lag_events",
        "gauge",
        "Events stored and not yet delivered by a sink, by sink.",
    ),
    (
        "pgtrail_sink_lag_seconds",
        "gauge",
        "Age of the oldest event a sink has not delivered, by sink.",
    ),
    (
        "pgtrail_sink_batch_seconds",
        "histogram",
        "Seconds one delivery of a sink took, by sink.",
    ),
    (
        "pgtrail_witness_submissions_total",
        "counter",
        "Checkpoints submitted to witness servers ([signing] witnesses), by witness and result (ok: cosigned and kept; failed: refused, unreachable or not kept).",
    ),
];

/// Buckets of the `_seconds` histograms without their own: 100 µs to 30 s.
const SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The proxy adds microseconds: 10 µs to 1 s.
const PROXY_SECONDS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
    0.25, 1.0,
];

/// Events per append: one statement to a full drain batch.
const BATCH_EVENTS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0,
];

/// How often the recorder drains histogram samples into their buckets
/// when nobody scrapes (so an unscraped proxy's memory stays flat).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot record metrics: {0}")]
pub struct MetricsError(String);

/// Installs the process's recorder (once; later calls do nothing) and
/// starts its upkeep thread. Call before any part starts: handles looked
/// up before it record nothing.
pub fn install() -> Result<(), MetricsError> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let error = |e: metrics_exporter_prometheus::BuildError| e.to_string();
            let handle = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .map_err(error)?
                .set_buckets_for_metric(
                    Matcher::Full("pgtrail_proxy_added_latency_seconds".into()),
                    PROXY_SECONDS,
                )
                .map_err(error)?
                .set_buckets_for_metric(
                    Matcher::Full("pgtrail_append_batch_events".into()),
                    BATCH_EVENTS,
                )
                .map_err(error)?
                .install_recorder()
                .map_err(error)?;
            for (name, kind, help) in METRICS {
                match *kind {
                    "counter" => metrics::describe_counter!(*name, *help),
                    "gauge" => metrics::describe_gauge!(*name, *help),
                    _ => metrics::describe_histogram!(*name, *help),
                }
            }
            // Every alarm at 0 from the start: `increase()` sees the first.
            for alarm in pgtrail_core::alarm::ALL {
                metrics::counter!("pgtrail_alarms_total", "alarm" => alarm).absolute(0);
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("pgtrail-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .map_err(|e| e.to_string())?;
            let _ = HANDLE.set(handle);
            Ok(())
        })
        .clone()
        .map_err(MetricsError)
}

/// The exposition of everything recorded so far; `None` before [`install`].
pub fn render() -> Option<String> {
    HANDLE.get().map(PrometheusHandle::render)
}

/// Records the outcome of a verify this process ran: `ok` when it found
/// the chain intact (false also when it could not read the store to the end).
pub fn verified(ok: bool) {
    metrics::gauge!("pgtrail_verify_last_ok").set(if ok { 1.0 } else { 0.0 });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!("pgtrail_verify_last_timestamp_seconds").set(now.as_secs_f64());
}

/// `GET /metrics`, for the guarded part of a router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// Taking the principal keeps the route from ever being served outside
/// `authenticate` (it answers 500 there). No access event: see the module.
async fn scrape(_principal: Principal) -> Response {
    match render() {
        Some(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "this process records no metrics\n").into_response(),
    }
}
