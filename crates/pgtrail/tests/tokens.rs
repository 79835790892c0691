//! `pgtrail token` and `pgtrail serve` as an operator runs them: a token
//! shown once and kept hashed, its creation and revocation in the trail, a
//! running server obeying a revocation at once, no plain HTTP off
//! loopback unless asked for, and every answered search recorded once
//! across a SIGKILL of the server.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::running::{http_get, Serving};
use crate::support::pgtrail_in;

/// An empty SQLite store in `dir`.
async fn store(dir: &Path) -> String {
    let url = format!("sqlite:{}", dir.join("trail.db").display());
    pgtrail_store::open::open(&url).await.expect("store");
    url
}

/// `GET path` with `token`; the status code.
fn get(address: &str, path: &str, token: Option<&str>) -> u16 {
    http_get(address, path, token).0
}

#[tokio::test]
async fn a_token_is_shown_once_kept_hashed_recorded_and_revoked_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = store(dir.path()).await;
    let env = [("USER", "ops")];
    let created = pgtrail_in(
        dir.path(),
        &[
            "--store", &url, "token", "create", "--name", "ann", "--role", "viewer",
        ],
        &env,
        None,
    );
    let token = created.ok().trim().to_string();
    assert!(token.starts_with("pgt_"), "{created:#?}");
    let file = dir.path().join("pgtrail-tokens.toml");
    let text = std::fs::read_to_string(&file).expect("tokens file");
    assert!(!text.contains(&token[4..]), "the file keeps no token");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
    assert_eq!(mode & 0o077, 0, "0600: {mode:o}");

    let again = pgtrail_in(
        dir.path(),
        &[
            "--store", &url, "token", "create", "--name", "ann", "--role", "auditor",
        ],
        &env,
        None,
    );
    assert_eq!(again.code, 2, "{again:#?}");
    let listed = pgtrail_in(
        dir.path(),
        &["--store", &url, "--format", "jsonl", "token", "list"],
        &env,
        None,
    );
    let rows: Vec<serde_json::Value> = listed
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "ann");
    assert_eq!(rows[0]["role"], "viewer");
    assert!(!listed.stdout.contains("sha256"));

    let server = Serving::start(
        dir.path(),
        &["--store", &url, "serve", "--listen", "127.0.0.1:0"],
    );
    assert_eq!(get(&server.address, "/api/v1/none", Some(&token)), 404);
    assert_eq!(get(&server.address, "/api/v1/none", None), 401);
    pgtrail_in(
        dir.path(),
        &["--store", &url, "token", "revoke", "ann"],
        &env,
        None,
    )
    .ok();
    assert_eq!(get(&server.address, "/api/v1/none", Some(&token)), 401);
    drop(server);

    let trail = pgtrail_in(
        dir.path(),
        &[
            "--store", &url, "--format", "jsonl", "log", "--kind", "access",
        ],
        &env,
        None,
    );
    let operations: Vec<String> = trail
        .events()
        .iter()
        .filter_map(|e| e.operation.clone())
        .collect();
    for expected in ["TOKEN_CREATE", "TOKEN_REVOKE", "LOGIN"] {
        assert!(
            operations.iter().any(|o| o == expected),
            "{expected}: {operations:?}"
        );
    }
    let create = trail
        .events()
        .into_iter()
        .find(|e| e.operation.as_deref() == Some("TOKEN_CREATE"))
        .expect("create");
    assert_eq!(create.app_user.as_deref(), Some("ops"));
    assert!(
        !trail.stdout.contains(&token[4..]),
        "the trail keeps no token"
    );
}

