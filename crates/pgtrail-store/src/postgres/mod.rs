//! The PostgreSQL store: schema `pgtrail` in any database, events partitioned
//! by month.
//!
//! - [`schema`]: versioned migrations, and the refusal of stores this build
//!   must not touch (newer, half-migrated, foreign).
//! - [`append`]: sealing under the chain-head row lock, written by binary
//!   COPY; [`append_in`] lets another writer share the transaction.
//! - [`event_row`]: an event to a row and back, exactly.
//! - [`query`]: the readers' SQL, every value bound as a parameter.
//! - [`seq_hours`]: the `seq` range of each capture hour, which bounds the
//!   walks of a time window.
//! - [`objects`]: the relations each statement touched, in chain order,
//!   which `table:` walks.
//! - [`partition`]: monthly partitions made ahead and dropped by retention.
//! - [`pool`]: a few connections, so concurrent calls do not queue on one.
//!
//! Connections come from `pgtrail-connect` (libpq URL and environment,
//! `~/.pgpass`, TLS by `sslmode`); the store's sessions run with
//! `synchronous_commit = on` whatever the role or database says.
//! Needs PostgreSQL 12 or newer (default partitions, `date_trunc` with a zone).
//!
//! Other writers of the same database (the trigger capture path) open the
//! store first, so the schema is migrated, then seal their rows through
//! [`append_in`]. They keep their own tables and migration records beside
//! it: a version in `pgtrail.schema_migrations` that this build does not
//! know makes the store refuse to open as "too new".

mod append;
mod event_row;
mod facets;
pub mod json;
mod objects;
mod partition;
mod pool;
mod query;
mod raw;
mod row_key;
mod schema;
mod seq_hours;
mod tree;
mod wide_row;
mod word_slices;

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use pgtrail_connect::{ConnectConfig, ConnectError};
use pgtrail_core::search::Facets;
use pgtrail_core::{Event, Filter, RowRef};
use tokio_postgres::Row;

pub use append::append_in;
#[doc(hidden)]
pub use append::copy_unsealed;
#[cfg(feature = "bench-internals")]
pub use facets::count_for_bench;
pub use facets::RECOUNT_FACETS;
#[cfg(feature = "bench-internals")]
pub use seq_hours::keep_seq_hours_for_bench;
pub use seq_hours::RECOUNT_SEQ_HOURS;

use crate::checkpoint::{Checkpoint, CheckpointKind};
use crate::location::redact_url;
use crate::{
    AppendReceipt, ChainHead, ExpectedIndexes, PruneOutcome, Result, Store, StoreError, StoredEvent,
};
use pool::{Pool, PooledClient};
use seq_hours::Window;

/// How far ahead an appending store makes sure monthly partitions exist.
const PARTITION_DAYS_AHEAD: i64 = 40;
/// Connections opened at most at once per store.
const MAX_CONNECTIONS: usize = 8;

/// Events in schema `pgtrail` of a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    location: String,
    /// `year * 12 + month0` up to which this process made sure monthly
    /// partitions exist (0: not yet), so appends create the current and next
    /// month's partitions once instead of filling the default partition.
    partitions_ready_through: AtomicI64,
    /// Keys the digests `verify` compares `events_objects` by
    /// (`objects::check`): random per process.
    objects_key: std::hash::RandomState,
}

impl PostgresStore {
    /// Connects to the database at `url` (libpq URL form), creating or
    /// migrating schema `pgtrail` as needed. Refuses a store written by a
    /// newer pgtrail, a half-migrated one, and a foreign `pgtrail` schema.
    pub async fn connect(url: &str) -> Result<Self> {
        // An append returns only once durable: a role or database setting of
        // `synchronous_commit = off` must not quietly weaken that.
        let store = Self::with_settings(url, "pgtrail", "-c synchronous_commit=on")?;
        let mut client = store.first_connection().await?;
        schema::migrate(&mut client, &store.location).await?;
        drop(client);
        Ok(store)
    }

