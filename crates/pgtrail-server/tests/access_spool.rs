//! Access records through the access spool (`pgtrail serve`'s path): a
//! search is answered once its record is fsync'd in the spool, and every
//! record reaches the store later, once, in order. Attacked: the spool's
//! file deleted or edited while the server runs, a full or vanished spool,
//! a record the store refuses for good. In process, over a real SQLite
//! store (and one Postgres store), the store held away when a test needs
//! records to wait in the spool.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use pgtrail_core::{Event, Filter, Kind};
use pgtrail_pipeline::spool::SpoolOptions;
use pgtrail_server::access_spool::{spool_options, AccessSpool};
use pgtrail_server::{router, AppState};
use pgtrail_store::hooked::{AppendHook, Hooked};
use pgtrail_store::{AppendReceipt, Store, StoreError};
use tower::ServiceExt as _;

/// Long enough for any drain on a loaded machine; waits end as soon as the
/// records are in.
const PATIENCE: Duration = Duration::from_secs(60);

/// The store as the drainer sees it: away (a failure that may pass) while
/// `away` is set, and refusing for good any batch holding an access record
/// whose target says `poison`.
#[derive(Clone, Default)]
struct Gate {
    away: Arc<AtomicBool>,
    poison: Option<&'static str>,
    /// Appends that reached the store.
    appends: Arc<AtomicUsize>,
}

#[async_trait]
impl AppendHook for Gate {
    async fn append(
        &self,
        inner: &dyn Store,
        events: &[Event],
    ) -> pgtrail_store::Result<AppendReceipt> {
        if self.away.load(Ordering::SeqCst) {
            return Err(StoreError::backend(
                "test",
                "appending",
                "the store is away",
            ));
        }
        if let Some(poison) = self.poison {
            let poisoned = events.iter().any(|e| {
                e.kind == Kind::Access
                    && e.context
                        .as_ref()
                        .is_some_and(|c| c["target"].to_string().contains(poison))
            });
            if poisoned {
                return Err(StoreError::Invalid("this record is refused".into()));
            }
        }
        let receipt = inner.append(events).await?;
        self.appends.fetch_add(1, Ordering::SeqCst);
        Ok(receipt)
    }
}

struct Trail {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    gate: Gate,
    access: AccessSpool,
    state: AppState,
}

impl Trail {
    async fn new(options: SpoolOptions, gate: Gate) -> Trail {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite:{}", dir.path().join("trail.db").display());
        let store = pgtrail_store::open::open(&url).await.expect("open store");
        Self::over(dir, store, options, gate)
    }

    fn over(
        dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        options: SpoolOptions,
        gate: Gate,
    ) -> Trail {
        let gated: Arc<dyn Store> = Arc::new(Hooked::new(Arc::clone(&store), gate.clone()));
        let access =
            AccessSpool::open(&dir.path().join("spool"), options, gated).expect("open spool");
        let state = AppState::new(Arc::clone(&store), true).with_access_spool(access.clone());
        Trail {
            dir,
            store,
            gate,
            access,
            state,
        }
    }

