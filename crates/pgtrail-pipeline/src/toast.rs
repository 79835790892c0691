//! Filling unchanged TOAST values: logical replication sends an UPDATE
//! without the large values it did not change (the event lists them in
//! `partial`); the pipeline fills them from the row's newest image.
//!
//! The newest images of the rows the pipeline has seen are kept in a
//! bounded cache ([`ToastBounds`]); on a miss the store is asked once for
//! the row's newest image ([`Store::row_image`]). Never past a DELETE or
//! TRUNCATE: a value from before the row was removed is not its value. What
//! cannot be found stays listed in `partial`, so readers know the event
//! does not show it; nothing is made up.
//!
//! Why the store is right on a miss: batches are filled in the order they
//! are appended, and a row is evicted only once the newest batch that
//! touched it is stored ([`ToastCache::stored`] takes the [`ToastCache::mark`]
//! of the newest stored batch), so a row missing from the cache has all its
//! events in the store, even while the writer fills one batch ahead of the
//! one being appended. A TRUNCATE not yet stored blocks the store's answer
//! for its table until it is.

use std::collections::{HashMap, VecDeque};

use pgtrail_core::event::JsonObject;
use pgtrail_core::filter::{canonical_pk, PkFilter, RowRef, TableName};
use pgtrail_core::{json, Event, Kind};
use pgtrail_store::Store;

use crate::retry::error_chain;

/// How much the cache keeps. Between two stored batches it may hold more:
/// the rows of the batch being stored are never evicted before it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToastBounds {
    /// Rows.
    pub rows: usize,
    /// Bytes of images, counted roughly (as the assembler counts events).
    pub bytes: usize,
}

impl Default for ToastBounds {
    /// 50,000 rows and 64 MiB: the recently changed rows of a busy database,
    /// a quarter of capture's default memory budget.
    fn default() -> Self {
        ToastBounds {
            rows: 50_000,
            bytes: 64 * 1024 * 1024,
        }
    }
}

/// One row of one table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowKey {
    table: Table,
    /// The key, canonical.
    pk: String,
}

/// `(schema, table)`.
type Table = (Option<String>, String);

#[derive(Debug)]
struct Entry {
    /// The newest values; `None` once the row was deleted.
    image: Option<JsonObject>,
    bytes: usize,
    /// When it was last touched; `order` holds older stamps too.
    stamp: u64,
}

// Images hold captured values nested as deep as Postgres allows: copied and
// freed with core's heap-stack walks, never `Value`'s recursive ones.
impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(image) = self.image.take() {
            json::drop_object(image);
        }
    }
}

/// The newest images of recently changed rows.
#[derive(Debug)]
pub struct ToastCache {
    bounds: ToastBounds,
    rows: HashMap<RowKey, Entry>,
    /// Touches, oldest first; an item whose stamp is no longer its entry's
    /// is stale and skipped.
    order: VecDeque<(u64, RowKey)>,
    stamp: u64,
    bytes: usize,
    /// Tables truncated in batches not yet stored, with the stamp of the
    /// truncation.
    truncated: HashMap<Table, u64>,
}

