//! pgtrail's HTTP side: the JSON API under `/api/v1`, the dashboard pages,
//! and the health probes, over the store's read side.
//!
//! It reads through the `Store` trait and the read-side functions the CLI
//! uses (`pgtrail_store`, `pgtrail_core::filter`), so a search in the
//! browser, the API and `pgtrail log` answer the same. It never writes a
//! capture event; its only writes are its own access records.
//!
//! Layout: [`state`] (what every handler shares), [`auth`] (who is asking,
//! the login page, CSRF), [`tokens`] (the tokens file), [`session`]
//! (browser sessions), [`throttle`] (failed logins), [`access`] (the
//! access records), [`access_spool`] (where they are made durable),
//! [`headers`] (security headers), [`tls`], [`api`]
//! (JSON), [`pages`] (HTML, assets embedded), `health` (probes and the
//! login page: the only routes without a principal), [`metrics`]
//! (`/metrics` for Prometheus, behind the same door), [`capture`] (what the
//! audited databases say of capture, through a probe the binary gives).

pub mod access;
pub mod access_spool;
pub mod api;
pub mod auth;
pub mod capture;
pub mod headers;
mod health;
pub mod metrics;
pub mod pages;
pub mod session;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::net::SocketAddr;

use axum::serve::ListenerExt as _;
use axum::Router;
use tokio::net::TcpListener;

pub use state::AppState;
pub use tls::ServerTls;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot serve HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Every route: probes, the API and the pages. Everything but the probes,
/// unknown paths included, is behind `auth::authenticate`: a caller without
/// a credential learns nothing, not even which paths exist.
/// Every answer carries the security headers (`headers`).
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .nest("/api/v1", api::routes())
        .merge(pages::routes())
        .merge(auth::routes())
        .merge(metrics::routes())
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such page\n") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let tls = state.tls;
    let router = Router::new()
        .merge(health::routes())
        .merge(auth::login_routes())
        .merge(guarded)
        .with_state(state);
    headers::secure(router, tls)
}

/// `/metrics` alone, behind the same door as [`router`] (`[metrics]
/// listen` of `pgtrail run` without a dashboard); every other path is 404
/// to a caller who got in.
pub fn metrics_router(state: AppState) -> Router {
    let guarded = metrics::routes()
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "only /metrics here\n") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let tls = state.tls;
    headers::secure(guarded.with_state(state), tls)
}

/// Serves [`metrics_router`] on `listener`, over TLS with `tls`, until
/// `stop` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    tls: Option<ServerTls>,
    state: AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    match tls {
        Some(tls) => {
            let state = state.with_tls(true);
            let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| ());
            let app = metrics_router(state).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
        }
        None => {
            let app = metrics_router(state).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?;
        }
    }
    Ok(())
}

/// Serves `state` on `listener` (plain HTTP) until `stop` completes;
/// requests in flight finish first. Handlers see each client's address
/// (`ConnectInfo<SocketAddr>`), which access records keep.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}

/// The same over TLS with `tls`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: ServerTls,
    state: AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = state.with_tls(true);
    // `tap_io` only so axum's `ConnectInfo` knows this listener's addresses.
    let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| ());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
