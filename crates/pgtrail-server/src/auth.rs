//! Who is asking: the principal every handler serves, what its role may
//! see, and the layer that decides it for each request.
//!
//! The rule: a server listening on loopback with no tokens created serves
//! the local operator (the same person who could open the store file),
//! provided the request names a loopback host (a DNS-rebinding page names
//! its own); anywhere else, a request without a valid credential is
//! refused: pages redirect to `/login`, the API answers 401.
//!
//! Credentials: `Authorization: Bearer TOKEN` (the API, scripts), or the
//! session cookie the login page sets (browsers). A POST that a browser
//! can send by itself (cookie session or local operator) must come from
//! this origin and carry the session's CSRF token ([`CsrfToken`]); a
//! Bearer request needs no CSRF token (a browser never adds the header).

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, FromRequest as _, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use pgtrail_core::{Event, Kind};
use serde::{Deserialize, Serialize};

use crate::access::{failed_login_event, Access};
use crate::session::{Session, COOKIE, SESSION_LIFETIME};
use crate::tokens::constant_time_eq;
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

impl Role {
    /// `auditor` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Viewer => "viewer",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auditor" => Ok(Role::Auditor),
            "viewer" => Ok(Role::Viewer),
            other => Err(format!(
                "unknown role '{other}' (expected auditor or viewer)"
            )),
        }
    }
}

/// The authenticated caller of one request (a token's name and role, or
/// the local operator on a loopback listener without tokens), and where
/// the request came from (recorded in its access events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The client's address, when the listener knows it.
    #[serde(skip)]
    pub client: Option<SocketAddr>,
}

impl Principal {
    /// A principal named `name` with `role`, address unknown.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Principal {
            name: name.into(),
            role,
            client: None,
        }
    }

    /// The person at the machine: a loopback listener, no tokens.
    pub fn local_operator() -> Self {
        Principal::new("local", Role::Auditor)
    }

    /// Whether this principal sees statement parameters.
    pub fn sees_params(&self) -> bool {
        self.role == Role::Auditor
    }
}

/// What `principal` may see of `event`: every event the API and the pages
/// show goes through here. A viewer gets no statement parameters (nor the
/// raw copy a quarantine event keeps of its original, which holds them)
/// and no nonce (with it, a redacted proof's withheld values could be
/// tested against their commitments: docs/proofs.md); masked values were
/// masked at capture and stay as stored. An auditor gets the event as
/// stored.
pub fn present(principal: &Principal, mut event: Event) -> Event {
    if principal.role == Role::Viewer {
        event.params = None;
        event.nonce = None;
        if event.kind == Kind::Quarantine {
            if let Some(context) = event.context.as_mut() {
                if context.remove("raw_base64").is_some() {
                    context.insert("raw_withheld".into(), "role viewer".into());
                }
            }
        }
    }
    event
}

/// The CSRF token a page puts in each form that posts (a hidden field
/// named `csrf`) or in htmx's `hx-headers` as `X-CSRF-Token`; empty for
/// a Bearer request, which needs none. Handlers take `csrf: CsrfToken`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrfToken(pub String);

impl CsrfToken {
    /// The token's text (base64url: safe in an HTML attribute as is).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The form field and the header that carry the CSRF token.
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the principal of a request got in.
#[derive(Debug, Clone)]
enum Door {
    Bearer,
    Session { id: String, session: Session },
    Local,
}

/// Decides the principal of each request and puts it in the request's
/// extensions, or refuses the request.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let client = client_addr(&request);
    let tokens = match state.tokens() {
        Ok(tokens) => tokens,
        Err(_) => return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Tokens unavailable",
            "the server cannot read its tokens file, so nobody gets in; the operator must fix it",
        ),
    };
    let (principal, door) = if let Some(header) = request.headers().get(header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        if let Err(wait) = state.throttle.check(client.map(|c| c.ip())) {
            return too_many(wait);
        }
        match token.and_then(|t| tokens.find(t)) {
            Some(entry) => {
                state.throttle.succeed(client.map(|c| c.ip()));
                (Principal::new(&entry.name, entry.role), Door::Bearer)
            }
            None => return refuse_login(&state, client, "bearer").await,
        }
    } else if let Some((id, session)) =
        session_of(&state, request.headers()).filter(|(_, s)| tokens.holds(&s.name, &s.sha256))
    {
        (
            Principal::new(&session.name, session.role),
            Door::Session { id, session },
        )
    } else if state.local_operator && tokens.is_empty() {
        if !host_is_loopback(request.headers()) {
            return problem(
                StatusCode::FORBIDDEN,
                "Not a loopback host",
                "without tokens this server only answers requests for a loopback host name \
                 (localhost, 127.0.0.1, [::1]); create a token to serve other names",
            );
        }
        (Principal::local_operator(), Door::Local)
    } else {
        return unauthenticated(&request);
    };
    let principal = Principal {
        client,
        ..principal
    };

    let csrf = match &door {
        Door::Bearer => String::new(),
        Door::Session { session, .. } => session.csrf.clone(),
        Door::Local => state.local_csrf.to_string(),
    };
    if !matches!(door, Door::Bearer) && !is_safe(request.method()) {
        let (checked, passed) = check_csrf(request, &csrf).await;
        request = checked;
        if let Err(reason) = passed {
            tracing::warn!(%reason, principal = %principal.name, "refused a POST: CSRF check failed");
            return problem(StatusCode::FORBIDDEN, "Cross-site request refused", reason);
        }
    }
    if let Door::Session { id, .. } = &door {
        request.extensions_mut().insert(SessionId(id.clone()));
    }
    request.extensions_mut().insert(CsrfToken(csrf.clone()));
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    // A script or curl on the same origin reads the token here for its
    // POSTs (`X-CSRF-Token`); another origin cannot read this header.
    if let Ok(value) = HeaderValue::from_str(&csrf) {
        if !csrf.is_empty() {
            response.headers_mut().insert(CSRF_HEADER, value);
        }
    }
    response
}

