//! The embedded store: one SQLite file a user can open with `sqlite3`.
//!
//! Design choices:
//! - **WAL mode, `synchronous=FULL`**: readers never block the writer, and a
//!   commit is fsync'd before `append` returns (the durability contract).
//! - **One writer connection behind a mutex**, plus a small pool of read-only
//!   connections; SQLite calls block, so each runs on tokio's blocking pool,
//!   except an append on a multi-threaded runtime, which blocks in place
//!   so that it can use the caller's batch without copying it.
//!   Appends from other processes are serialized by `BEGIN IMMEDIATE`.
//!   A third connection copies the WAL back into the file on its own thread
//!   (see `wal`), so appends do not pay for that.
//! - **Compact rows**: ids and hashes are blobs, the event body is its
//!   canonical JSON without the seal (see `schema` for the table layout);
//!   the row and user indexes hold integer keys (see `keys`).
//! - **Appends touch few pages**: the row index leads with the stretch of
//!   the chain (`seq >> 19`), so a batch's random row keys land only in the
//!   newest stretch's leaves, and what a commit writes to the WAL does not
//!   grow with the store (schema version 6; lookups seek once per stretch).
//! - **One pass per event**: the body and the hash input come from a single
//!   serialization (see `encode`); a large batch is encoded and hashed on a
//!   second thread while the inserts run (see `append`).
//! - **Refuse before writing**: a file that is not ours is identified and
//!   refused before any pragma could change it (see `schema`).

mod append;
mod checkpoints;
mod encode;
mod facets;
#[cfg(feature = "bench-internals")]
pub use facets::count_for_bench;
pub use facets::RECOUNT_FACETS;
mod keys;
mod prune;
mod query;
mod raw;
mod schema;
mod seq_hours;
pub use seq_hours::RECOUNT_SEQ_HOURS;
#[cfg(feature = "bench-internals")]
pub use seq_hours::{
    keep_for_bench as keep_seq_hours_for_bench, read_for_bench as read_seq_hours_for_bench,
};
mod stored;
mod tree;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use pgtrail_core::search::Facets;
use pgtrail_core::{Event, Filter, RowRef};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags, MAIN_DB};
use tokio::runtime::RuntimeFlavor;

use crate::{
    AppendReceipt, ChainHead, Checkpoint, EncodedBatch, ExpectedIndexes, Mismatch, PruneOutcome,
    Result, Store, StoreError, StoredEvent,
};

pub use schema::{APPLICATION_ID, SCHEMA_VERSION};

/// Tuning for [`SqliteStore::open_with`]. The defaults suit a production store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a call waits for another connection's write lock.
    pub busy_timeout: Duration,
    /// Page size of a new file, in bytes (ignored for an existing file).
    pub page_size: u32,
    /// Page cache of the writer connection, in KiB.
    pub cache_kib: u32,
    /// The write-ahead log is copied back into the file once it holds this
    /// many pages. SQLite's default (1,000) checkpoints after nearly every
    /// 10,000-event batch; a larger log batches that work.
    pub wal_autocheckpoint_pages: u32,
    /// Caps the file at this many pages: appends beyond it fail as on a full
    /// disk. For tests; `None` leaves SQLite's (huge) default.
    pub max_page_count: Option<u32>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(30),
            page_size: 8192,
            cache_kib: 64 * 1024,
            wal_autocheckpoint_pages: 8192,
            max_page_count: None,
        }
    }
}

/// Page cache of each reader connection, in KiB.
const READER_CACHE_KIB: u32 = 16 * 1024;
/// Reader connections kept open between calls: more than the server's
/// concurrent reads, so none is opened per request (a new one reads the
/// schema and prepares its statements again).
const IDLE_READERS: usize = 16;
/// Prepared statements kept per connection (queries vary with the filter).
const STATEMENT_CACHE: usize = 64;

