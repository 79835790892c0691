//! Reading events back: filters, one row's events, the chain in order.
//!
//! Filters become a `where` clause over the indexed columns, every value a
//! bound parameter; rows and users are found by their integer keys (see
//! `keys`) and then compared by name. A search string is split into words by
//! `pgtrail_core::filter::search_words` and each word is quoted as an FTS5
//! string, so nothing a user types is ever FTS syntax. Events are rebuilt
//! from `body` plus the `seq`, `prev_hash` and `hash` columns.

use pgtrail_core::filter::{search_words, TableName};
use pgtrail_core::search::{Facets, FACET_BOUND};
use pgtrail_core::{Event, Filter, RowRef};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::keys::{self, AddrKey};
use super::schema;
use super::seq_hours::{self, Window};
use crate::{Result, StoreError};

const EVENT_COLUMNS: &str = "events.seq, events.body, events.prev_hash, events.hash";

/// `seq` is in a stretch of the chain that holds events, as the row index
/// groups them (schema version 6): a lookup by row key is one seek per
/// stretch. The expression is the index's, word for word.
fn in_stored_stretches() -> String {
    let shift = schema::ROW_STRETCH_SHIFT;
    format!(
        "(seq >> {shift}) in (\
         with recursive stretch(n) as (\
             select coalesce((select min(seq) from events), 0) >> {shift} \
             union all \
             select n + 1 from stretch where n < (select max(seq) from events) >> {shift}\
         ) select n from stretch)"
    )
}

/// Events matching `filter`, newest first.
pub fn query(conn: &Connection, filter: &Filter, location: &str) -> Result<Vec<Event>> {
    let window = seq_hours::window(conn, filter, location)?;
    if window == Window::Empty {
        return Ok(Vec::new());
    }
    let addrs = addr_walks(conn, filter, location)?;
    let limit = filter.limit.unwrap_or(usize::MAX);
    if addrs.as_ref().is_some_and(|a| !a.is_empty()) && limit <= ADDR_PROBE_LIMIT {
        // A block most recent clients are in (the usual case) has its
        // newest matches among the newest events: reading those costs less
        // than one range per address.
        let (sql, values) = query_sql(filter, window, None, Some(ADDR_PROBE));
        let recent = read_events(conn, &sql, values, location)?;
        if recent.len() >= limit {
            return Ok(recent);
        }
    }
    let (sql, values) = query_sql(filter, window, addrs.as_deref(), None);
    read_events(conn, &sql, values, location)
}

/// The statement of [`query`] and its values; `newest`: only among the
/// newest events of the chain (see [`filtered_sql`]).
fn query_sql(
    filter: &Filter,
    window: Window,
    addrs: Option<&[AddrKey]>,
    newest: Option<i64>,
) -> (String, Vec<Value>) {
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let walk = Walk {
        window,
        addrs,
        newest,
    };
    filtered_sql(filter, &walk, EVENT_COLUMNS, limit)
}

/// An `ip:` search for at most this many events first looks among the
/// newest [`ADDR_PROBE`] events of the chain.
const ADDR_PROBE_LIMIT: usize = 200;
const ADDR_PROBE: i64 = 2_000;

/// A block with more distinct addresses stored than this is read as a
/// range of the chain, not one walk per address.
const ADDR_WALKS: usize = 32;

/// The addresses stored in `filter`'s `ip:` block, one walk each, when no
/// other key finds the newest matches ([`no_other_key`]) and the block
/// holds at most [`ADDR_WALKS`] of them; `None`: `ip:` is a condition on
/// each event read. Found by a skip-scan of the address index, one seek
/// per address.
fn addr_walks(conn: &Connection, filter: &Filter, location: &str) -> Result<Option<Vec<AddrKey>>> {
    let Some(block) = &filter.client_addr else {
        return Ok(None);
    };
    if !no_other_key(filter) {
        return Ok(None);
    }
    let (first, last) = keys::block_range(block);
    if first == last {
        return Ok(Some(vec![first]));
    }
    let db = |e| StoreError::backend(location, "listing the addresses of a block", e);
    let mut statement = conn.prepare_cached(ADDRESSES_IN_BLOCK).map_err(db)?;
    let found = statement
        .query_map(
            rusqlite::params![first.as_bytes(), last.as_bytes(), ADDR_WALKS as i64 + 2],
            |row| row.get::<_, Vec<u8>>(0),
        )
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    if found.len() > ADDR_WALKS {
        return Ok(None);
    }
    Ok(Some(
        found
            .iter()
            .filter_map(|k| AddrKey::from_bytes(k))
            .collect(),
    ))
}

/// The distinct addresses stored from `?1` to `?2`, at most `?3 - 1`:
/// each the least address after the one before.
const ADDRESSES_IN_BLOCK: &str = "with recursive stored(k) as (\
         select (select min(client_addr) from events \
                 where client_addr >= ?1 and client_addr <= ?2) \
         union all \
         select (select min(client_addr) from events \
                 where client_addr > stored.k and client_addr <= ?2) \
         from stored where stored.k is not null limit ?3\
     ) select k from stored where k is not null";

/// Whether no search, row, table or user finds `filter`'s newest matches:
/// then `ip:` or `db:` may.
fn no_other_key(filter: &Filter) -> bool {
    filter.search.is_none()
        && filter.pk.is_none()
        && filter.table.is_none()
        && filter.user.is_none()
        && filter.db_user.is_none()
}

