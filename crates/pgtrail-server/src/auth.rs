//! Who is asking: the principal every handler serves, what its role may
//! see, and the layer that decides it for each request.
//!
//! The rule: a server listening on loopback with no tokens created serves
//! the local operator (the same person who could open the store file);
//! anywhere else, a request without a valid credential is refused.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// What a principal may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything the trail holds, statement parameters included.
    Auditor,
    /// Masked values stay masked and statement parameters are withheld.
    Viewer,
}

/// The authenticated caller of one request (a token's name and role, or
/// the local operator on a loopback listener without tokens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// The person at the machine: a loopback listener, no tokens.
    pub fn local_operator() -> Self {
        Principal {
            name: "local".into(),
            role: Role::Auditor,
        }
    }
}

/// Decides the principal of each request and puts it in the request's
/// extensions, or refuses the request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if state.local_operator {
        request.extensions_mut().insert(Principal::local_operator());
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        "this server is not on loopback: every request needs a token (pgtrail token create)\n",
    )
        .into_response()
}

/// Handlers take `principal: Principal` as an argument.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Absent only on a route outside the `authenticate` layer: a bug, never a pass.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}
