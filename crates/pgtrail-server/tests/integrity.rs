//! The integrity page and its "Verify now" button, in process over a real
//! SQLite store: what an auditor sees (the last verify, signed
//! checkpoints, alarms, capture), the button run end to end (a store
//! edited by hand shows a failed verify), and who may not press it: a
//! viewer, a forged post, a foreign origin, and a second press while one
//! runs.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{TimeZone, Utc};
use pgtrail_core::alarm::Alarm;
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_server::auth::Role;
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{router, AppState};
use pgtrail_store::Store;
use serde_json::json;
use tower::ServiceExt as _;

struct Trail {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    state: AppState,
}

impl Trail {
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("trail.db")
    }
}

fn change(n: i64) -> Event {
    let at = Utc
        .with_ymd_and_hms(2026, 3, 1, 10, 0, 0)
        .single()
        .expect("time")
        + chrono::Duration::seconds(n);
    let mut e = Event::at(Source::Trigger, Kind::RowChange, at);
    e.app_user = Some("alice".into());
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e.operation = Some("UPDATE".into());
    e.pk = json!({ "id": n.to_string() }).as_object().cloned();
    e.new = json!({ "id": n.to_string(), "note": format!("v{n}") })
        .as_object()
        .cloned();
    e
}

/// A store of 40 changes, a signed checkpoint of them, and one alarm.
async fn trail() -> Trail {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    let events: Vec<Event> = (1..=40).map(change).collect();
    store.append(&events).await.expect("append");
    let key = pgtrail_store::KeyPair::generate().expect("key");
    let signer = pgtrail_store::signing::Signer {
        key: &key,
        trusted: &[],
        witness: None,
    };
    pgtrail_store::signing::sign_head(store.as_ref(), &signer, false)
        .await
        .expect("sign");
    let mut alarm = Alarm::on_table(
        pgtrail_core::alarm::CAPTURE_TRIGGER_DROPPED,
        "public",
        "orders",
        "the capture trigger of public.orders was dropped by <b>mallory</b>",
    )
    .event(Source::Trigger);
    alarm.captured_at = Utc::now();
    store.append(&[alarm]).await.expect("append alarm");
    Trail {
        state: AppState::new(Arc::clone(&store), true),
        store,
        dir,
    }
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, String, String) {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let status = response.status();
    let started = response
        .headers()
        .get("x-verify-start")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned(), started)
}

async fn get(state: &AppState, path: &str) -> (StatusCode, String) {
    let request = Request::get(path)
        .header(header::HOST, "localhost:8080")
        .body(Body::empty())
        .expect("request");
    let (status, body, _) = send(state, request).await;
    (status, body)
}

/// The CSRF token the page's form carries.
fn form_csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("the page has the verify form")
        + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().expect("value").to_string()
}

