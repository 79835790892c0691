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
        "/fragments/facets?q=table:orders",
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
async fn older_pages_follow_the_cursor() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/fragments/events?before=3").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("/events/2\"") && page.body.contains("/events/1\""));
    assert!(!page.body.contains("/events/3\"") && !page.body.contains("/events/4\""));
}

/// Reads the live tail's stream until `done` holds on what came, or 10 s.
async fn follow(
    state: &AppState,
    path: &str,
    headers: &[(&str, &str)],
    append: Vec<Event>,
    done: impl Fn(&str) -> bool,
) -> (StatusCode, String) {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let mut body = response.into_body().into_data_stream();
    if !append.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        state.store.append(&append).await.expect("append");
    }
    let mut text = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        use futures_util::StreamExt as _;
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            text.push_str(&String::from_utf8_lossy(&chunk));
            if done(&text) {
                break;
            }
        }
    })
    .await;
    (status, text)
}

#[tokio::test]
async fn the_live_tail_pushes_new_matching_rows_over_server_sent_events_and_records_each_push() {
    let (_dir, state) = trail().await;
    let page = get(&state, "/?q=user:bob&tail=1").await;
    // The page asks for the stream through htmx's SSE extension, loaded as a file.
    assert!(page.body.contains("hx-ext=\"sse\""), "{}", page.body);
    assert!(
        page.body
            .contains("sse-connect=\"/fragments/tail?q=user%3Abob&#38;after=2\""),
        "{}",
        page.body
    );
    assert!(page.body.contains("htmx-ext-sse.min.js"), "{}", page.body);
    let before = access_events(&state).await.len();
    let (status, text) = follow(
        &state,
        "/fragments/tail?q=user:bob&after=4",
        &[],
        vec![
            change("DELETE", "alice", 1, json!({"id": 1}), json!(null)),
            change("DELETE", "bob", 2, json!({"id": 2}), json!(null)),
        ],
        |t| t.contains("\n\n") && t.contains("event: events"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Event 5 is the page's own access record, 6 alice's delete, 7 bob's.
    assert!(text.contains("event: events"), "{text}");
    assert!(text.contains("/events/7\""), "bob's delete: {text}");
    assert!(!text.contains("/events/6\""), "the filter holds: {text}");
    assert!(text.contains("id: 7\n"), "resumable from 7: {text}");
    let access = access_events(&state).await;
    assert_eq!(access.len(), before + 1, "the push was recorded");
    assert_eq!(access[0].operation.as_deref(), Some("TAIL"));
    assert_eq!(access[0].rows, Some(1));

    // A reconnecting browser resumes after the last id it got.
    let (_, text) = follow(
        &state,
        "/fragments/tail",
        &[("last-event-id", "6")],
        vec![],
        |t| t.contains("event: events"),
    )
    .await;
    assert!(text.contains("/events/7\""), "{text}");
    assert!(!text.contains("/events/6\""), "{text}");
    // The tail's own records never feed it.
    assert!(
        !text.contains(&format!("/events/{}\"", access[0].seq.unwrap_or(0))),
        "{text}"
    );
    let bad = get(&state, "/fragments/tail?after=x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_tail_push_whose_access_cannot_be_recorded_ends_the_tail_and_shows_nothing() {
    let (dir, state) = trail().await;
    let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hooked: Arc<dyn Store> = Arc::new(Hooked::new(
        state.store.clone(),
        RefuseAccess(refused.clone()),
    ));
    let hooked_state = AppState::new(hooked, true);
    refused.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, text) = follow(
        &hooked_state,
        "/fragments/tail?after=4",
        &[],
        vec![change("DELETE", "bob", 2, json!({"id": 2}), json!(null))],
        |_| false,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !text.contains("/events/"),
        "nothing shown unrecorded: {text}"
    );
    drop(dir);
}

/// Fails the appends of access records while the flag is set; the rest pass.
struct RefuseAccess(Arc<std::sync::atomic::AtomicBool>);

#[async_trait::async_trait]
impl AppendHook for RefuseAccess {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        if self.0.load(std::sync::atomic::Ordering::SeqCst)
            && events.iter().any(|e| e.kind == Kind::Access)
        {
            return Err(StoreError::Invalid("disk full".into()));
        }
        inner.append(events).await
    }
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
        "/fragments/facets?q=table:%22a%22%22b%27%20or%201=1%20--",
        "/fragments/facets?q=user:x%27)%20union%20select%201%20--",
        "/fragments/facets?q=kind:nonsense",
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
    // The page loads its facets in a second request, so the results are
    // not held back by the counting.
    assert!(
        page.body
            .contains("hx-get=\"/fragments/facets?q=table%3Aorders\" hx-trigger=\"load\""),
        "{}",
        page.body
    );
    let fragment = get(&state, "/fragments/facets?q=table%3Aorders").await;
    assert_eq!(fragment.status, StatusCode::OK, "{}", fragment.body);
    let facets = fragment.body.as_str();
    // The counts tell of the events: their reading is recorded too.
    let access = access_events(&state).await;
    assert_eq!(access[0].operation.as_deref(), Some("FACETS"));
    let target = &access[0].context.as_ref().expect("context")["target"];
    assert_eq!(target["filter"]["table"]["table"], "orders", "{target}");
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

fn ddl(xid: i64, tag: &str, sql: &str) -> Event {
    let mut e = Event::new(Source::Trigger, Kind::Ddl);
    e.operation = Some(tag.into());
    e.database = Some("shop".into());
    e.db_user = Some("migrator".into());
    e.client_addr = Some("10.1.2.3".into());
    e.client_port = Some(5544);
    e.application_name = Some("flyway".into());
    e.app_user = Some("dba@example.com".into());
    e.claim("app_user", Channel::Setting);
    e.vouch_server_fields();
    e.xid = Some(xid);
    e.sql = Some(sql.into());
    e.schema = Some("public".into());
    e.table = Some("orders".into());
    e
}

/// A store with two migrations (one of two commands, one with long SQL
/// holding markup) between other events.
async fn migrations() -> (tempfile::TempDir, AppState) {
    let (dir, state) = trail().await;
    let long = format!(
        "CREATE FUNCTION audit_note() RETURNS trigger AS $$\nBEGIN\n  -- {SCRIPT}\n  RETURN NEW;\nEND\n$$ LANGUAGE plpgsql{}",
        " ".repeat(200)
    );
    state
        .store
        .append(&[
            ddl(
                901,
                "ALTER TABLE",
                "ALTER TABLE orders ADD COLUMN shipped_at timestamptz",
            ),
            ddl(
                901,
                "CREATE INDEX",
                "CREATE INDEX orders_shipped_idx ON orders (shipped_at)",
            ),
        ])
        .await
        .expect("append");
    state
        .store
        .append(&[ddl(902, "CREATE FUNCTION", &long)])
        .await
        .expect("append");
    (dir, state)
}

#[tokio::test]
async fn the_schema_change_page_groups_a_migrations_commands_newest_first_with_who_and_where() {
    let (_dir, state) = migrations().await;
    let page = get(&state, "/ddl").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    let newer = body.find("Transaction 902").expect("902 shown");
    let older = body.find("Transaction 901").expect("901 shown");
    assert!(newer < older, "newest first");
    // Both commands of 901 under its heading, in the order they ran.
    let t901 = &body[older..];
    let alter = t901.find("ADD COLUMN shipped_at").expect("alter");
    let index = t901.find("orders_shipped_idx").expect("index");
    assert!(alter < index, "{t901}");
    assert_eq!(body.matches("class=\"migration\"").count(), 2);
    // Who ran it, from where: the role vouched for, the app user a claim.
    assert!(t901.contains(">migrator</span>"), "{t901}");
    assert!(t901.contains("class=\"claim\""), "{t901}");
    assert!(t901.contains("10.1.2.3 port 5544") && t901.contains("flyway"));
    // Links to the transaction's events and to each command.
    assert!(body.contains("href=\"/?q=tx%3A901\""), "{body}");
    assert!(body.contains("href=\"/events/6\""), "{body}");
    // Long SQL is collapsed behind its first line, expandable without script;
    // its markup is text.
    let t902 = &body[newer..older];
    assert!(
        t902.contains("<details><summary><code>CREATE FUNCTION audit_note()"),
        "{t902}"
    );
    assert!(t902.contains("&#60;script&#62;alert(1)"), "{t902}");
    assert!(!body.contains("<script>alert"));
    // Short SQL is shown whole.
    assert!(t901.contains("<code>CREATE INDEX orders_shipped_idx ON orders (shipped_at)</code>"));

    // Words narrow to the commands whose SQL holds them all (whole words).
    let page = get(&state, "/ddl?q=orders_shipped_idx%20ORDERS").await;
    assert!(
        page.body.contains("Transaction 901") && !page.body.contains("Transaction 902"),
        "{}",
        page.body
    );
    let page = get(&state, "/ddl?q=plpgsql").await;
    assert!(!page.body.contains("Transaction 901") && page.body.contains("Transaction 902"));

    // Each view is recorded.
    let access = access_events(&state).await;
    assert_eq!(access[0].operation.as_deref(), Some("DDL"));
    assert_eq!(access[0].rows, Some(1));
}

#[tokio::test]
async fn schema_changes_page_older_by_cursor_and_each_command_shown_once() {
    let (_dir, state) = trail().await;
    let many: Vec<Event> = (0..130)
        .map(|i| {
            ddl(
                1_000 + i / 2,
                "CREATE TABLE",
                &format!("CREATE TABLE t{i} (id int)"),
            )
        })
        .collect();
    state.store.append(&many).await.expect("append");
    let mut path = "/ddl".to_string();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = get(&state, &path).await;
        assert_eq!(page.status, StatusCode::OK);
        for i in 0..130 {
            if page.body.contains(&format!("CREATE TABLE t{i} (id int)<")) {
                seen.push(i);
            }
        }
        let Some(at) = page.body.find("id=\"older\" href=\"") else {
            break;
        };
        let rest = &page.body[at + 17..];
        path = rest[..rest.find('"').expect("end")].replace("&#38;", "&");
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..130).collect::<Vec<_>>(), "each once, none lost");
}