/// Whether `principal` would still get in now, as `auth::authenticate`
/// decides at each request: a tail outlives the request that opened it, so
/// it asks again before each look at the trail (the pages' and the API's
/// tails).
pub(crate) fn still_admitted(state: &AppState, principal: &Principal) -> bool {
    let Ok(tokens) = state.tokens() else {
        return false;
    };
    if tokens.is_empty() {
        return state.local_operator && *principal.name == *Principal::local_operator().name;
    }
    tokens
        .entries()
        .iter()
        .any(|e| e.name == principal.name && e.role == principal.role)
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

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = StatusCode;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CsrfToken>()
            .cloned()
            .ok_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

#[derive(Debug, Clone)]
struct SessionId(String);

/// `/login` (outside the layer: it is how one gets in).
pub fn login_routes() -> Router<AppState> {
    Router::new().route("/login", get(login_page).post(login))
}

/// `/logout` (behind the layer: a session and its CSRF token are needed).
pub fn routes() -> Router<AppState> {
    Router::new().route("/logout", post(logout))
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login_page(axum::extract::Query(query): axum::extract::Query<LoginQuery>) -> Response {
    login_form(StatusCode::OK, query.next.as_deref(), None)
}

async fn login(State(state): State<AppState>, request: Request) -> Response {
    let client = client_addr(&request);
    if let Err(reason) = check_origin(request.headers()) {
        return problem(StatusCode::FORBIDDEN, "Cross-site request refused", reason);
    }
    let form = match axum::extract::Form::<LoginForm>::from_request(request, &state).await {
        Ok(axum::extract::Form(form)) => form,
        Err(rejection) => return rejection.into_response(),
    };
    if let Err(wait) = state.throttle.check(client.map(|c| c.ip())) {
        return too_many(wait);
    }
    let tokens = match state.tokens() {
        Ok(tokens) => tokens,
        Err(_) => {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "Tokens unavailable",
                "the server cannot read its tokens file, so nobody gets in",
            )
        }
    };
    let Some(entry) = tokens.find(form.token.trim()) else {
        let delay = state.throttle.fail(client.map(|c| c.ip()));
        record_failure(&state, client, "login page").await;
        let message = if delay.is_zero() {
            "That token is not valid.".to_string()
        } else {
            format!(
                "That token is not valid. Wait {} s before trying again.",
                delay.as_secs()
            )
        };
        return login_form(
            StatusCode::UNAUTHORIZED,
            form.next.as_deref(),
            Some(&message),
        );
    };
    state.throttle.succeed(client.map(|c| c.ip()));
    let principal = Principal {
        client,
        ..Principal::new(&entry.name, entry.role)
    };
    let login = Access {
        action: "login",
        target: serde_json::json!({ "door": "login page" }),
        results: None,
    };
    if let Err(error) = state.record_access(&principal, login).await {
        return error.into_response();
    }
    let id = match state.sessions.start(&entry.name, entry.role, &entry.sha256) {
        Ok(id) => id,
        Err(error) => {
            tracing::error!(%error, "cannot start a session");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No session",
                "the server cannot start a session",
            );
        }
    };
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        cookie_name(&state),
        SESSION_LIFETIME.as_secs(),
        if state.tls { "; Secure" } else { "" }
    );
    let mut response = Redirect::to(&safe_next(form.next.as_deref())).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(state): State<AppState>, principal: Principal, request: Request) -> Response {
    if let Some(SessionId(id)) = request.extensions().get::<SessionId>() {
        state.sessions.end(id);
        let logout = Access {
            action: "logout",
            target: serde_json::Value::Null,
            results: None,
        };
        // The session is over either way; a lost record is logged.
        if let Err(error) = state.record_access(&principal, logout).await {
            tracing::error!(%error, "logout not recorded");
        }
    }
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(&state),
        if state.tls { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/login").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The login form: plain HTML, no script, no inline style.
fn login_form(status: StatusCode, next: Option<&str>, message: Option<&str>) -> Response {
    let next = html_escape(&safe_next(next));
    let message = message
        .map(|m| format!("<p role=\"alert\">{}</p>\n", html_escape(m)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>pgtrail: log in</title></head><body>\n\
         <main><h1>pgtrail</h1>\n{message}\
         <form method=\"post\" action=\"/login\">\n\
         <label for=\"token\">Token</label>\n\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <button type=\"submit\">Log in</button>\n</form>\n\
         <p>Ask the operator for a token (<code>pgtrail token create</code>).</p></main>\n\
         </body></html>\n"
    );
    (status, Html(body)).into_response()
}

/// Where to go after logging in: a path on this server, never elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && !next.chars().any(|c| c.is_control()) =>
        {
            next.to_string()
        }
        _ => "/".to_string(),
    }
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A refused credential: counted against its client and recorded.
async fn refuse_login(state: &AppState, client: Option<SocketAddr>, door: &str) -> Response {
    state.throttle.fail(client.map(|c| c.ip()));
    record_failure(state, client, door).await;
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "Invalid token",
        "the token is not valid (revoked, mistyped, or never created)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pgtrail\""),
    );
    response
}