    /// A search for `user` through the API: its status and body.
    async fn search(&self, user: &str) -> (StatusCode, String) {
        let request = Request::get(format!("/api/v1/events?q=user:{user}"))
            .body(Body::empty())
            .expect("request");
        let response = router(self.state.clone())
            .oneshot(request)
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Waits until everything spooled is in the store.
    async fn drained(&self) {
        assert!(
            self.access.drained(PATIENCE).await,
            "the access spool drains: {:?}",
            self.access.spool().waiting()
        );
    }

    /// The search records in the store: the user each searched for, in
    /// store order, with the ids they carry.
    async fn searches(&self) -> Vec<(String, String)> {
        let filter = Filter {
            kind: Some(Kind::Access),
            ..Filter::default()
        };
        let mut events = self.store.query(&filter).await.expect("query");
        events.sort_by_key(|e| e.seq);
        events
            .iter()
            .filter(|e| e.operation.as_deref() == Some("SEARCH"))
            .map(|e| (searched_user(e), e.id.to_string()))
            .collect()
    }

    fn segments(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(self.dir.path().join("spool"))
            .expect("spool dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect()
    }
}

/// The user a search record says was searched for.
fn searched_user(event: &Event) -> String {
    event
        .context
        .as_ref()
        .and_then(|c| c["target"]["filter"]["user"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("u{i}")).collect()
}

#[tokio::test]
async fn every_answered_search_reaches_the_store_once_in_order() {
    let trail = Trail::new(spool_options(), Gate::default()).await;
    let asked = users(40);
    for user in &asked {
        let (status, body) = trail.search(user).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    trail.drained().await;
    let stored = trail.searches().await;
    let order: Vec<String> = stored.iter().map(|(user, _)| user.clone()).collect();
    assert_eq!(order, asked, "each search once, in the order answered");
    let mut ids: Vec<_> = stored.iter().map(|(_, id)| id.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), asked.len(), "no record twice");
    // The point of the spool: far fewer store commits than searches.
    let appends = trail.gate.appends.load(Ordering::SeqCst);
    assert!(appends < asked.len() / 2, "{appends} appends");
}

#[tokio::test]
async fn a_search_is_answered_while_the_store_is_away_and_recorded_when_it_is_back() {
    let gate = Gate::default();
    gate.away.store(true, Ordering::SeqCst);
    let trail = Trail::new(spool_options(), gate).await;
    for user in users(5) {
        assert_eq!(trail.search(&user).await.0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(trail.searches().await.is_empty(), "the store was away");
    assert_eq!(
        trail.access.spool().waiting().batches,
        5,
        "all in the spool"
    );
    trail.gate.away.store(false, Ordering::SeqCst);
    trail.drained().await;
    assert_eq!(trail.searches().await.len(), 5);
}

#[tokio::test]
async fn deleting_the_spool_file_while_the_server_runs_loses_no_record() {
    // Someone who can delete files while pgtrail runs removes the access
    // spool's segment with records still waiting in it: the drainer takes
    // the batches it kept as pushed, so they still reach the store.
    let gate = Gate::default();
    gate.away.store(true, Ordering::SeqCst);
    let trail = Trail::new(spool_options(), gate).await;
    let asked = users(20);
    for user in &asked {
        assert_eq!(trail.search(user).await.0, StatusCode::OK);
    }
    let segments = trail.segments();
    assert!(!segments.is_empty(), "the records wait in a segment");
    for segment in segments {
        std::fs::remove_file(segment).expect("delete the segment");
    }
    trail.gate.away.store(false, Ordering::SeqCst);
    trail.drained().await;
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, asked);
    // The spool still takes records afterwards, and they drain too.
    assert_eq!(trail.search("after").await.0, StatusCode::OK);
    trail.drained().await;
    assert_eq!(trail.searches().await.len(), asked.len() + 1);
}

#[tokio::test]
async fn an_edit_of_the_spool_file_while_the_server_runs_does_not_reach_the_store() {
    // Someone who can write the spool file rewrites who was searched for
    // (keeping the length): the store gets the records as pushed.
    let gate = Gate::default();
    gate.away.store(true, Ordering::SeqCst);
    let trail = Trail::new(spool_options(), gate).await;
    let asked = vec!["alice".to_string(), "bob".to_string(), "carol".to_string()];
    for user in &asked {
        assert_eq!(trail.search(user).await.0, StatusCode::OK);
    }
    let mut edited = 0;
    for segment in trail.segments() {
        let mut bytes = std::fs::read(&segment).expect("read segment");
        let at = bytes.windows(5).position(|w| w == b"alice");
        if let Some(at) = at {
            bytes[at..at + 5].copy_from_slice(b"mallo");
            std::fs::write(&segment, &bytes).expect("edit segment");
            edited += 1;
        }
    }
    assert_eq!(edited, 1, "the record naming alice was edited");
    trail.gate.away.store(false, Ordering::SeqCst);
    trail.drained().await;
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, asked, "the edit does not reach the store");
}

#[tokio::test]
async fn a_full_spool_refuses_searches_and_serves_none_unrecorded() {
    // The store away and a spool of 16 KiB: once it is full, searches are
    // refused (503, nothing of the answer); every search answered 200 is in
    // the store once it is back, and no other.
    let gate = Gate::default();
    gate.away.store(true, Ordering::SeqCst);
    let options = SpoolOptions {
        max_bytes: 16 << 10,
        segment_bytes: 16 << 10,
        ..spool_options()
    };
    let trail = Trail::new(options, gate).await;
    let mut answered = Vec::new();
    let mut refused = 0;
    for user in users(200) {
        let (status, body) = trail.search(&user).await;
        match status {
            StatusCode::OK => answered.push(user),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert!(!body.contains("\"events\""), "nothing served: {body}");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(
        !answered.is_empty() && refused > 0,
        "{answered:?} {refused}"
    );
    trail.gate.away.store(false, Ordering::SeqCst);
    trail.drained().await;
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, answered, "every answered search, and only those");
    // Drained, the spool has room again.
    assert_eq!(trail.search("later").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_spool_that_cannot_be_written_refuses_searches() {
    // The spool's directory removed while the server runs (its last
    // segment drained and closed): the next record cannot be written, so
    // the search is refused, not served.
    let trail = Trail::new(spool_options(), Gate::default()).await;
    assert_eq!(trail.search("first").await.0, StatusCode::OK);
    trail.drained().await;
    std::fs::remove_dir_all(trail.dir.path().join("spool")).expect("remove spool");
    let (status, body) = trail.search("second").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.contains("\"events\""), "{body}");
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, ["first"]);
}

#[tokio::test]
async fn a_record_the_store_refuses_is_quarantined_and_holds_back_no_other() {
    // A search whose record the store refuses for good (however it was
    // made to), between others: the others are stored, in order, and it
    // is kept as its quarantine event (same id); later records drain too.
    let gate = Gate {
        poison: Some("poison"),
        ..Gate::default()
    };
    gate.away.store(true, Ordering::SeqCst);
    let trail = Trail::new(spool_options(), gate).await;
    for user in ["a", "b", "poison", "c"] {
        assert_eq!(trail.search(user).await.0, StatusCode::OK);
    }
    trail.gate.away.store(false, Ordering::SeqCst);
    trail.drained().await;
    assert_eq!(trail.search("d").await.0, StatusCode::OK);
    trail.drained().await;
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, ["a", "b", "c", "d"]);
    let filter = Filter {
        kind: Some(Kind::Quarantine),
        ..Filter::default()
    };
    let quarantined = trail.store.query(&filter).await.expect("query");
    assert_eq!(quarantined.len(), 1);
    let original = pgtrail_core::quarantine::raw(&quarantined[0]).expect("raw");
    assert!(String::from_utf8_lossy(&original).contains("poison"));
}

#[tokio::test]
async fn a_stopped_server_drains_before_it_ends_and_a_restart_drains_the_rest() {
    // Stopped while the store is away: the records stay in the spool (not
    // lost, not waited for forever); a server opened on the same spool
    // drains them, each once.
    let gate = Gate::default();
    gate.away.store(true, Ordering::SeqCst);
    let trail = Trail::new(spool_options(), gate).await;
    for user in users(3) {
        assert_eq!(trail.search(&user).await.0, StatusCode::OK);
    }
    assert!(!trail.access.finish(Duration::from_millis(300)).await);
    let Trail {
        dir,
        store,
        state,
        access,
        gate,
    } = trail;
    drop((state, access, gate));
    let again = Trail::over(dir, store, spool_options(), Gate::default());
    again.drained().await;
    assert_eq!(again.searches().await.len(), 3);
    assert!(again.access.finish(PATIENCE).await, "nothing left");
}

#[tokio::test]
async fn searches_over_a_postgres_store_are_recorded_through_the_spool() {
    let cluster = pgtrail_testkit::Cluster::start().expect("start cluster");
    let url = cluster
        .create_database("spooled")
        .await
        .expect("create database");
    let store = pgtrail_store::open::open(&url).await.expect("open store");
    let dir = tempfile::tempdir().expect("temp dir");
    let trail = Trail::over(dir, store, spool_options(), Gate::default());
    let asked = users(10);
    for user in &asked {
        assert_eq!(trail.search(user).await.0, StatusCode::OK);
    }
    trail.drained().await;
    let order: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    assert_eq!(order, asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_searches_are_each_recorded_once() {
    let trail = Arc::new(Trail::new(spool_options(), Gate::default()).await);
    let mut searches = tokio::task::JoinSet::new();
    for user in users(200) {
        let trail = Arc::clone(&trail);
        searches.spawn(async move { (trail.search(&user).await.0, user) });
    }
    let mut answered = Vec::new();
    while let Some(done) = searches.join_next().await {
        let (status, user) = done.expect("task");
        assert_eq!(status, StatusCode::OK);
        answered.push(user);
    }
    trail.drained().await;
    let mut stored: Vec<String> = trail.searches().await.into_iter().map(|(u, _)| u).collect();
    answered.sort_unstable();
    stored.sort_unstable();
    assert_eq!(stored, answered, "each once");
}
