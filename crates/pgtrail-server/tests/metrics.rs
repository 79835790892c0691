//! `/metrics` at the door, in process over a real SQLite store: off
//! loopback a scrape without a token is refused (401, not the login page a
//! scraper would follow), a viewer's token suffices, a scrape appends no
//! access event, and the example Grafana dashboard (docs/) asks only for
//! metrics pgtrail records.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request, StatusCode};
use pgtrail_server::auth::Role;
use pgtrail_server::metrics::METRICS;
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{metrics_router, router, AppState};
use tower::ServiceExt as _;

const CLIENT: &str = "192.0.2.7:50123";

async fn scrape(app: axum::Router, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::get("/metrics").header(header::HOST, "pgtrail.example:8080");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = app
        .layer(MockConnectInfo(CLIENT.parse::<SocketAddr>().expect("addr")))
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn off_loopback_a_scrape_needs_a_token_and_leaves_no_access_event() {
    pgtrail_server::metrics::install().expect("recorder");
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("store");
    let tokens = dir.path().join("tokens.toml");
    let state = AppState::new(store.clone(), false).with_tokens_file(&tokens);

    // No token exists yet: off loopback nobody gets in.
    for app in [router(state.clone()), metrics_router(state.clone())] {
        let (status, body) = scrape(app, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(!body.contains("pgtrail_"), "{body}");
    }
    let mut set = TokenSet::load(&tokens).expect("load");
    let viewer = set.create("prometheus", Role::Viewer).expect("create");
    set.save(&tokens).expect("save");
    for app in [router(state.clone()), metrics_router(state.clone())] {
        let (status, _) = scrape(app.clone(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "still no token");
        let head = store.head().await.expect("head");
        let (status, body) = scrape(app, Some(&viewer)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("# TYPE pgtrail_alarms_total counter"),
            "{body}"
        );
        assert_eq!(store.head().await.expect("head"), head, "no access event");
    }
}

/// Metric names in a PromQL expression: identifiers starting `pgtrail_`.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("pgtrail_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn the_example_dashboard_asks_only_for_metrics_pgtrail_records() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    let known: BTreeSet<&str> = METRICS.iter().map(|(name, _, _)| *name).collect();
    let histograms: BTreeSet<&str> = METRICS
        .iter()
        .filter(|(_, kind, _)| *kind == "histogram")
        .map(|(name, _, _)| *name)
        .collect();
    let mut asked = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("a panel has a title");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            let names = names_in(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no metric");
            for name in names {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| histograms.contains(b)))
                    .unwrap_or(&name);
                assert!(
                    known.contains(base),
                    "{title}: {name} is not a metric pgtrail records"
                );
                asked.insert(base.to_string());
            }
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "pgtrail_events_appended_total",
        "pgtrail_append_seconds",
        "pgtrail_replication_lag_bytes",
        "pgtrail_trigger_pending_rows",
        "pgtrail_proxy_added_latency_seconds",
        "pgtrail_spool_bytes",
        "pgtrail_sink_lag_events",
        "pgtrail_alarms_total",
        "pgtrail_verify_last_ok",
    ] {
        assert!(asked.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn every_metric_is_documented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let docs = std::fs::read_to_string(path).expect("docs/metrics.md");
    for (name, _, _) in METRICS {
        assert!(
            docs.contains(&format!("`{name}`")),
            "{name} in docs/metrics.md"
        );
    }
}
