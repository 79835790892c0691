//! Placeholder: the postgres backend is being written.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::{Event, Filter, RowRef};

use crate::{AppendReceipt, ChainHead, Checkpoint, PruneOutcome, Result, Store, StoreError};

/// The postgres store.
pub struct PostgresStore {
    location: String,
}

impl PostgresStore {
    /// Opens the store.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(StoreError::Open { location: crate::open::redact_url(url), reason: "not implemented yet".into(), source: None })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, _events: Vec<Event>) -> Result<AppendReceipt> { unimplemented!() }
    async fn query(&self, _filter: &Filter) -> Result<Vec<Event>> { unimplemented!() }
    async fn row_events(&self, _row: &RowRef) -> Result<Vec<Event>> { unimplemented!() }
    async fn scan(&self, _after: i64, _limit: usize) -> Result<Vec<Event>> { unimplemented!() }
    async fn head(&self) -> Result<Option<ChainHead>> { unimplemented!() }
    async fn add_checkpoint(&self, _checkpoint: &Checkpoint) -> Result<()> { unimplemented!() }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> { unimplemented!() }
    async fn prune(&self, _through: i64) -> Result<PruneOutcome> { unimplemented!() }
    async fn prepare_until(&self, _until: DateTime<Utc>) -> Result<Vec<String>> { unimplemented!() }
    fn location(&self) -> String { self.location.clone() }
}