fn session(op: &str, user: &str, addr: &str, failed: bool) -> Event {
    let mut e = Event::new(Source::Proxy, Kind::Session);
    e.operation = Some(op.into());
    e.db_user = Some(user.into());
    e.database = Some("shop".into());
    e.client_addr = Some(addr.into());
    if failed {
        e.sqlstate = Some("28P01".into());
        e.error = Some(format!(
            "password authentication failed for user \"{user}\""
        ));
    }
    e
}

async fn logins() -> (tempfile::TempDir, AppState) {
    let (dir, state) = trail().await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(session("CONNECT", "admin", "203.0.113.9", true));
    }
    events.push(session("CONNECT", "root", "203.0.113.9", true));
    events.push(session("CONNECT", "app", "10.0.0.2", true));
    events.push(session("CONNECT", "app", "10.0.0.2", false));
    let mut bye = session("DISCONNECT", "app", "10.0.0.2", false);
    bye.duration_us = Some(125_000_000);
    bye.context = json!({"statements": 17, "bytes_from_client": 2048, "bytes_to_client": 90210})
        .as_object()
        .cloned();
    events.push(bye);
    let mut failed = Event::new(Source::Proxy, Kind::Statement);
    failed.db_user = Some("app".into());
    failed.client_addr = Some("10.0.0.2".into());
    failed.sql = Some("UPDATE orders SET total = $1 WHERE id = $2".into());
    failed.params = Some(vec![json!("secret-total-4711"), json!(1)]);
    failed.sqlstate = Some("23514".into());
    failed.error = Some(format!("violates check constraint {SCRIPT}"));
    events.push(failed);
    state.store.append(&events).await.expect("append");
    (dir, state)
}

