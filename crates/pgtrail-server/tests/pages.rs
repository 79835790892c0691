//! The dashboard's pages over HTTP, in process, over a real SQLite store
//! the test fills: what they show, what they escape, what they record.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use pgtrail_core::event::Channel;
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_server::{router, AppState};
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::{AppendReceipt, Store, StoreError};
use serde_json::json;
use tower::ServiceExt as _;

struct Page {
    status: StatusCode,
    content_type: String,
    cache: String,
    body: String,
}

async fn get(state: &AppState, path: &str) -> Page {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("response");
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let cache = header_text(header::CACHE_CONTROL);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .expect("body");
    Page {
        status,
        content_type,
        cache,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn change(op: &str, user: &str, pk: i64, old: serde_json::Value, new: serde_json::Value) -> Event {
    let mut e = Event::new(Source::Trigger, Kind::RowChange);
    e.operation = Some(op.into());
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e.database = Some("shop".into());
    e.db_user = Some("app".into());
    e.app_user = Some(user.into());
    e.claim("app_user", Channel::Setting);
    e.vouch_server_fields();
    e.xid = Some(700 + pk);
    e.pk = json!({"id": pk.to_string()}).as_object().cloned();
    e.old = old.as_object().cloned();
    e.new = new.as_object().cloned();
    e
}

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(2)>";

/// A store with a few orders changed by alice and bob, one holding markup.
async fn trail() -> (tempfile::TempDir, AppState) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    let events = vec![
        change(
            "INSERT",
            "alice",
            1,
            json!(null),
            json!({"id": 1, "note": "first", "total": 10}),
        ),
        change(
            "UPDATE",
            "bob",
            1,
            json!({"id": 1, "note": "first", "total": 10}),
            json!({"id": 1, "note": SCRIPT, "total": 12}),
        ),
        change(
            "INSERT",
            "alice",
            2,
            json!(null),
            json!({"id": 2, "note": IMG, "total": 5}),
        ),
    ];
    store.append(&events).await.expect("append");
    let mut statement = Event::new(Source::Proxy, Kind::Statement);
    statement.db_user = Some("app".into());
    statement.sql = Some(format!("select '{IMG}' -- {SCRIPT}"));
    statement.operation = Some("SELECT".into());
    store.append(&[statement]).await.expect("append");
    (dir, AppState::new(store, true))
}

async fn access_events(state: &AppState) -> Vec<Event> {
    state
        .store
        .query(&Filter {
            kind: Some(Kind::Access),
            ..Filter::default()
        })
        .await
        .expect("query")
}

#[tokio::test]
async fn search_lists_newest_first_and_a_filter_narrows_the_list() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.content_type.starts_with("text/html"));
    let first = page.body.find("/events/4\"").expect("newest listed");
    let last = page.body.find("/events/1\"").expect("oldest listed");
    assert!(first < last, "newest first");
    // The user the application claims is shown as a claim.
    assert!(page.body.contains("class=\"claim\""), "{}", page.body);

    let page = get(&state, "/?q=user:bob").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("/events/2\""), "{}", page.body);
    for other in ["/events/1\"", "/events/3\"", "/events/4\""] {
        assert!(
            !page.body.contains(other),
            "{other} left out: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn every_page_view_is_recorded_before_it_is_answered() {
    let (_dir, state) = trail().await;
    assert_eq!(get(&state, "/?q=user:bob").await.status, StatusCode::OK);
    assert_eq!(get(&state, "/events/2").await.status, StatusCode::OK);
    assert_eq!(
        get(&state, "/rows/public.orders/id=1").await.status,
        StatusCode::OK
    );
    let access = access_events(&state).await;
    let ops: Vec<_> = access
        .iter()
        .map(|e| e.operation.clone().unwrap_or_default())
        .collect();
    assert_eq!(ops, ["ROW", "EVENT", "SEARCH"], "newest first");
    let search = access.last().expect("search");
    assert_eq!(search.app_user.as_deref(), Some("local"));
    assert_eq!(search.rows, Some(1));
    let target = &search.context.as_ref().expect("context")["target"];
    assert_eq!(target["filter"]["user"], "bob", "{target}");
}

/// Fails every append: the access record cannot be written.
struct Refuse;

#[async_trait::async_trait]
impl AppendHook for Refuse {
    async fn append(
        &self,
        _inner: &dyn Store,
        _events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        Err(StoreError::Invalid("disk full".into()))
    }
}

#[tokio::test]
async fn a_read_whose_access_cannot_be_recorded_is_refused_not_served() {
    let (_dir, state) = trail().await;
    let hooked: Arc<dyn Store> = Arc::new(Hooked::new(state.store.clone(), Refuse));
    let state = AppState::new(hooked, true);
    for path in [
        "/",
        "/events/2",
        "/rows/public.orders/id=1",
        "/fragments/events?before=3",
    ] {
        let page = get(&state, path).await;
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            !page.body.contains("orders"),
            "{path} shows nothing: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn markup_in_row_values_and_statement_text_renders_as_text() {
    let (_dir, state) = trail().await;
    for path in [
        "/",
        "/events/2",
        "/events/3",
        "/events/4",
        "/rows/public.orders/id=1",
        "/rows/public.orders/id=1?revert=1",
        "/rows/public.orders/id=2?at=2100-01-01T00:00",
    ] {
        let page = get(&state, path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(!page.body.contains("<img"), "{path}: {}", page.body);
    }
    let page = get(&state, "/events/2").await;
    assert!(
        page.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        page.body
    );
    let page = get(&state, "/rows/public.orders/id=2?at=2100-01-01T00:00").await;
    assert!(
        page.body
            .contains("&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"),
        "{}",
        page.body
    );
    // No inline script or style anywhere (the CSP forbids them).
    for path in ["/", "/events/2", "/rows/public.orders/id=1"] {
        let body = get(&state, path).await.body;
        assert!(
            !body.contains("<script>") && !body.contains("<style") && !body.contains("style="),
            "{path}"
        );
        assert!(
            !body.contains(" onclick=") && !body.contains("hx-on"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_row_page_shows_history_diffs_blame_as_of_and_revert_sql() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/rows/public.orders/id=1").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // The diff of the update: total 10 → 12, collapsed.
    assert!(page.body.contains("<details>"), "collapsed: {}", page.body);
    assert!(
        page.body
            .contains("<td class=\"before\">10</td><td class=\"after\">12</td>"),
        "{}",
        page.body
    );
    // Blame: bob set total last.
    let blame = &page.body[page.body.find("id=\"blame\"").expect("blame")..];
    assert!(blame.contains("bob"), "{blame}");
    let expanded = get(&state, "/rows/public.orders/id=1?expand=1").await;
    assert!(expanded.body.contains("<details open>"));

    let page = get(&state, "/rows/public.orders/id=1?revert=1").await;
    let sql = &page.body[page.body.find("id=\"revert-sql\"").expect("revert sql")..];
    assert!(
        sql.contains("UPDATE &#34;public&#34;.&#34;orders&#34;"),
        "{sql}"
    );
    assert!(sql.contains("total"), "{sql}");

    let page = get(&state, "/rows/public.orders/id=1?undo=2").await;
    assert!(page.body.contains("id=\"revert-sql\""), "{}", page.body);

    let page = get(&state, "/rows/public.orders/id=1?at=2000-01-01T00:00").await;
    assert!(page.body.contains("did not exist yet"), "{}", page.body);
    let page = get(&state, "/rows/public.orders/id=1?at=not-a-time").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_event_page_says_which_identity_fields_are_vouched_for_and_which_claimed() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/events/2").await;
    assert_eq!(page.status, StatusCode::OK);
    let who = &page.body[page.body.find("<h2>Who</h2>").expect("who")..];
    assert!(
        who.contains("<code>db_user</code></td><td>app</td><td class=\"vouched\">vouched"),
        "{who}"
    );
    assert!(who.contains("<code>app_user</code></td><td>bob</td><td class=\"claim-text\">claimed: by the application, through setting"), "{who}");
    assert!(page.body.contains("prev_hash"));
    assert_eq!(
        get(&state, "/events/99").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&state, "/events/x'or'1").await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn older_pages_follow_the_cursor_and_the_tail_shows_only_newer_events() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/fragments/tail?after=3").await;
    assert!(page.body.contains("/events/4\""), "{}", page.body);
    assert!(!page.body.contains("/events/3\""), "{}", page.body);
    assert!(
        page.body.contains("after=4\""),
        "the next poll asks after 4: {}",
        page.body
    );
    // The tail's own access record (event 5) is not fed back to it.
    let page = get(&state, "/fragments/tail?after=4").await;
    assert!(!page.body.contains("/events/5\""), "{}", page.body);
    assert!(page.body.contains("after=4\""), "{}", page.body);
    let page = get(&state, "/fragments/events?before=3").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("/events/2\"") && page.body.contains("/events/1\""));
    assert!(!page.body.contains("/events/3\"") && !page.body.contains("/events/4\""));
}

#[tokio::test]
async fn assets_are_embedded_typed_cached_and_nothing_else_is_reachable() {
    let (_dir, state) = trail().await;
    // A full page of results (50), with long names, for the weight.
    let more: Vec<Event> = (10..70)
        .map(|pk| {
            let mut e = change(
                "UPDATE",
                "someone.with.a.long.name@example.com",
                pk,
                json!({"id": pk}),
                json!({"id": pk}),
            );
            e.table = Some("customer_shipping_addresses".into());
            e
        })
        .collect();
    state.store.append(&more).await.expect("append");
    let page = get(&state, "/").await;
    let link = |name: &str| {
        let at = page.body.find(name).expect("linked");
        let start = page.body[..at].rfind('"').expect("quote") + 1;
        page.body[start..at + name.len()].to_string()
    };
    let (css, js) = (link("pgtrail.css"), link("htmx.min.js"));
    let css_page = get(&state, &css).await;
    assert_eq!(css_page.status, StatusCode::OK);
    assert_eq!(css_page.content_type, "text/css; charset=utf-8");
    assert!(css_page.cache.contains("immutable"));
    let js_page = get(&state, &js).await;
    assert_eq!(js_page.content_type, "text/javascript; charset=utf-8");
    // The search page's weight: its HTML and every asset it loads.
    let weight = page.body.len() + css_page.body.len() + js_page.body.len();
    assert!(weight <= 100_000, "search page weighs {weight} bytes");
    eprintln!(
        "search page weight: {weight} bytes (HTML {}, CSS {}, JS {})",
        page.body.len(),
        css_page.body.len(),
        js_page.body.len()
    );
    for path in [
        "/assets/0000000000000000/pgtrail.css",
        "/assets/x/LICENSES.md",
        "/assets/x/..%2F..%2FCargo.toml",
        "/assets/x/%2e%2e%2fsrc%2flib.rs",
        "/assets/../Cargo.toml",
    ] {
        let got = get(&state, path).await;
        assert_ne!(got.status, StatusCode::OK, "{path}");
        assert!(!got.body.contains("[package]"), "{path}");
    }
}

#[tokio::test]
async fn hostile_search_input_is_a_bad_request_or_words_never_an_error_page_with_details() {
    let (_dir, state) = trail().await;
    for path in [
        "/?q=%27%3B%20drop%20table%20events%3B%20--",
        "/?q=%22%20OR%20*%20NEAR%2F3",
        "/?q=kind:nonsense",
        "/?before=1%20or%201=1",
        "/?q=table:a.b.c",
    ] {
        let page = get(&state, path).await;
        assert!(
            page.status == StatusCode::OK || page.status == StatusCode::BAD_REQUEST,
            "{path}: {}",
            page.status
        );
    }
    let big = format!("/?q={}", "a%20".repeat(15_000));
    let page = get(&state, &big).await;
    assert!(page.status == StatusCode::OK || page.status == StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn facets_count_the_search_and_each_narrows_it_with_a_click() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/?q=table:orders").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let facets = &page.body[page.body.find("id=\"facets\"").expect("facets")..];
    let facets = &facets[..facets.find("</aside>").expect("end")];
    assert!(
        facets.contains(">alice</a><span class=\"count\">2</span>"),
        "{facets}"
    );
    assert!(
        facets.contains(">bob</a><span class=\"count\">1</span>"),
        "{facets}"
    );
    // Follow bob's link: the search gains user:bob and lists bob's change only.
    let at = facets.find(">bob</a>").expect("bob");
    let href_start = facets[..at].rfind("href=\"").expect("href") + 6;
    let href = facets[href_start..at - 1].replace("&#38;", "&");
    assert!(href.contains("table%3Aorders%20user%3Abob"), "{href}");
    let narrowed = get(&state, &href).await;
    assert!(narrowed.body.contains("/events/2\""), "{}", narrowed.body);
    assert!(!narrowed.body.contains("/events/1\""), "{}", narrowed.body);
}

/// An event's page shows its transaction across capture paths: the
/// proxy's statement beside the row change it made, and a row change no
/// statement the proxy saw made (a write around the proxy) said as such.
#[tokio::test]
async fn an_event_page_shows_the_statement_beside_the_rows_it_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    let at = chrono::Utc::now() - chrono::Duration::minutes(5);
    let pid = 4242;
    let mut statement = Event::at(Source::Proxy, Kind::Statement, at);
    statement.sql = Some("UPDATE orders SET total = 12 WHERE id = 1".into());
    statement.operation = Some("UPDATE".into());
    statement.schema = Some("public".into());
    statement.table = Some("orders".into());
    statement.objects = vec!["public.orders".into()];
    statement.backend_pid = Some(pid);
    statement.session_id = Some("s-1".into());
    statement.duration_us = Some(2_000);
    statement.context = json!({"tx": 1, "tx_statement": 0,
        "tx_started_at": pgtrail_core::time::format_micros(&at)})
    .as_object()
    .cloned();
    let mut made = change(
        "UPDATE",
        "alice",
        1,
        json!({"id": 1, "total": 10}),
        json!({"id": 1, "total": 12}),
    );
    made.captured_at = at + chrono::Duration::microseconds(500);
    made.backend_pid = Some(pid);
    made.xid = Some(777);
    let mut around = change("DELETE", "mallory", 2, json!({"id": 2}), json!(null));
    around.captured_at = at + chrono::Duration::seconds(30);
    around.backend_pid = Some(9999);
    around.xid = Some(778);
    store
        .append(&[statement, made, around])
        .await
        .expect("append");
    let state = AppState::new(store, true);

    let page = get(&state, "/events/2").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Across capture paths"), "{}", page.body);
    assert!(
        page.body
            .contains("UPDATE orders SET total = 12 WHERE id = 1"),
        "the statement that made the change: {}",
        page.body
    );
    assert!(page.body.contains(r#"href="/events/1""#), "{}", page.body);
    let page = get(&state, "/events/3").await;
    assert!(
        page.body.contains("no statement the proxy saw"),
        "a write around the proxy: {}",
        page.body
    );
}