/// The SQLite store. Share one per process (in an `Arc`): its writer
/// connection serializes appends, its reader pool serves queries in parallel.
pub struct SqliteStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    location: String,
    options: SqliteOptions,
    /// `None` when opened for verify: nothing may write.
    writer: Option<Mutex<Connection>>,
    idle_readers: Mutex<Vec<Connection>>,
    wal: Option<wal::WalCheckpointer>,
    /// How readers open the file when opened for verify.
    read_only: Option<ReadOnly>,
    /// The secret key of verify's full-text digests (see `stored`).
    fts_key: std::hash::RandomState,
}

/// How a store opened for verify reads its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadOnly {
    /// `mode=ro`: SQLite's read-only mode, still seeing other writers.
    Shared,
    /// `immutable=1`: for a copy on a read-only mount, where SQLite cannot
    /// create the files its shared read-only mode needs.
    Immutable,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its schema if missing.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteStore::open`] with tuning.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        let path = path.to_path_buf();
        let location = path.display().to_string();
        let shared = tokio::task::spawn_blocking(move || Shared::open(path, options))
            .await
            .map_err(|e| StoreError::backend(location, "opening the store", e))??;
        Ok(SqliteStore {
            shared: Arc::new(shared),
        })
    }

    /// Opens the store at `path` for `verify`: read-only, with
    /// `trusted_schema` off, without migrating, without a writer and without
    /// the WAL checkpoint thread. A store in use (its `-wal` or `-shm` file
    /// exists) is read in SQLite's read-only mode (`mode=ro`), beside its
    /// writers; a closed one, or one in a directory SQLite cannot write (a
    /// copy on a read-only mount), as immutable (`immutable=1`), which
    /// creates no file beside it: it must then stay closed while verify runs. A missing,
    /// empty or foreign file, or a schema version other than this build's,
    /// is an error: nothing is created or changed.
    pub async fn open_for_verify(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        let location = path.display().to_string();
        let shared = tokio::task::spawn_blocking(move || Shared::open_read_only(path, false))
            .await
            .map_err(|e| StoreError::backend(location, "opening the store", e))??;
        Ok(SqliteStore {
            shared: Arc::new(shared),
        })
    }

    /// [`SqliteStore::open_for_verify`] with `immutable=1` whatever the
    /// directory: SQLite reads the file as it is, without locks and without
    /// its write-ahead log, so use it only on a copy no process writes. A
    /// non-empty `-wal` file beside it is refused, since its commits would
    /// go unseen.
    pub async fn open_immutable(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        let location = path.display().to_string();
        let shared = tokio::task::spawn_blocking(move || Shared::open_read_only(path, true))
            .await
            .map_err(|e| StoreError::backend(location, "opening the store", e))??;
        Ok(SqliteStore {
            shared: Arc::new(shared),
        })
    }

    /// Runs `f` with the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> Result<T> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut conn = shared
                .writer()?
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            f(&mut conn, &shared.location)
        })
        .await
        .map_err(|e| StoreError::backend(self.shared.location.clone(), "running a write", e))?
    }

    /// Appends `events` with the writer connection, off the async workers.
    /// On a multi-threaded runtime the batch is used where it is: this
    /// worker hands its other tasks to another thread and blocks
    /// (`block_in_place`), so a batch is never copied. A current-thread
    /// runtime has no thread to hand over to, so there the batch is copied
    /// to the blocking pool.
    async fn append_blocking(&self, events: &[Event]) -> Result<AppendReceipt> {
        if let Some(appended) =
            self.append_in_place(|conn, location| append::append(conn, events, location))
        {
            return appended;
        }
        let events = events.to_vec();
        self.write(move |conn, location| append::append(conn, &events, location))
            .await
    }

    /// Runs `append` with the writer connection where the caller is, on a
    /// multi-threaded runtime (this worker hands its other tasks to another
    /// thread and blocks); `None` on a current-thread runtime, which has no
    /// thread to hand over to.
    fn append_in_place(
        &self,
        append: impl FnOnce(&mut Connection, &str) -> Result<AppendReceipt>,
    ) -> Option<Result<AppendReceipt>> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|runtime| runtime.runtime_flavor() == RuntimeFlavor::MultiThread);
        if !multi_thread {
            return None;
        }
        let shared = &self.shared;
        Some(tokio::task::block_in_place(|| {
            let mut conn = shared
                .writer()?
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            append(&mut conn, &shared.location)
        }))
    }

    /// Wakes the WAL checkpointer after an append that wrote something.
    fn appended(&self, receipt: &AppendReceipt) {
        if let (Some(_), Some(wal)) = (receipt.first_seq, &self.shared.wal) {
            wal.nudge();
        }
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let conn = shared.take_reader()?;
            let result = f(&conn, &shared.location);
            shared.return_reader(conn);
            result
        })
        .await
        .map_err(|e| StoreError::backend(self.shared.location.clone(), "running a read", e))?
    }
}

/// The oldest schema whose events, index keys and full-text index `verify`
/// reads as they are.
const OLDEST_VERIFIABLE_VERSION: i64 = 6;

impl Shared {
    fn open(path: PathBuf, options: SqliteOptions) -> Result<Self> {
        let location = path.display().to_string();
        create_private(&path);
        let mut writer = connect(&path, &location, &options)?;
        configure_writer(&writer, &location, &options)?;
        keys::register(&writer, &location)?;
        schema::migrate(&mut writer, &location)?;
        let wal = wal::WalCheckpointer::start(connect(&path, &location, &options)?, &path)?;
        Ok(Shared {
            path,
            location,
            options,
            writer: Some(Mutex::new(writer)),
            idle_readers: Mutex::new(Vec::new()),
            wal: Some(wal),
            read_only: None,
            fts_key: std::hash::RandomState::new(),
        })
    }

    fn open_read_only(path: PathBuf, immutable: bool) -> Result<Self> {
        let location = path.display().to_string();
        let refuse = |reason: String| StoreError::Open {
            location: location.clone(),
            reason,
            source: None,
        };
        // Checked before SQLite sees the path: it would create a missing
        // file, and takes an empty one for an empty database.
        let metadata = std::fs::metadata(&path)
            .map_err(|e| refuse(format!("there is no store file there ({e})")))?;
        if !metadata.is_file() {
            return Err(refuse("it is not a file".into()));
        }
        if metadata.len() == 0 {
            return Err(StoreError::Foreign {
                location,
                reason: "the file is empty".into(),
            });
        }
        let options = SqliteOptions::default();
        // A store no process has open has neither a `-wal` nor a `-shm`
        // file: it is read as immutable, which creates neither (SQLite's
        // read-only mode would, and leave them behind). A store in use is
        // read in read-only mode, beside its writers; that mode needs the
        // `-shm` file, and where it cannot be made (a read-only directory)
        // the file is read as immutable too.
        let in_use = sibling(&path, "-wal").exists() || sibling(&path, "-shm").exists();
        let mut mode = if immutable || !in_use {
            ReadOnly::Immutable
        } else {
            ReadOnly::Shared
        };
        if mode == ReadOnly::Shared {
            let conn = connect_read_only(&path, &location, &options, mode)?;
            let probe = conn.query_row("select count(*) from sqlite_schema", [], |_| Ok(()));
            if let Err(e) = probe {
                if matches!(
                    e.sqlite_error_code(),
                    Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)
                ) {
                    mode = ReadOnly::Immutable;
                }
            }
        }
        if mode == ReadOnly::Immutable {
            let wal = sibling(&path, "-wal");
            if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
                return Err(refuse(format!(
                    "it must be read as immutable (its directory is read-only), and its \
                     write-ahead log {} holds commits SQLite cannot read that way: copy the \
                     files to a writable directory and verify the copy",
                    wal.display()
                )));
            }
        }
        let conn = connect_read_only(&path, &location, &options, mode)?;
        if schema::identify(&conn, &location)? == schema::Identity::Empty {
            return Err(StoreError::Foreign {
                location,
                reason: "it is an empty SQLite database".into(),
            });
        }
        // Verify never migrates: it reads every version whose events table
        // it knows (v7 only added checkpoint columns, read when present).
        let version = schema::version(&conn, &location)?;
        if !(OLDEST_VERIFIABLE_VERSION..=SCHEMA_VERSION).contains(&version) {
            return Err(refuse(format!(
                "it has schema version {version} and this pgtrail verifies versions \
                 {OLDEST_VERIFIABLE_VERSION} to {SCHEMA_VERSION}: open it once with \
                 `pgtrail log` to migrate it, then verify"
            )));
        }
        Ok(Shared {
            path,
            location,
            options,
            writer: None,
            idle_readers: Mutex::new(vec![conn]),
            wal: None,
            read_only: Some(mode),
            fts_key: std::hash::RandomState::new(),
        })
    }

    /// The writer, unless the store was opened for verify.
    fn writer(&self) -> Result<&Mutex<Connection>> {
        self.writer.as_ref().ok_or_else(|| StoreError::Open {
            location: self.location.clone(),
            reason: "the store was opened read-only (for verify)".into(),
            source: None,
        })
    }

    fn take_reader(&self) -> Result<Connection> {
        let idle = self
            .idle_readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = idle {
            return Ok(conn);
        }
        if let Some(mode) = self.read_only {
            return connect_read_only(&self.path, &self.location, &self.options, mode);
        }
        let conn = connect(&self.path, &self.location, &self.options)?;
        conn.execute_batch(&format!(
            "pragma query_only = true; pragma cache_size = -{READER_CACHE_KIB};"
        ))
        .map_err(|e| StoreError::backend(self.location.as_str(), "setting up a reader", e))?;
        Ok(conn)
    }

    fn return_reader(&self, conn: Connection) {
        let mut idle = self
            .idle_readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Checks the file is ours (or empty) before anything is written, then sets
/// WAL mode and full durability.
fn configure_writer(writer: &Connection, location: &str, options: &SqliteOptions) -> Result<()> {
    let refuse = |reason: String| StoreError::Open {
        location: location.to_string(),
        reason,
        source: None,
    };
    if writer.is_readonly(MAIN_DB).unwrap_or(false) {
        return Err(refuse("the file is read-only".into()));
    }
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    if schema::identify(writer, location)? == schema::Identity::Empty {
        writer
            .pragma_update(None, "page_size", options.page_size)
            .map_err(db("setting the page size"))?;
    }
    let mode: String = writer
        .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
        .map_err(db("switching to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(refuse(format!(
            "SQLite refused WAL mode (journal_mode is {mode})"
        )));
    }
    writer
        .execute_batch(&format!(
            "pragma synchronous = full; pragma cache_size = -{}; pragma temp_store = memory; \
             pragma wal_autocheckpoint = {}; pragma journal_size_limit = {};",
            options.cache_kib,
            options.wal_autocheckpoint_pages,
            // Truncate the log back to its working size after a checkpoint.
            u64::from(options.wal_autocheckpoint_pages) * u64::from(options.page_size),
        ))
        .map_err(db("setting durability and cache"))?;
    if let Some(pages) = options.max_page_count {
        writer
            .pragma_update(None, "max_page_count", pages)
            .map_err(db("capping the file size"))?;
    }
    Ok(())
}

/// Creates the store's file readable by its owner only (0600) when it does
/// not exist yet: SQLite would make it 0644, and its `-wal` and `-shm`
/// files take the main file's mode. An existing file keeps the mode its
/// owner gave it; anything else (a missing directory, no right to write) is
/// left for SQLite to report in its own words.
fn create_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

/// Opens a connection with the busy timeout set; writes nothing to the file.
fn connect(path: &Path, location: &str, options: &SqliteOptions) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| StoreError::Open {
        location: location.to_string(),
        reason: "cannot open or create the file (does the directory exist and is it writable?)"
            .into(),
        source: Some(Box::new(e)),
    })?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| StoreError::backend(location, "setting the busy timeout", e))?;
    stable_plans(&conn, location)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Plans that never depend on the values bound (SQLite's query planner
/// stability guarantee). Without it, a statement whose planner looked at
/// a value (a parameter compared with a partial index's condition) is
/// compiled again at every run: rusqlite clears a cached statement's
/// bindings when it is put back, which SQLite takes as new values. That
/// was every search in a bench/serve profile at 10M events, ~10% of the
/// server's CPU (bench/README.md, session 17). The walks are chosen in
/// `query::filtered_sql`, not by the values.
pub(super) fn stable_plans(conn: &Connection, location: &str) -> Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(|e| StoreError::backend(location, "asking for stable query plans", e))
}

/// Opens a read-only connection for verify: `mode=ro` or `immutable=1`,
/// `trusted_schema` off (nothing the file defines runs with our authority).
fn connect_read_only(
    path: &Path,
    location: &str,
    options: &SqliteOptions,
    mode: ReadOnly,
) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let query = match mode {
        ReadOnly::Shared => "mode=ro",
        ReadOnly::Immutable => "mode=ro&immutable=1",
    };
    let uri = format!("file:{}?{query}", uri_path(path));
    let conn = Connection::open_with_flags(&uri, flags).map_err(|e| StoreError::Open {
        location: location.to_string(),
        reason: "cannot open the file read-only".into(),
        source: Some(Box::new(e)),
    })?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| StoreError::backend(location, "setting the busy timeout", e))?;
    conn.execute_batch(&format!(
        "pragma trusted_schema = off; pragma temp_store = memory; pragma cache_size = -{READER_CACHE_KIB};"
    ))
    .map_err(|e| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::Foreign {
            location: location.to_string(),
            reason: "the file is not a SQLite database".into(),
        },
        _ => StoreError::backend(location, "setting up a read-only connection", e),
    })?;
    stable_plans(&conn, location)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// `path` escaped for a `file:` URI (`?`, `#` and `%` are special there).