#[tokio::test]
async fn no_store_no_token_and_no_plain_http_off_loopback() {
    let dir = tempfile::tempdir().expect("dir");
    let missing = format!("sqlite:{}", dir.path().join("none.db").display());
    let refused = pgtrail_in(
        dir.path(),
        &[
            "--store", &missing, "token", "create", "--name", "ann", "--role", "auditor",
        ],
        &[],
        None,
    );
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(
        !dir.path().join("pgtrail-tokens.toml").exists(),
        "a token the trail cannot record is not made"
    );

    let url = store(dir.path()).await;
    let plain = pgtrail_in(
        dir.path(),
        &["--store", &url, "serve", "--listen", "0.0.0.0:0"],
        &[],
        None,
    );
    assert_eq!(plain.code, 2, "{plain:#?}");
    assert!(plain.stderr.contains("plain HTTP"), "{}", plain.stderr);
    let half = pgtrail_in(
        dir.path(),
        &["--store", &url, "serve", "--tls-cert", "x.pem"],
        &[],
        None,
    );
    assert_eq!(half.code, 2, "--tls-cert needs --tls-key: {half:#?}");
}

#[tokio::test]
async fn pgtrail_run_serves_the_dashboard_when_server_listen_is_set() {
    let dir = tempfile::tempdir().expect("dir");
    let url = store(dir.path()).await;
    std::fs::write(
        dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"{url}\"\n\n[server]\nlisten = \"127.0.0.1:0\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )
    .expect("config");
    let mut serving = Serving::start(dir.path(), &["run"]);
    assert_eq!(get(&serving.address, "/readyz", None), 200);
    // Loopback, no tokens: the local operator passes the door.
    assert_eq!(get(&serving.address, "/api/v1/none", None), 404);
    let search = "/api/v1/events?q=user:ann";
    assert_eq!(get(&serving.address, search, None), 200);

    let pid = serving.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(sent.is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serving.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&serving.stderr).unwrap_or_default();
    assert!(status.success(), "clean stop: {status}: {log}");
    // The dashboard and `/metrics` share one access spool, drained at the stop.
    assert_eq!(searched(&url).await.0, ["ann"], "{log}");
}

/// The users searched for in the access records of `url`, in store order,
/// and how many distinct event ids they carry.
async fn searched(url: &str) -> (Vec<String>, usize) {
    let store = pgtrail_store::open::open(url).await.expect("store");
    let filter = pgtrail_core::Filter {
        kind: Some(pgtrail_core::Kind::Access),
        ..pgtrail_core::Filter::default()
    };
    let mut events = store.query(&filter).await.expect("query");
    events.retain(|e| e.operation.as_deref() == Some("SEARCH"));
    events.sort_by_key(|e| e.seq);
    let users = events
        .iter()
        .filter_map(|e| e.context.as_ref()?["target"]["filter"]["user"].as_str())
        .map(str::to_string)
        .collect();
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    (users, ids.len())
}

#[tokio::test]
async fn a_server_killed_right_after_answering_has_every_search_recorded_once_after_a_restart() {
    // Each answer waited for its access record's fsync in the access spool;
    // SIGKILL then leaves most of them out of the store. The next start
    // drains them: every answered search is in the trail, none twice.
    const SEARCHES: usize = 30;
    let dir = tempfile::tempdir().expect("dir");
    let url = store(dir.path()).await;
    let args = ["--store", &url, "serve", "--listen", "127.0.0.1:0"];
    let mut server = Serving::start(dir.path(), &args);
    let asked: Vec<String> = (0..SEARCHES).map(|n| format!("u{n}")).collect();
    for user in &asked {
        let path = format!("/api/v1/events?q=user:{user}");
        assert_eq!(get(&server.address, &path, None), 200);
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().expect("reap");
    let (before, _) = searched(&url).await;
    assert!(
        before.len() < SEARCHES,
        "the last records still waited in the spool at the kill"
    );
    assert!(
        dir.path().join("pgtrail-server-spool-127.0.0.1-0").is_dir(),
        "the access spool is beside the server"
    );

    let again = Serving::start(dir.path(), &args);
    drop(again); // SIGTERM: drains before it exits
    let (users, ids) = searched(&url).await;
    assert_eq!(users, asked, "every answered search, in order");
    assert_eq!(ids, SEARCHES, "none twice");
}
