//! The reports, over HTTP, in process: the page and the API answer the
//! same from data shaped to trigger each report beside data that must
//! not, on SQLite and on a real Postgres store; each run is recorded; and
//! hostile parameters are a 400, never query text.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{DateTime, TimeZone, Utc};
use pgtrail_core::{Event, Filter, Kind, Source};
use pgtrail_server::auth::Role;
use pgtrail_server::tokens::TokenSet;
use pgtrail_server::{router, AppState};
use pgtrail_store::Store;
use pgtrail_testkit::proxy_events::statement;
use serde_json::{json, Value};
use tower::ServiceExt as _;

fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0)
        .single()
        .expect("valid time")
}

fn change(when: DateTime<Utc>, user: &str, table: &str, op: &str, id: usize) -> Event {
    let mut e = Event::at(Source::Trigger, Kind::RowChange, when);
    e.app_user = Some(user.into());
    e.db_user = Some("app".into());
    e.schema = Some("public".into());
    e.table = Some(table.into());
    e.operation = Some(op.into());
    e.pk = json!({ "id": id.to_string() }).as_object().cloned();
    e
}

/// The week of 2026-03-02 (a Monday):
/// - mallory deletes 150 orders on Wednesday at 02:00 (bulk, after hours, a spike);
/// - bob inserts 40 orders in working hours (under the threshold, in hours);
/// - alice deletes one order each weekday at noon (the usual rate);
/// - the proxy logged four reads of patients: one names id 42 in its text,
///   one binds it as a parameter, one counts the table, one reads id 420;
///   and one read of visits names 42 (another table).
fn week() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..150 {
        events.push(change(
            at(4, 2, (i / 10) as u32),
            "mallory",
            "orders",
            "DELETE",
            i,
        ));
    }
    for i in 0..40 {
        events.push(change(
            at(2 + (i % 5) as u32, 10, 5),
            "bob",
            "orders",
            "INSERT",
            1000 + i,
        ));
    }
    for day in 2..7 {
        events.push(change(
            at(day, 12, 0),
            "alice",
            "orders",
            "DELETE",
            500 + day as usize,
        ));
    }
    let read = |minute, user: &str, table: &str, sql: &str| {
        statement(at(3, 11, minute), user, "SELECT", "READ", &[table], sql, 1)
    };
    let mut by_param = read(
        2,
        "doctor",
        "public.patients",
        "select * from patients where id = $1",
    );
    by_param.params = Some(vec![json!("42")]);
    events.extend([
        read(
            1,
            "nurse",
            "public.patients",
            "select * from patients where id = 42 /* <script>alert(1)</script> */",
        ),
        by_param,
        read(
            3,
            "analyst",
            "public.patients",
            "select count(*) from patients",
        ),
        read(
            4,
            "nurse",
            "public.patients",
            "select * from patients where id = 420",
        ),
        read(
            5,
            "nurse",
            "public.visits",
            "select * from visits where patient_id = 42",
        ),
    ]);
    events
}

const WEEK: &str = "since=2026-03-02&until=2026-03-09";

async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("trail.db").display());
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    store.append(&week()).await.expect("append");
    (dir, store)
}