#[tokio::test]
async fn the_sessions_page_counts_failed_logins_per_user_and_address_and_lists_failures() {
    let (_dir, state) = logins().await;
    let page = get(&state, "/sessions").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    let logins = &body[body.find("id=\"failed-logins\"").expect("counts")..];
    // Per user, the most first: admin 3, then app and root 1 each.
    let admin = logins
        .find(">admin</a></td><td class=\"count\">3<")
        .expect("admin 3");
    let root = logins
        .find(">root</a></td><td class=\"count\">1<")
        .expect("root 1");
    assert!(admin < root, "{logins}");
    // Per address: 203.0.113.9 4 times.
    assert!(
        logins.contains(">203.0.113.9</a></td><td class=\"count\">4<"),
        "{logins}"
    );
    // The groups say the SQLSTATE and the message.
    assert!(
        body.contains("28P01")
            && body.contains("password authentication failed for user &#34;admin&#34;")
    );
    // A disconnect says how long, how many statements, how many bytes.
    let recent = &body[body.find("id=\"session-events\"").expect("recent")..];
    assert!(
        recent.contains("2 min 5 s")
            && recent.contains(">17<")
            && recent.contains("2048 in, 90210 out"),
        "{recent}"
    );
    // The failed statement, its SQLSTATE, its markup as text, its parameters for an auditor.
    let failed = &body[body.find("id=\"failed-statements\"").expect("failed")..];
    assert!(
        failed.contains("23514") && failed.contains("&#60;script&#62;"),
        "{failed}"
    );
    assert!(
        failed.contains("secret-total-4711"),
        "an auditor sees parameters: {failed}"
    );
    assert!(!body.contains("<script>alert"));

    // The user and address filters narrow; a count's link narrows to it.
    let page = get(&state, "/sessions?user=admin").await;
    assert!(!page.body.contains(">root</a>"), "{}", page.body);
    assert!(
        page.body.contains("href=\"/sessions?user=admin\""),
        "{}",
        page.body
    );
    let page = get(&state, "/sessions?ip=10.0.0.0%2F8").await;
    assert!(
        !page.body.contains("203.0.113.9") && page.body.contains("10.0.0.2"),
        "{}",
        page.body
    );
    let page = get(&state, "/sessions?since=2h").await;
    assert!(page.body.contains(">admin</a>"));
    let page = get(&state, "/sessions?since=2000-01-01&until=2000-01-02").await;
    assert!(
        !page.body.contains(">admin</a>"),
        "an empty window: {}",
        page.body
    );
    for bad in ["/sessions?ip=not-an-address", "/sessions?since=sometime"] {
        let page = get(&state, bad).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let access = access_events(&state).await;
    assert!(
        access
            .iter()
            .filter(|e| e.operation.as_deref() == Some("SESSIONS"))
            .count()
            >= 5
    );
}

/// Requests off loopback with a tokens file: only a token gets in.
struct Guarded {
    _dir: tempfile::TempDir,
    state: AppState,
    viewer: String,
    auditor: String,
}

async fn guarded(
    fill: impl std::future::Future<Output = (tempfile::TempDir, AppState)>,
) -> Guarded {
    let (dir, filled) = fill.await;
    let tokens = dir.path().join("tokens.toml");
    let mut set = pgtrail_server::tokens::TokenSet::load(&tokens).expect("load");
    let viewer = set
        .create("vera", pgtrail_server::auth::Role::Viewer)
        .expect("viewer");
    let auditor = set
        .create("aud", pgtrail_server::auth::Role::Auditor)
        .expect("auditor");
    set.save(&tokens).expect("save");
    let state = AppState::new(filled.store.clone(), false).with_tokens_file(&tokens);
    Guarded {
        _dir: dir,
        state,
        viewer,
        auditor,
    }
}

async fn get_as(state: &AppState, path: &str, token: Option<&str>) -> Page {
    get_from(state, path, token, "192.0.2.7:50123").await
}

async fn get_from(state: &AppState, path: &str, token: Option<&str>, client: &str) -> Page {
    let mut request = Request::get(path).header(header::HOST, "trail.example:8080");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let client: std::net::SocketAddr = client.parse().expect("addr");
    let response = router(state.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(client))
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = axum::body::to_bytes(response.into_body(), 10 << 20)
        .await
        .expect("body");
    Page {
        status,
        content_type,
        cache: String::new(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

#[tokio::test]
async fn a_viewer_reads_no_statement_parameters_through_any_new_page() {
    let g = guarded(logins()).await;
    let failed_seq = {
        let events = g
            .state
            .store
            .query(&Filter {
                kind: Some(Kind::Statement),
                failed: true,
                ..Filter::default()
            })
            .await
            .expect("query");
        events[0].seq.expect("seq")
    };
    let auditor = get_as(&g.state, "/sessions", Some(&g.auditor)).await;
    assert!(
        auditor.body.contains("secret-total-4711"),
        "{}",
        auditor.body
    );
    for path in [
        "/sessions".to_string(),
        "/sessions?user=app".to_string(),
        format!("/events/{failed_seq}"),
        "/?q=failed".to_string(),
        "/ddl".to_string(),
    ] {
        let page = get_as(&g.state, &path, Some(&g.viewer)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
        assert!(page.body.contains("vera (viewer)"), "{path}");
        assert!(
            !page.body.contains("secret-total-4711"),
            "{path}: {}",
            page.body
        );
    }
    // Nor through the live tail's pushes.
    let mut late = Event::new(Source::Proxy, Kind::Statement);
    late.sql = Some("select $1".into());
    late.params = Some(vec![json!("secret-late-0815")]);
    let request = Request::get("/fragments/tail?after=1")
        .header(header::HOST, "trail.example:8080")
        .header(header::AUTHORIZATION, format!("Bearer {}", g.viewer));
    let client: std::net::SocketAddr = "192.0.2.7:50123".parse().expect("addr");
    let response = router(g.state.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(client))
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    g.state.store.append(&[late]).await.expect("append");
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        use futures_util::StreamExt as _;
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("select $1") {
                break;
            }
        }
    })
    .await;
    assert!(text.contains("event: events"), "{text}");
    assert!(
        !text.contains("secret-late-0815") && !text.contains("secret-total-4711"),
        "{text}"
    );
}

#[tokio::test]
async fn off_loopback_the_new_pages_and_the_tail_refuse_a_request_without_a_token() {
    let g = guarded(migrations()).await;
    for path in ["/ddl", "/sessions", "/fragments/tail", "/ddl?q=orders"] {
        let page = get_as(&g.state, path, None).await;
        assert!(
            page.status == StatusCode::SEE_OTHER || page.status == StatusCode::UNAUTHORIZED,
            "{path}: {}",
            page.status
        );
        assert!(
            !page.body.contains("orders") && !page.body.contains("migrator"),
            "{path}: {}",
            page.body
        );
        let page = get_as(&g.state, path, Some("pgt_not-a-token")).await;
        assert!(
            page.status.is_client_error() || page.status.is_redirection(),
            "{path}"
        );
        assert!(!page.body.contains("migrator"), "{path}");
    }
    // The guesses above slowed that address down; another with a token gets in.
    let page = get_from(&g.state, "/ddl", Some(&g.auditor), "198.51.100.4:40000").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("migrator"));
}

#[tokio::test]
async fn hostile_words_on_the_new_pages_are_a_bad_request_or_a_literal_match_never_details() {
    let (_dir, state) = migrations().await;
    let huge = "a%25_".repeat(2_100);
    let cases = [
        "/ddl?q=%27%3B%20drop%20table%20events%3B%20--".to_string(),
        "/ddl?q=%25".to_string(),
        "/ddl?q=_".to_string(),
        "/ddl?q=orders%25".to_string(),
        "/ddl?q=%22%20OR%20*%20NEAR%2F3".to_string(),
        "/ddl?q=%FF%FE".to_string(),
        "/ddl?q=%C0%AF".to_string(),
        "/ddl?before=1%20or%201=1".to_string(),
        format!("/ddl?q={huge}"),
        format!("/sessions?user={huge}"),
        "/sessions?user=%27%20or%201=1%20--".to_string(),
        "/sessions?user=%25".to_string(),
        "/sessions?ip=%FF".to_string(),
        "/sessions?since=%00".to_string(),
    ];
    for path in &cases {
        let page = get(&state, path).await;
        assert!(
            page.status == StatusCode::OK || page.status == StatusCode::BAD_REQUEST,
            "{path}: {} {}",
            page.status,
            page.body
        );
        for detail in [
            "sqlite",
            "SQLITE",
            "syntax error",
            "fts5",
            "panicked",
            "/tmp/",
        ] {
            assert!(
                !page.body.contains(detail),
                "{path} shows {detail}: {}",
                page.body
            );
        }
        if page.status == StatusCode::OK {
            // A wildcard is a literal: it matches no command's words.
            if path.contains("%25") || path.ends_with("q=_") || path.contains("drop") {
                assert!(
                    !page.body.contains("class=\"migration\"") || path.contains("orders"),
                    "{path}: {}",
                    page.body
                );
                assert!(!page.body.contains(">admin</a>"), "{path}");
            }
        }
    }
    // The live tail answers a stream: only its status is read.
    for path in [
        "/fragments/tail?q=%FF",
        "/fragments/tail?q=%27%3B--",
        "/fragments/tail?q=kind:nonsense",
    ] {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert!(
            response.status() == StatusCode::OK || response.status() == StatusCode::BAD_REQUEST,
            "{path}: {}",
            response.status()
        );
    }
    // `_` and `%` are no wildcards: the whole word matches, its LIKE patterns do not.
    for pattern in ["orders_shipp_d_idx", "orders_shipped%25", "%25shipped%25"] {
        let page = get(&state, &format!("/ddl?q={pattern}")).await;
        assert!(
            !page.body.contains("class=\"migration\""),
            "{pattern}: {}",
            page.body
        );
    }
    let page = get(&state, "/ddl?q=orders_shipped_idx").await;
    assert!(page.body.contains("Transaction 901"), "{}", page.body);
}

#[tokio::test]
async fn the_new_pages_are_refused_when_their_access_cannot_be_recorded() {
    let (_dir, state) = migrations().await;
    let hooked: Arc<dyn Store> = Arc::new(Hooked::new(state.store.clone(), Refuse));
    let state = AppState::new(hooked, true);
    for path in ["/ddl", "/ddl?q=orders", "/sessions", "/sessions?user=app"] {
        let page = get(&state, path).await;
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            !page.body.contains("migrator") && !page.body.contains("ALTER"),
            "{path}: {}",
            page.body
        );
        assert!(
            !page.body.contains("disk full"),
            "the detail is logged, not shown: {}",
            page.body
        );
    }
}

#[tokio::test]
async fn a_tail_open_when_its_token_is_revoked_shows_nothing_more() {
    let g = guarded(migrations()).await;
    let request = Request::get("/fragments/tail")
        .header(header::HOST, "trail.example:8080")
        .header(header::AUTHORIZATION, format!("Bearer {}", g.viewer));
    let client: std::net::SocketAddr = "192.0.2.7:50123".parse().expect("addr");
    let response = router(g.state.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(client))
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = g._dir.path().join("tokens.toml");
    let mut set = pgtrail_server::tokens::TokenSet::load(&tokens).expect("load");
    set.revoke("vera").expect("revoke");
    set.save(&tokens).expect("save");
    let mut late = Event::new(Source::Proxy, Kind::Statement);
    late.sql = Some("select 'after the revocation'".into());
    g.state.store.append(&[late]).await.expect("append");
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