impl ToastCache {
    /// An empty cache.
    pub fn new(bounds: ToastBounds) -> Self {
        ToastCache {
            bounds,
            rows: HashMap::new(),
            order: VecDeque::new(),
            stamp: 0,
            bytes: 0,
            truncated: HashMap::new(),
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Fills the `partial` columns of `events` (a batch about to be stored,
    /// following every batch stored before) and remembers their images.
    pub async fn fill(&mut self, store: &dyn Store, events: &mut [Event]) {
        for event in events.iter_mut() {
            if !matches!(event.kind, Kind::RowChange | Kind::Snapshot) {
                continue;
            }
            let Some(table) = event.table.clone() else {
                continue;
            };
            let table = (event.schema.clone(), table);
            if event.operation.as_deref() == Some("TRUNCATE") {
                self.forget_table(&table);
                self.stamp += 1;
                self.truncated.insert(table, self.stamp);
                continue;
            }
            let Some(pk) = event.pk.as_ref() else {
                continue;
            };
            let key = RowKey {
                pk: canonical_pk(pk),
                table,
            };
            if event.operation.as_deref() == Some("DELETE") {
                self.remember(key, None);
                continue;
            }
            let Some(new) = event.new.as_mut() else {
                continue;
            };
            if event.partial.is_empty() {
                let image = json::clone_object(new);
                self.remember(key, Some(image));
                continue;
            }
            let known = match self.rows.get(&key) {
                Some(entry) => entry.image.as_ref().map(json::clone_object),
                None if self.truncated.contains_key(&key.table) => None,
                None => {
                    let row = RowRef {
                        table: TableName {
                            schema: key.table.0.clone(),
                            table: key.table.1.clone(),
                        },
                        pk: PkFilter(pk.clone()),
                    };
                    match store.row_image(&row).await {
                        Ok(image) => image,
                        Err(error) => {
                            tracing::warn!(error = %error_chain(&error), "Cannot read the row's newest image; its unchanged TOAST columns stay partial");
                            None
                        }
                    }
                }
            };
            let mut image = known.unwrap_or_default();
            event.partial.retain(|column| match image.get(column) {
                Some(value) => {
                    new.insert(column.clone(), json::clone(value));
                    false
                }
                None => true,
            });
            // The newest values: what the event shows over what was known,
            // so a column still partial keeps no stale value either way.
            for (column, value) in new.iter() {
                if let Some(replaced) = image.insert(column.clone(), json::clone(value)) {
                    json::drop_deep(replaced);
                }
            }
            self.remember(key, Some(image));
        }
    }

    /// Where the cache stands after the batches filled so far: once the
    /// batch filled last is stored, pass this to [`ToastCache::stored`].
    pub fn mark(&self) -> u64 {
        self.stamp
    }

    /// Every batch filled up to `mark` ([`ToastCache::mark`]) is stored:
    /// the store answers for their rows and truncations now, so the cache
    /// may shrink back to its bounds, keeping the rows of batches filled
    /// since (not yet stored).
    pub fn stored(&mut self, mark: u64) {
        self.truncated.retain(|_, stamp| *stamp > mark);
        while self.rows.len() > self.bounds.rows || self.bytes > self.bounds.bytes {
            match self.order.front() {
                Some((stamp, _)) if *stamp <= mark => {}
                _ => break,
            }
            let Some((stamp, key)) = self.order.pop_front() else {
                break;
            };
            if self.rows.get(&key).is_some_and(|e| e.stamp == stamp) {
                if let Some(entry) = self.rows.remove(&key) {
                    self.bytes -= entry.bytes;
                }
            }
        }
        // Stale touches of rows touched again: keep the queue near the map's size.
        if self.order.len() > 2 * self.rows.len() + 1024 {
            let rows = &self.rows;
            self.order
                .retain(|(stamp, key)| rows.get(key).is_some_and(|e| e.stamp == *stamp));
        }
    }

    fn remember(&mut self, key: RowKey, image: Option<JsonObject>) {
        self.stamp += 1;
        let bytes = 64
            + key.pk.len()
            + image
                .as_ref()
                .map_or(0, pgtrail_cdc::assemble::object_bytes);
        let entry = Entry {
            image,
            bytes,
            stamp: self.stamp,
        };
        self.bytes += bytes;
        if let Some(old) = self.rows.insert(key.clone(), entry) {
            self.bytes -= old.bytes;
        }
        self.order.push_back((self.stamp, key));
    }

    fn forget_table(&mut self, table: &Table) {
        let mut freed = 0;
        self.rows.retain(|key, entry| {
            let keep = &key.table != table;
            if !keep {
                freed += entry.bytes;
            }
            keep
        });
        self.bytes -= freed;
    }
}

#[cfg(test)]
mod tests;
