//! The Postgres cluster `bench/store` measures the store on, durable as in
//! production (fsync, synchronous commit, full page writes): one
//! definition, so every bench that compares with `bench/store`'s figures
//! runs on the same settings. Shared through
//! `#[path = "common/cluster.rs"] mod cluster;`.

/// A throwaway cluster with `bench/store`'s settings.
pub fn durable() -> pgtrail_testkit::Cluster {
    pgtrail_testkit::Cluster::start_with(pgtrail_testkit::ClusterOptions {
        settings: [
            ("fsync", "on"),
            ("synchronous_commit", "on"),
            ("full_page_writes", "on"),
            ("shared_buffers", "1GB"),
            ("max_wal_size", "4GB"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    })
    .expect("cluster")
}
