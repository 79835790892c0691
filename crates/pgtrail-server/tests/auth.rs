//! Who may look, attacked: requests without a token off loopback, revoked
//! and guessed tokens, a hand-edited tokens file, forged posts, a viewer
//! after parameters, DNS rebinding against the local operator, and reads
//! whose access record cannot be written. In process, over a real SQLite
//! store.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::State;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use pgtrail_core::filter::Filter;
use pgtrail_core::{Event, Kind, Source};
use pgtrail_server::access::Access;
use pgtrail_server::auth::{present, Principal, Role};
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{router, AppState};
use tower::ServiceExt as _;

const CLIENT: &str = "192.0.2.7:50123";

struct Server {
    dir: tempfile::TempDir,
    state: AppState,
    tokens: PathBuf,
}

impl Server {
    /// Off loopback, with a tokens file (absent until a token is made).
    async fn new() -> Server {
        Self::with(false).await
    }

    async fn with(loopback: bool) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("trail.db").display());
        let store = pgtrail_store::open::open(&url).await.expect("open store");
        let tokens = dir.path().join("tokens.toml");
        let state = AppState::new(store, loopback).with_tokens_file(&tokens);
        Server { dir, state, tokens }
    }

    fn token(&self, name: &str, role: Role) -> String {
        let mut set = TokenSet::load(&self.tokens).expect("load");
        let token = set.create(name, role).expect("create");
        set.save(&self.tokens).expect("save");
        token
    }

    fn revoke(&self, name: &str) {
        let mut set = TokenSet::load(&self.tokens).expect("load");
        set.revoke(name).expect("revoke");
        set.save(&self.tokens).expect("save");
    }

    async fn send(&self, request: Request<Body>) -> Response<Body> {
        let client: SocketAddr = CLIENT.parse().expect("addr");
        router(self.state.clone())
            .layer(MockConnectInfo(client))
            .oneshot(request)
            .await
            .expect("response")
    }

    async fn access_events(&self) -> Vec<Event> {
        let filter = Filter {
            kind: Some(Kind::Access),
            ..Filter::default()
        };
        self.state.store.query(&filter).await.expect("query")
    }

    /// Makes every later append fail, as a full disk or a lost store would.
    fn break_store(&self) {
        let db = rusqlite::Connection::open(self.dir.path().join("trail.db")).expect("open");
        db.execute_batch(
            "create trigger refuse before insert on events \
             begin select raise(fail, 'disk full'); end;",
        )
        .expect("trigger");
    }
}

fn get_with(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("request")
}

fn post_form(path: &str, body: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "trail.example:8080");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::from(body.to_string())).expect("request")
}