/// Whether `db:` finds `filter`'s newest matches by a walk of its index:
/// no other key does, and no time window bounds the read (the few
/// databases of a server each hold a large part of the events: the
/// window's `seq` range of the chain reads them for less than a walk of a
/// database's entries).
fn database_drives(filter: &Filter) -> bool {
    filter.database.is_some()
        && no_other_key(filter)
        && filter.since.is_none()
        && filter.until.is_none()
}

/// Whether `op:` finds `filter`'s newest matches by a walk of its index
/// (schema 17), when no key of [`filtered_sql`] does: not with a kind or
/// a failure, whose indexes drive as before (a failure is rarer than any
/// operation; an operation of another kind than the one asked for would
/// be walked to its end), nor a backend or a transaction (their lookups
/// are narrower).
fn operation_drives(filter: &Filter) -> bool {
    filter.operation.is_some()
        && no_other_key(filter)
        && filter.kind.is_none()
        && !filter.failed
        && filter.backend_pid.is_none()
        && filter.xid.is_none()
}

/// How many of the events `filter` matches have each facet value: the
/// newest [`FACET_BOUND`] of them at most, counted in one pass (the
/// matches are read once, into a materialized table, then grouped five
/// ways).
pub fn facets(conn: &Connection, filter: &Filter, top: usize, location: &str) -> Result<Facets> {
    if super::facets::answers(filter) {
        return super::facets::window(
            conn,
            filter,
            top,
            |conn, f| facet_counts(conn, f, location),
            location,
        );
    }
    let (counts, complete) = facet_counts(conn, filter, location)?;
    let counted = crate::facet_hours::counted(&counts);
    Ok(Facets::from_counts(counts, counted, complete, top))
}

/// `(facet, value, count)` of the newest [`FACET_BOUND`] events `filter`
/// matches, and whether that was all of them.
fn facet_counts(
    conn: &Connection,
    filter: &Filter,
    location: &str,
) -> Result<super::facets::Counted> {
    let window = seq_hours::window(conn, filter, location)?;
    if window == Window::Empty {
        return Ok((Vec::new(), true));
    }
    let addrs = addr_walks(conn, filter, location)?;
    let (sql, values) = facets_sql(filter, window, addrs.as_deref());
    let db = |e| StoreError::backend(location, "counting facets", e);
    let mut statement = conn.prepare_cached(&sql).map_err(db)?;
    let counts = statement
        .query_map(params_from_iter(values), |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            ))
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    let complete = crate::facet_hours::counted(&counts) < FACET_BOUND as u64;
    Ok((counts, complete))
}

/// The statement of [`facets`] and its values.
fn facets_sql(filter: &Filter, window: Window, addrs: Option<&[AddrKey]>) -> (String, Vec<Value>) {
    let columns = "coalesce(events.app_user, events.db_user) as actor, \
         case when events.table_name is null then null \
              when events.schema_name is null then events.table_name \
              else events.schema_name || '.' || events.table_name end as tbl, \
         upper(events.operation) as op, events.source as source, events.failed as failed";
    let walk = Walk {
        window,
        addrs,
        newest: None,
    };
    let (matches, values) = filtered_sql(filter, &walk, columns, FACET_BOUND as i64);
    (
        format!("with m as materialized ({matches}) {FACET_GROUPS}"),
        values,
    )
}

/// The five groupings of the matches `m` of [`facets_sql`], as
/// `(facet, value, count)` rows.
const FACET_GROUPS: &str = "\
    select 'user', actor, count(*) from m where actor is not null group by actor \
    union all select 'table', tbl, count(*) from m where tbl is not null group by tbl \
    union all select 'operation', op, count(*) from m where op is not null group by op \
    union all select 'source', source, count(*) from m group by source \
    union all select 'outcome', case when failed then 'failed' else 'ok' end, count(*) \
        from m group by 2";

/// [`crate::Store::activity_counts`]: the newest `cap` events `filter`
/// matches, read once into a materialized table and grouped by actor,
/// table, operation and hour; and how many were counted.
pub fn activity_counts(
    conn: &Connection,
    filter: &Filter,
    cap: usize,
    location: &str,
) -> Result<(Vec<crate::ActivityCount>, u64)> {
    let window = seq_hours::window(conn, filter, location)?;
    if window == Window::Empty {
        return Ok((Vec::new(), 0));
    }
    let addrs = addr_walks(conn, filter, location)?;
    let (sql, values) = activity_sql(filter, window, addrs.as_deref(), cap);
    let db = |e| StoreError::backend(location, "counting activity", e);
    let mut statement = conn.prepare_cached(&sql).map_err(db)?;
    let time = |micros: i64| {
        chrono::DateTime::from_timestamp_micros(micros).unwrap_or(chrono::DateTime::UNIX_EPOCH)
    };
    let groups = statement
        .query_map(params_from_iter(values), |row| {
            Ok(crate::ActivityCount {
                actor: row.get(0)?,
                table: row.get(1)?,
                operation: row.get(2)?,
                hour: row.get(3)?,
                events: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
                first: time(row.get(5)?),
                last: time(row.get(6)?),
            })
        })
        .map_err(db)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db)?;
    let counted = groups.iter().map(|g| g.events).sum();
    Ok((groups, counted))
}

