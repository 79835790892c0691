//! pgtrail's HTTP side: the JSON API under `/api/v1`, the dashboard pages,
//! and the health probes, over the store's read side.
//!
//! It reads through the `Store` trait and the read-side functions the CLI
//! uses (`pgtrail_store`, `pgtrail_core::filter`), so a search in the
//! browser, the API and `pgtrail log` answer the same. It never writes a
//! capture event; its only writes are its own access records.
//!
//! Layout: [`state`] (what every handler shares), [`auth`] (who is asking),
//! [`access`] (the access records), [`api`] (JSON), [`pages`] (HTML, assets
//! embedded), `health` (probes, the only routes without a principal).

pub mod access;
pub mod api;
pub mod auth;
mod health;
pub mod pages;
pub mod state;

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

pub use state::AppState;

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot serve HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Every route: probes, the API and the pages. Everything but the probes,
/// unknown paths included, is behind `auth::authenticate`: a caller without
/// a credential learns nothing, not even which paths exist.
pub fn router(state: AppState) -> Router {
    let guarded = Router::new()
        .nest("/api/v1", api::routes())
        .merge(pages::routes())
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no such page\n") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(health::routes())
        .merge(guarded)
        .with_state(state)
}

/// Serves `state` on `listener` until `stop` completes; requests in flight
/// finish first.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