async fn get(state: &AppState, uri: &str, auth: Option<&str>) -> (StatusCode, String, String) {
    let mut request = Request::get(uri).header(header::HOST, "localhost:8080");
    if let Some(token) = auth {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn api(state: &AppState, uri: &str) -> Value {
    let (status, _, body) = get(state, uri, None).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).expect("json")
}

/// What each report finds in the week, through the API; the same on any store.
async fn reports_find_the_shaped_activity(state: &AppState) {
    let bulk = api(
        state,
        &format!("/api/v1/reports/bulk-changes?{WEEK}&threshold=100"),
    )
    .await;
    let rows = bulk["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "only mallory went over 100: {bulk}");
    assert_eq!(rows[0]["user"], "mallory");
    assert_eq!(rows[0]["table"], "public.orders");
    assert_eq!(rows[0]["operation"], "DELETE");
    assert_eq!(rows[0]["rows"], 150);
    assert_eq!(bulk["scanned"]["capped"], false);
    // Lowered, bob's 40 inserts show; alice's 5 deletes still do not.
    let bulk = api(
        state,
        &format!("/api/v1/reports/bulk-changes?{WEEK}&threshold=10"),
    )
    .await;
    let users: Vec<&str> = bulk["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["user"].as_str())
        .collect();
    assert_eq!(users, ["mallory", "bob"]);

    let after = api(
        state,
        &format!("/api/v1/reports/after-hours?{WEEK}&hours=08-18&days=mon-fri"),
    )
    .await;
    let users: Vec<(&str, i64)> = after["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["user"].as_str().unwrap_or_default(),
                u["events"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        users,
        [("mallory", 150)],
        "bob, alice and the reads were in hours"
    );

    let spikes = api(state, &format!("/api/v1/reports/delete-spikes?{WEEK}")).await;
    let found = spikes["spikes"].as_array().expect("spikes");
    assert_eq!(found.len(), 1, "{spikes}");
    assert_eq!(found[0]["table"], "public.orders");
    assert_eq!(found[0]["hour"], "2026-03-04T02:00:00.000000Z");
    assert_eq!(found[0]["deletes"], 150);

    let who = api(
        state,
        &format!("/api/v1/reports/who-read?{WEEK}&table=public.patients&pk=id%3D42"),
    )
    .await;
    assert_eq!(who["total"], 4, "{who}");
    assert_eq!(who["naming_key"], 2);
    let mentions: Vec<(&str, &str)> = who["reads"]
        .as_array()
        .expect("reads")
        .iter()
        .map(|r| {
            (
                r["line"]["user"].as_str().unwrap_or_default(),
                r["mentions"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        mentions,
        [
            ("doctor", "params"),
            ("nurse", "text"),
            ("nurse", "no"),
            ("analyst", "no")
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_report_finds_what_it_should_and_nothing_else() {
    let (_dir, store) = sqlite().await;
    let state = AppState::new(Arc::clone(&store), true);
    reports_find_the_shaped_activity(&state).await;
    // Each run was recorded, with the report's name and parameters.
    let recorded = store
        .query(&Filter {
            kind: Some(Kind::Access),
            operation: Some("REPORT".into()),
            ..Filter::default()
        })
        .await
        .expect("query");
    assert_eq!(recorded.len(), 5);
    let target = &recorded[0].context.as_ref().expect("context")["target"];
    assert_eq!(target["report"], "who-read", "{target}");
    assert_eq!(target["params"]["table"]["table"], "patients", "{target}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reports_answer_the_same_over_a_postgres_store() {
    let cluster = pgtrail_testkit::Cluster::start().expect("start cluster");
    let url = cluster
        .create_database("reports")
        .await
        .expect("create database");
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    store.append(&week()).await.expect("append");
    let state = AppState::new(store, true);
    reports_find_the_shaped_activity(&state).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_show_each_report_with_its_form_and_escape_what_they_show() {
    let (_dir, store) = sqlite().await;
    let state = AppState::new(Arc::clone(&store), true);
    let (status, _, index) = get(&state, "/reports", None).await;
    assert_eq!(status, StatusCode::OK);
    for name in pgtrail_store::reports::NAMES {
        assert!(
            index.contains(&format!("href=\"/reports/{name}\"")),
            "{name}"
        );
    }
    let (status, _, page) = get(
        &state,
        &format!("/reports/bulk-changes?{WEEK}&threshold=100"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<td>mallory</td>") && page.contains("<td>150</td>"),
        "{page}"
    );
    assert!(!page.contains("<td>bob</td>"));
    assert!(
        page.contains("name=\"threshold\" value=\"100\""),
        "the form keeps what was asked"
    );

    let (_, _, page) = get(
        &state,
        &format!("/reports/after-hours?{WEEK}&tz=%2B02:00"),
        None,
    )
    .await;
    assert!(page.contains("<td>mallory</td>"), "{page}");
    assert!(page.contains("Wed 04:"), "local time at +02:00: {page}");

    let (_, _, page) = get(&state, &format!("/reports/delete-spikes?{WEEK}"), None).await;
    assert!(
        page.contains("2026-03-04 02:00") && page.contains("mallory (150)"),
        "{page}"
    );

    // Who read: the form alone until a table is named, and the limits said.
    let (status, _, page) = get(&state, "/reports/who-read", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"who-read-limits\"") && !page.contains("report-results"));
    let (_, _, page) = get(
        &state,
        &format!("/reports/who-read?{WEEK}&table=patients&pk=id%3D42"),
        None,
    )
    .await;
    assert!(
        page.contains("yes, in its text") && page.contains("yes, in a parameter"),
        "{page}"
    );
    assert!(page.contains("which rows a statement returned"), "{page}");
    assert!(!page.contains("<script>alert"), "statement text is escaped");
    assert!(page.contains("&#60;script&#62;alert(1)"), "{page}");

    let (status, _, _) = get(&state, "/reports/no-such-report", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_parameters_are_a_bad_request_never_query_text() {
    let (_dir, store) = sqlite().await;
    let state = AppState::new(Arc::clone(&store), true);
    let hostile = [
        ("bulk-changes", "since=-5d", "since"),
        ("bulk-changes", "since=2026-03-09&until=2026-03-02", "since"),
        ("bulk-changes", "since=2000-01-01", "since"),
        ("bulk-changes", "since=99999999999999d", "since"),
        ("bulk-changes", "threshold=-1", "threshold"),
        (
            "bulk-changes",
            "threshold=99999999999999999999999",
            "threshold",
        ),
        (
            "bulk-changes",
            "table=orders%22%3B%20DROP%20TABLE%20events%3B%20--",
            "table",
        ),
        ("bulk-changes", "table=a.b.c.d", "table"),
        ("bulk-changes", "limit=5", "limit"),
        ("after-hours", "tz=Europe%2FAtlantis", "tz"),
        ("after-hours", "tz=..%2F..%2Fetc%2Fpasswd", "tz"),
        ("after-hours", "tz=%27%3B%20select%201%3B%20--", "tz"),
        ("after-hours", "tz=%2B99:00", "tz"),
        ("after-hours", "hours=25-3", "hours"),
        ("after-hours", "days=funday", "days"),
        ("delete-spikes", "multiple=0", "multiple"),
        ("delete-spikes", "min=abc", "min"),
        ("who-read", "pk=id%3D42", "table"),
        ("who-read", "table=patients&pk=%7Bnot%20json", "pk"),
    ];
    for (report, query, parameter) in hostile {
        let uri = format!("/api/v1/reports/{report}?{query}");
        let (status, content_type, body) = get(&state, &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        let problem: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(problem["parameter"], parameter, "{uri}: {problem}");
        let page = format!("/reports/{report}?{query}");
        let (status, _, body) = get(&state, &page, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{page}: {body}");
        assert!(body.contains("id=\"report-error\""), "{page}");
    }
    // A name with quotes that parses is a name: bound, it matches nothing.
    let (status, _, body) = get(
        &state,
        "/api/v1/reports/bulk-changes?since=2026-03-02&until=2026-03-09&threshold=1&table=orders%27%3B%20DROP%20TABLE%20events%3B%20--",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(found["rows"], json!([]));
    // And the trail is whole.
    let report = pgtrail_store::verify(store.as_ref(), None)
        .await
        .expect("verify");
    assert!(report.ok(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_who_read_never_looks_at_parameters() {
    let (dir, store) = sqlite().await;
    let tokens = dir.path().join("tokens.toml");
    let mut set = TokenSet::load(&tokens).expect("load");
    let viewer = set.create("vera", Role::Viewer).expect("create");
    set.save(&tokens).expect("save");
    let state = AppState::new(store, false).with_tokens_file(&tokens);
    let uri = format!("/api/v1/reports/who-read?{WEEK}&table=patients&pk=id%3D42");
    let (status, _, body) = get(&state, &uri, Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let who: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(who["naming_key"], 1, "only the text is looked at: {who}");
    let doctor = who["reads"]
        .as_array()
        .expect("reads")
        .iter()
        .find(|r| r["line"]["user"] == "doctor")
        .cloned()
        .expect("doctor's read listed");
    assert_eq!(doctor["mentions"], "unknown");
    let mut fields: Vec<&str> = doctor
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["failed", "line", "mentions", "rows", "sql"],
        "a read carries no parameters"
    );
}
