//! Where events are kept: the [`Store`] trait and its two backends.
//!
//! A store is append-only and tamper-evident. [`Store::append`] assigns each
//! event the next `seq`, links it to the previous event by `prev_hash`, hashes
//! it (see `pgtrail_core::canonical`), and returns only once the whole batch
//! is durable: fsync'd in SQLite, committed in Postgres. A batch is all or
//! nothing. Readers never write; [`verify`] walks the chain and the signed
//! [`Checkpoint`]s to prove nothing was altered, removed, inserted or reordered.
//!
//! Backends: [`sqlite`] (embedded default, one file) and [`postgres`] (schema
//! `pgtrail`, partitioned by month). Both pass the conformance suite in
//! `tests/conformance`, so every reader behaves the same on either.

pub mod checkpoint;
pub mod cosignature;
pub mod cpu;
pub mod ddl;
pub mod disclosure;
mod error;
pub mod facet_hours;
pub mod freshness;
pub mod health;
pub mod hooked;
pub mod link;
mod location;
pub mod merkle;
pub mod metrics;
pub mod note;
pub mod open;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod proof;
pub mod proof_file;
pub mod reports;
pub mod retention;
pub mod revert;
pub mod row;
pub mod seq_hours;
pub mod sessions;
pub mod signing;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod tree;
pub mod verify;
pub mod witness;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::search::Facets;
use pgtrail_core::{Event, Filter, RowRef};

pub use checkpoint::{Checkpoint, CheckpointKind, KeyPair, TrustedKey};
pub use error::StoreError;
pub use open::{open, open_for_verify, open_in_database};
pub use verify::{
    verify, verify_with, verify_with_keys, verify_with_progress, Problem, ProblemKind,
    VerifyOptions, VerifyReport,
};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The newest sealed event of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Its `seq`.
    pub seq: i64,
    /// Its `hash`.
    pub hash: String,
}

/// A sealed event as stored, not decoded: its canonical body (the bytes
/// that were hashed, without the seal fields) and its seal, from
/// [`Store::scan_raw`]. For readers that pass events on as JSON (the
/// `jsonl` sinks): they splice the seal into the body instead of decoding
/// and encoding every event. The body is handed as stored, whatever it
/// holds: checking it is `verify`'s job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// Its `seq`.
    pub seq: i64,
    /// The stored body: canonical JSON without `seq`, `prev_hash`, `hash`.
    pub body: String,
    /// Its `prev_hash`, hex.
    pub prev_hash: String,
    /// Its `hash`, hex.
    pub hash: String,
}

/// What [`Store::append`] sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendReceipt {
    /// `seq` of the first event of the batch (`None` for an empty batch).
    pub first_seq: Option<i64>,
    /// The chain head after the batch (`None` if the store is still empty).
    pub head: Option<ChainHead>,
}

/// One event as it is stored, for [`verify`]: the event decoded from its
/// row, and every stored copy of its fields that disagrees with it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The `seq` column.
    pub seq: i64,
    /// The event decoded from the row (seal fields set from their columns),
    /// or why the row is not an event.
    pub event: std::result::Result<Event, String>,
    /// The event's JSON exactly as stored, where the backend keeps it whole
    /// (SQLite's `body`): [`verify`] requires it to be the canonical body of
    /// `event`, byte for byte, so the bytes SQL readers see are the bytes
    /// that were hashed.
    pub body: Option<String>,
    /// Stored values that readers use (filter columns, index keys, JSON text
    /// kept beside the parsed value) and that differ from what the backend's
    /// own encoder makes of `event`.
    pub mismatches: Vec<Mismatch>,
}

/// A stored value that is not what the event says it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The column or index (e.g. `app_user_key`, `events_fts`).
    pub column: String,
    /// What is stored (`NULL` when nothing is).
    pub found: String,
    /// What the event says.
    pub expected: String,
}

/// What the indexes [`Store::check_indexes`] checks should hold for the
/// events walked, as [`Store::expected_indexes`] made it from them: a
/// digest of the names each statement is indexed under and, for SQLite, of
/// the full-text words of each event's SQL, keyed with a secret of the
/// opened store; the summaries by the hour. Opaque: only the store that
/// made it reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedIndexes {
    /// `(seq, digest)` of each event that should have something indexed.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) words: Vec<(i64, u64)>,
    /// `(seq, digest)` of each statement that should have names in the
    /// store's index of the relations statements touched.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) objects: Vec<(i64, u64)>,
    /// Events per `(hour, facet, value)`, as the store's `facet_hours`
    /// should count them.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) facets: facet_hours::Counts,
    /// The `seq` range of each hour, as the store's `seq_hours` should
    /// hold it.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) seq_hours: seq_hours::Ranges,
}

