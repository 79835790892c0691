//! The probes answer without a credential; everything else needs a
//! principal, which only a loopback listener grants without a token.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use pgtrail_server::{router, AppState};
use tower::ServiceExt as _;

async fn state(local_operator: bool) -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    (dir, AppState::new(store, local_operator))
}

async fn status(state: AppState, path: &str) -> StatusCode {
    let request = Request::get(path).body(Body::empty()).expect("request");
    router(state)
        .oneshot(request)
        .await
        .expect("response")
        .status()
}

#[tokio::test]
async fn probes_answer_without_a_credential_and_readyz_asks_the_store() {
    let (_dir, state) = state(false).await;
    assert_eq!(status(state.clone(), "/healthz").await, StatusCode::OK);
    assert_eq!(status(state, "/readyz").await, StatusCode::OK);
}

#[tokio::test]
async fn off_loopback_without_a_token_every_path_is_refused_even_unknown_ones() {
    let (_dir, state) = state(false).await;
    assert_eq!(
        status(state.clone(), "/api/v1/events").await,
        StatusCode::UNAUTHORIZED
    );
    // A page (even one that does not exist) sends a browser to the login page.
    assert_eq!(status(state, "/no/such/path").await, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn on_loopback_the_local_operator_gets_past_the_door() {
    let (_dir, state) = state(true).await;
    assert_eq!(status(state, "/no/such/path").await, StatusCode::NOT_FOUND);
}
