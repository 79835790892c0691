//! Reading events back: filters, one row's events, the chain in order.
//!
//! Filters become a `where` clause over the indexed columns, every value a
//! bound parameter; rows and users are found by their integer keys (see
//! `keys`) and then compared by name. A search string is split into words by
//! `pgtrail_core::filter::search_words` and each word is quoted as an FTS5
//! string, so nothing a user types is ever FTS syntax. Events are rebuilt
//! from `body` plus the `seq`, `prev_hash` and `hash` columns.

use pgtrail_core::filter::{search_words, AddrFilter, TableName};
use pgtrail_core::search::{Facets, FACET_BOUND};
use pgtrail_core::{Event, Filter, RowRef};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection};

use super::{keys, schema};
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
    let (sql, values) = query_sql(filter);
    read_events(conn, &sql, values, location)
}

/// The statement of [`query`] and its values.
fn query_sql(filter: &Filter) -> (String, Vec<Value>) {
    let limit = filter
        .limit
        .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    filtered_sql(filter, EVENT_COLUMNS, limit, false)
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
    let (sql, values) = facets_sql(filter);
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
fn facets_sql(filter: &Filter) -> (String, Vec<Value>) {
    let columns = "coalesce(events.app_user, events.db_user) as actor, \
         case when events.table_name is null then null \
              when events.schema_name is null then events.table_name \
              else events.schema_name || '.' || events.table_name end as tbl, \
         upper(events.operation) as op, events.source as source, events.failed as failed";
    let (matches, values) =
        filtered_sql(filter, columns, FACET_BOUND as i64, reads_by_time(filter));
    (
        format!("with m as materialized ({matches}) {FACET_GROUPS}"),
        values,
    )
}

/// Whether the facets of `filter` are best read through the time index:
/// a time window, and neither `failed` nor `kind:`, whose indexes in chain
/// order hold fewer candidates than a week of events (the user, table,
/// row, backend and transaction lookups are chosen either way; a search
/// is driven by the full-text index).
fn reads_by_time(filter: &Filter) -> bool {
    (filter.since.is_some() || filter.until.is_some())
        && !filter.failed
        && filter.kind.is_none()
        && filter.search.is_none()
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
    let (sql, values) = activity_sql(filter, cap);
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
fn activity_sql(filter: &Filter, cap: usize) -> (String, Vec<Value>) {
    let columns = "coalesce(events.app_user, events.db_user) as actor, \
         case when events.table_name is null then null \
              when events.schema_name is null then events.table_name \
              else events.schema_name || '.' || events.table_name end as tbl, \
         upper(events.operation) as op, events.captured_at as at";
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let (matches, values) = filtered_sql(filter, columns, cap, reads_by_time(filter));
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

/// `select {columns}` of the events `filter` matches, newest first, at most
/// `limit` (-1: all), and its values. `by_time`: sort by `+seq`, which no
/// index can order by, so SQLite reads a time window through
/// `events_captured_at` and sorts its matches; `order by seq` walks the
/// chain backwards from the newest event until `limit` matches, which for
/// a bound far above the matches (facets) means to the window's start or
/// through the whole chain.
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
fn filtered_sql(filter: &Filter, columns: &str, limit: i64, by_time: bool) -> (String, Vec<Value>) {
    let mut c = Conditions::default();
    // A row (`pk`) is found through the row index, a search through the
    // full-text index: both narrower than any key's walk.
    let keyed = filter.search.is_none()
        && filter.pk.is_none()
        && (filter.table.is_some() || filter.user.is_some() || filter.db_user.is_some());
    // `+` keeps a condition off the indexes when a key's walk drives.
    let plus = if keyed { "+" } else { "" };
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
                let by_object = format!(
                    "seq in (select seq from events_objects where table_name = {name}{})",
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
        c.require(format!("{} = {p}", body_field("events.body", "database")));
    }
    if let Some(addr) = &filter.client_addr {
        // Compared as addresses, as Postgres's `<<=` does: `10.0.0.5`
        // matches a stored `10.0.0.5/32`, and IPv6 in any spelling.
        let p = c.param(Value::Text(addr.to_string()));
        c.require(format!(
            "pgtrail_in_block({}, {p})",
            body_field("events.body", "client_addr")
        ));
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
        c.equals("operation", operation.to_uppercase());
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
        c.require(format!("{plus}captured_at >= {p}"));
    }
    if let Some(until) = filter.until {
        let p = c.param(Value::Integer(until.timestamp_micros()));
        c.require(format!("{plus}captured_at < {p}"));
    }
    if filter.failed {
        c.require(format!("{plus}failed = 1"));
    }
    // The expressions of the version 11 indexes, exactly (see `schema`).
    if let Some(pid) = filter.backend_pid {
        let p = c.param(Value::Integer(i64::from(pid)));
        let pid = body_field("body", "backend_pid");
        c.require(format!("{pid} is not null and {pid} = {p}"));
    }
    if let Some(xid) = filter.xid {
        let p = c.param(Value::Integer(xid));
        let xid = body_field("body", "xid");
        c.require(format!("{xid} is not null and {xid} = {p}"));
    }
    // With a search, the full-text index drives: it yields matches newest
    // first and the limit stops it early, instead of collecting every match
    // of a common word before sorting.
    let mut from = "events".to_string();
    let mut order = if by_time && !keyed { "+seq" } else { "seq" };
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

/// Makes `pgtrail_in_block(client_addr, block)` callable on a reader: true
/// when the address is in the CIDR block (`AddrFilter::contains`). Only
/// readers call it; nothing stored refers to it.
pub fn register(conn: &Connection, location: &str) -> Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("pgtrail_in_block", 2, flags, |ctx| {
        let addr = ctx.get::<Option<String>>(0)?;
        let block = ctx.get::<String>(1)?;
        let block = AddrFilter::parse(&block)
            .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
        Ok(addr.is_some_and(|addr| block.contains(&addr)))
    })
    .map_err(|e| StoreError::backend(location, "registering the reader functions", e))
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
/// query or, in an index expression, the append that stores it. The
/// version 11 indexes are over exactly this expression.
fn body_field(body: &str, field: &str) -> String {
    format!("(case when json_valid({body}) then json_extract({body}, '$.{field}') end)")
}

#[cfg(test)]
mod tests {
    use pgtrail_core::filter::PkFilter;
    use rusqlite::params_from_iter;

    use super::*;

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
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
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
            ("filter by row", query_sql(&by_row)),
            ("filter by row and user", query_sql(&by_row_and_user)),
        ] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("USING INDEX events_row (<expr>=? AND row_key"),
                "{what}: {plan}"
            );
        }
    }

    /// The link's lookups (a backend's events in a time window, a
    /// transaction's events) seek the version 11 indexes.
    #[test]
    fn backend_and_transaction_lookups_seek_their_indexes() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
        let by_backend = Filter {
            backend_pid: Some(4242),
            since: Some(chrono::Utc::now()),
            until: Some(chrono::Utc::now()),
            ..Default::default()
        };
        let plan_backend = plan(&conn, query_sql(&by_backend));
        assert!(
            plan_backend.contains(
                "USING INDEX events_backend_pid (<expr>=? AND captured_at>? AND captured_at<?)"
            ),
            "{plan_backend}"
        );
        let by_xid = Filter {
            xid: Some(77),
            ..Default::default()
        };
        let plan_xid = plan(&conn, query_sql(&by_xid));
        assert!(
            plan_xid.contains("USING INDEX events_xid (<expr>=?)"),
            "{plan_xid}"
        );
    }

    /// `--table` on statements is two lookups (the row index, and the
    /// statements' objects by name), the events then read by `seq`: no
    /// scan of the events, whatever else is filtered.
    #[test]
    fn a_table_search_seeks_the_object_index() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
        for table in ["patients", "clinic.patients"] {
            let filter = Filter {
                table: Some(TableName::parse(table).expect("table")),
                kind: Some(pgtrail_core::Kind::Statement),
                operation: Some("SELECT".into()),
                not_user: Some("reporting".into()),
                limit: Some(100),
                ..Default::default()
            };
            let plan = plan(&conn, query_sql(&filter));
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

    /// The facets of a time window (the search page counts them for every
    /// search, and for the partial hours at a week's edges) read the
    /// window through the time index: walking the chain backwards from the
    /// newest event read every event after the window's start, or all of
    /// them when the matches are fewer than the bound. `failed` keeps its
    /// own index.
    #[test]
    fn facets_of_a_time_window_seek_the_time_index() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        register(&conn, ":memory:").expect("reader functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
        let now = chrono::Utc::now();
        for (q, index) in [
            ("since:2h", "USING INDEX events_captured_at (captured_at>?)"),
            ("ip:10.0.4.0/24 since:2h", "USING INDEX events_captured_at"),
            (
                "-user:app op:delete since:1d",
                "USING INDEX events_captured_at",
            ),
            ("user:alice since:7d", "USING INDEX events_app_user"),
            ("failed since:7d", "USING INDEX events_failed"),
        ] {
            let filter = pgtrail_core::search::parse_search(q, now).expect(q);
            let plan = plan(&conn, facets_sql(&filter));
            assert!(plan.contains(index), "{q}: {plan}");
            assert!(!plan.lines().any(|l| l == "SCAN events"), "{q}: {plan}");
        }
    }

    /// The search page's rare kinds and failures walk an index in chain
    /// order, never the whole chain backwards.
    #[test]
    fn kinds_and_failures_walk_their_index() {
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
        for (q, index) in [
            ("kind:session failed", "events_"),
            ("kind:statement", "USING INDEX events_kind"),
            ("failed", "USING INDEX events_failed"),
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, chrono::Utc::now()).expect(q);
            filter.limit = Some(50);
            let plan = plan(&conn, query_sql(&filter));
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
        let mut conn = Connection::open_in_memory().expect("memory db");
        keys::register(&conn, ":memory:").expect("functions");
        register(&conn, ":memory:").expect("reader functions");
        schema::migrate(&mut conn, ":memory:").expect("schema");
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
        ] {
            let mut filter = pgtrail_core::search::parse_search(q, now).expect(q);
            filter.limit = Some(50);
            filter.before_seq = Some(1_000_000);
            for (what, sql) in [
                ("search", query_sql(&filter)),
                ("facets", facets_sql(&filter)),
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
                assert!(
                    !plan.lines().any(|l| l.ends_with("SCAN events")),
                    "{what} {q}: {plan}"
                );
            }
        }
    }
}