impl ExpectedIndexes {
    /// Adds what another page of events expects.
    pub fn extend(&mut self, other: ExpectedIndexes) {
        self.words.extend(other.words);
        self.objects.extend(other.objects);
        for (key, n) in other.facets {
            *self.facets.entry(key).or_default() += n;
        }
        self.seq_hours.extend(other.seq_hours);
    }
}

/// A batch made ready ahead of its append by [`Store::encode`]: the events,
/// and what the store did to them ahead (its own business).
pub struct EncodedBatch {
    events: Vec<Event>,
    ahead: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl EncodedBatch {
    /// `events`, with nothing done ahead: [`Store::append_encoded`] appends
    /// them as [`Store::append`] does.
    pub fn new(events: Vec<Event>) -> Self {
        EncodedBatch {
            events,
            ahead: None,
        }
    }

    /// `events`, with what a store did to them ahead.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn with_ahead<T: Send + Sync + 'static>(events: Vec<Event>, ahead: T) -> Self {
        EncodedBatch {
            events,
            ahead: Some(Box::new(ahead)),
        }
    }

    /// What was done ahead, if it is of type `T`.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn ahead<T: 'static>(&self) -> Option<&T> {
        self.ahead.as_ref().and_then(|a| a.downcast_ref())
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True for a batch of no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events back.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

impl std::fmt::Debug for EncodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedBatch")
            .field("events", &self.events.len())
            .field("ahead", &self.ahead.is_some())
            .finish()
    }
}

/// Events counted by who, table, operation and hour, as
/// [`Store::activity_counts`] answers: the input of the reports that count
/// ([`reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityCount {
    /// The application user if known, else the database role ([`Event::actor`]).
    pub actor: Option<String>,
    /// `schema.table`, or the table alone without a schema.
    pub table: Option<String>,
    /// The operation, upper-cased.
    pub operation: Option<String>,
    /// The hour they were captured in, in hours since 1970 (UTC).
    pub hour: i64,
    /// How many.
    pub events: u64,
    /// The first and last capture time among them.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
}

impl ActivityCount {
    /// The group of `event`, counting it once.
    pub fn of(event: &Event) -> Self {
        ActivityCount {
            actor: event.actor().map(str::to_string),
            table: event.qualified_table(),
            operation: event.operation.as_deref().map(str::to_uppercase),
            hour: event.captured_at.timestamp().div_euclid(3600),
            events: 1,
            first: event.captured_at,
            last: event.captured_at,
        }
    }
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOutcome {
    /// Events removed.
    pub removed: u64,
    /// Partitions dropped (Postgres) — empty for SQLite.
    pub dropped_partitions: Vec<String>,
}

/// Durable, append-only, hash-chained event storage.
///
/// Contract, for every backend:
/// - **Ordering.** `seq` is assigned in append order, starting at 1, without
///   gaps; concurrent appends (several processes on one store included) are
///   serialized so the chain stays linear.
/// - **Durability.** `append` returns `Ok` only when the batch is on disk;
///   on `Err` nothing of the batch was written.
/// - **Idempotency.** An event whose `id` is already stored is skipped (not
///   re-chained), so a retried batch does not duplicate events. `append`
///   borrows the batch, so a caller retries with the same events without
///   copying them.
/// - **Reading.** Readers see only committed batches. Incoming `seq`,
///   `prev_hash` and `hash` are ignored: the store seals, never trusts.
#[async_trait]
pub trait Store: Send + Sync {
    /// Seals and appends `events` atomically; durable when this returns.
    /// May block the calling worker thread for the duration (SQLite, on a
    /// multi-threaded runtime); other tasks move to another thread.
    async fn append(&self, events: &[Event]) -> Result<AppendReceipt>;

    /// Does ahead of [`Store::append_encoded`] the work on `events` that
    /// needs neither the store nor its lock (canonical JSON, index columns),
    /// so a writer can do it for one batch while the previous one is
    /// appended. `chain` is where the chain will end once the batches
    /// encoded before are appended (`None`: unknown); a store may seal the
    /// events onto it ahead, and moves it to where they end. Seals made
    /// ahead are only a guess: the append uses them where they fit the
    /// chain under its lock and seals the rest again, so a wrong `chain`
    /// costs time, never correctness. CPU-bound and blocking: call it off
    /// the async workers. By default nothing is done ahead.
    fn encode(&self, events: Vec<Event>, chain: &mut Option<ChainHead>) -> EncodedBatch {
        *chain = None;
        EncodedBatch::new(events)
    }

    /// Appends a batch made by [`Store::encode`] (of this store): the same
    /// contract as [`Store::append`] of its events (the receipt too), and
    /// the batch is borrowed, so a failed append is retried with it.
    async fn append_encoded(&self, batch: &EncodedBatch) -> Result<AppendReceipt> {
        self.append(batch.events()).await
    }

