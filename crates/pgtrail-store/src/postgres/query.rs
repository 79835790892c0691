//! The SQL of the readers: a [`Filter`] turned into a WHERE clause, a row's
//! events, and the chain scan. Every value is a bound parameter; only fixed
//! SQL fragments are ever concatenated.

use pgtrail_core::filter::search_words;
use pgtrail_core::filter::TableName;
use pgtrail_core::search::FACET_BOUND;
use pgtrail_core::{Filter, RowRef};
use postgres_types::{Json, ToSql};

use super::event_row::{client_addr_start, READ_COLUMNS, VERIFY_COLUMNS};
use super::row_key;
use super::seq_hours::Window;

/// A statement and the values of its `$n` parameters.
pub(super) struct Query {
    /// The SQL text.
    pub sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    fn new() -> Self {
        Query {
            sql: String::new(),
            params: Vec::new(),
        }
    }

    /// Adds a parameter; returns its placeholder (`$n`).
    fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// The parameters, for `Client::query`.
    pub fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Whether `filter` asks for a text no stored event can hold: a Postgres
/// text or jsonb value cannot contain NUL, and the server refuses such a
/// parameter instead of matching nothing.
fn asks_for_nul(filter: &Filter) -> bool {
    let nul = |s: &str| s.contains('\0');
    let table = filter
        .table
        .as_ref()
        .is_some_and(|t| nul(&t.table) || t.schema.as_deref().is_some_and(nul));
    let pk = filter.pk.as_ref().is_some_and(|pk| nul(&pk.canonical()));
    table
        || pk
        || [
            &filter.user,
            &filter.operation,
            &filter.class,
            &filter.db_user,
            &filter.database,
        ]
        .into_iter()
        .any(|v| v.as_deref().is_some_and(nul))
}

/// Events matching `filter`, newest first, within `window` (the stretch
/// of the chain its time window lies in, `super::seq_hours`), and with
/// words, in `blocks` of the chain (`super::word_slices`) if given.
pub(super) fn filtered(filter: &Filter, window: Window, blocks: Option<&str>) -> Query {
    let limit = filter.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    filtered_with(filter, window, blocks, READ_COLUMNS, limit)
}

/// Whether `filter` searches SQL text for words (read a slice of the chain
/// at a time: `super::word_slices`).
pub(super) fn searches_words(filter: &Filter) -> bool {
    filter
        .search
        .as_deref()
        .is_some_and(|search| !search_words(search).is_empty())
}

/// `(facet, value, count)` of the newest [`FACET_BOUND`] events `filter`
/// matches at most: read once into a materialized table, grouped five ways.
pub(super) fn facets(filter: &Filter, window: Window) -> Query {
    let columns = "coalesce(app_user, db_user) as actor, \
         case when table_name is null then null \
              when schema_name is null then table_name \
              else schema_name || '.' || table_name end as tbl, \
         translate(operation, 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ') as op, source, failed";
    let mut q = filtered_with(filter, window, None, columns, Some(FACET_BOUND as i64));
    q.sql = format!(
        "with m as materialized ({}) \
         select 'user', actor, count(*) from m where actor is not null group by actor \
         union all select 'table', tbl, count(*) from m where tbl is not null group by tbl \
         union all select 'operation', op, count(*) from m where op is not null group by op \
         union all select 'source', source, count(*) from m group by source \
         union all select 'outcome', case when failed then 'failed' else 'ok' end, count(*) \
             from m group by 2",
        q.sql
    );
    q
}

/// The newest `cap` events `filter` matches, read once into a
/// materialized table and grouped by actor, table, operation and hour:
/// `(actor, tbl, op, hour, count, first, last)` rows.
pub(super) fn activity_counts(filter: &Filter, window: Window, cap: usize) -> Query {
    let columns = "coalesce(app_user, db_user) as actor, \
         case when table_name is null then null \
              when schema_name is null then table_name \
              else schema_name || '.' || table_name end as tbl, \
         translate(operation, 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ') as op, captured_at as at";
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let mut q = filtered_with(filter, window, None, columns, Some(cap));
    q.sql = format!(
        "with m as materialized ({}) \
         select actor, tbl, op, floor(extract(epoch from at) / 3600)::bigint as hour, \
                count(*), min(at), max(at) \
         from m group by actor, tbl, op, 4",
        q.sql
    );
    q
}

/// `select {columns}` of the events matching `filter`, newest first, at
/// most `limit`.
///
/// A table, a user or a database role (without a row or a search, which
/// their own indexes drive) is a key with an index in chain order (schema
/// 12, `(key, seq)`): its newest matches are one walk of that index newest
/// first, stopping at `limit`. A key found two ways (a table's own events
/// and the statements that touched it; a user as application user or as
/// database role) is one walk per way, each limited, the second excluding
/// what the first finds so no event comes twice; the newest `limit` of the
/// union are among them.
///
/// A time window also bounds every walk by the `seq` range of its hours
/// (`window`): capture time is not monotone in `seq`, so the time
/// condition alone cannot stop a walk newest first where the window
/// starts; the range can, and the index seeks to its end.
fn filtered_with(
    filter: &Filter,
    window: Window,
    blocks: Option<&str>,
    columns: &str,
    limit: Option<i64>,
) -> Query {
    let mut q = Query::new();
    let mut conditions = Vec::new();
    let keyed = filter.search.is_none()
        && filter.pk.is_none()
        && (filter.table.is_some() || filter.user.is_some() || filter.db_user.is_some());
    // The ways the newest matches are found, when a key drives.
    let mut walks: Vec<Walk> = Vec::new();
    // The cursor and the window's `seq` range: kept apart from the other
    // conditions so a walk still bounds by them (the index's `seq`).
    let mut bounds = Vec::new();
    // The window's capture times, likewise (the partitions).
    let mut times = Vec::new();
    if asks_for_nul(filter) || window == Window::Empty {
        // Not even sent: the server would refuse the parameter; or no
        // event was captured in the window.
        q.sql = format!("select {columns} from pgtrail.events where false");
        return q;
    }
    if let Some(table) = &filter.table {
        // The row index holds integer keys (`row_key`): one key for a row,
        // a range for a table; the text columns still decide.
        match &filter.pk {
            Some(pk) => {
                let key = row_key::row_key(&table.table, &pk.canonical());
                conditions.push(format!("row_key = {}", q.bind(key)));
                table_conditions(&mut q, &mut conditions, table);
            }
            None if keyed => {
                // Its own events by `(table_name, seq)`; the statements
                // that touched it by `events_objects`' `(name, seq)`: two
                // walks newest first.
                let mut own = Vec::new();
                table_conditions(&mut q, &mut own, table);
                let own = own.join(" and ");
                let name = q.bind(table.index_name());
                walks = vec![
                    Walk::ordered(own.clone()),
                    Walk {
                        condition: format!("({own}) is not true"),
                        touched: Some(name),
                    },
                ];
            }
            None => {
                // With a search (the full-text index drives): the table's
                // events by the row index, or a statement that touched it
                // by `events_objects`, read first into an array (an
                // InitPlan), which the `seq` index takes: a BitmapOr of
                // two scans.
                let (low, high) = row_key::table_key_range(&table.table);
                let mut by_target = vec![format!(
                    "row_key between {} and {}",
                    q.bind(low),
                    q.bind(high)
                )];
                table_conditions(&mut q, &mut by_target, table);
                let name = q.bind(table.index_name());
                conditions.push(format!(
                    "(({}) or seq = any(array(select seq from pgtrail.events_objects \
                     where name = {name})))",
                    by_target.join(" and ")
                ));
            }
        }
    }
    if let Some(pk) = &filter.pk {
        conditions.push(format!("pk = {}", q.bind(Json(pk.0.clone()))));
    }
    if let Some(user) = &filter.user {
        let p = q.bind(user.clone());
        if keyed && walks.is_empty() {
            walks = vec![
                Walk::ordered(format!("app_user = {p}")),
                Walk::ordered(format!("db_user = {p} and app_user is distinct from {p}")),
            ];
        } else {
            conditions.push(format!("(app_user = {p} or db_user = {p})"));
        }
    }
    if let Some(role) = &filter.db_user {
        let role = format!("db_user = {}", q.bind(role.clone()));
        if keyed && walks.is_empty() {
            walks = vec![Walk::ordered(role)];
        } else {
            conditions.push(role);
        }
    }
    if let Some(database) = &filter.database {
        // Postgres text holds no NUL: no stored database can be it.
        conditions.push(if database.contains('\0') {
            "false".into()
        } else {
            format!("{} = {}", body_field("database"), q.bind(database.clone()))
        });
    }
    if let Some(addr) = &filter.client_addr {
        // Bound as text and cast by the server: the block was parsed
        // (and its host bits cleared) by `AddrFilter::parse`. The column
        // (schema 17); the body of an event stored before it, whose
        // column is NULL (`pgtrail.column_starts`).
        let block = q.bind(addr.to_string());
        conditions.push(format!(
            "(client_addr <<= {block}::text::inet \
             or (client_addr is null \
                 and seq < {start} \
                 and pgtrail.client_inet({}) <<= {block}::text::inet))",
            body_field("client_addr"),
            start = client_addr_start!(),
        ));
    }
    if let Some(before) = filter.before_seq {
        bounds.push(format!("seq < {}", q.bind(before)));
    }
    // No stored role holds NUL: such a role excludes nothing.
    if let Some(role) = filter.not_user.as_ref().filter(|r| !r.contains('\0')) {
        // The database role only: a claimed application user never hides
        // an event.
        conditions.push(format!("db_user is distinct from {}", q.bind(role.clone())));
    }
    if let Some(class) = &filter.class {
        // Read from the body, the bytes that were hashed: no copy of the
        // class can disagree with the event.
        conditions.push(if class.contains('\0') {
            "false".into()
        } else {
            format!(
                "upper({}) = upper({})",
                body_field("class"),
                q.bind(class.clone())
            )
        });
    }
    if let Some(operation) = &filter.operation {
        conditions.push(format!(
            "upper(operation) = upper({})",
            q.bind(operation.clone())
        ));
    }
    if let Some(kind) = filter.kind {
        conditions.push(format!("kind = {}", q.bind(kind.as_str())));
    }
    if let Some(source) = filter.source {
        conditions.push(format!("source = {}", q.bind(source.as_str())));
    }
    if let Some(since) = filter.since {
        times.push(format!("captured_at >= {}", q.bind(since)));
    }
    if let Some(until) = filter.until {
        times.push(format!("captured_at < {}", q.bind(until)));
    }
    if let Window::Seqs(first, last) = window {
        bounds.push(format!("seq >= {}", q.bind(first)));
        bounds.push(format!("seq <= {}", q.bind(last)));
    }
    if let Some(pid) = filter.backend_pid {
        conditions.push(format!("backend_pid = {}", q.bind(pid)));
    }
    if let Some(xid) = filter.xid {
        conditions.push(format!("xid = {}", q.bind(xid)));
    }
    if filter.failed {
        // Event::failed, computed when the event was written.
        conditions.push("failed".into());
    }
    if let Some(search) = &filter.search {
        conditions.push("sql is not null".into());
        let words = search_words(search);
        // No word left (only punctuation): every event with SQL contains
        // all of the zero words, so the condition above is the whole filter.
        if !words.is_empty() {
            // The server cuts the search into words as it cut the SQL
            // (schema 16, `pgtrail.sql_words`), every word required; no
            // character of it is read as query syntax. The blocks of a
            // slice are required too, so the index fetches only matches
            // inside it.
            let p = q.bind(words.join(" "));
            let query = match blocks {
                Some(blocks) => format!(
                    "(pgtrail.sql_words_query({p}) && {}::text::tsquery)",
                    q.bind(blocks.to_string())
                ),
                None => format!("pgtrail.sql_words_query({p})"),
            };
            conditions.push(format!("pgtrail.sql_index_words(sql, seq) @@ {query}"));
        }
    }
    let limit = match limit {
        Some(limit) => format!(" limit {}", q.bind(limit)),
        None => String::new(),
    };
    if walks.is_empty() {
        if matches!(window, Window::Seqs(..)) && only_the_chain(filter) {
            // A time window and no index but the chain's: the window's `seq`
            // range is the walk. Every other condition, the capture times
            // included, goes in `coalesce(…, false)`, as on a keyed walk, so
            // the planner walks the range newest first and stops at the
            // limit instead of reading and sorting the whole window through
            // the time index (which, no event matching, both plans read
            // alike). Outside, the time condition would count the window a
            // second time in the planner's estimate (it does not know that
            // the range and the times select the same events), and make a
            // walk look slow.
            conditions.append(&mut times);
            conditions = vec![format!("coalesce({}, false)", conditions.join(" and "))];
        }
        conditions.extend(times);
        conditions.extend(bounds);
        q.sql = format!(
            "select {columns} from pgtrail.events{} order by seq desc{limit}",
            where_clause(&conditions)
        );
        return q;
    }
    let branches: Vec<String> = walks
        .iter()
        .map(|walk| walk.select(&bounds, &times, &conditions))
        .collect();
    q.sql = match branches.as_slice() {
        [branch] => format!("select {columns} {branch} order by seq desc{limit}"),
        _ => format!(
            "select {columns} from ({}) as events order by seq desc{limit}",
            branches
                .iter()
                .map(|branch| format!("(select events.* {branch} order by seq desc{limit})"))
                .collect::<Vec<_>>()
                .join(" union all ")
        ),
    };
    q
}

/// A top-level text field of an event's body, as SQL. Postgres's JSON
/// refuses a body with a `\u0000` string anywhere ("unsupported Unicode
/// escape sequence"): read as is, one such event made every search with
/// this condition fail. It is read with that escape replaced (`\ufffd`),
/// which changes no field a search compares (Postgres text holds no NUL,
/// so no filter value can be one).
fn body_field(key: &'static str) -> String {
    format!("(replace(body, '\\u0000', '\\ufffd')::json ->> '{key}')")
}

/// Whether no index but the chain's own (`seq`) serves `filter`: no key, no
/// row, no words, no backend or transaction.
fn only_the_chain(filter: &Filter) -> bool {
    filter.search.is_none()
        && filter.table.is_none()
        && filter.pk.is_none()
        && filter.user.is_none()
        && filter.db_user.is_none()
        && filter.backend_pid.is_none()
        && filter.xid.is_none()
}

/// One way a keyed search finds its matches: a walk newest first of an
/// index `(key, seq)`, in chain order.
struct Walk {
    condition: String,
    /// The walk is of `events_objects` for the name bound here (the
    /// statements that touched a table), each joined to its event by
    /// `seq`; else of an index of the events by `condition`.
    touched: Option<String>,
}

impl Walk {
    fn ordered(condition: String) -> Self {
        Walk {
            condition,
            touched: None,
        }
    }