/// Presses "Verify now" as htmx does: the form's fields, from this origin.
async fn press(state: &AppState, body: &str, origin: &str) -> (StatusCode, String, String) {
    let request = Request::post("/integrity/verify")
        .header(header::HOST, "localhost:8080")
        .header(header::ORIGIN, origin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("hx-request", "true")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(state, request).await
}

/// Polls the progress fragment until the verify is done; its last answer.
async fn until_done(state: &AppState) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (status, fragment) = get(state, "/fragments/verify").await;
            assert_eq!(status, StatusCode::OK);
            if !fragment.contains("hx-trigger=\"every 1s\"") {
                return fragment;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the verify finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_checkpoints_alarms_and_capture_and_is_recorded() {
    let t = trail().await;
    let (status, page) = get(&t.state, "/integrity").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("No verify has run through the server yet"),
        "{page}"
    );
    // The signed checkpoint: its seq and its signer's key id.
    let checkpoints = t.store.checkpoints().await.expect("checkpoints");
    let key = checkpoints[0].public_key.clone().expect("signed");
    assert!(page.contains(&key[..16]), "signer key id shown");
    assert!(page.contains("<td class=\"seq\">40</td>"), "{page}");
    // The alarm, escaped.
    assert!(page.contains("capture_trigger_dropped"));
    assert!(
        page.contains("dropped by &#60;b&#62;mallory&#60;/b&#62;"),
        "{page}"
    );
    assert!(!page.contains("<b>mallory"));
    // Capture: the trigger path's newest event.
    assert!(page.contains("<td>trigger</td>"), "{page}");
    assert!(
        page.contains("no cosignature kept for the newest checkpoint"),
        "{page}"
    );
    // The auditor sees the button; the read was recorded.
    assert!(page.contains("id=\"verify-now\""));
    let recorded = t
        .store
        .query(&Filter {
            kind: Some(Kind::Access),
            operation: Some("INTEGRITY".into()),
            ..Filter::default()
        })
        .await
        .expect("query");
    assert_eq!(recorded.len(), 1);
}

/// A witness server's cosignature of the newest checkpoint is listed with
/// the time it states; one of another text (an older or a forged
/// checkpoint) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_lists_the_witnesses_that_cosigned_the_newest_checkpoint() {
    use pgtrail_store::cosignature::{cosign, line_text, StoredCosignature};
    let t = trail().await;
    let checkpoint = t.store.checkpoints().await.expect("checkpoints")[0].clone();
    let note = pgtrail_store::note::SignedNote::parse(checkpoint.note.as_deref().expect("a note"))
        .expect("parse");
    let witness = pgtrail_store::KeyPair::generate().expect("key");
    let when = Utc
        .with_ymd_and_hms(2026, 3, 1, 11, 0, 0)
        .single()
        .expect("time");
    let keep = |text: &str, name: &str| {
        let line = cosign(text, name, &witness, when.timestamp() as u64);
        StoredCosignature {
            seq: checkpoint.seq,
            checkpoint: text.to_string(),
            line: line_text(&line),
            received_at: Utc::now(),
        }
    };
    t.store
        .add_cosignature(&keep(&note.text, "witness1.example"))
        .await
        .expect("keep");
    t.store
        .add_cosignature(&keep("another/log\n40\nAAAA\n", "forger.example"))
        .await
        .expect("keep");
    let (status, page) = get(&t.state, "/integrity").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("cosigned by witness1.example at 2026-03-01 11:00:00"),
        "{page}"
    );
    assert!(!page.contains("forger.example"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_now_runs_in_the_background_and_the_result_outlives_the_server() {
    let t = trail().await;
    let (_, page) = get(&t.state, "/integrity").await;
    let csrf = form_csrf(&page);
    let (status, fragment, started) =
        press(&t.state, &format!("csrf={csrf}"), "http://localhost:8080").await;
    assert_eq!(status, StatusCode::OK, "{fragment}");
    assert_eq!(started, "started");
    assert!(fragment.contains("id=\"verify\""), "{fragment}");
    let done = until_done(&t.state).await;
    assert!(done.contains("Passed"), "{done}");
    assert!(done.contains("local"), "who ran it: {done}");

    // A new server on the same store (a restart) reads the result back
    // from the trail. (The verify job is per process and store: a fresh
    // store path stands for a fresh process.)
    // `VACUUM INTO` takes a consistent snapshot, WAL included; a plain
    // file copy could catch the running server mid-checkpoint (torn pages).
    let copy = t.dir.path().join("copy.db");
    rusqlite::Connection::open(t.db())
        .expect("open")
        .execute("VACUUM INTO ?1", [copy.display().to_string()])
        .expect("snapshot store");
    let url = format!("sqlite:{}", copy.display());
    let store = pgtrail_store::open::open(&url).await.expect("open copy");
    let restarted = AppState::new(store, true);
    let (_, page) = get(&restarted, "/integrity").await;
    assert!(page.contains("Passed"), "{page}");
    assert!(page.contains("As recorded in the trail"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_edited_by_hand_shows_a_failed_verify() {
    let t = trail().await;
    // Someone with the file rewrites what event 7 says.
    let db = rusqlite::Connection::open(t.db()).expect("open");
    let changed = db
        .execute(
            "update events set body = replace(body, '\"note\":\"v7\"', '\"note\":\"v8\"') where seq = 7",
            [],
        )
        .expect("edit");
    assert_eq!(changed, 1);
    drop(db);
    let (_, page) = get(&t.state, "/integrity").await;
    let (status, _, _) = press(
        &t.state,
        &format!("csrf={}", form_csrf(&page)),
        "http://localhost:8080",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let done = until_done(&t.state).await;
    assert!(done.contains("FAILED"), "{done}");
    assert!(done.contains("event 7"), "names the edited event: {done}");
    let (_, page) = get(&t.state, "/integrity").await;
    assert!(page.contains("FAILED"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_press_while_one_runs_answers_running() {
    let t = trail().await;
    // Enough events that the walk takes a while.
    let more: Vec<Event> = (100..20_100).map(change).collect();
    t.store.append(&more).await.expect("append");
    let (_, page) = get(&t.state, "/integrity").await;
    let body = format!("csrf={}", form_csrf(&page));
    let (_, _, first) = press(&t.state, &body, "http://localhost:8080").await;
    assert_eq!(first, "started");
    let (status, fragment, second) = press(&t.state, &body, "http://localhost:8080").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second, "running", "one verify at a time");
    assert!(fragment.contains("Verify running"), "{fragment}");
    let starts = t
        .store
        .query(&Filter {
            kind: Some(Kind::Access),
            operation: Some("VERIFY".into()),
            ..Filter::default()
        })
        .await
        .expect("query");
    assert_eq!(starts.len(), 1, "only the started verify is recorded");
    let done = until_done(&t.state).await;
    assert!(done.contains("Passed"), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_foreign_press_is_refused() {
    let t = trail().await;
    let (_, page) = get(&t.state, "/integrity").await;
    let csrf = form_csrf(&page);
    for (body, origin) in [
        (String::new(), "http://localhost:8080"),
        ("csrf=AAAA".to_string(), "http://localhost:8080"),
        (format!("csrf={csrf}"), "http://evil.example"),
    ] {
        let (status, answer, _) = press(&t.state, &body, origin).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body} {origin}: {answer}");
    }
    let (_, fragment) = get(&t.state, "/fragments/verify").await;
    assert!(fragment.contains("No verify has run"), "{fragment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_the_page_but_may_not_start_a_verify() {
    let t = trail().await;
    let tokens = t.dir.path().join("tokens.toml");
    let mut set = TokenSet::load(&tokens).expect("load");
    let viewer = set.create("vera", Role::Viewer).expect("create");
    set.save(&tokens).expect("save");
    let state = AppState::new(Arc::clone(&t.store), false).with_tokens_file(&tokens);
    let bearer = format!("Bearer {viewer}");
    let request = Request::get("/integrity")
        .header(header::AUTHORIZATION, &bearer)
        .body(Body::empty())
        .expect("request");
    let (status, page, _) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains("id=\"verify-now\""),
        "no button for a viewer"
    );
    assert!(page.contains("Only an auditor may start a verify"));
    for path in ["/integrity/verify", "/api/v1/verify"] {
        let request = Request::post(path)
            .header(header::AUTHORIZATION, &bearer)
            .body(Body::empty())
            .expect("request");
        let (status, answer, _) = send(&state, request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
    }
    let (_, fragment) = get(&t.state, "/fragments/verify").await;
    assert!(fragment.contains("No verify has run"), "{fragment}");
}