    /// Events matching `filter`, newest first (highest `seq` first), at most
    /// `filter.limit`.
    async fn query(&self, filter: &Filter) -> Result<Vec<Event>>;

    /// How many of the events `filter` matches have each value of the
    /// search's facets (user, table, operation, source, outcome), the
    /// `top` values of each; `filter.limit` is ignored. Bounded: a store
    /// counts at most [`pgtrail_core::search::FACET_BOUND`] events (the
    /// newest) unless it answers from a summary, and says which. By
    /// default, counted from [`Store::query`].
    async fn facets(&self, filter: &Filter, top: usize) -> Result<Facets> {
        let bounded = Filter {
            limit: Some(pgtrail_core::search::FACET_BOUND),
            ..filter.clone()
        };
        let events = self.query(&bounded).await?;
        let mut counts = std::collections::BTreeMap::<(&str, String), u64>::new();
        for event in &events {
            for (facet, value) in Facets::of_event(event) {
                *counts.entry((facet, value)).or_default() += 1;
            }
        }
        let counted = events.len() as u64;
        Ok(Facets::from_counts(
            counts
                .into_iter()
                .map(|((facet, value), n)| (facet.to_string(), value, n)),
            counted,
            events.len() < pgtrail_core::search::FACET_BOUND,
            top,
        ))
    }

    /// The events `filter` matches counted by actor, table, operation and
    /// hour ([`ActivityCount`], in no order), and how many were counted:
    /// at most `cap`, the newest (`filter.limit` is ignored). Bounded: the
    /// work by `cap`, the answer by the groups. Backends count in SQL; by
    /// default, counted from [`Store::query`] a page at a time.
    async fn activity_counts(
        &self,
        filter: &Filter,
        cap: usize,
    ) -> Result<(Vec<ActivityCount>, u64)> {
        const PAGE: usize = 2_000;
        let mut groups = std::collections::HashMap::<_, ActivityCount>::new();
        let mut page_filter = filter.clone();
        let mut counted = 0usize;
        while counted < cap {
            let want = PAGE.min(cap - counted);
            page_filter.limit = Some(want);
            let page = self.query(&page_filter).await?;
            for event in &page {
                let one = ActivityCount::of(event);
                let key = (
                    one.actor.clone(),
                    one.table.clone(),
                    one.operation.clone(),
                    one.hour,
                );
                groups
                    .entry(key)
                    .and_modify(|g| {
                        g.events += 1;
                        g.first = g.first.min(one.first);
                        g.last = g.last.max(one.last);
                    })
                    .or_insert(one);
            }
            counted += page.len();
            match page.last().and_then(|e| e.seq) {
                Some(seq) if page.len() == want => page_filter.before_seq = Some(seq),
                _ => break,
            }
        }
        Ok((groups.into_values().collect(), counted as u64))
    }

    /// Every event of one row (matching table and key), plus the TRUNCATE
    /// events of its table, oldest first: the input of history, as-of and blame.
    async fn row_events(&self, row: &RowRef) -> Result<Vec<Event>>;

    /// The row's newest values ([`row::newest_image`]), or `None` when it
    /// has none or was deleted or truncated since: what the pipeline fills
    /// a source's unchanged TOAST columns from when its cache misses. A
    /// backend may answer from an index instead of the row's history.
    async fn row_image(&self, row: &RowRef) -> Result<Option<pgtrail_core::event::JsonObject>> {
        Ok(row::newest_image(&self.row_events(row).await?))
    }

    /// Sealed events with `seq > after`, ascending, at most `limit`: the chain
    /// as stored, for verify and export.
    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<Event>>;

    /// The same events as [`Store::scan`], not decoded: each body as stored
    /// with its seal. Both backends read the columns directly; the default
    /// (for wrappers that do not forward it) encodes what `scan` decoded.
    async fn scan_raw(&self, after: i64, limit: usize) -> Result<Vec<RawEvent>> {
        Ok(self
            .scan(after, limit)
            .await?
            .iter()
            .map(|event| RawEvent {
                seq: event.seq.unwrap_or_default(),
                body: pgtrail_core::canonical::CanonicalBody::of(event).into_string(),
                prev_hash: event.prev_hash.clone().unwrap_or_default(),
                hash: event.hash.clone().unwrap_or_default(),
            })
            .collect())
    }

    /// The `seq` of the event with this id; `None` when the store has none
    /// (or retention removed it). Backends look it up by their id index; the
    /// default reads the chain.
    async fn seq_of_id(&self, id: uuid::Uuid) -> Result<Option<i64>> {
        let mut after = 0;
        loop {
            let page = self.scan(after, 2_000).await?;
            let Some(last) = page.last().and_then(|e| e.seq) else {
                return Ok(None);
            };
            if let Some(event) = page.iter().find(|e| e.id == id) {
                return Ok(event.seq);
            }
            after = last;
        }
    }

