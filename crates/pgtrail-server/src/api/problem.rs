//! Errors as `application/problem+json` (RFC 9457): a `type` URI, a
//! `title` per type, the HTTP `status`, a `detail` sentence for this
//! occurrence and, for a bad request, the `parameter` at fault.
//!
//! A store failure is a 503 that says only that the store did not answer:
//! paths, SQL and backend messages go to the server's log, not to callers.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::access::AccessError;

/// The media type of a problem document.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where the problem types are described (docs/api.md, "Errors").
const TYPE_BASE: &str = "https://pgtrail.dev/problems/";

/// One problem, as the body of an error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The query or path parameter at fault, for a bad request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

impl Problem {
    fn new(slug: &str, title: &'static str, status: StatusCode, detail: String) -> Self {
        Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail,
            parameter: None,
        }
    }

    /// A parameter the API refuses: which one, and why.
    pub fn bad_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        Problem {
            parameter: Some(pgtrail_core::filter::shown(parameter, 64)),
            ..Problem::new(
                "bad-parameter",
                "A parameter is not valid",
                StatusCode::BAD_REQUEST,
                detail.into(),
            )
        }
    }

    /// Nothing is at this address (an event, a route).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(
            "not-found",
            "Not found",
            StatusCode::NOT_FOUND,
            detail.into(),
        )
    }

    /// The caller's role may not do this (a viewer starting a verify).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Problem::new(
            "forbidden",
            "Not allowed for this role",
            StatusCode::FORBIDDEN,
            detail.into(),
        )
    }

    /// The request conflicts with what is going on (a verify already running).
    pub fn conflict(detail: impl Into<String>) -> Self {
        Problem::new(
            "conflict",
            "Already in progress",
            StatusCode::CONFLICT,
            detail.into(),
        )
    }

    /// The store failed: said without its internals (they are logged).
    pub fn store(error: &pgtrail_store::StoreError) -> Self {
        tracing::warn!(%error, "api: the store failed");
        Problem::new(
            "store-unavailable",
            "The store did not answer",
            StatusCode::SERVICE_UNAVAILABLE,
            "the trail could not be read; the server's log says why".into(),
        )
    }

    /// The access record could not be written, so the read is not answered.
    pub fn unrecorded(error: &AccessError) -> Self {
        tracing::warn!(%error, "api: refusing a read that cannot be recorded");
        Problem::new(
            "access-unrecorded",
            "This read could not be recorded",
            StatusCode::SERVICE_UNAVAILABLE,
            "every read is recorded in the trail first, and the record could not be written; \
             nothing was answered"
                .into(),
        )
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<pgtrail_store::StoreError> for Problem {
    fn from(error: pgtrail_store::StoreError) -> Self {
        Problem::store(&error)
    }
}

impl From<AccessError> for Problem {
    fn from(error: AccessError) -> Self {
        Problem::unrecorded(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response()
    }
}

/// What a handler returns.
pub type ApiResult<T> = Result<T, Problem>;
