//! The harness itself: a cluster starts, accepts connections with logical
//! replication enabled, gives each test its own database, and is gone after drop.

use pgtrail_testkit::Cluster;

#[tokio::test]
async fn cluster_starts_with_logical_replication_and_is_removed_on_drop() {
    let cluster = Cluster::start().expect("cluster starts");
    let dir = cluster.dir().to_path_buf();
    let client = cluster.connect("postgres").await.expect("connect");
    let row = client
        .query_one("show wal_level", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, String>(0), "logical");

    let a = cluster.create_database("same name").await.expect("db a");
    let b = cluster.create_database("same name").await.expect("db b");
    assert_ne!(a, b, "each test gets its own database");
    assert_eq!(cluster.psql("postgres", "select 1+1").expect("psql"), "2");

    drop(client);
    drop(cluster);
    assert!(!dir.exists(), "cluster directory removed on drop");
}

#[test]
fn two_clusters_run_side_by_side() {
    let a = Cluster::start().expect("a");
    let b = Cluster::start().expect("b");
    assert_ne!(a.port(), b.port());
    assert_eq!(
        b.psql("postgres", "select current_user").expect("psql"),
        "postgres"
    );
}

#[test]
fn cluster_is_removed_when_a_test_panics() {
    let dir = std::panic::catch_unwind(|| {
        let cluster = Cluster::start().expect("cluster starts");
        let dir = cluster.dir().to_path_buf();
        std::panic::panic_any(dir);
    })
    .expect_err("panicked")
    .downcast::<std::path::PathBuf>()
    .expect("payload is the dir");
    assert!(!dir.exists(), "cluster directory removed during unwinding");
}

/// Set in the child process of the test below: where it writes its cluster's
/// directory and port before it waits to be killed.
const CHILD_REPORT: &str = "PGTRAIL_TESTKIT_CHILD_REPORT";

/// Only does something as the child of the test below: starts a cluster,
/// says where it is, and waits to be killed with SIGKILL (so no `Drop` runs).
#[test]
fn child_that_is_killed_holding_a_cluster() {
    let Some(report) = std::env::var_os(CHILD_REPORT) else {
        return;
    };
    let cluster = Cluster::start().expect("child's cluster starts");
    let line = format!("{} {}", cluster.dir().display(), cluster.port());
    std::fs::write(format!("{}.tmp", report.to_string_lossy()), line).expect("write report");
    std::fs::rename(format!("{}.tmp", report.to_string_lossy()), &report).expect("publish report");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn a_cluster_whose_test_process_was_killed_is_stopped_and_removed() {
    let report = std::env::temp_dir().join(format!("testkit-child-{}", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_that_is_killed_holding_a_cluster",
            "--nocapture",
        ])
        .env(CHILD_REPORT, &report)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child test");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        if let Ok(text) = std::fs::read_to_string(&report) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "child never reported");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = std::fs::remove_file(&report);
    let (dir, port) = text.rsplit_once(' ').expect("dir and port");
    let (dir, port): (std::path::PathBuf, u16) = (dir.into(), port.parse().expect("port"));
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let accepts = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(
        accepts() && dir.exists(),
        "the killed child's server is left running"
    );
    assert!(pgtrail_testkit::reap_orphans() >= 1, "the orphan is found");
    assert!(!dir.exists(), "its directory is removed");
    assert!(!accepts(), "its server is stopped");
}
