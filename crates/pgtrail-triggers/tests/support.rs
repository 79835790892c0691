//! Shared setup: a throwaway cluster and database per test, with trigger
//! capture installed, and helpers to read back what was sealed.

use pgtrail_core::Event;
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::Store;
use pgtrail_testkit::Cluster;
use pgtrail_triggers::{DrainReport, InstallOptions};
use tokio_postgres::Client;

/// A cluster, a database in it with pgtrail installed, and a superuser
/// connection to that database.
pub struct Db {
    /// Kept alive for the test's duration: dropping it stops the server.
    _cluster: Cluster,
    pub url: String,
    pub client: Client,
}

impl Db {
    /// A fresh database with trigger capture installed.
    pub async fn installed(name: &str) -> Db {
        let db = Db::empty(name).await;
        pgtrail_triggers::install(&db.url, &InstallOptions::default())
            .await
            .expect("install");
        db
    }

    /// A fresh database without pgtrail.
    pub async fn empty(name: &str) -> Db {
        let cluster = Cluster::start().expect("start a cluster");
        let url = cluster
            .create_database(name)
            .await
            .expect("create database");
        let client = connect(&url).await;
        Db {
            _cluster: cluster,
            url,
            client,
        }
    }

    /// A new connection to the database (another session).
    pub async fn session(&self) -> Client {
        connect(&self.url).await
    }

    /// A connection as another role (created by the test).
    pub async fn session_as(&self, role: &str) -> Client {
        connect(&self.url.replacen("postgres@", &format!("{role}@"), 1)).await
    }

    /// Runs SQL as the superuser.
    pub async fn sql(&self, sql: &str) {
        self.client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Seals everything final.
    pub async fn drain(&self) -> DrainReport {
        let mut client = connect(&self.url).await;
        pgtrail_triggers::drain_all(&mut client)
            .await
            .expect("seal")
    }

    /// The store in this database.
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url)
            .await
            .expect("open the store")
    }

    /// Seals, then returns every event of the chain, oldest first.
    pub async fn sealed_events(&self) -> Vec<Event> {
        self.drain().await;
        self.store().await.scan(0, 100_000).await.expect("scan")
    }

    /// Sealed row changes of `table`, oldest first.
    pub async fn row_events(&self, table: &str) -> Vec<Event> {
        self.sealed_events()
            .await
            .into_iter()
            .filter(|e| {
                e.kind == pgtrail_core::Kind::RowChange && e.table.as_deref() == Some(table)
            })
            .collect()
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// A JSON object from text.
pub fn obj(json: &str) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(json).expect("a JSON object")
}
