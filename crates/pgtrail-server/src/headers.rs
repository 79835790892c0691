//! Security headers on every answer: a CSP that allows no inline script or
//! style and no framing, nosniff, no referrer to other sites, and `no-store` (the trail's
//! contents stay out of browser and proxy caches). A handler that sets its
//! own `Cache-Control` (an embedded asset) keeps it. Under TLS, HSTS.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;

/// The Content-Security-Policy of every answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Adds the headers to every route of `router`.
pub fn secure<S: Clone + Send + Sync + 'static>(router: Router<S>, tls: bool) -> Router<S> {
    let always = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let router = router
        .layer(always(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(always(header::X_FRAME_OPTIONS, "DENY"))
        .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Not `no-referrer`: under it a browser sends `Origin: null` on a
        // form's POST (Fetch, "serializing a request origin"), so the
        // origin check refused the login form in Chromium. `same-origin`
        // still sends no URL (which holds searches) to another site.
        .layer(always(header::REFERRER_POLICY, "same-origin"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    if tls {
        router.layer(always(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000",
        ))
    } else {
        router
    }
}
