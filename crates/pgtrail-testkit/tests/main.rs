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
