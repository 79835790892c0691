//! A store whose appends pass through a caller's hook, with every other
//! method forwarded: how tests and benchmarks inject append failures or
//! time appends without re-forwarding the whole [`Store`] trait (a copy
//! that forgets a method with a default, such as `expected_indexes` or
//! `store_id`, misreports quietly).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::event::JsonObject;
use pgtrail_core::{Event, Filter, RowRef};

use crate::{
    AppendReceipt, ChainHead, Checkpoint, ExpectedIndexes, Mismatch, PruneOutcome, Result, Store,
    StoredEvent,
};

/// What happens to an append of a [`Hooked`] store.
#[async_trait]
pub trait AppendHook: Send + Sync {
    /// Appends `events` to `inner` (or not, or fails), as the hook decides.
    async fn append(&self, inner: &dyn Store, events: &[Event]) -> Result<AppendReceipt>;
}

/// `inner` with its appends going through `hook`.
pub struct Hooked<H> {
    inner: Arc<dyn Store>,
    hook: H,
}

impl<H: AppendHook> Hooked<H> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, hook: H) -> Self {
        Hooked { inner, hook }
    }

    /// The hook, for what it recorded.
    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: AppendHook> Store for Hooked<H> {
    async fn append(&self, events: &[Event]) -> Result<AppendReceipt> {
        self.hook.append(self.inner.as_ref(), events).await
    }
    async fn query(&self, filter: &Filter) -> Result<Vec<Event>> {
        self.inner.query(filter).await
    }
    async fn facets(&self, filter: &Filter, top: usize) -> Result<pgtrail_core::search::Facets> {
        self.inner.facets(filter, top).await
    }
    async fn activity_counts(
        &self,
        filter: &Filter,
        cap: usize,
    ) -> Result<(Vec<crate::ActivityCount>, u64)> {
        self.inner.activity_counts(filter, cap).await
    }
    async fn row_events(&self, row: &RowRef) -> Result<Vec<Event>> {
        self.inner.row_events(row).await
    }
    async fn row_image(&self, row: &RowRef) -> Result<Option<JsonObject>> {
        self.inner.row_image(row).await
    }
    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.inner.scan(after, limit).await
    }
    async fn scan_raw(&self, after: i64, limit: usize) -> Result<Vec<crate::RawEvent>> {
        self.inner.scan_raw(after, limit).await
    }
    async fn scan_stored(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.inner.scan_stored(after, limit).await
    }
    async fn seq_of_id(&self, id: uuid::Uuid) -> Result<Option<i64>> {
        self.inner.seq_of_id(id).await
    }
    async fn expected_indexes(&self, page: &[StoredEvent]) -> Result<ExpectedIndexes> {
        self.inner.expected_indexes(page).await
    }
    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: ExpectedIndexes,
    ) -> Result<Vec<(i64, Mismatch)>> {
        self.inner.check_indexes(first, last, expected).await
    }
    async fn head(&self) -> Result<Option<ChainHead>> {
        self.inner.head().await
    }
    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        self.inner.add_checkpoint(checkpoint).await
    }
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.inner.checkpoints().await
    }
    async fn store_id(&self) -> Result<Option<String>> {
        self.inner.store_id().await
    }
    async fn subtree_hashes(
        &self,
        trees: &[crate::merkle::Subtree],
    ) -> Result<Vec<crate::merkle::Hash>> {
        self.inner.subtree_hashes(trees).await
    }
    async fn add_tree_nodes(
        &self,
        nodes: &[(crate::merkle::Subtree, crate::merkle::Hash)],
    ) -> Result<()> {
        self.inner.add_tree_nodes(nodes).await
    }
    async fn tree_nodes(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<crate::tree::TreeNode>> {
        self.inner.tree_nodes(after, limit).await
    }
    async fn add_cosignature(
        &self,
        cosignature: &crate::cosignature::StoredCosignature,
    ) -> Result<()> {
        self.inner.add_cosignature(cosignature).await
    }
    async fn cosignatures(&self, seq: i64) -> Result<Vec<crate::cosignature::StoredCosignature>> {
        self.inner.cosignatures(seq).await
    }
    async fn prune(&self, through: i64) -> Result<PruneOutcome> {
        self.inner.prune(through).await
    }
    async fn prepare_until(&self, until: DateTime<Utc>) -> Result<Vec<String>> {
        self.inner.prepare_until(until).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
}