    /// For tests of migrations: creates (or migrates) the store at `url` up
    /// to schema `version` only, as the pgtrail of that version left it.
    #[doc(hidden)]
    pub async fn create_at_version(url: &str, version: i64) -> Result<()> {
        let store = Self::with_settings(url, "pgtrail", "-c synchronous_commit=on")?;
        let mut client = store.first_connection().await?;
        schema::migrate_to(&mut client, &store.location, version).await
    }

    /// Connects to the store at `url` for `verify`: every transaction is
    /// read-only (`default_transaction_read_only`), nothing is migrated, and
    /// a database without a pgtrail store, or with another schema version
    /// than this build's, is an error.
    pub async fn connect_for_verify(url: &str) -> Result<Self> {
        // Read-only transactions; and only the catalog on the search path,
        // so nothing a database user created can stand in for a built-in.
        let store = Self::with_settings(
            url,
            "pgtrail verify",
            "-c default_transaction_read_only=on -c search_path=pg_catalog",
        )?;
        let mut client = store.first_connection().await?;
        schema::check_for_verify(&mut client, &store.location).await?;
        drop(client);
        Ok(store)
    }

    /// The store for `url`, its sessions started with these settings; no
    /// connection is made yet.
    fn with_settings(url: &str, application_name: &str, options: &str) -> Result<Self> {
        let location = redact_url(url);
        let mut config = ConnectConfig::parse(url).map_err(|e| StoreError::Url {
            url: location.clone(),
            reason: e.to_string(),
        })?;
        config
            .default_application_name(application_name)
            .add_options(options);
        Ok(PostgresStore {
            pool: Pool::new(config, MAX_CONNECTIONS),
            location,
            partitions_ready_through: AtomicI64::new(0),
            objects_key: std::hash::RandomState::new(),
        })
    }

