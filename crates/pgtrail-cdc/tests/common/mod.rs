//! Shared set-up: a cluster and a database per test (stopped and removed
//! when the test ends), capture running through the pipeline into a SQLite
//! store, and waiting
//! for events to arrive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgtrail_cdc::catalog::{self, TableSelection};
use pgtrail_cdc::connection::ConnectOptions;
use pgtrail_cdc::consumer::ReplicationOptions;
use pgtrail_cdc::setup::{self, SetupOptions};
use pgtrail_cdc::CdcError;
use pgtrail_core::config::IdentityConfig;
use pgtrail_core::Event;
use pgtrail_pipeline::cdc::Progress;
use pgtrail_pipeline::PipelineError;
use pgtrail_store::Store;
use pgtrail_testkit::{Cluster, ClusterOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A database with `schema_sql` applied, plus names derived from `test`.
pub struct TestDb {
    pub url: String,
    pub slot: String,
    pub publication: String,
    pub client: tokio_postgres::Client,
    pub dir: tempfile::TempDir,
    /// Last, so it stops after the connections above are dropped.
    _cluster: Cluster,
}

impl TestDb {
    pub async fn new(test: &str, schema_sql: &str) -> anyhow::Result<Self> {
        Self::with_settings(test, schema_sql, &[]).await
    }

    /// Like [`TestDb::new`], on a cluster with extra `postgresql.conf` settings.
    pub async fn with_settings(
        test: &str,
        schema_sql: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let options = ClusterOptions {
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..ClusterOptions::default()
        };
        let cluster = tokio::task::spawn_blocking(move || Cluster::start_with(options)).await??;
        let url = cluster.create_database(test).await?;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client.batch_execute(schema_sql).await?;
        Ok(TestDb {
            url,
            slot: format!("pgtrail_{test}"),
            publication: format!("pgtrail_{test}"),
            client,
            dir: tempfile::tempdir()?,
            _cluster: cluster,
        })
    }

    /// A connection to the test database as `role` (which must have LOGIN).
    pub async fn session_as(&self, role: &str) -> anyhow::Result<tokio_postgres::Client> {
        let url = self.url.replacen("postgres@", &format!("{role}@"), 1);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::parse(&self.url).expect("valid URL")
    }

    pub fn setup_options(&self) -> SetupOptions {
        SetupOptions {
            slot: self.slot.clone(),
            publication: self.publication.clone(),
            selection: TableSelection::default(),
            replica_identity_full: false,
            actor: true,
            identity: IdentityConfig::default(),
            create_slot: true,
        }
    }

    /// Runs `--setup` with `options`.
    pub async fn setup(&self, options: &SetupOptions) -> Result<setup::SetupReport, CdcError> {
        let facts = catalog::check_ready(&self.client).await?;
        setup::prepare(&self.client, &facts, options).await
    }

    pub fn store_url(&self) -> String {
        format!("sqlite:{}", self.dir.path().join("trail.db").display())
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        pgtrail_store::open(&self.store_url())
            .await
            .expect("store opens")
    }

    pub fn capture_options(&self) -> ReplicationOptions {
        let mut options = ReplicationOptions::new(&self.slot, &self.publication);
        options.batch_wait = Duration::from_millis(20);
        options.retry_pause = Duration::from_millis(100);
        options
    }
}

/// A consumer running in the background.
pub struct Running {
    pub shutdown: watch::Sender<bool>,
    pub progress: watch::Receiver<Progress>,
    pub task: JoinHandle<Result<(), PipelineError>>,
}

impl Running {
    pub fn start(db: &TestDb, store: Arc<dyn Store>, options: ReplicationOptions) -> Running {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let connect = db.connect_options();
        let task = tokio::spawn(async move {
            pgtrail_pipeline::cdc::run(&connect, &options, store, shutdown_rx, Some(progress_tx))
                .await
        });
        Running {
            shutdown,
            progress,
            task,
        }
    }

    pub async fn stop(self) -> Result<(), PipelineError> {
        let _ = self.shutdown.send(true);
        self.task.await.expect("consumer task does not panic")
    }
}

/// All events in the store, oldest first.
pub async fn all_events(store: &dyn Store) -> Vec<Event> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.scan(after, 10_000).await.expect("scan");
        let Some(last) = page.last() else { break };
        after = last.seq.expect("stored events have seq");
        events.extend(page);
    }
    events
}

/// Waits until the store holds at least `count` events (or times out).
pub async fn wait_for_events(store: &dyn Store, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = all_events(store).await;
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store holds at least `count` row changes; returns only those.
pub async fn wait_for_row_changes(store: &dyn Store, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: Vec<Event> = all_events(store)
            .await
            .into_iter()
            .filter(|e| e.kind == pgtrail_core::Kind::RowChange)
            .collect();
        if rows.len() >= count || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