    /// `from … where …` of this way, bounded by `bounds` (on `seq`) and
    /// `times`. The other conditions are wrapped in `coalesce(…, false)`
    /// (the same rows): the planner then judges them as matching half the
    /// key's events, not the 0.5% it guesses for an expression it has no
    /// statistics of, and walks the index newest first, stopping at the
    /// limit, instead of reading every event of the key to sort them: the
    /// role SQLite's `+column` plays (`bench/serve/pg_keyed_forms.py`).
    fn select(&self, bounds: &[String], times: &[String], others: &[String]) -> String {
        let mut all = vec![self.condition.clone()];
        all.extend(bounds.iter().cloned());
        all.extend(times.iter().cloned());
        if !others.is_empty() {
            all.push(format!("coalesce({}, false)", others.join(" and ")));
        }
        match &self.touched {
            None => format!("from pgtrail.events{}", where_clause(&all)),
            // The `seq` bounds go inside too: Postgres carries an equality
            // across a join, not a range, and the walk must seek to them.
            Some(name) => {
                let mut touched = vec![format!("name = {name}")];
                touched.extend(bounds.iter().cloned());
                format!(
                    "from (select seq as touched_seq from pgtrail.events_objects{}) as touched \
                     join pgtrail.events on seq = touched_seq{}",
                    where_clause(&touched),
                    where_clause(&all)
                )
            }
        }
    }
}

/// ` where a and b ...`, or nothing without conditions.
fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" where {}", conditions.join(" and "))
    }
}