/// The statement of [`activity_counts`] and its values.
fn activity_sql(
    filter: &Filter,
    window: Window,
    addrs: Option<&[AddrKey]>,
    cap: usize,
) -> (String, Vec<Value>) {
    let columns = "coalesce(events.app_user, events.db_user) as actor, \
         case when events.table_name is null then null \
              when events.schema_name is null then events.table_name \
              else events.schema_name || '.' || events.table_name end as tbl, \
         upper(events.operation) as op, events.captured_at as at";
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let walk = Walk {
        window,
        addrs,
        newest: None,
    };
    let (matches, values) = filtered_sql(filter, &walk, columns, cap);
    // Hours as Rust's `div_euclid` counts them, before 1970 too.
    let sql = format!(
        "with m as materialized ({matches}) \
         select actor, tbl, op, \
                case when at >= 0 then at / 3600000000 else (at + 1) / 3600000000 - 1 end as hour, \
                count(*), min(at), max(at) \
         from m group by actor, tbl, op, hour"
    );
    (sql, values)
}

/// How [`filtered_sql`] reads: the `seq` range of the filter's time
/// window, the addresses of an `ip:` block, the newest events only.
struct Walk<'a> {
    /// From `seq_hours` (never [`Window::Empty`]: that reads nothing).
    window: Window,
    /// The addresses of an `ip:` block, one walk each ([`addr_walks`]).
    addrs: Option<&'a [AddrKey]>,
    /// Only among the newest `n` events of the chain.
    newest: Option<i64>,
}

