use thiserror::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a store operation failed. Every variant names the store it concerns.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL is malformed or names an unknown backend.
    #[error("invalid store URL '{url}': {reason}")]
    Url {
        /// The URL as given (password removed).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store could not be opened or reached.
    #[error("cannot open store {location}: {reason}")]
    Open {
        /// Path or URL (password removed).
        location: String,
        /// What happened.
        reason: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The file or database holds something other than a pgtrail store.
    #[error("{location} is not a pgtrail store: {reason}")]
    Foreign {
        /// Path or URL.
        location: String,
        /// What was found instead.
        reason: String,
    },
    /// The store was written by a newer pgtrail.
    #[error("store {location} has schema version {found}, but this pgtrail understands up to {supported}: upgrade pgtrail")]
    TooNew {
        /// Path or URL.
        location: String,
        /// Version found in the store.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A migration started but did not finish.
    #[error("store {location} is half-migrated (migration {version} did not complete): restore it from a backup or finish the migration")]
    HalfMigrated {
        /// Path or URL.
        location: String,
        /// The migration that did not complete.
        version: i64,
    },
    /// An event or argument cannot be stored as given.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The backend failed while doing `context`; nothing of the operation was kept.
    #[error("store {location}: {context}")]
    Backend {
        /// Path or URL.
        location: String,
        /// What the store was doing.
        context: String,
        /// What the backend said.
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    /// Whether trying again later may succeed: the store could not be
    /// reached or its backend failed (a server restarting, a disk full, a
    /// lock held). A malformed URL, a foreign, newer or half-migrated store
    /// and invalid input fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Open { .. } | StoreError::Backend { .. })
    }

    /// Wraps a backend error with what the store was doing.
    pub fn backend(
        location: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        StoreError::Backend {
            location: location.into(),
            context: context.into(),
            source: source.into(),
        }
    }
}