/// The events of one row plus the TRUNCATEs of its table, oldest first. Two
/// index lookups (by key, and the small TRUNCATE index) rather than one OR,
/// which would read every event of the table.
pub(super) fn row_events(row: &RowRef) -> Query {
    let mut q = Query::new();
    let mut table = Vec::new();
    table_conditions(&mut q, &mut table, &row.table);
    let table = table.join(" and ");
    let key = q.bind(row_key::row_key(&row.table.table, &row.pk.canonical()));
    let pk = q.bind(Json(row.pk.0.clone()));
    q.sql = format!(
        "select {READ_COLUMNS} from pgtrail.events where row_key = {key} and {table} and pk = {pk} \
         union all \
         select {READ_COLUMNS} from pgtrail.events where {table} and upper(operation) = 'TRUNCATE' \
             and pk is distinct from {pk} \
         order by seq"
    );
    q
}

/// Sealed events after `$1`, ascending, at most `$2`.
pub(super) fn scan() -> String {
    format!("select {READ_COLUMNS} from pgtrail.events where seq > $1 order by seq limit $2")
}

/// Like [`scan`], with every column copied from the body, for verify.
pub(super) fn scan_stored() -> String {
    format!("select {VERIFY_COLUMNS} from pgtrail.events where seq > $1 order by seq limit $2")
}

fn table_conditions(q: &mut Query, conditions: &mut Vec<String>, table: &TableName) {
    conditions.push(format!("table_name = {}", q.bind(table.table.clone())));
    if let Some(schema) = &table.schema {
        conditions.push(format!("schema_name = {}", q.bind(schema.clone())));
    }
}