/// `select {columns}` of the events `filter` matches, newest first, at most
/// `limit` (-1: all), and its values. Without a key, `order by seq` walks
/// the chain backwards from the newest event (of the window) until
/// `limit` matches.
///
/// A table, a user or a database role (without a search, which the
/// full-text index drives) is a key whose index is in chain order (schema
/// 14): the newest matches are found by walking it newest first, every
/// other condition a filter written so no index can take it (`+column`),
/// and the walk stops at `limit` matches. A key found two ways (a table's
/// own events and the statements that touched it; a user as application
/// user or as database role) is one walk per way, each stopping at
/// `limit`, their `seq`s united: the newest `limit` of the union are among
/// them.
///
/// Without those, `ip:` and `db:` drive (schema 15): a block is one walk
/// per address stored in it (`addrs`, from [`addr_walks`]), each reading
/// the address's entries in a time window, if any, from the index
/// `(client_addr, captured_at)` and sorting them (an address's events in a
/// week are few; in a 2h window of a busy store, the time index's range
/// is mostly other clients); a database without a time window is one walk
/// newest first, like a user.
///
/// A time window is a `seq` range (`window`, from `seq_hours`, schema
/// 16) on every walk: each index ends in the rowid, so a walk newest first
/// seeks to the window's end and stops at its start, instead of reading
/// on to the chain's start when the window holds fewer matches than the
/// limit. The window's own `captured_at` condition still decides, off the
/// index (`+`), except where an index holds the time after its key
/// (`ip:`, a backend). Facets and activity (bound 200,000) read a
/// window's range of the chain newest first too, where schema 15 read the
/// time index and sorted: measured at 1M events, no form read slower, and
/// `since:2h` or a week in under half the time (bench/README.md, session
/// 15).
///
/// `newest`: only among the newest `n` events of the chain (a rowid
/// range), the first look of a limited `ip:` search.
fn filtered_sql(filter: &Filter, walk: &Walk, columns: &str, limit: i64) -> (String, Vec<Value>) {
    let Walk {
        window,
        addrs,
        newest,
    } = *walk;
    let mut c = Conditions::default();
    let mut seqs = match window {
        Window::Seqs(first, last) => Some((first, last)),
        Window::Unbounded | Window::Empty => None,
    };
    if let Some(n) = newest {
        // The matches among the newest `n` events: when there are `limit`
        // of them, they are the newest `limit` matches of all. With a
        // window, one lower bound, the greater: SQLite seeks the rowid to
        // one of two and only checks the other.
        let newest = format!("(select max(seq) from events) - {n}");
        match seqs.take() {
            Some((first, last)) => {
                let (first, last) = (
                    c.param(Value::Integer(first)),
                    c.param(Value::Integer(last)),
                );
                c.require(format!(
                    "events.seq > max({newest}, {first} - 1) and events.seq <= {last}"
                ));
            }
            None => c.require(format!("events.seq > {newest}")),
        }
    }
    let by_addr = addrs.filter(|_| filter.client_addr.is_some());
    let by_database = by_addr.is_none() && database_drives(filter);
    // A row (`pk`) is found through the row index, a search through the
    // full-text index: both narrower than any key's walk.
    let by_key = (filter.search.is_none()
        && filter.pk.is_none()
        && (filter.table.is_some() || filter.user.is_some() || filter.db_user.is_some()))
        || by_addr.is_some()
        || by_database;
    let by_operation = !by_key && operation_drives(filter);
    let keyed = by_key || by_operation;
    // `+` keeps a condition off the indexes when a key's walk drives.
    let plus = if keyed { "+" } else { "" };
    // An address's or a backend's index holds the time after the key: its
    // walks read only a window. Otherwise a window is read as its `seq`
    // range.
    let time_plus = if by_addr.is_some() || filter.backend_pid.is_some() {
        ""
    } else if keyed || window != Window::Unbounded {
        "+"
    } else {
        ""
    };
    // The ways the newest matches are found, when a key drives.
    let mut walks: Vec<String> = Vec::new();
    if let Some(table) = &filter.table {
        match &filter.pk {
            Some(pk) => {
                c.table(table);
                let key = c.param(Value::Integer(keys::row_key(&table.table, &pk.canonical())));
                c.require(format!("{} and row_key = {key}", in_stored_stretches()));
            }
            None => {
                // The table's own events, and the statements that touched
                // it (`events_objects`).
                let name = c.param(Value::Text(table.table.clone()));
                let schema = table
                    .schema
                    .as_ref()
                    .map(|schema| c.param(Value::Text(schema.clone())));
                let in_schema = |column: &str| match &schema {
                    Some(schema) => format!(" and {column} = {schema}"),
                    None => String::new(),
                };
                // The window's range inside the list too: without it the
                // list holds every statement on the table since the start.
                let in_window = match seqs {
                    Some((first, last)) => format!(
                        " and seq between {} and {}",
                        c.param(Value::Integer(first)),
                        c.param(Value::Integer(last))
                    ),
                    None => String::new(),
                };
                let by_object = format!(
                    "seq in (select seq from events_objects where table_name = {name}{}{in_window})",
                    in_schema("schema_name")
                );
                if keyed {
                    walks = vec![
                        format!("table_name = {name}{}", in_schema("schema_name")),
                        by_object,
                    ];
                } else {
                    c.require(format!(
                        "((+table_name = {name}{}) or +{by_object})",
                        in_schema("+schema_name")
                    ));
                }
            }
        }
    }
    if let Some(pk) = &filter.pk {
        c.equals("pk", pk.canonical());
    }
    if let Some(user) = &filter.user {
        // The keys find the candidates; the names decide (keys can collide).
        let p = c.param(Value::Text(user.clone()));
        if walks.is_empty() && keyed {
            let key = c.param(Value::Integer(keys::user_key(user)));
            walks = vec![
                format!("app_user_key = {key}"),
                format!("db_user_key = {key}"),
            ];
        }
        c.require(format!("(app_user = {p} or db_user = {p})"));
    }
    if let Some(role) = &filter.db_user {
        if walks.is_empty() && keyed {
            let key = c.param(Value::Integer(keys::user_key(role)));
            walks = vec![format!("db_user_key = {key}")];
        }
        c.equals("db_user", role.clone());
    }
    if let Some(database) = &filter.database {
        let p = c.param(Value::Text(database.clone()));
        if by_database {
            walks = vec![format!("database = {p}")];
        } else {
            c.require(format!("+database = {p}"));
        }
    }
    if let Some(block) = &filter.client_addr {
        // Compared as addresses, as Postgres's `<<=` does: `10.0.0.5`
        // matches a stored `10.0.0.5/32`, and IPv6 in any spelling (the
        // column holds the address, `keys::AddrKey`).
        match by_addr {
            Some([]) => c.require("false".into()),
            Some(addrs) => {
                walks = addrs
                    .iter()
                    .map(|k| format!("client_addr = {}", c.param(blob(k))))
                    .collect();
            }
            None => {
                let (first, last) = keys::block_range(block);
                let (first, last) = (c.param(blob(&first)), c.param(blob(&last)));
                c.require(format!("+client_addr between {first} and {last}"));
            }
        }
    }
    if let Some(before) = filter.before_seq {
        let p = c.param(Value::Integer(before));
        c.require(format!("events.seq < {p}"));
    }
    if let Some(role) = &filter.not_user {
        // The database role only: a claimed application user never hides
        // an event.
        let p = c.param(Value::Text(role.clone()));
        c.require(format!("db_user is not {p}"));
    }
    if let Some(operation) = &filter.operation {
        let p = c.param(Value::Text(operation.to_uppercase()));
        if by_operation {
            walks = vec![format!("operation = {p}")];
        } else {
            c.require(format!("+operation = {p}"));
        }
    }
    if let Some(class) = &filter.class {
        // Read from the body, the bytes that were hashed: no copy of the
        // class can disagree with the event.
        let p = c.param(Value::Text(class.to_uppercase()));
        c.require(format!(
            "upper({}) = {p}",
            body_field("events.body", "class")
        ));
    }
    if let Some(kind) = filter.kind {
        c.equals(&format!("{plus}kind"), kind.as_str().into());
    }
    if let Some(source) = filter.source {
        c.equals("source", source.as_str().into());
    }
    if let Some(since) = filter.since {
        let p = c.param(Value::Integer(since.timestamp_micros()));
        c.require(format!("{time_plus}captured_at >= {p}"));
    }
    if let Some(until) = filter.until {
        let p = c.param(Value::Integer(until.timestamp_micros()));
        c.require(format!("{time_plus}captured_at < {p}"));
    }
    if filter.failed {
        c.require(format!("{plus}failed = 1"));
    }
    // The link's lookups, on the version 15 indexes.
    if let Some(pid) = filter.backend_pid {
        let p = c.param(Value::Integer(i64::from(pid)));
        c.require(format!("backend_pid = {p}"));
    }
    if let Some(xid) = filter.xid {
        let p = c.param(Value::Integer(xid));
        c.require(format!("xid = {p}"));
    }
    // With a search, the full-text index drives: it yields matches newest
    // first and the limit stops it early, instead of collecting every match
    // of a common word before sorting.
    let mut from = "events".to_string();
    let mut order = "seq";
    if let Some(search) = &filter.search {
        match fts_query(search) {
            Some(matcher) => {
                let p = c.param(Value::Text(matcher));
                c.require(format!("events_fts match {p}"));
                from = "events_fts join events on events.seq = events_fts.rowid".into();
                order = "events_fts.rowid";
            }
            // Nothing searchable (only punctuation): no event's SQL contains it.
            None => c.require("false".into()),
        }
    }
    if let Some((first, last)) = seqs {
        // On the full-text index's rowid, so the search seeks it there.
        let seq = if filter.search.is_some() {
            "events_fts.rowid"
        } else {
            "events.seq"
        };
        let (first, last) = (
            c.param(Value::Integer(first)),
            c.param(Value::Integer(last)),
        );
        c.require(format!("{seq} between {first} and {last}"));
    }
    let p = c.param(Value::Integer(limit));
    if let [walk] = walks.as_slice() {
        c.require(walk.clone());
    }
    let sql = if walks.len() > 1 {
        let branches: Vec<String> = walks
            .iter()
            .map(|walk| {
                let mut clauses = c.clauses.clone();
                clauses.push(walk.clone());
                format!(
                    "select seq from (select events.seq from events where {} \
                     order by seq desc limit {p})",
                    clauses.join(" and ")
                )
            })
            .collect();
        format!(
            "select {columns} from events where seq in ({}) order by seq desc limit {p}",
            branches.join(" union all ")
        )
    } else {
        format!(
            "select {columns} from {from}{} order by {order} desc limit {p}",
            c.where_sql()
        )
    };
    (sql, c.values)
}

