//! Opening the store a long-running part writes to.

use std::sync::Arc;
use std::time::Duration;

use pgtrail_store::open::redact_url;
use pgtrail_store::{Store, StoreError};
use tokio::sync::watch;

use crate::retry::{self, Backoff};

/// How long one attempt to open a store may take.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens the store at `url`, retrying while a Postgres store is unreachable
/// (it may be starting with the machine); `None` when stopped meanwhile. A
/// SQLite file that cannot be opened will not open later either: that
/// fails at once, as does a store that is foreign, newer or half-migrated.
pub async fn open_patiently(
    url: &str,
    meanwhile: &str,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<Arc<dyn Store>>, StoreError> {
    if !url.starts_with("postgres") {
        return open(url).await.map(Some);
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let what = format!("Opening the store {}", redact_url(url));
    retry::until_done(&what, meanwhile, &mut backoff, &mut stop, || open(url)).await
}

/// Opens the store at `url`, giving up after [`OPEN_TIMEOUT`].
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match tokio::time::timeout(OPEN_TIMEOUT, pgtrail_store::open(url)).await {
        Ok(opened) => opened,
        Err(_) => Err(StoreError::Open {
            location: redact_url(url),
            reason: format!("no answer within {} seconds", OPEN_TIMEOUT.as_secs()),
            source: None,
        }),
    }
}

/// The file of a `sqlite:` store URL when it does not exist (yet); `None`
/// for a file that exists and for any other store.
pub fn missing_sqlite_file(url: &str) -> Option<&str> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|path| !path.is_empty() && !std::path::Path::new(path).exists())
}