fn header_of(response: &Response<Body>, name: header::HeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Logs in through the form; returns the session cookie (`name=id`).
async fn login(server: &Server, token: &str) -> String {
    let response = server
        .send(post_form(
            "/login",
            &format!("token={token}&next=%2Fsearch"),
            &[("origin", "http://trail.example:8080")],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(header_of(&response, header::LOCATION), "/search");
    let cookie = header_of(&response, header::SET_COOKIE);
    cookie.split(';').next().expect("cookie").to_string()
}

#[tokio::test]
async fn off_loopback_nobody_gets_in_without_a_token() {
    let server = Server::new().await;
    let api = server.send(get_with("/api/v1/events", &[])).await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header_of(&api, header::CONTENT_TYPE),
        "application/problem+json"
    );
    assert!(header_of(&api, header::WWW_AUTHENTICATE).starts_with("Bearer"));
    let page = server.send(get_with("/rows?table=x", &[])).await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header_of(&page, header::LOCATION),
        "/login?next=/rows%3Ftable%3Dx"
    );
    // A cookie that names no session is no credential either.
    let forged = server
        .send(get_with(
            "/api/v1/events",
            &[("cookie", "pgtrail_session=abc")],
        ))
        .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_gets_in_until_it_is_revoked_and_its_sessions_die_with_it() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Auditor);
    let bearer = format!("Bearer {token}");
    let through = server
        .send(get_with("/no/such/page", &[("authorization", &bearer)]))
        .await;
    assert_eq!(through.status(), StatusCode::NOT_FOUND, "past the door");
    let cookie = login(&server, &token).await;
    assert_eq!(
        server
            .send(get_with("/no/such/page", &[("cookie", &cookie)]))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    server.revoke("ann");
    let refused = server
        .send(get_with("/api/v1/x", &[("authorization", &bearer)]))
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let session = server
        .send(get_with("/api/v1/x", &[("cookie", &cookie)]))
        .await;
    assert_eq!(session.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_hand_edited_tokens_file_is_obeyed_and_a_broken_one_lets_nobody_in() {
    let server = Server::with(true).await;
    // Someone who can write the file adds a line: the token works (the file
    // is the authority), but its creation is nowhere in the trail.
    let token = "pgt_minted-by-hand-0123456789abcdefghijklmnopqrstuv";
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(token.as_bytes()))
    };
    std::fs::write(
        &server.tokens,
        format!(
            "[[token]]\nname = \"mallory\"\nrole = \"auditor\"\nsha256 = \"{sha}\"\n\
             created_at = \"2026-01-01T00:00:00Z\"\n"
        ),
    )
    .expect("write");
    let bearer = format!("Bearer {token}");
    assert_eq!(
        server
            .send(get_with("/x", &[("authorization", &bearer)]))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert!(
        server
            .access_events()
            .await
            .iter()
            .all(|e| e.operation.as_deref() != Some("TOKEN_CREATE")),
        "no creation event: the trail shows the token was not made by `pgtrail token`"
    );
    // A file the server cannot parse: nobody, not even the local operator.
    std::fs::write(&server.tokens, "[[token]]\nname = 1\n").expect("write");
    for request in [
        get_with("/x", &[("authorization", &bearer)]),
        get_with("/x", &[("host", "127.0.0.1:8080")]),
    ] {
        assert_eq!(
            server.send(request).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

#[tokio::test]
async fn guessed_tokens_are_slowed_down_and_each_failure_is_recorded() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Auditor);
    for guess in 0..4 {
        let response = server
            .send(get_with(
                "/api/v1/events",
                &[("authorization", &format!("Bearer pgt_guess{guess}"))],
            ))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    // Now the address must wait, even with the right token.
    let waiting = server
        .send(get_with(
            "/api/v1/events",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await;
    assert_eq!(waiting.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(header_of(&waiting, header::RETRY_AFTER)
        .parse::<u64>()
        .is_ok());

    let failures: Vec<Event> = server
        .access_events()
        .await
        .into_iter()
        .filter(|e| e.operation.as_deref() == Some("LOGIN") && e.error.is_some())
        .collect();
    assert_eq!(failures.len(), 4);
    for failure in &failures {
        assert_eq!(failure.source, Source::Server);
        assert_eq!(failure.client_addr.as_deref(), Some("192.0.2.7"));
        assert_eq!(failure.client_port, Some(50123));
        let json = serde_json::to_string(failure).expect("json");
        assert!(!json.contains("pgt_guess"), "the guess is not kept: {json}");
    }
}

#[tokio::test]
async fn the_session_cookie_holds_no_token_and_is_locked_down() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Viewer);
    let response = server
        .send(post_form(
            "/login",
            &format!("token={token}"),
            &[("origin", "http://trail.example:8080")],
        ))
        .await;
    let cookie = header_of(&response, header::SET_COOKIE).to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP: a Secure cookie would never come back"
    );
    assert!(!cookie.contains(&token[4..]), "{cookie}");

    let mut tls_state = Server::new().await;
    tls_state.state = tls_state.state.clone().with_tls(true);
    let token = tls_state.token("bob", Role::Auditor);
    let response = tls_state
        .send(post_form(
            "/login",
            &format!("token={token}"),
            &[("origin", "https://trail.example:8080")],
        ))
        .await;
    let cookie = header_of(&response, header::SET_COOKIE);
    assert!(cookie.starts_with("__Host-pgtrail_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(header_of(&response, header::STRICT_TRANSPORT_SECURITY).contains("max-age="));

    // A wrong token on the form: 401, the form again, recorded.
    let wrong = server
        .send(post_form("/login", "token=pgt_nope", &[]))
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(body_text(wrong).await.contains("not valid"));
}

#[tokio::test]
async fn a_forged_post_is_refused_and_the_real_one_passes() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Auditor);
    let cookie = login(&server, &token).await;
    let csrf = csrf_of(&server, &cookie).await;
    let here = ("origin", "http://trail.example:8080");

    // No CSRF token; a wrong one; the right one from another site.
    for (body, headers) in [
        ("", vec![("cookie", cookie.as_str()), here]),
        ("csrf=AAAA", vec![("cookie", cookie.as_str()), here]),
        (
            &format!("csrf={csrf}") as &str,
            vec![
                ("cookie", cookie.as_str()),
                ("origin", "http://evil.example"),
            ],
        ),
        (
            &format!("csrf={csrf}"),
            vec![
                ("cookie", cookie.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
        ),
    ] {
        let response = server.send(post_form("/logout", body, &headers)).await;
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{body} {headers:?}"
        );
    }
    // A login posted from another site (login CSRF) is refused too.
    let response = server
        .send(post_form(
            "/login",
            &format!("token={token}"),
            &[("origin", "http://evil.example")],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // The header form (htmx) and the field form both pass.
    let response = server
        .send(post_form(
            "/logout",
            "",
            &[("cookie", &cookie), here, ("x-csrf-token", &csrf)],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(header_of(&response, header::SET_COOKIE).contains("Max-Age=0"));
    // The session is over.
    let after = server
        .send(get_with("/api/v1/x", &[("cookie", &cookie)]))
        .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // A Bearer client needs no CSRF token (a browser never sends the header).
    let response = server
        .send(post_form(
            "/logout",
            "",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

/// The CSRF token a page of this session would embed.
async fn csrf_of(server: &Server, cookie: &str) -> String {
    let app = router(server.state.clone()).merge(
        Router::new()
            .route(
                "/test/csrf",
                get(|csrf: pgtrail_server::auth::CsrfToken| async move { csrf.0 }),
            )
            .layer(axum::middleware::from_fn_with_state(
                server.state.clone(),
                pgtrail_server::auth::authenticate,
            ))
            .with_state(server.state.clone()),
    );
    let response = app
        .oneshot(get_with("/test/csrf", &[("cookie", cookie)]))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let csrf = body_text(response).await;
    assert_eq!(csrf.len(), 43);
    csrf
}

#[tokio::test]
async fn the_local_operator_is_only_served_for_a_loopback_host_and_posts_need_csrf() {
    let server = Server::with(true).await;
    let local = server
        .send(get_with("/x", &[("host", "127.0.0.1:8080")]))
        .await;
    assert_eq!(local.status(), StatusCode::NOT_FOUND, "past the door");
    // DNS rebinding: evil.example resolves to 127.0.0.1, the Host says so.
    let rebound = server
        .send(get_with("/x", &[("host", "evil.example:8080")]))
        .await;
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    // A cross-site form posted to the local operator's server.
    let forged = server
        .send(
            Request::post("/logout")
                .header(header::HOST, "127.0.0.1:8080")
                .header(header::ORIGIN, "http://evil.example")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let blind = server
        .send(
            Request::post("/logout")
                .header(header::HOST, "127.0.0.1:8080")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(blind.status(), StatusCode::FORBIDDEN, "no CSRF token");
    // Once a token exists, the local operator is gone.
    server.token("ann", Role::Auditor);
    let after = server
        .send(get_with("/api/v1/x", &[("host", "127.0.0.1:8080")]))
        .await;
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let server = Server::new().await;
    for path in ["/login", "/api/v1/events", "/healthz"] {
        let response = server.send(get_with(path, &[])).await;
        assert_eq!(
            header_of(&response, header::CONTENT_SECURITY_POLICY),
            pgtrail_server::headers::CONTENT_SECURITY_POLICY,
            "{path}"
        );
        assert!(!header_of(&response, header::CONTENT_SECURITY_POLICY).contains("unsafe-inline"));
        assert_eq!(header_of(&response, header::X_FRAME_OPTIONS), "DENY");
        assert_eq!(
            header_of(&response, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff"
        );
        assert_eq!(header_of(&response, header::REFERRER_POLICY), "same-origin");
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-store");
    }
}

#[test]
fn a_viewer_sees_no_parameters_an_auditor_sees_them() {
    let mut event = Event::new(Source::Proxy, Kind::Statement);
    event.sql = Some("select * from users where ssn = $1".into());
    event.params = Some(vec![serde_json::Value::from("123-45-6789")]);
    let viewer = Principal::new("v", Role::Viewer);
    let auditor = Principal::new("a", Role::Auditor);
    assert_eq!(present(&auditor, event.clone()), event);
    let shown = present(&viewer, event.clone());
    assert_eq!(shown.params, None);
    assert!(!serde_json::to_string(&shown)
        .expect("json")
        .contains("123-45-6789"));
    // Nor the nonce, which would let a viewer holding a redacted proof of
    // the event test guesses of its withheld values.
    let nonce = event.nonce.clone().expect("a new event has a nonce");
    assert_eq!(shown.nonce, None);
    assert!(!serde_json::to_string(&shown)
        .expect("json")
        .contains(&nonce));

    // The quarantine copy of a statement holds its parameters too.
    let quarantined = pgtrail_core::quarantine::quarantine(&event, "refused");
    let shown = present(&viewer, quarantined.clone());
    let json = serde_json::to_string(&shown).expect("json");
    assert!(!json.contains("raw_base64"), "{json}");
    let kept = present(&auditor, quarantined);
    assert!(kept
        .context
        .as_ref()
        .is_some_and(|c| c.contains_key("raw_base64")));
}

/// A read handler as `api` and `pages` write them.
async fn read(State(state): State<AppState>, principal: Principal) -> axum::response::Response {
    let access = Access {
        action: "search",
        target: serde_json::json!({ "user": "alice" }),
        results: Some(3),
    };
    match state.record_access(&principal, access).await {
        Ok(()) => "the events".into_response(),
        Err(error) => error.into_response(),
    }
}

fn reading_app(state: AppState) -> Router {
    let client: SocketAddr = CLIENT.parse().expect("addr");
    Router::new()
        .route("/read", get(read))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pgtrail_server::auth::authenticate,
        ))
        .with_state(state)
        .layer(MockConnectInfo(client))
}

#[tokio::test]
async fn a_read_is_recorded_with_who_and_where_before_it_is_answered() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Viewer);
    let response = reading_app(server.state.clone())
        .oneshot(get_with(
            "/read",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let events = server.access_events().await;
    let search = events
        .iter()
        .find(|e| e.operation.as_deref() == Some("SEARCH"))
        .expect("recorded");
    assert_eq!(search.app_user.as_deref(), Some("ann"));
    assert_eq!(search.client_addr.as_deref(), Some("192.0.2.7"));
    assert_eq!(search.rows, Some(3));
    let context = search.context.as_ref().expect("context");
    assert_eq!(context["role"], "viewer");
    assert_eq!(context["target"]["user"], "alice");
}

#[tokio::test]
async fn a_read_whose_access_record_cannot_be_written_is_refused() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Auditor);
    server.break_store();
    let response = reading_app(server.state.clone())
        .oneshot(get_with(
            "/read",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header_of(&response, header::CONTENT_TYPE),
        "application/problem+json"
    );
    assert!(!body_text(response).await.contains("the events"));
    // A login that cannot be recorded gives no session either.
    let login = server
        .send(post_form("/login", &format!("token={token}"), &[]))
        .await;
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(login.headers().get(header::SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_reads_are_each_recorded_once() {
    let server = Server::new().await;
    let state = server.state.clone();
    let who = Principal::new("ann", Role::Auditor);
    let before = state.store.head().await.expect("head");
    assert!(before.is_none());
    let mut reads = tokio::task::JoinSet::new();
    for n in 0..500u64 {
        let state = state.clone();
        let who = who.clone();
        reads.spawn(async move {
            let access = Access {
                action: "search",
                target: serde_json::json!({ "n": n }),
                results: Some(n),
            };
            state.record_access(&who, access).await
        });
    }
    while let Some(done) = reads.join_next().await {
        done.expect("task").expect("recorded");
    }
    let events = server.access_events().await;
    assert_eq!(events.len(), 500);
    let mut seen: Vec<i64> = events.iter().filter_map(|e| e.rows).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..500).collect::<Vec<i64>>());
}

/// Figures, not a check: access records per second from 64 concurrent
/// readers, group-committed (`record_access`) against one `Store::append`
/// each, alternating rounds. Run with
/// `cargo nextest run -p pgtrail-server --run-ignored only -E 'test(access_records_per_second)' --no-capture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn access_records_per_second() {
    const READERS: usize = 64;
    const EACH: usize = 40;
    let server = Server::new().await;
    let state = server.state.clone();
    let who = Principal::new("ann", Role::Auditor);
    let access = || Access {
        action: "search",
        target: serde_json::json!({ "user": "alice", "table": "public.users" }),
        results: Some(20),
    };
    let mut batched = Vec::new();
    let mut single = Vec::new();
    for _round in 0..5 {
        for grouped in [true, false] {
            let started = std::time::Instant::now();
            let mut readers = tokio::task::JoinSet::new();
            for _ in 0..READERS {
                let state = state.clone();
                let who = who.clone();
                let access = access();
                readers.spawn(async move {
                    for _ in 0..EACH {
                        if grouped {
                            state
                                .record_access(&who, access.clone())
                                .await
                                .expect("record");
                        } else {
                            let event = pgtrail_server::access::access_event(&who, access.clone());
                            state.store.append(&[event]).await.expect("append");
                        }
                    }
                });
            }
            while let Some(done) = readers.join_next().await {
                done.expect("reader");
            }
            let rate = (READERS * EACH) as f64 / started.elapsed().as_secs_f64();
            if grouped { &mut batched } else { &mut single }.push(rate);
        }
    }
    for (name, rates) in [
        ("group commit", &mut batched),
        ("one append each", &mut single),
    ] {
        rates.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.0} records/s (min {:.0}, max {:.0}) over {} rounds",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
            rates.len()
        );
    }
}

/// A tail outlives the request that opened it: a token revoked while it
/// is open ends it before it shows anything more.
#[tokio::test]
async fn an_api_tail_open_when_its_token_is_revoked_ends() {
    let server = Server::new().await;
    let token = server.token("ann", Role::Viewer);
    let response = server
        .send(get_with(
            "/api/v1/tail",
            &[("authorization", &format!("Bearer {token}"))],
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    server.revoke("ann");
    let mut late = Event::new(Source::Proxy, Kind::Statement);
    late.sql = Some("select 'after the revocation'".into());
    server.state.store.append(&[late]).await.expect("append");
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use futures_util::StreamExt as _;
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ends: {text}");
    assert!(!text.contains("after the revocation"), "{text}");
}
