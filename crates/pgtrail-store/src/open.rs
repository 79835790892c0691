//! Opening a store from its URL: `sqlite:PATH` or `postgres://…`.

use std::sync::Arc;

use crate::{Store, StoreError};

/// Re-exported for the many callers that print a store's URL.
pub use crate::location::redact_url;

/// Opens (creating or migrating if needed) the store named by `url`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_as(url, Access::ReadWrite).await
}

/// Opens the existing store named by `url` for `verify`: read-only, never
/// migrated, never created. A missing, empty or foreign store is an error.
/// See [`crate::sqlite::SqliteStore::open_for_verify`] and
/// [`crate::postgres::PostgresStore::connect_for_verify`].
pub async fn open_for_verify(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_as(url, Access::Verify).await
}

/// Opens the store inside the audited database `db` (schema `pgtrail`, the
/// store trigger capture seals into), creating or migrating it as
/// [`open`] does. `db` is given as the database's capture connections are,
/// so a libpq key=value string (`host=… dbname=…`) is accepted as well as a
/// `postgres://` URL.
pub async fn open_in_database(db: &str) -> Result<Arc<dyn Store>, StoreError> {
    #[cfg(feature = "postgres")]
    {
        let store = crate::postgres::PostgresStore::connect(db).await?;
        Ok(Arc::new(store))
    }
    #[cfg(not(feature = "postgres"))]
    Err(StoreError::Url {
        url: redact_url(db),
        reason: "this build has no PostgreSQL support (the store inside an audited database)"
            .into(),
    })
}

/// How a store is opened: as every command does, or only to be verified.
#[derive(Clone, Copy)]
enum Access {
    ReadWrite,
    Verify,
}

async fn open_as(url: &str, access: Access) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        #[cfg(feature = "sqlite")]
        {
            if path.is_empty() {
                return Err(StoreError::Url {
                    url: url.to_string(),
                    reason: "sqlite: needs a file path, e.g. sqlite:pgtrail.db".into(),
                });
            }
            let path = std::path::Path::new(path);
            let store = match access {
                Access::ReadWrite => crate::sqlite::SqliteStore::open(path).await?,
                Access::Verify => crate::sqlite::SqliteStore::open_for_verify(path).await?,
            };
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "sqlite"))]
        return Err(StoreError::Url {
            url: url.to_string(),
            reason: format!(
                "this build has no SQLite support ({path}, {})",
                access.name()
            ),
        });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = match access {
                Access::ReadWrite => crate::postgres::PostgresStore::connect(url).await?,
                Access::Verify => crate::postgres::PostgresStore::connect_for_verify(url).await?,
            };
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Url {
            url: redact_url(url),
            reason: format!("this build has no PostgreSQL support ({})", access.name()),
        });
    }
    Err(StoreError::Url {
        url: redact_url(url),
        reason: "expected sqlite:PATH or postgres://USER@HOST/DB".into(),
    })
}

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
impl Access {
    fn name(self) -> &'static str {
        match self {
            Access::ReadWrite => "to open",
            Access::Verify => "to verify",
        }
    }
}