    /// The first connection, so a store that cannot be reached fails when it
    /// is opened, in one line.
    async fn first_connection(&self) -> Result<pool::PooledClient<'_>> {
        self.pool.get().await.map_err(|e| StoreError::Open {
            location: self.location.clone(),
            // The whole chain in one line (the server's or rustls's words
            // included), kept as text: the source would print it twice.
            reason: describe_connect(&e),
            source: None,
        })
    }

    /// For tests and benchmarks: the plan Postgres chooses for `filter`'s
    /// query (`EXPLAIN`, not run), one line per node.
    #[doc(hidden)]
    pub async fn explain(&self, filter: &Filter) -> Result<String> {
        let client = self.client().await?;
        let q = self.filtered(&client, filter).await?;
        let rows = client
            .query(&format!("explain {}", q.sql), &q.params())
            .await
            .map_err(|e| StoreError::backend(&self.location, "explaining a query", e))?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The schema version this build creates and understands.
    pub fn schema_version() -> i64 {
        schema::latest_version()
    }

    /// Creates this month's and next month's partitions once per process and
    /// month. Failing here is not fatal: rows then land in the default
    /// partition, and `pgtrail retention` moves them out later.
    async fn ensure_partitions_ahead(&self) {
        let now = Utc::now();
        let month_index = |t: DateTime<Utc>| i64::from(t.year()) * 12 + i64::from(t.month0());
        let wanted = month_index(now) + 1;
        if self.partitions_ready_through.load(Ordering::Relaxed) >= wanted {
            return;
        }
        self.partitions_ready_through
            .store(wanted, Ordering::Relaxed);
        let ahead = now + chrono::Duration::days(PARTITION_DAYS_AHEAD);
        if let Err(e) = self.prepare_ahead(ahead).await {
            tracing::warn!(store = %self.location, error = %e, "Could not create partitions ahead; events go to the default partition until retention runs");
        }
    }

    /// Creates the partitions of the months from now to `until` that have
    /// none, except a month whose events wait in the default partition
    /// (`pgtrail retention` moves them: [`Store::prepare_until`]). For
    /// processes that append: it never moves rows, so it holds the chain
    /// head only briefly. Returns the names of the partitions created.
    pub async fn prepare_ahead(&self, until: DateTime<Utc>) -> Result<Vec<String>> {
        let context = format!(
            "creating partitions up to {}",
            pgtrail_core::time::format_micros(&until)
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.backend(&context))?;
        let created = partition::prepare_ahead(&tx, Utc::now(), until)
            .await
            .map_err(self.backend(&context))?;
        tx.commit().await.map_err(self.backend(&context))?;
        Ok(created)
    }

    async fn client(&self) -> Result<PooledClient<'_>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::backend(&self.location, "connecting", e))
    }

    /// Wraps a Postgres error with what the store was doing.
    fn backend(
        &self,
        context: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> StoreError + '_ {
        let context = context.into();
        move |e| StoreError::backend(&self.location, context, e)
    }

    /// The query of the events matching `filter`, its time window read as
    /// a `seq` range from `seq_hours`.
    async fn filtered(&self, client: &PooledClient<'_>, filter: &Filter) -> Result<query::Query> {
        let window = seq_hours::window(&**client, filter)
            .await
            .map_err(self.backend("reading the seq range of a time window"))?;
        Ok(query::filtered(filter, window, None))
    }

    /// The events of a search for words (`query::searches_words`), newest
    /// first: the slices of `word_slices` in turn, until one fills the
    /// page (without a limit, the whole range at once).
    async fn by_slices(&self, client: &PooledClient<'_>, filter: &Filter) -> Result<Vec<Row>> {
        let context = "searching SQL text";
        let window = seq_hours::window(&**client, filter)
            .await
            .map_err(self.backend("reading the seq range of a time window"))?;
        let (first, mut last) = match window {
            Window::Empty => return Ok(Vec::new()),
            Window::Seqs(first, last) => (first, last),
            Window::Unbounded => {
                let head: i64 = client
                    .query_one("select seq from pgtrail.chain_head", &[])
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(self.backend(context))?;
                (1, head)
            }
        };
        if let Some(before) = filter.before_seq {
            last = last.min(before.saturating_sub(1));
        }
        let limit = match filter.limit {
            Some(limit) if first <= last => limit,
            // Every match is wanted, or none can be: one query.
            _ => {
                let q = query::filtered(filter, window, None);
                return client
                    .query(&q.sql, &q.params())
                    .await
                    .map_err(self.backend(context));
            }
        };
        let mut rows = Vec::new();
        for slice in word_slices::slices(first, last) {
            let q = query::filtered(
                filter,
                Window::Seqs(slice.first, last),
                slice.blocks.as_deref(),
            );
            rows = client
                .query(&q.sql, &q.params())
                .await
                .map_err(self.backend(context))?;
            if rows.len() >= limit {
                break;
            }
        }
        Ok(rows)
    }

    fn decode(&self, rows: &[Row]) -> Result<Vec<Event>> {
        rows.iter()
            .map(|row| {
                event_row::event_from_row(row)
                    .map_err(|e| StoreError::backend(&self.location, "reading events", e))
            })
            .collect()
    }
}

/// A read-only transaction that sees one snapshot throughout.
async fn snapshot<'a>(
    client: &'a mut PooledClient<'_>,
) -> std::result::Result<tokio_postgres::Transaction<'a>, tokio_postgres::Error> {
    client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
}