fn uri_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3f"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// `path` with `suffix` appended (`-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(&self, events: &[Event]) -> Result<AppendReceipt> {
        if events.is_empty() {
            return Ok(AppendReceipt {
                first_seq: None,
                head: self.head().await?,
            });
        }
        let receipt = self.append_blocking(events).await?;
        self.appended(&receipt);
        Ok(receipt)
    }

    fn encode(&self, events: Vec<Event>, chain: &mut Option<ChainHead>) -> EncodedBatch {
        let mut end = chain.as_ref().and_then(|head| append::chain_end(head).ok());
        let ahead = encode::ahead(&events, end.as_mut());
        *chain = end.map(|end| ChainHead {
            seq: end.seq,
            hash: hex::encode(end.hash),
        });
        EncodedBatch::with_ahead(events, ahead)
    }

    async fn append_encoded(&self, batch: &EncodedBatch) -> Result<AppendReceipt> {
        let events = batch.events();
        let ahead = batch
            .ahead::<Vec<encode::Ahead>>()
            .filter(|ahead| ahead.len() == events.len() && !events.is_empty());
        let Some(ahead) = ahead else {
            return self.append(events).await;
        };
        let appended = self
            .append_in_place(|conn, location| append::append_ahead(conn, events, ahead, location));
        let Some(appended) = appended else {
            return self.append(events).await;
        };
        let receipt = appended?;
        self.appended(&receipt);
        Ok(receipt)
    }

    async fn query(&self, filter: &Filter) -> Result<Vec<Event>> {
        let filter = filter.clone();
        self.read(move |conn, location| query::query(conn, &filter, location))
            .await
    }

    async fn facets(&self, filter: &Filter, top: usize) -> Result<Facets> {
        let filter = filter.clone();
        self.read(move |conn, location| query::facets(conn, &filter, top, location))
            .await
    }

    async fn activity_counts(
        &self,
        filter: &Filter,
        cap: usize,
    ) -> Result<(Vec<crate::ActivityCount>, u64)> {
        let filter = filter.clone();
        self.read(move |conn, location| query::activity_counts(conn, &filter, cap, location))
            .await
    }

    async fn row_events(&self, row: &RowRef) -> Result<Vec<Event>> {
        let row = row.clone();
        self.read(move |conn, location| query::row_events(conn, &row, location))
            .await
    }

    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(move |conn, location| query::scan(conn, after, limit, location))
            .await
    }

    async fn scan_raw(&self, after: i64, limit: usize) -> Result<Vec<crate::RawEvent>> {
        self.read(move |conn, location| raw::scan(conn, after, limit, location))
            .await
    }

    async fn scan_stored(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.read(move |conn, location| stored::scan(conn, after, limit, location))
            .await
    }

    async fn seq_of_id(&self, id: uuid::Uuid) -> Result<Option<i64>> {
        self.read(move |conn, location| query::seq_of_id(conn, id, location))
            .await
    }

    async fn expected_indexes(&self, page: &[StoredEvent]) -> Result<ExpectedIndexes> {
        let page_events = page;
        let objects = stored::expected_objects(page, &self.shared.fts_key);
        let page = stored::PageSql::of(page);
        let mut expected = if page.is_empty() {
            ExpectedIndexes::default()
        } else {
            let shared = Arc::clone(&self.shared);
            self.read(move |conn, location| {
                stored::expected_fts(conn, &page, &shared.fts_key, location)
            })
            .await?
        };
        expected.objects = objects;
        expected.facets = stored::expected_facets(page_events);
        expected.seq_hours = stored::expected_seq_hours(page_events);
        Ok(expected)
    }

    async fn check_indexes(
        &self,
        first: i64,
        last: i64,
        expected: ExpectedIndexes,
    ) -> Result<Vec<(i64, Mismatch)>> {
        let shared = Arc::clone(&self.shared);
        self.read(move |conn, location| {
            let mut expected = expected;
            let objects = std::mem::take(&mut expected.objects);
            let facet_counts = std::mem::take(&mut expected.facets);
            let ranges = std::mem::take(&mut expected.seq_hours);
            let mut mismatches =
                stored::check_fts(conn, first, last, expected, &shared.fts_key, location)?;
            mismatches.extend(stored::check_objects(
                conn,
                first,
                last,
                objects,
                &shared.fts_key,
                location,
            )?);
            mismatches.extend(facets::check(conn, first, last, facet_counts, location)?);
            mismatches.extend(seq_hours::check(conn, first, last, ranges, location)?);
            mismatches.sort_by_key(|(seq, _)| *seq);
            Ok(mismatches)
        })
        .await
    }

    async fn head(&self) -> Result<Option<ChainHead>> {
        self.read(append::read_head).await
    }

    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<()> {
        let checkpoint = checkpoint.clone();
        self.write(move |conn, location| checkpoints::add(conn, &checkpoint, location))
            .await
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>> {
        self.read(checkpoints::all).await
    }

    async fn store_id(&self) -> Result<Option<String>> {
        self.read(checkpoints::store_id).await
    }

    async fn subtree_hashes(
        &self,
        trees: &[crate::merkle::Subtree],
    ) -> Result<Vec<crate::merkle::Hash>> {
        let trees = trees.to_vec();
        self.read(move |conn, location| tree::subtree_hashes(conn, &trees, location))
            .await
    }

    async fn add_tree_nodes(
        &self,
        nodes: &[(crate::merkle::Subtree, crate::merkle::Hash)],
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let nodes = nodes.to_vec();
        self.write(move |conn, location| tree::add(conn, &nodes, location))
            .await
    }

    async fn tree_nodes(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<crate::tree::TreeNode>> {
        self.read(move |conn, location| tree::list(conn, after, limit, location))
            .await
    }

    async fn add_cosignature(
        &self,
        cosignature: &crate::cosignature::StoredCosignature,
    ) -> Result<()> {
        let cosignature = cosignature.clone();
        self.write(move |conn, location| checkpoints::add_cosignature(conn, &cosignature, location))
            .await
    }

    async fn cosignatures(&self, seq: i64) -> Result<Vec<crate::cosignature::StoredCosignature>> {
        self.read(move |conn, location| checkpoints::cosignatures(conn, seq, location))
            .await
    }

    async fn prune(&self, through: i64) -> Result<PruneOutcome> {
        self.write(move |conn, location| prune::prune(conn, through, location))
            .await
    }

    async fn prepare_until(&self, _until: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn location(&self) -> String {
        self.shared.location.clone()
    }
}
