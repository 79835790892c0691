//! The file's identity and its schema migrations.
//!
//! A pgtrail file is marked twice in the SQLite header: `application_id` says
//! "this is pgtrail", `user_version` says which schema version it has. The
//! `pgtrail_migrations` table records each migration applied. Each migration
//! runs in one `BEGIN IMMEDIATE` transaction together with its record and the
//! `user_version` bump, so SQLite's transactional DDL makes a half-applied
//! migration impossible through a crash; if the two markers still disagree
//! (someone edited the file, or an older tool half-copied it) we refuse.
//!
//! Before anything is written, [`identify`] looks at the file read-only: a
//! file that is not SQLite, or SQLite belonging to someone else, is refused
//! and left untouched.

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use crate::{Result, StoreError};

/// `PRAGMA application_id` of a pgtrail store: "pgtr" in ASCII.
pub const APPLICATION_ID: i32 = 0x7067_7472;

/// Migrations in order; the version of migration `i` is `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    ("events, full-text index, checkpoints", V1),
    ("index of truncates by table", V2),
    ("a readable view for sqlite3 users", V3),
    ("user indexes ordered by time", V4),
    ("integer keys for the row and user indexes", V5),
    ("the row index grouped by stretches of the chain", V6),
    (
        "store identity; checkpoints as signed notes with a tree frontier",
        V7,
    ),
    ("an index of the relations each statement touched", V8),
    ("facet counts by the hour", V9),
    ("kinds and failures in chain order", V10),
    (
        "indexes of the backend and the transaction of each event",
        V11,
    ),
    (TREE_NODES, V12),
    ("witness servers' cosignatures of checkpoints", COSIGNATURES),
    ("tables and users in chain order", V14),
    (EVENT_COLUMNS, V15),
    ("the seq range of each capture hour", V16),
    ("operations in chain order", V17),
];

/// The newest schema version this build understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Version 1. `body` is the event's JSON without `seq`, `prev_hash` and
/// `hash` (those are columns); the other columns copy what filters look at,
/// so queries never parse JSON. `chain_head` survives a prune of every event,
/// so the chain continues from the pruned hash instead of restarting.
const V1: &str = "
create table events (
    seq integer primary key,
    id blob not null unique,
    captured_at integer not null,
    source text not null,
    kind text not null,
    schema_name text,
    table_name text,
    pk text,
    app_user text,
    db_user text,
    operation text,
    failed integer not null,
    body text not null,
    prev_hash blob not null,
    hash blob not null
) strict;
create index events_row on events (table_name, pk);
create index events_captured_at on events (captured_at);
create index events_app_user on events (app_user);
create index events_db_user on events (db_user);

create virtual table events_fts using fts5 (
    sql,
    content = '',
    contentless_delete = 1,
    tokenize = \"unicode61 tokenchars '_'\"
);

create table chain_head (
    singleton integer primary key check (singleton = 1),
    seq integer not null,
    hash blob not null
) strict;

create table checkpoints (
    id integer primary key,
    kind text not null,
    seq integer not null,
    hash text not null,
    count integer not null,
    created_at integer not null,
    public_key text,
    signature text
) strict;
";

/// Version 2. A row's history includes its table's TRUNCATEs; without this
/// (tiny, partial) index finding them scans every event of the table.
const V2: &str = "
create index events_truncates on events (table_name) where operation = 'TRUNCATE';
";

/// Version 3. For someone reading the file with `sqlite3`: ids and hashes
/// in hex, times as text, the statement pulled out of the body.
const V3: &str = "
create view events_readable as
select
    seq,
    lower(hex(id)) as id,
    strftime('%Y-%m-%dT%H:%M:%fZ', captured_at / 1000000.0, 'unixepoch') as captured_at,
    source,
    kind,
    schema_name,
    table_name,
    pk,
    app_user,
    db_user,
    operation,
    failed,
    json_extract(body, '$.sql') as sql,
    body,
    lower(hex(prev_hash)) as prev_hash,
    lower(hex(hash)) as hash
from events;
";

/// Version 4. "This user's events since yesterday" reads only that window:
/// with the time in the user indexes, both halves of `app_user = ? or
/// db_user = ?` are range lookups instead of every event of the user.
const V4: &str = "
drop index events_app_user;
drop index events_db_user;
create index events_app_user on events (app_user, captured_at);
create index events_db_user on events (db_user, captured_at);
";