    /// Sealed events with `seq > after`, ascending, at most `limit`, as
    /// stored: each row decoded and compared with every copy of its fields
    /// the store keeps for readers. For [`verify`]; never fails on a row
    /// that does not decode (that is reported in the [`StoredEvent`]).
    async fn scan_stored(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>>;

    /// What the store's indexes that [`Store::check_indexes`] checks should
    /// hold for `page` (one page of [`Store::scan_stored`]), made from the
    /// events the walk already decoded so no event is read twice. Empty
    /// where there is nothing of the kind. A wrapper must forward this with
    /// `check_indexes`: left out, every indexed event looks unexpected.
    async fn expected_indexes(&self, page: &[StoredEvent]) -> Result<ExpectedIndexes> {
        let _ = page;
        Ok(ExpectedIndexes::default())
    }

    /// Checks what the store keeps beside the events and cannot check one
    /// event at a time (SQLite's full-text index), for events `first..=last`,
    /// against `expected` (what [`Store::expected_indexes`] made of every
    /// page of them): each mismatch with the `seq` it concerns. Empty where
    /// there is nothing of the kind.
    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: ExpectedIndexes,
    ) -> Result<Vec<(i64, Mismatch)>> {
        let _ = (first, last, expected);
        Ok(Vec::new())
    }

    /// The newest sealed event, or `None` for an empty chain.
    async fn head(&self) -> Result<Option<ChainHead>>;

    /// Records a checkpoint (signed or not) durably.
    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()>;

    /// All checkpoints, oldest first.
    async fn checkpoints(&self) -> Result<Vec<Checkpoint>>;

    /// The hashes of perfect subtrees of the events' Merkle tree (leaf `i`
    /// is the event `seq = i + 1`; see `merkle`), in the order asked: what
    /// proofs are made of (`proof`). From the interior nodes the store keeps
    /// ([`Store::add_tree_nodes`]) where it has them, else from the events'
    /// hashes, else (leaves retention removed) from the newest prune
    /// checkpoint's frontier. An error when none of those covers a subtree.
    ///
    /// This default reads every leaf; the stores answer from their nodes.
    async fn subtree_hashes(&self, trees: &[merkle::Subtree]) -> Result<Vec<merkle::Hash>> {
        let mut out = Vec::with_capacity(trees.len());
        for tree in trees {
            out.push(proof::subtree_from_events(self, *tree).await?);
        }
        Ok(out)
    }

    /// Keeps interior nodes of the Merkle tree for proofs: the subtrees of
    /// height [`merkle::NODE_HEIGHT_STEP`] and its multiples that a walk of
    /// the chain completed (`signing::check_chain`). A node already kept is
    /// left as it is (and `verify` checks every kept node). Durable on
    /// return. A no-op for a store that keeps none.
    async fn add_tree_nodes(&self, nodes: &[(merkle::Subtree, merkle::Hash)]) -> Result<()> {
        let _ = nodes;
        Ok(())
    }

    /// The kept interior nodes ([`Store::add_tree_nodes`]) after
    /// `(height, idx)`, by height then index, at most `limit`, as stored:
    /// what `verify` checks against the tree it recomputes. Empty for a
    /// store that keeps none.
    async fn tree_nodes(&self, after: (i64, i64), limit: usize) -> Result<Vec<tree::TreeNode>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// Keeps a witness server's cosignature of a checkpoint (durable on
    /// return; the same line for the same checkpoint is kept once). A store
    /// that keeps none says so: a cosignature is never dropped silently.
    async fn add_cosignature(&self, cosignature: &cosignature::StoredCosignature) -> Result<()> {
        let _ = cosignature;
        Err(StoreError::Invalid(
            "this store keeps no witness cosignatures".into(),
        ))
    }

    /// The cosignatures kept for the checkpoints of size `seq`, in the
    /// order they were received.
    async fn cosignatures(&self, seq: i64) -> Result<Vec<cosignature::StoredCosignature>> {
        let _ = seq;
        Ok(Vec::new())
    }

    /// The store's random id, made when its schema was created or upgraded
    /// to signed notes; checkpoints name it in their origin. `None` for a
    /// store from before that (or a wrapper that does not forward it: such a
    /// store cannot be checkpointed, which fails loudly, never silently).
    async fn store_id(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Removes sealed events with `seq <= through` (a prefix of the chain)
    /// after the caller archived them and recorded a prune checkpoint.
    async fn prune(&self, through: i64) -> Result<PruneOutcome>;

    /// Prepares storage for events up to `until` (Postgres: creates monthly
    /// partitions ahead). A no-op where nothing needs preparing.
    async fn prepare_until(&self, until: DateTime<Utc>) -> Result<Vec<String>>;

    /// Where this store is, for messages (path or URL without password).
    fn location(&self) -> String;
}
