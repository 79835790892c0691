//! The JSON API under `/api/v1` (docs/api.md).

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