/// The events of one row plus the TRUNCATEs of its table, oldest first.
/// Written as two indexed lookups (`events_row`, `events_truncates`) whose
/// `seq`s are united: as one `where … or …` SQLite scans the whole table's
/// events instead. The row key finds the candidates, the names decide.
pub fn row_events(conn: &Connection, row: &RowRef, location: &str) -> Result<Vec<Event>> {
    let (sql, values) = row_events_sql(row);
    read_events(conn, &sql, values, location)
}

/// The statement of [`row_events`] and its values.
fn row_events_sql(row: &RowRef) -> (String, Vec<Value>) {
    let mut c = Conditions::default();
    let pk_text = row.pk.canonical();
    let key = c.param(Value::Integer(keys::row_key(&row.table.table, &pk_text)));
    let table = c.param(Value::Text(row.table.table.clone()));
    let pk = c.param(Value::Text(pk_text));
    let stretches = in_stored_stretches();
    c.require(format!(
        "seq in (select seq from events where {stretches} and row_key = {key} \
         and +table_name = {table} and pk = {pk} \
         union all select seq from events where table_name = {table} and operation = 'TRUNCATE')"
    ));
    if let Some(schema) = &row.table.schema {
        c.equals("schema_name", schema.clone());
    }
    let sql = format!(
        "select {EVENT_COLUMNS} from events{} order by seq",
        c.where_sql()
    );
    (sql, c.values)
}

/// Sealed events with `seq > after`, ascending, at most `limit`.
pub fn scan(conn: &Connection, after: i64, limit: usize, location: &str) -> Result<Vec<Event>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let sql = format!("select {EVENT_COLUMNS} from events where seq > ?1 order by seq limit ?2");
    read_events(
        conn,
        &sql,
        vec![Value::Integer(after), Value::Integer(limit)],
        location,
    )
}

/// The seq of the event with this id, by the id's unique index.
pub fn seq_of_id(conn: &Connection, id: uuid::Uuid, location: &str) -> Result<Option<i64>> {
    use rusqlite::OptionalExtension as _;
    conn.query_row(
        "select seq from events where id = ?1",
        [id.as_bytes().as_slice()],
        |row| row.get(0),
    )
    .optional()
    .map_err(|e| StoreError::backend(location, "looking an event up by id", e))
}

/// An address key as a bound value.
fn blob(key: &AddrKey) -> Value {
    Value::Blob(key.as_bytes().to_vec())
}

/// The FTS5 query for `search`: every word as a quoted string, all required.
/// `None` when the search has no words at all.
pub fn fts_query(search: &str) -> Option<String> {
    let words = search_words(search);
    if words.is_empty() {
        return None;
    }
    let quoted: Vec<String> = words
        .iter()
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    Some(quoted.join(" AND "))
}

/// A `where` clause being built: conditions and their bound values.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    values: Vec<Value>,
}

impl Conditions {
    /// Binds `value`, returning its placeholder.
    fn param(&mut self, value: Value) -> String {
        self.values.push(value);
        format!("?{}", self.values.len())
    }

    fn require(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn equals(&mut self, column: &str, value: String) {
        let p = self.param(Value::Text(value));
        self.require(format!("{column} = {p}"));
    }

    /// The table and, when the schema is given, the schema: an unqualified
    /// name matches the table in any schema. A filter on a row found by
    /// its key: `+`, so the table's index (schema 14) never takes over.
    fn table(&mut self, table: &TableName) {
        self.equals("+table_name", table.table.clone());
        if let Some(schema) = &table.schema {
            self.equals("schema_name", schema.clone());
        }
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" where {}", self.clauses.join(" and "))
        }
    }
}

fn read_events(
    conn: &Connection,
    sql: &str,
    values: Vec<Value>,
    location: &str,
) -> Result<Vec<Event>> {
    let db = |e| StoreError::backend(location, "reading events", e);
    let mut statement = conn.prepare_cached(sql).map_err(db)?;
    let mut rows = statement.query(params_from_iter(values)).map_err(db)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let body = row.get_ref(1).and_then(|v| Ok(v.as_str()?)).map_err(db)?;
        let mut event: Event = serde_json::from_str(body)
            .map_err(|e| StoreError::backend(location, format!("decoding event {seq}"), e))?;
        let prev_hash = row.get_ref(2).and_then(|v| Ok(v.as_blob()?)).map_err(db)?;
        let hash = row.get_ref(3).and_then(|v| Ok(v.as_blob()?)).map_err(db)?;
        event.seq = Some(seq);
        event.prev_hash = Some(hex::encode(prev_hash));
        event.hash = Some(hex::encode(hash));
        events.push(event);
    }
    Ok(events)
}