/// A connection error as one line, the server's or rustls's words included.
fn describe_connect(e: &ConnectError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        if let Some(pg) = inner.downcast_ref::<tokio_postgres::Error>() {
            text.push_str(&schema::describe(pg));
            break;
        }
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[async_trait]
impl Store for PostgresStore {
    async fn append(&self, events: &[Event]) -> Result<AppendReceipt> {
        self.ensure_partitions_ahead().await;
        let context = format!("appending {} events", events.len());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.backend(&context))?;
        let receipt = append::append_rows(&tx, events)
            .await
            .map_err(self.backend(&context))?;
        tx.commit().await.map_err(self.backend(&context))?;
        Ok(receipt)
    }

    async fn facets(&self, filter: &Filter, top: usize) -> Result<Facets> {
        let context = "counting facets";
        let mut client = self.client().await?;
        if crate::facet_hours::answers(filter) {
            let tx = snapshot(&mut client).await.map_err(self.backend(context))?;
            let facets = facets::window(&tx, filter, top)
                .await
                .map_err(self.backend(context))?;
            tx.commit().await.map_err(self.backend(context))?;
            return Ok(facets);
        }
        let (counts, complete) = facets::count_events(&*client, filter)
            .await
            .map_err(self.backend(context))?;
        let counted = crate::facet_hours::counted(&counts);
        Ok(Facets::from_counts(counts, counted, complete, top))
    }

    async fn expected_indexes(&self, page: &[StoredEvent]) -> Result<ExpectedIndexes> {
        Ok(ExpectedIndexes {
            facets: facets::counts_of(page.iter().filter_map(|s| s.event.as_ref().ok())),
            seq_hours: seq_hours::ranges_of(page),
            objects: objects::expected(page, &self.objects_key),
            ..ExpectedIndexes::default()
        })
    }

    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: ExpectedIndexes,
    ) -> Result<Vec<(i64, crate::Mismatch)>> {
        let context =
            "checking the facet counts, the seq ranges of the hours and the statements' relations";
        let mut client = self.client().await?;
        let tx = snapshot(&mut client).await.map_err(self.backend(context))?;
        let mut mismatches = facets::check(&tx, first, last, expected.facets)
            .await
            .map_err(self.backend(context))?;
        mismatches.extend(
            seq_hours::check(&tx, first, last, expected.seq_hours)
                .await
                .map_err(self.backend(context))?,
        );
        mismatches.extend(
            objects::check(&tx, first, last, expected.objects, &self.objects_key)
                .await
                .map_err(self.backend(context))?,
        );
        mismatches.sort_by_key(|(seq, _)| *seq);
        tx.commit().await.map_err(self.backend(context))?;
        Ok(mismatches)
    }

    async fn activity_counts(
        &self,
        filter: &Filter,
        cap: usize,
    ) -> Result<(Vec<crate::ActivityCount>, u64)> {
        let client = self.client().await?;
        let window = seq_hours::window(&*client, filter)
            .await
            .map_err(self.backend("reading the seq range of a time window"))?;
        let q = query::activity_counts(filter, window, cap);
        let rows = client
            .query(&q.sql, &q.params())
            .await
            .map_err(self.backend("counting activity"))?;
        let mut groups = Vec::with_capacity(rows.len());
        for row in &rows {
            let read = |e| StoreError::backend(&self.location, "reading activity counts", e);
            let events: i64 = row.try_get(4).map_err(read)?;
            groups.push(crate::ActivityCount {
                actor: row.try_get(0).map_err(read)?,
                table: row.try_get(1).map_err(read)?,
                operation: row.try_get(2).map_err(read)?,
                hour: row.try_get(3).map_err(read)?,
                events: u64::try_from(events).unwrap_or(0),
                first: row.try_get(5).map_err(read)?,
                last: row.try_get(6).map_err(read)?,
            });
        }
        let counted = groups.iter().map(|g| g.events).sum();
        Ok((groups, counted))
    }

    async fn query(&self, filter: &Filter) -> Result<Vec<Event>> {
        let client = self.client().await?;
        if query::searches_words(filter) {
            let rows = self.by_slices(&client, filter).await?;
            return self.decode(&rows);
        }
        let q = self.filtered(&client, filter).await?;
        let rows = client
            .query(&q.sql, &q.params())
            .await
            .map_err(self.backend("querying events"))?;
        self.decode(&rows)
    }

    async fn row_events(&self, row: &RowRef) -> Result<Vec<Event>> {
        let q = query::row_events(row);
        let client = self.client().await?;
        let rows = client
            .query(&q.sql, &q.params())
            .await
            .map_err(self.backend(format!(
                "reading the events of {} {}",
                row.table,
                row.pk.canonical()
            )))?;
        self.decode(&rows)
    }

    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(&query::scan(), &[&after, &limit])
            .await
            .map_err(self.backend(format!("reading events after {after}")))?;
        self.decode(&rows)
    }

    async fn seq_of_id(&self, id: uuid::Uuid) -> Result<Option<i64>> {
        let client = self.client().await?;
        let row = client
            .query_opt("select seq from pgtrail.events where id = $1", &[&id])
            .await
            .map_err(self.backend("looking an event up by id"))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn scan_raw(&self, after: i64, limit: usize) -> Result<Vec<crate::RawEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(raw::SCAN, &[&after, &limit])
            .await
            .map_err(self.backend(format!("reading events after {after}")))?;
        rows.iter()
            .map(|row| raw::raw_event(row).map_err(self.backend("reading events")))
            .collect()
    }

    async fn scan_stored(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(&query::scan_stored(), &[&after, &limit])
            .await
            .map_err(self.backend(format!("reading events after {after} to verify")))?;
        rows.iter()
            .map(|row| {
                event_row::stored_event(row).map_err(self.backend("reading events to verify"))
            })
            .collect()
    }

    async fn head(&self) -> Result<Option<ChainHead>> {
        let client = self.client().await?;
        let row = client
            .query_one("select seq, hash from pgtrail.chain_head", &[])
            .await
            .map_err(self.backend("reading the chain head"))?;
        let read = self.backend("reading the chain head");
        let (seq, hash): (i64, String) = match (row.try_get(0), row.try_get(1)) {
            (Ok(seq), Ok(hash)) => (seq, hash),
            (Err(e), _) | (_, Err(e)) => return Err(read(e)),
        };
        Ok((seq > 0).then_some(ChainHead { seq, hash }))
    }

    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "insert into pgtrail.checkpoints (kind, seq, hash, count, created_at, public_key, signature, note, frontier) \
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &checkpoint.kind.as_str(),
                    &checkpoint.seq,
                    &checkpoint.hash,
                    &checkpoint.count,
                    &checkpoint.created_at,
                    &checkpoint.public_key,
                    &checkpoint.signature,
                    &checkpoint.note,
                    &checkpoint.frontier,
                ],
            )
            .await
            .map_err(self.backend("recording a checkpoint"))?;
        Ok(())
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let client = self.client().await?;
        let rows = client
            .query(
                // `*`: a store from before notes (read without migrating)
                // has no note and frontier columns.
                "select * from pgtrail.checkpoints order by id",
                &[],
            )
            .await
            .map_err(self.backend("reading checkpoints"))?;
        rows.iter()
            .map(|row| {
                let corrupt = |e: tokio_postgres::Error| {
                    StoreError::backend(&self.location, "reading checkpoints", e)
                };
                let kind: String = row.try_get("kind").map_err(corrupt)?;
                let kind = CheckpointKind::parse(&kind).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "store {}: checkpoint of unknown kind '{kind}'",
                        self.location
                    ))
                })?;
                let optional = |name: &str| match row.columns().iter().any(|c| c.name() == name) {
                    true => row.try_get::<_, Option<String>>(name).map_err(corrupt),
                    false => Ok(None),
                };
                Ok(Checkpoint {
                    kind,
                    seq: row.try_get("seq").map_err(corrupt)?,
                    hash: row.try_get("hash").map_err(corrupt)?,
                    count: row.try_get("count").map_err(corrupt)?,
                    created_at: row.try_get("created_at").map_err(corrupt)?,
                    public_key: row.try_get("public_key").map_err(corrupt)?,
                    signature: row.try_get("signature").map_err(corrupt)?,
                    note: optional("note")?,
                    frontier: optional("frontier")?,
                })
            })
            .collect()
    }

    async fn add_cosignature(
        &self,
        cosignature: &crate::cosignature::StoredCosignature,
    ) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "insert into pgtrail.cosignatures (seq, checkpoint, line, received_at) \
                 values ($1, $2, $3, $4) on conflict do nothing",
                &[
                    &cosignature.seq,
                    &cosignature.checkpoint,
                    &cosignature.line,
                    &cosignature.received_at,
                ],
            )
            .await
            .map_err(self.backend("recording a cosignature"))?;
        Ok(())
    }

    async fn cosignatures(&self, seq: i64) -> Result<Vec<crate::cosignature::StoredCosignature>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "select checkpoint, line, received_at from pgtrail.cosignatures \
                 where seq = $1 order by ctid",
                &[&seq],
            )
            .await
            .map_err(self.backend("reading cosignatures"))?;
        rows.iter()
            .map(|row| {
                let corrupt = |e: tokio_postgres::Error| {
                    StoreError::backend(&self.location, "reading cosignatures", e)
                };
                Ok(crate::cosignature::StoredCosignature {
                    seq,
                    checkpoint: row.try_get(0).map_err(corrupt)?,
                    line: row.try_get(1).map_err(corrupt)?,
                    received_at: row.try_get(2).map_err(corrupt)?,
                })
            })
            .collect()
    }

    async fn store_id(&self) -> Result<Option<String>> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "select to_regclass('pgtrail.store_identity') is not null",
                &[],
            )
            .await
            .map_err(self.backend("looking for the store's id"))?;
        if !row.try_get::<_, bool>(0).unwrap_or(false) {
            return Ok(None);
        }
        let row = client
            .query_one("select id from pgtrail.store_identity", &[])
            .await
            .map_err(self.backend("reading the store's id"))?;
        row.try_get(0)
            .map(Some)
            .map_err(self.backend("reading the store's id"))
    }

    async fn subtree_hashes(
        &self,
        trees: &[crate::merkle::Subtree],
    ) -> Result<Vec<crate::merkle::Hash>> {
        let context = "reading the Merkle tree";
        let mut client = self.client().await?;
        // One snapshot: a prune running meanwhile cannot remove leaves
        // between two rounds.
        let tx = snapshot(&mut client).await.map_err(self.backend(context))?;
        let hashes = tree::subtree_hashes(&tx, trees, &self.location).await?;
        tx.commit().await.map_err(self.backend(context))?;
        Ok(hashes)
    }

    async fn add_tree_nodes(
        &self,
        nodes: &[(crate::merkle::Subtree, crate::merkle::Hash)],
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        tree::add(&*client, nodes)
            .await
            .map_err(self.backend("keeping the Merkle tree's nodes"))
    }

    async fn tree_nodes(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<crate::tree::TreeNode>> {
        let client = self.client().await?;
        tree::list(&*client, after, limit)
            .await
            .map_err(self.backend("reading the Merkle tree's nodes"))
    }

    async fn prune(&self, through: i64) -> Result<PruneOutcome> {
        let context = format!("removing events through {through}");
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.backend(&context))?;
        let pruned = partition::prune(&tx, Utc::now(), through)
            .await
            .map_err(self.backend(&context))?;
        tx.commit().await.map_err(self.backend(&context))?;
        Ok(PruneOutcome {
            removed: pruned.removed,
            dropped_partitions: pruned.dropped,
        })
    }

    async fn prepare_until(&self, until: DateTime<Utc>) -> Result<Vec<String>> {
        let context = format!(
            "creating partitions up to {}",
            pgtrail_core::time::format_micros(&until)
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.backend(&context))?;
        let created = partition::prepare_until(&tx, Utc::now(), until)
            .await
            .map_err(self.backend(&context))?;
        tx.commit().await.map_err(self.backend(&context))?;
        Ok(created)
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