async fn record_failure(state: &AppState, client: Option<SocketAddr>, door: &str) {
    if let Err(error) = state
        .record(failed_login_event(client, door, "invalid token"))
        .await
    {
        tracing::error!(%error, "failed login not recorded");
    }
}

fn too_many(wait: std::time::Duration) -> Response {
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many failed logins",
        format!(
            "too many invalid tokens from this address: wait {} s",
            wait.as_secs().max(1)
        ),
    );
    if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// No credential: pages go to the login page, the API and `/metrics` (a
/// scraper, which would follow the redirect to HTML) get 401.
fn unauthenticated(request: &Request) -> Response {
    let path = request.uri().path();
    if !path.starts_with("/api/")
        && path != "/metrics"
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        let next = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        return Redirect::to(&format!("/login?next={}", percent_encode(next))).into_response();
    }
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        "Credential needed",
        "every request needs a token: `Authorization: Bearer TOKEN` (pgtrail token create)",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"pgtrail\""),
    );
    response
}

/// An `application/problem+json` answer (RFC 9457).
pub(crate) fn problem(status: StatusCode, title: &str, detail: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

/// The client's address, from `serve`'s `ConnectInfo` (or a test's
/// `MockConnectInfo`).
fn client_addr(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
        .or_else(|| {
            extensions
                .get::<MockConnectInfo<SocketAddr>>()
                .map(|MockConnectInfo(addr)| *addr)
        })
}

fn cookie_name(state: &AppState) -> &'static str {
    // Under TLS the `__Host-` prefix: the browser keeps it only if Secure,
    // Path=/ and host-only, so no sibling host can plant one.
    if state.tls {
        "__Host-pgtrail_session"
    } else {
        COOKIE
    }
}

fn session_of(state: &AppState, headers: &HeaderMap) -> Option<(String, Session)> {
    let name = cookie_name(state);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .find_map(|(_, id)| state.sessions.get(id).map(|s| (id.to_string(), s)))
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The browser's own word on where a request comes from: `Sec-Fetch-Site`
/// and `Origin` must both say this origin when present.
fn check_origin(headers: &HeaderMap) -> Result<(), String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err("the browser says this request comes from another site".into());
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err("the request's Origin is not this server".into()),
    }
}

/// Checks the origin and the CSRF token of a POST (header, or form field
/// of a URL-encoded body, which is read and put back).
async fn check_csrf(request: Request, expected: &str) -> (Request, Result<(), String>) {
    if let Err(reason) = check_origin(request.headers()) {
        return (request, Err(reason));
    }
    if let Some(header) = request.headers().get(CSRF_HEADER) {
        let passed =
            !expected.is_empty() && constant_time_eq(header.as_bytes(), expected.as_bytes());
        return (request, passed.then_some(()).ok_or_else(missing_csrf));
    }
    let form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| {
            t.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
    if !form {
        return (request, Err(missing_csrf()));
    }
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let request = Request::from_parts(parts, Body::empty());
            return (request, Err("the form is too large".into()));
        }
    };
    let passed = !expected.is_empty()
        && bytes
            .split(|b| *b == b'&')
            .filter_map(|pair| {
                let mut kv = pair.splitn(2, |b| *b == b'=');
                Some((kv.next()?, kv.next()?))
            })
            .any(|(key, value)| {
                key == CSRF_FIELD.as_bytes() && constant_time_eq(value, expected.as_bytes())
            });
    let request = Request::from_parts(parts, Body::from(bytes));
    (request, passed.then_some(()).ok_or_else(missing_csrf))
}

fn missing_csrf() -> String {
    "this form's CSRF token is missing or stale: reload the page".into()
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/rows?x=1")), "/rows?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "evil",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
    }

    #[test]
    fn only_loopback_names_are_loopback() {
        let with = |host: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).expect("host"));
            host_is_loopback(&headers)
        };
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "127.0.0.2",
            "LOCALHOST",
        ] {
            assert!(with(host), "{host}");
        }
        for host in [
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "[::2]:80",
        ] {
            assert!(!with(host), "{host}");
        }
    }
}