/// Version 5. The row and user indexes hold integer keys instead of text
/// (see `keys`): appends write about a quarter fewer bytes. The keys of the
/// events already stored are computed by functions the writer registers;
/// on a large store this rewrites every row once. An event of a table
/// without a key has the key of the empty key, so it is in its table's
/// range. Partial: events without a table or a user take no room there.
const V5: &str = "
alter table events add column row_key integer;
alter table events add column app_user_key integer;
alter table events add column db_user_key integer;
update events set
    row_key = pgtrail_row_key(table_name, coalesce(pk, '')),
    app_user_key = pgtrail_user_key(app_user),
    db_user_key = pgtrail_user_key(db_user);
drop index events_row;
drop index events_app_user;
drop index events_db_user;
create index events_row on events (row_key) where row_key is not null;
create index events_app_user on events (app_user_key, captured_at) where app_user_key is not null;
create index events_db_user on events (db_user_key, captured_at) where db_user_key is not null;
";

/// Version 6. The row index leads with the stretch of the chain an event
/// is in (`seq >> 19`: 524,288 events) before its row key. Row keys are
/// hashes, so in one index over the whole store each batch of events lands
/// on nearly every leaf page, and every page it touches is written to the
/// WAL and later into the file again: at two million events that was most
/// of what an append wrote. Now a batch touches only the leaves of the
/// newest stretch, whatever the store's size. A row's events are found by
/// one lookup per stretch (see `query`), so the stretch is a compromise:
/// 2^17 wrote less per append but made `history` at 10M events (77
/// lookups) miss its 5 ms; at 2^19 that is 20 lookups. The expression in
/// `query` (built from [`ROW_STRETCH_SHIFT`]) must stay this one, or
/// SQLite stops using the index.
const V6: &str = "
drop index events_row;
create index events_row on events (seq >> 19, row_key) where row_key is not null;
";

/// Version 7. Checkpoints become signed notes over a Merkle tree of the
/// events (see `checkpoint`): the note and the tree's frontier at its size
/// sit beside the old columns, which stay for readers and for checkpoints
/// made before. The store gets a random id, named in every note's origin,
/// so a checkpoint of one store cannot pass for another's.
const V7: &str = "
create table store_identity (
    singleton integer primary key check (singleton = 1),
    id text not null
) strict;
insert into store_identity (singleton, id) values (1, lower(hex(randomblob(16))));
alter table checkpoints add column note text;
alter table checkpoints add column frontier text;
";

/// Version 8. `pgtrail log --table T` finds a proxy statement that touched
/// `T` anywhere (a JOIN, a subquery), not only its target: every relation
/// in a statement's `objects` is indexed here by table, then schema (empty
/// where unknown; `pgtrail_core::filter::object_tables`), so `patients`
/// is one range over every schema and `public.patients` one within it, and
/// the names decide, not a hash. One entry per relation: each distinct
/// name a batch touches dirties a leaf, and that is what an append pays.
/// Statements are the highest-volume events: without this, that question
/// reads every statement's body. Statements already stored are indexed
/// from their body by a function the writer registers.
const V8: &str = "
create table events_objects (
    table_name text not null,
    schema_name text not null,
    seq integer not null,
    primary key (table_name, schema_name, seq)
) strict, without rowid;
insert into events_objects (table_name, schema_name, seq)
    select json_extract(pairs.value, '$[1]'), json_extract(pairs.value, '$[0]'), events.seq
    from events, json_each(pgtrail_object_tables(json_extract(events.body, '$.objects'))) as pairs
    where events.kind = 'statement' and json_type(events.body, '$.objects') = 'array';
";

