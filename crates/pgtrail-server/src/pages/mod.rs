//! The dashboard: HTML rendered on the server, htmx for partial updates,
//! every asset embedded in the binary (docs/dashboard.md).

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