/// A top-level field of an event's body, or NULL when the body is no JSON
/// SQLite can read (a row image nested deeper than its 1,000 levels, which
/// Postgres accepts): such an event never matches, and never fails the
/// query.
fn body_field(body: &str, field: &str) -> String {
    format!("(case when json_valid({body}) then json_extract({body}, '$.{field}') end)")
}

#[cfg(test)]
mod tests {
    use pgtrail_core::filter::PkFilter;
    use rusqlite::params_from_iter;

    use super::*;

    /// The window a filter's time window would read at a million events
    /// (plans do not depend on the values).
    fn seqs(filter: &Filter) -> Window {
        if filter.since.is_some() || filter.until.is_some() {
            Window::Seqs(1, 1_000_000)
        } else {
            Window::Unbounded
        }
    }

    /// An empty store in memory, its connection set up as the store's are.
    fn memory_store() -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory db");
        super::super::stable_plans(&conn, ":memory:").expect("stable plans");
        keys::register(&conn, ":memory:").expect("functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
        conn
    }

    fn plan(conn: &Connection, (sql, values): (String, Vec<Value>)) -> String {
        let mut statement = conn
            .prepare(&format!("explain query plan {sql}"))
            .expect("statement");
        let details = statement
            .query_map(params_from_iter(values), |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan rows");
        details.join("\n")
    }

    /// The stretch expression of the queries must match the index's word
    /// for word, or SQLite silently scans: these plans would show it.
    #[test]
    fn row_lookups_seek_the_row_index() {
        let conn = memory_store();
        let table = TableName::parse("public.orders").expect("table");
        let pk = PkFilter::parse("id=7").expect("pk");
        let row = RowRef {
            table,
            pk: pk.clone(),
        };
        let by_row = Filter {
            table: Some(row.table.clone()),
            pk: Some(pk),
            ..Default::default()
        };
        // A user beside the row: the row index is still the narrower.
        let by_row_and_user = Filter {
            user: Some("alice".into()),
            since: Some(chrono::Utc::now()),
            ..by_row.clone()
        };
        for (what, sql) in [
            ("row events", row_events_sql(&row)),
            (
                "filter by row",
                query_sql(&by_row, seqs(&by_row), None, None),
            ),
            (
                "filter by row and user",
                query_sql(&by_row_and_user, seqs(&by_row_and_user), None, None),
            ),
        ] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("USING INDEX events_row (<expr>=? AND row_key"),
                "{what}: {plan}"
            );
        }
    }

    /// The link's lookups (a backend's events in a time window, a
    /// transaction's events) seek the version 15 column indexes.
    #[test]
    fn backend_and_transaction_lookups_seek_their_indexes() {
        let conn = memory_store();
        let by_backend = Filter {
            backend_pid: Some(4242),
            since: Some(chrono::Utc::now()),
            until: Some(chrono::Utc::now()),
            ..Default::default()
        };
        let plan_backend = plan(&conn, query_sql(&by_backend, seqs(&by_backend), None, None));
        assert!(
            plan_backend.contains(
                "USING INDEX events_backend_pid (backend_pid=? AND captured_at>? AND captured_at<?)"
            ),
            "{plan_backend}"
        );
        let by_xid = Filter {
            xid: Some(77),
            ..Default::default()
        };
        let plan_xid = plan(&conn, query_sql(&by_xid, seqs(&by_xid), None, None));
        assert!(
            plan_xid.contains("USING INDEX events_xid (xid=?)"),
            "{plan_xid}"
        );
    }

    /// `--table` on statements is two lookups (the row index, and the
    /// statements' objects by name), the events then read by `seq`: no
    /// scan of the events, whatever else is filtered.
    #[test]
    fn a_table_search_seeks_the_object_index() {
        let conn = memory_store();
        for table in ["patients", "clinic.patients"] {
            let filter = Filter {
                table: Some(TableName::parse(table).expect("table")),
                kind: Some(pgtrail_core::Kind::Statement),
                operation: Some("SELECT".into()),
                not_user: Some("reporting".into()),
                limit: Some(100),
                ..Default::default()
            };
            let plan = plan(&conn, query_sql(&filter, seqs(&filter), None, None));
            assert!(
                plan.contains("SEARCH events_objects USING PRIMARY KEY (table_name=?"),
                "{table}: {plan}"
            );
            // Each event found is one seek by `seq`: its row, or its entry
            // in the index of kinds (schema 10), which leads to its row.
            assert!(
                plan.contains("SEARCH events USING INTEGER PRIMARY KEY (rowid=?)")
                    || plan.contains("SEARCH events USING INDEX events_kind (kind=? AND seq=?)"),
                "{table}: {plan}"
            );
            assert!(!plan.contains("SCAN events"), "{table}: {plan}");
        }
    }

    /// A time window is a `seq` range on every walk (schema 16): the four
    /// windowed forms of the search page (each slow at 10M events before)
    /// and the facets of a window seek their index to the window's end
    /// and walk it newest first, stopping at its start: no range of the
    /// time index, no sort of the window's events (`TEMP B-TREE`).
    #[test]
    fn windowed_searches_walk_their_seq_range() {
        let conn = memory_store();
        let now = chrono::Utc::now();
        for (q, walks) in [
            (
                "-user:app op:delete since:1d",
                &["USING INDEX events_operation (operation=? AND rowid>? AND rowid<?)"][..],
            ),
            (
                "failed since:7d",
                &["SEARCH events USING INDEX events_failed (seq>? AND seq<?)"],
            ),
            (
                "db_user:reporting kind:statement since:1d",
                &["USING INDEX events_db_user (db_user_key=? AND seq>? AND seq<?)"],
            ),
            (
                "table:t_193 since:yesterday",
                &[
                    "USING INDEX events_table (table_name=? AND rowid>? AND rowid<?)",
                    "events_objects USING PRIMARY KEY (table_name=?",
                ],
            ),
            (
                "table:public.t_078 since:1d",
                &[
                    "USING INDEX events_table (table_name=? AND rowid>? AND rowid<?)",
                    "events_objects USING PRIMARY KEY \
                     (table_name=? AND schema_name=? AND seq>? AND seq<?)",
                ],
            ),
            (
                "kind:statement until:yesterday",
                &["USING INDEX events_kind (kind=? AND seq>? AND seq<?)"],
            ),
            (
                "user:alice since:7d",
                &[
                    "USING INDEX events_app_user (app_user_key=? AND seq>? AND seq<?)",
                    "USING INDEX events_db_user (db_user_key=? AND seq>? AND seq<?)",
                ],
            ),
            (
                "since:2h",
                &["SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"],
            ),
            (
                "drop customer_id since:1d",
                &["events_fts VIRTUAL TABLE INDEX"],
            ),
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
            filter.limit = Some(50);
            for (what, sql) in [
                ("search", query_sql(&filter, seqs(&filter), None, None)),
                ("facets", facets_sql(&filter, seqs(&filter), None)),
            ] {
                let plan = plan(&conn, sql);
                for walk in walks {
                    assert!(plan.contains(walk), "{what} {q}: {plan}");
                }
                for other in ["events_captured_at", "TEMP B-TREE FOR ORDER BY"] {
                    assert!(!plan.contains(other), "{what} {q}: {plan}");
                }
                assert!(
                    !plan.lines().any(|l| l.ends_with("SCAN events")),
                    "{what} {q}: {plan}"
                );
            }
        }
    }

    /// The search page's rare kinds and failures walk an index in chain
    /// order, never the whole chain backwards.
    #[test]
    fn kinds_and_failures_walk_their_index() {
        let conn = memory_store();
        for (q, index) in [
            ("kind:session failed", "events_"),
            ("kind:statement", "USING INDEX events_kind"),
            ("failed", "USING INDEX events_failed"),
            // An operation beside them is checked on each event (schema 17's
            // index would walk every event of the operation).
            ("kind:session op:connect", "USING INDEX events_kind"),
            ("failed op:update", "USING INDEX events_failed"),
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, chrono::Utc::now()).expect(q);
            filter.limit = Some(50);
            let plan = plan(&conn, query_sql(&filter, seqs(&filter), None, None));
            assert!(plan.contains(index), "{q}: {plan}");
            assert!(
                !plan.contains("SCAN events\n") && plan != "SCAN events",
                "{q}: {plan}"
            );
        }
    }

    /// The search page's keyed forms find their newest 50 by walking the
    /// key's index in chain order, newest first, and stop there: no sort of
    /// every candidate (`TEMP B-TREE`), no range of the time index, and the
    /// other conditions (a kind, a time window, a failure) never take over.
    #[test]
    fn keyed_searches_walk_their_index_newest_first() {
        let conn = memory_store();
        let now = chrono::Utc::now();
        for (q, indexes) in [
            (
                "user:user064@example.com since:7d",
                &[
                    "events_app_user (app_user_key=?",
                    "events_db_user (db_user_key=?",
                ][..],
            ),
            (
                "table:public.t_078 op:update",
                &[
                    "events_table (table_name=?",
                    "events_objects USING PRIMARY KEY (table_name=? AND schema_name=?",
                ],
            ),
            (
                "db_user:reporting kind:statement since:1d",
                &["events_db_user (db_user_key=?"],
            ),
            (
                "db:crm user:user011@example.com",
                &[
                    "events_app_user (app_user_key=?",
                    "events_db_user (db_user_key=?",
                ],
            ),
            (
                "table:t_193 since:1d failed",
                &[
                    "events_table (table_name=?",
                    "events_objects USING PRIMARY KEY (table_name=?",
                ],
            ),
            (
                "table:t_193 user:alice kind:statement",
                &["events_table (table_name=?"],
            ),
            ("op:delete", &["events_operation (operation=?"]),
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
            filter.limit = Some(50);
            filter.before_seq = Some(1_000_000);
            for (what, sql) in [
                ("search", query_sql(&filter, seqs(&filter), None, None)),
                ("facets", facets_sql(&filter, seqs(&filter), None)),
            ] {
                let plan = plan(&conn, sql);
                for index in indexes {
                    assert!(plan.contains(index), "{what} {q}: {plan}");
                }
                for other in [
                    "events_captured_at",
                    "events_kind",
                    "events_failed",
                    "TEMP B-TREE FOR ORDER BY",
                ] {
                    assert!(!plan.contains(other), "{what} {q}: {plan}");
                }
                if !q.starts_with("op:") {
                    assert!(!plan.contains("events_operation"), "{what} {q}: {plan}");
                }
                assert!(
                    !plan.lines().any(|l| l.ends_with("SCAN events")),
                    "{what} {q}: {plan}"
                );
            }
        }
    }

    /// `ip:` reads its index, one range per address of a block (in a
    /// time window, only the window's entries); the block's addresses are
    /// found one seek each. `db:` without a window walks its index newest
    /// first.
    #[test]
    fn address_and_database_searches_walk_their_index_newest_first() {
        let conn = memory_store();
        let now = chrono::Utc::now();
        let two = [
            keys::addr_key("10.0.4.1").expect("address"),
            keys::addr_key("10.0.4.9").expect("address"),
        ];
        for (q, addrs, index) in [
            (
                "ip:10.0.4.0/24",
                Some(&two[..]),
                "events_client_addr (client_addr=?)",
            ),
            (
                "ip:10.0.4.1 kind:statement failed",
                Some(&two[..1]),
                "events_client_addr (client_addr=?)",
            ),
            (
                "ip:10.0.4.0/24 since:2h",
                Some(&two[..]),
                "events_client_addr (client_addr=? AND captured_at>?)",
            ),
            ("db:crm op:delete", None, "events_database (database=?)"),
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
            filter.limit = Some(50);
            for (what, sql) in [
                ("search", query_sql(&filter, seqs(&filter), addrs, None)),
                ("facets", facets_sql(&filter, seqs(&filter), addrs)),
            ] {
                let plan = plan(&conn, sql);
                assert!(plan.contains(index), "{what} {q}: {plan}");
                for other in ["events_captured_at", "events_kind", "events_failed"] {
                    assert!(!plan.contains(other), "{what} {q}: {plan}");
                }
                assert!(
                    !plan.lines().any(|l| l.ends_with("SCAN events")),
                    "{what} {q}: {plan}"
                );
            }
        }
        // The first look of a limited `ip:` search reads the newest events
        // of the chain, newest first, and stops at the limit.
        let mut filter =
            pgtrail_core::search::parse_search("ip:10.0.4.0/24 since:2h", now).expect("q");
        filter.limit = Some(51);
        let first_look = plan(
            &conn,
            query_sql(&filter, seqs(&filter), None, Some(ADDR_PROBE)),
        );
        assert!(
            first_look.starts_with("SEARCH events USING INTEGER PRIMARY KEY (rowid>?"),
            "{first_look}"
        );
        assert!(!first_look.contains("TEMP B-TREE"), "{first_look}");
        // A database in a time window is read through the window.
        let filter = pgtrail_core::search::parse_search("db:crm since:1d", now).expect("q");
        assert!(!database_drives(&filter));
        let plan = plan(&conn, query_sql(&filter, seqs(&filter), None, None));
        assert!(!plan.contains("events_database"), "{plan}");
        let block = pgtrail_core::filter::AddrFilter::parse("10.0.4.0/24").expect("block");
        let block = keys::block_range(&block);
        let mut statement = conn
            .prepare(&format!("explain query plan {ADDRESSES_IN_BLOCK}"))
            .expect("statement");
        let steps = statement
            .query_map(
                rusqlite::params![block.0.as_bytes(), block.1.as_bytes(), 34],
                |r| r.get::<_, String>(3),
            )
            .expect("plan")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan rows")
            .join("\n");
        assert!(
            steps.contains("SEARCH events USING COVERING INDEX events_client_addr (client_addr>? AND client_addr<?)"),
            "{steps}"
        );
        assert!(!steps.contains("SCAN events"), "{steps}");
    }

    /// A cached search is not compiled again each time it runs. SQLite
    /// recompiles a statement whose planner looked at a bound value (a
    /// parameter compared with a partial index's condition) whenever its
    /// bindings change, and rusqlite clears them when it puts a statement
    /// back in its cache: without stable plans (`stable_plans`) every
    /// search was compiled twice, ~10% of the server's CPU in a bench/serve
    /// profile. The first run may compile once more (values bound for the
    /// first time).
    #[test]
    fn cached_searches_are_not_compiled_again_for_each_run() {
        let conn = memory_store();
        let now = chrono::Utc::now();
        for pair in [
            ["op:update", "op:delete"],
            [
                "-user:app op:delete since:1d",
                "-user:etl op:update since:1d",
            ],
            ["table:t_1 op:update", "table:t_2 op:delete"],
            ["user:a since:7d", "user:b since:7d"],
            ["ip:10.0.4.0/24 since:2h", "ip:10.0.5.0/24 since:2h"],
            ["t_011 customer_id", "t_012 customer_id"],
            ["db:crm user:a", "db:shop user:b"],
            ["kind:session failed", "kind:statement failed"],
            ["table:t_1 since:1d", "table:t_2 since:1d"],
            ["db_user:a kind:ddl since:1d", "db_user:b kind:ddl since:1d"],
        ] {
            let statements: Vec<_> = pair
                .iter()
                .map(|q| {
                    let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
                    filter.limit = Some(51);
                    query_sql(&filter, seqs(&filter), None, None)
                })
                .collect();
            assert_eq!(statements[0].0, statements[1].0, "{pair:?}: one statement");
            let mut compiled = 0;
            for (sql, values) in statements.iter().cycle().take(6) {
                let mut statement = conn.prepare_cached(sql).expect("prepare");
                let mut rows = statement
                    .query(params_from_iter(values.clone()))
                    .expect("query");
                while rows.next().expect("row").is_some() {}
                drop(rows);
                compiled = statement.get_status(rusqlite::StatementStatus::RePrepare);
            }
            assert!(compiled <= 1, "{pair:?}: compiled again {compiled} times");
        }
    }
}