/// Version 9. The search page's facets (user, table, operation, source,
/// outcome) over a week count from `facet_hours`, a summary by the hour
/// that appends keep (see `facets`; `verify` recounts it from the events):
/// a few hundred rows an hour instead of every event of the week. Filled
/// here from the events stored, with `facets::facet_rows("true")`'s SQL.
const V9: &str = "
create table facet_hours (
    hour integer not null,
    facet text not null,
    value text not null,
    count integer not null,
    primary key (hour, facet, value)
) strict, without rowid;
insert into facet_hours (hour, facet, value, count)
select hour, facet, value, count(*) from (
    select (captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000 as hour,
        'user' as facet, coalesce(app_user, db_user) as value
        from events where true and coalesce(app_user, db_user) is not null
    union all select (captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000,
        'table', case when schema_name is null then table_name else schema_name || '.' || table_name end
        from events where true and table_name is not null
    union all select (captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000,
        'operation', upper(operation) from events where true and operation is not null
    union all select (captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000,
        'source', source from events where true
    union all select (captured_at - (((captured_at % 3600000000) + 3600000000) % 3600000000)) / 3600000000,
        'outcome', case when failed then 'failed' else 'ok' end from events where true
) group by hour, facet, value;
";

/// Version 10. The search page's `kind:session failed` or `kind:statement`
/// found its newest matches by reading the chain backwards until enough
/// matched: at a million events, ~50,000 rows for failed logins. Kinds in
/// chain order make that a walk of one kind's newest entries, and the
/// failures (a few in a hundred) their own small index. Both are appended
/// at their ends, so an append touches a leaf or two of each.
const V10: &str = "
create index events_kind on events (kind, seq);
create index events_failed on events (seq) where failed = 1;
";

/// Version 11 (its indexes replaced by column indexes in version 15). The link between a proxy statement and the row changes its
/// transaction made (`pgtrail_store::link`) looks events up by the server
/// backend that ran them (with the time) and by transaction id. Both are
/// indexes over the body's own fields, the bytes that were hashed: no
/// copy to write or to disagree with the event, and SQLite computes them
/// (so `verify` has nothing more to hold them to; `PRAGMA integrity_check`
/// does). The expressions in `query` must stay these ones, or SQLite stops
/// using the indexes; `json_valid` first, because `json_extract` fails on
/// a body nested deeper than SQLite's JSON parser goes (1,000 levels),
/// and a failing index expression would fail the append of that event.
const V11: &str = "
create index events_backend_pid on events
    ((case when json_valid(body) then json_extract(body, '$.backend_pid') end), captured_at)
    where (case when json_valid(body) then json_extract(body, '$.backend_pid') end) is not null;
create index events_xid on events
    ((case when json_valid(body) then json_extract(body, '$.xid') end))
    where (case when json_valid(body) then json_extract(body, '$.xid') end) is not null;
";

/// The name of version 12, whose migration also fills the nodes in
/// (`super::tree::fill`).
pub(super) const TREE_NODES: &str = "interior nodes of the Merkle tree, for proofs";

/// Version 12. The Merkle tree's interior nodes of height 8, 16, 24, ...
/// (`crate::tree`): a proof of any event reads a few dozen of them and at
/// most a few thousand event hashes, instead of every hash under it.
/// Filled for the events already stored in the same transaction.
const V12: &str = "
create table tree_nodes (
    height integer not null,
    idx integer not null,
    hash blob not null check (length(hash) = 32),
    primary key (height, idx)
) strict, without rowid;
";

/// Witness servers' cosignatures (C2SP `tlog-cosignature`) of checkpoints:
/// the exact checkpoint text each covers, and the signature line.
const COSIGNATURES: &str = "
create table cosignatures (
    seq integer not null,
    checkpoint text not null,
    line text not null,
    received_at integer not null,
    unique (checkpoint, line)
) strict;
create index cosignatures_seq on cosignatures (seq);
";

/// Version 14. A search's newest 50 events of a table or a user are found
/// by walking that key's entries newest first, stopping at 50 matches
/// (see `query::filtered_sql`). Before, a table's events came through the
/// row index (its key range, then every row read for its name) and a
/// user's through `(user key, captured_at)`, a time range sorted after
/// reading it: every candidate was read before the newest 50 were known.
/// An index entry ends with the rowid, `seq`, so the entries of one table
/// are in chain order without naming `seq`. Capture time is not monotone
/// in `seq` (imports carry their own times, and capturers' clocks differ),
/// so a window cannot bound the walk: it is checked on each entry. The
/// user indexes keep the time after `seq`, so that check reads the index,
/// not the event: the facets of one user's week walk the user's entries
/// (at 10M events, without it, 228 ms reading every event of the user;
/// with it, 30 ms; bench/README.md).
const V14: &str = "
drop index events_app_user;
drop index events_db_user;
create index events_app_user on events (app_user_key, seq, captured_at) where app_user_key is not null;
create index events_db_user on events (db_user_key, seq, captured_at) where db_user_key is not null;
create index events_table on events (table_name) where table_name is not null;
";

/// The name of version 15, whose migration also fills the columns of the
/// events whose body SQLite's JSON functions cannot read
/// ([`fill_unreadable`]).
const EVENT_COLUMNS: &str = "the client, database, backend and transaction as columns";

/// Version 15. `ip:`, `db:` and the link between a statement and its rows
/// read columns instead of the body: an append writes them from the event
/// (the version 11 indexes parsed every body with SQLite's JSON to index
/// it, a tenth of an append), and `ip:` is a range of `client_addr` keys
/// (`keys::AddrKey`: family byte, then the address; NULL for text that is
/// not an address, which no block contains) instead of every body of the
/// window parsed. Copies of the body like the other columns, so `verify`
/// holds them to it. An address's entries are in time order, so `ip:`
/// with a time window reads only the window's matches, one range per
/// address of the block; a database's are in chain order (the rowid,
/// `seq`, ends the entry), walked newest first like a user's (see
/// `query::filtered_sql`). The events stored are filled from their body
/// here, with `pgtrail_addr_key` (`keys::register`) for the address;
/// this rewrites every row once.
const V15: &str = "
alter table events add column client_addr blob;
alter table events add column database text;
alter table events add column backend_pid integer;
alter table events add column xid integer;
update events set
    client_addr = case when json_type(body, '$.client_addr') = 'text'
        then pgtrail_addr_key(json_extract(body, '$.client_addr')) end,
    database = case when json_type(body, '$.database') = 'text'
        then json_extract(body, '$.database') end,
    backend_pid = case when json_type(body, '$.backend_pid') = 'integer'
        then json_extract(body, '$.backend_pid') end,
    xid = case when json_type(body, '$.xid') = 'integer'
        then json_extract(body, '$.xid') end
    where json_valid(body);
drop index events_backend_pid;
drop index events_xid;
create index events_backend_pid on events (backend_pid, captured_at) where backend_pid is not null;
create index events_xid on events (xid) where xid is not null;
create index events_client_addr on events (client_addr, captured_at) where client_addr is not null;
create index events_database on events (database) where database is not null;
";

/// Version 16. A search with a time window walks an index newest first
/// and stops at its limit; capture time is not monotone in `seq`, so the
/// walk could not stop where the window starts and read on to the
/// chain's start when the window held fewer matches than the limit (at
/// 10M events, 1.5 s for `-user:app op:delete since:1d`). `seq_hours`
/// holds, for each hour an event was captured in, the least and greatest
/// `seq` of its events (`crate::seq_hours`): a window becomes a `seq`
/// range every index (all end in the rowid) seeks to. Appends keep it in
/// their transaction, a prune recomputes the hours it touched, `verify`
/// recomputes it from the events. Filled here in one pass over the
/// events; hours as Rust's `div_euclid` counts them, before 1970 too.
const V16: &str = "
create table seq_hours (
    hour integer primary key,
    first_seq integer not null,
    last_seq integer not null
) strict;
insert into seq_hours (hour, first_seq, last_seq)
select case when captured_at >= 0 then captured_at / 3600000000
            else (captured_at + 1) / 3600000000 - 1 end as h,
       min(seq), max(seq)
from events group by h;
";

/// Version 17. `op:` without a table, user or other key walks its own
/// index newest first (see `query::filtered_sql`). Before, it walked the
/// chain (or its window) newest first and checked each event: at 10M
/// events `-user:app op:delete since:1d` read every dashboard access
/// record of the day before its first delete (0.88 ms on a fresh store,
/// 5.4 ms after 30,000 access records; bench/README.md, session 16). The
/// entries end with the rowid, so one operation's are in chain order and
/// a window's `seq` range bounds the walk.
const V17: &str = "
create index events_operation on events (operation) where operation is not null;
";

/// Fills version 15's columns of the events whose body SQLite's JSON
/// functions do not read (nested deeper than 1,000 levels) from the event
/// as `verify` decodes it, so they agree. A body that is no event keeps
/// NULLs; `verify` names it anyway.
fn fill_unreadable(conn: &Connection, location: &str) -> Result<()> {
    let db = |e| StoreError::backend(location, "filling the columns of deep events", e);
    let mut select = conn
        .prepare("select seq, body from events where not json_valid(body)")
        .map_err(db)?;
    let mut update = conn
        .prepare(
            "update events set client_addr = ?2, database = ?3, backend_pid = ?4, xid = ?5 \
             where seq = ?1",
        )
        .map_err(db)?;
    let mut rows = select.query([]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let Ok(body) = row.get_ref(1).and_then(|v| Ok(v.as_str()?)) else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<pgtrail_core::Event>(body) else {
            continue;
        };
        let c = super::encode::columns(&event);
        update
            .execute(rusqlite::params![
                seq,
                c.client_addr.as_ref().map(|k| k.as_bytes()),
                c.database,
                c.backend_pid,
                c.xid,
            ])
            .map_err(db)?;
    }
    Ok(())
}

/// The shift of `seq` that numbers the row index's stretches (version 6).
pub const ROW_STRETCH_SHIFT: u32 = 19;

/// What [`identify`] found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// An empty database (a new or zero-length file): ours to initialize.
    Empty,
    /// A pgtrail store.
    Pgtrail,
}

/// Tells a pgtrail store or an empty file from anything else, without writing.
pub fn identify(conn: &Connection, location: &str) -> Result<Identity> {
    let foreign = |reason: String| StoreError::Foreign {
        location: location.to_string(),
        reason,
    };
    let application_id: i32 = match conn.pragma_query_value(None, "application_id", |r| r.get(0)) {
        Ok(id) => id,
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            return Err(foreign("the file is not a SQLite database".into()))
        }
        Err(e) => return Err(StoreError::backend(location, "reading the file header", e)),
    };
    if application_id == APPLICATION_ID {
        return Ok(Identity::Pgtrail);
    }
    if application_id != 0 {
        return Err(foreign(format!(
            "it is a SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    let objects: i64 = conn
        .query_row("select count(*) from sqlite_schema", [], |r| r.get(0))
        .map_err(|e| StoreError::backend(location, "listing the file's tables", e))?;
    if objects > 0 {
        return Err(foreign(format!(
            "it is a SQLite database with {objects} tables or indexes of its own"
        )));
    }
    Ok(Identity::Empty)
}

/// Brings the store to [`SCHEMA_VERSION`], refusing stores that are newer or
/// half-migrated. Safe against other processes opening the same file at once:
/// the state is re-read inside the write lock.
pub fn migrate(conn: &mut Connection, location: &str) -> Result<()> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("locking the store to migrate it"))?;
        let version = match identify(&tx, location)? {
            Identity::Empty => {
                tx.pragma_update(None, "application_id", APPLICATION_ID)
                    .map_err(db("marking the file as a pgtrail store"))?;
                tx.execute_batch(
                    "create table pgtrail_migrations (
                        version integer primary key,
                        name text not null,
                        applied_at integer not null
                    ) strict",
                )
                .map_err(db("creating the migrations table"))?;
                0
            }
            Identity::Pgtrail => current_version(&tx, location)?,
        };
        let Some(&(name, sql)) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(()); // up to date; the transaction rolls back having written nothing
        };
        let next = version + 1;
        tx.execute_batch(sql).map_err(|e| {
            StoreError::backend(location, format!("applying migration {next} ({name})"), e)
        })?;
        if name == TREE_NODES {
            super::tree::fill(&tx, location)?;
        }
        if name == EVENT_COLUMNS {
            fill_unreadable(&tx, location)?;
        }
        tx.execute(
            "insert into pgtrail_migrations (version, name, applied_at) values (?1, ?2, ?3)",
            rusqlite::params![next, name, chrono::Utc::now().timestamp_micros()],
        )
        .map_err(db("recording a migration"))?;
        tx.pragma_update(None, "user_version", next)
            .map_err(db("recording the schema version"))?;
        tx.commit().map_err(db("committing a migration"))?;
        tracing::info!(location, version = next, name, "Migrated the SQLite store");
    }
}

/// The schema version of a pgtrail store, checked as [`migrate`] checks it,
/// without writing.
pub fn version(conn: &Connection, location: &str) -> Result<i64> {
    current_version(conn, location)
}

/// The store's schema version, checked against this build and the record of
/// applied migrations.
fn current_version(conn: &Connection, location: &str) -> Result<i64> {
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| StoreError::backend(location, "reading the schema version", e))?;
    let recorded: Option<i64> = conn
        .query_row("select max(version) from pgtrail_migrations", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| StoreError::backend(location, "reading the migrations table", e))?
        .flatten();
    let recorded = match recorded {
        Some(v) => v,
        // The table is missing (or empty) although the file is marked as ours.
        None if has_migrations_table(conn, location)? => 0,
        None => {
            return Err(StoreError::HalfMigrated {
                location: location.to_string(),
                version: 1,
            })
        }
    };
    let newest = user_version.max(recorded);
    if newest > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found: newest,
            supported: SCHEMA_VERSION,
        });
    }
    if user_version != recorded {
        return Err(StoreError::HalfMigrated {
            location: location.to_string(),
            version: recorded.min(user_version) + 1,
        });
    }
    Ok(user_version)
}

fn has_migrations_table(conn: &Connection, location: &str) -> Result<bool> {
    has_table(conn, "pgtrail_migrations")
        .map_err(|e| StoreError::backend(location, "looking for the migrations table", e))
}

/// Whether the file has the table `name`: a store verified at the version
/// it has (never migrated) may be older than the table.
pub fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "select count(*) > 0 from sqlite_schema where type = 'table' and name = ?1",
    )?
    .query_row([name], |r| r.get(0))
}
