//! The dashboard: HTML rendered on the server (askama, escaped by default),
//! htmx for partial updates, every asset embedded in the binary
//! (docs/dashboard.md). No inline script or style anywhere: the CSP forbids
//! them, so behaviour is in `hx-*` attributes and looks are in classes.
//!
//! Pages: the search (`/`), an event (`/events/{seq}`), a row
//! (`/rows/{table}/{pk}`), schema changes (`/ddl`), sessions and failures
//! (`/sessions`); fragments under `/fragments/` for htmx (the live tail is
//! server-sent events through htmx's SSE extension); assets
//! under `/assets/{hash}/{name}`. Every page or fragment that reads events
//! records the access first (`AppState::record_access`).

mod assets;
mod ddl;
mod event;
mod facets;
mod integrity;
mod reports;
mod row;
mod search;
mod sessions;
mod view;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::access::AccessError;
use crate::AppState;

pub use assets::asset_path;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(search::page))
        .route("/fragments/events", get(search::older))
        .route("/fragments/facets", get(search::facets))
        .route("/fragments/tail", get(search::tail))
        .route("/events/{seq}", get(event::page))
        .route("/rows/{table}/{pk}", get(row::page))
        .route("/ddl", get(ddl::page))
        .route("/sessions", get(sessions::page))
        .route("/assets/{hash}/{name}", get(assets::serve))
        .route("/integrity", get(integrity::page))
        .route("/integrity/verify", axum::routing::post(integrity::start))
        .route("/fragments/verify", get(integrity::progress))
        .route("/reports", get(reports::index))
        .route("/reports/{name}", get(reports::page))
}

/// Why a page could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    /// The principal's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("cannot read the trail: {0}")]
    Store(#[from] pgtrail_store::StoreError),
    /// The access could not be recorded: the read is refused, not served unrecorded.
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("cannot render the page: {0}")]
    Render(#[from] askama::Error),
}

/// The error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            PageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            PageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
            PageError::Forbidden(_) => (StatusCode::FORBIDDEN, "Not allowed"),
            PageError::Store(_) | PageError::Render(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "Server error")
            }
            PageError::Access(_) => (StatusCode::SERVICE_UNAVAILABLE, "Not recorded, not shown"),
        };
        // A server error's detail (a store's message, a path) is logged,
        // not shown: the page says only what failed.
        let message = match &self {
            PageError::BadRequest(_) | PageError::NotFound(_) | PageError::Forbidden(_) => {
                self.to_string()
            }
            PageError::Store(_) => "The trail cannot be read just now; the server's log says why.".into(),
            PageError::Render(_) => "The page cannot be rendered; the server's log says why.".into(),
            PageError::Access(_) => "This view could not be recorded in the trail, so it is not shown; the server's log says why.".into(),
        };
        if status.is_server_error() {
            tracing::error!(error = %self, "page failed");
        }
        let page = ErrorPage { title, message };
        match page.render() {
            Ok(body) => (status, Html(body)).into_response(),
            Err(_) => (status, title).into_response(),
        }
    }
}

/// Renders `template` as an HTML answer.
fn html(template: &impl Template) -> Result<Response, PageError> {
    Ok(Html(template.render()?).into_response())
}
