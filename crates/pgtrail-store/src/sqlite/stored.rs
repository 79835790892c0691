//! Reading rows as stored, for `verify`: each event with every column that
//! readers filter on compared against what `encode` makes of the event, and
//! the full-text index compared against the events' SQL.
//!
//! The full-text table is contentless, so its rows cannot be read back per
//! event. Instead both sides are reduced to one digest per event: the index
//! the events' SQL should give, built a page of the walk at a time (from
//! the SQL the walk decoded, so no body is read twice) in a temporary FTS5
//! table with the same tokenizer, and after the walk the index as stored,
//! read once through an `fts5vocab` table (every word with its event and
//! position). The digest of an event is the sum of a keyed hash of each
//! (word, position): the key is random per opened store, so whoever edits
//! the file cannot make two different word lists agree. Temporary tables
//! live in the connection's own temporary database, so the store file is
//! never written.

use std::hash::{BuildHasher, RandomState};

use pgtrail_core::Event;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::encode::{columns, Columns};
use super::keys::AddrKey;
use crate::{ExpectedIndexes, Mismatch, Result, StoreError, StoredEvent};

/// The columns read, in this order.
const SELECT: &str = "select seq, body, prev_hash, hash, id, captured_at, source, kind, \
     schema_name, table_name, pk, app_user, db_user, operation, failed, row_key, \
     app_user_key, db_user_key, client_addr, database, backend_pid, xid \
     from events where seq > ?1 order by seq limit ?2";

/// [`SELECT`] on a store verified at a version before 15 (verify never
/// migrates), which has no `client_addr`, `database`, `backend_pid` and
/// `xid` columns: nothing there can mislead a search, so the other
/// columns are all there is to check.
const SELECT_BEFORE_15: &str = "select seq, body, prev_hash, hash, id, captured_at, source, kind, \
     schema_name, table_name, pk, app_user, db_user, operation, failed, row_key, \
     app_user_key, db_user_key \
     from events where seq > ?1 order by seq limit ?2";

/// The columns schema 15 added, last in [`expected_values`].
const COLUMNS_OF_15: usize = 4;

/// The tokenizer of `events_fts` (schema version 1), for the expected index.
const TOKENIZER: &str = "unicode61 tokenchars '_'";

/// Room reserved for a page of events: a page grown one event at a time
/// copied itself over and over.
const PAGE_CAPACITY: usize = 10_000;

/// Sealed events with `seq > after`, as stored, each compared with its columns.
pub fn scan(
    conn: &Connection,
    after: i64,
    limit: usize,
    location: &str,
) -> Result<Vec<StoredEvent>> {
    let db = |e| StoreError::backend(location, "reading events to verify", e);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let has_columns_of_15: bool = conn
        .query_row(
            "select count(*) > 0 from pragma_table_info('events') where name = 'client_addr'",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let (select, checked) = if has_columns_of_15 {
        (SELECT, EXPECTED_COLUMNS)
    } else {
        (SELECT_BEFORE_15, EXPECTED_COLUMNS - COLUMNS_OF_15)
    };
    let mut statement = conn.prepare_cached(select).map_err(db)?;
    let mut rows = statement.query((after, limit)).map_err(db)?;
    let mut out = Vec::with_capacity(usize::try_from(limit).unwrap_or(0).min(PAGE_CAPACITY));
    while let Some(row) = rows.next().map_err(db)? {
        let seq: i64 = row.get(0).map_err(db)?;
        let body = match row.get_ref(1).map_err(db)? {
            ValueRef::Text(bytes) => String::from_utf8(bytes.to_vec()).ok(),
            _ => None,
        };
        let blob_hex = |i: usize| -> Result<String> {
            Ok(match row.get_ref(i).map_err(db)? {
                ValueRef::Blob(bytes) => pgtrail_core::hex::encode(bytes),
                other => format!("{other:?}"),
            })
        };
        let (prev_hash, hash) = (blob_hex(2)?, blob_hex(3)?);
        let event = match &body {
            None => Err("its body is not UTF-8 text".to_string()),
            Some(text) => serde_json::from_str::<Event>(text)
                .map_err(|e| format!("its body is not an event: {e}")),
        };
        let event = event.map(|mut event| {
            event.seq = Some(seq);
            event.prev_hash = Some(prev_hash);
            event.hash = Some(hash);
            event
        });
        let mut mismatches = Vec::new();
        if let Ok(event) = &event {
            let expected = columns(event);
            let values = expected_values(&expected);
            for (i, (column, want)) in values.into_iter().take(checked).enumerate() {
                let found = row.get_ref(i + 4).map_err(db)?;
                if found != want {
                    mismatches.push(Mismatch {
                        column: column.to_string(),
                        found: show(column, found),
                        expected: show(column, want),
                    });
                }
            }
        }
        out.push(StoredEvent {
            seq,
            event,
            body,
            mismatches,
        });
    }
    Ok(out)
}

/// How many columns [`expected_values`] gives.
const EXPECTED_COLUMNS: usize = 18;

/// The stored columns from `id` on, as `encode` makes them, in [`SELECT`] order.
fn expected_values<'a>(c: &'a Columns<'a>) -> [(&'static str, ValueRef<'a>); EXPECTED_COLUMNS] {
    let text = |v: Option<&'a str>| v.map_or(ValueRef::Null, |s| ValueRef::Text(s.as_bytes()));
    let int = |v: Option<i64>| v.map_or(ValueRef::Null, ValueRef::Integer);
    [
        ("id", ValueRef::Blob(&c.id)),
        ("captured_at", ValueRef::Integer(c.captured_at)),
        ("source", ValueRef::Text(c.source.as_bytes())),
        ("kind", ValueRef::Text(c.kind.as_bytes())),
        ("schema_name", text(c.schema)),
        ("table_name", text(c.table)),
        ("pk", text(c.pk.as_deref())),
        ("app_user", text(c.app_user)),
        ("db_user", text(c.db_user)),
        ("operation", text(c.operation.as_deref())),
        ("failed", ValueRef::Integer(i64::from(c.failed))),
        ("row_key", int(c.row_key)),
        ("app_user_key", int(c.app_user_key)),
        ("db_user_key", int(c.db_user_key)),
        (
            "client_addr",
            c.client_addr
                .as_ref()
                .map_or(ValueRef::Null, |k| ValueRef::Blob(k.as_bytes())),
        ),
        ("database", text(c.database)),
        ("backend_pid", int(c.backend_pid.map(i64::from))),
        ("xid", int(c.xid)),
    ]
}

/// A stored value of `column` for a message: text quoted, blobs in hex,
/// an address key as the address.
fn show(column: &str, value: ValueRef<'_>) -> String {
    if let (ValueRef::Blob(b), "client_addr") = (value, column) {
        if let Some(key) = AddrKey::from_bytes(b) {
            return format!("{} (x'{}')", key.addr(), pgtrail_core::hex::encode(b));
        }
    }
    match value {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => format!("'{}'", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("x'{}'", pgtrail_core::hex::encode(b)),
    }
}

/// What `events_fts` should hold for one page of the walk: the SQL of each
/// event as the walk decoded it, and the events whose body did not decode,
/// whose SQL is read from the body as SQLite reads JSON.
pub struct PageSql {
    sql: Vec<(i64, String)>,
    undecoded: Vec<i64>,
}

impl PageSql {
    pub fn of(page: &[StoredEvent]) -> Self {
        let mut sql = Vec::new();
        let mut undecoded = Vec::new();
        for stored in page {
            match &stored.event {
                Ok(event) => {
                    if let Some(text) = &event.sql {
                        sql.push((stored.seq, text.clone()));
                    }
                }
                Err(_) => undecoded.push(stored.seq),
            }
        }
        PageSql { sql, undecoded }
    }

    pub fn is_empty(&self) -> bool {
        self.sql.is_empty() && self.undecoded.is_empty()
    }
}

/// The keyed digest of one indexed word at its position.
fn word_digest(key: &RandomState, term: ValueRef<'_>, offset: i64) -> u64 {
    key.hash_one((term.as_bytes().ok(), offset))
}

/// Runs `f` with temporary tables allowed on `conn` (a pooled reader
/// refuses writes even to its own temporary tables), then drops `tables`.
fn with_temp_tables<T>(
    conn: &Connection,
    tables: &[&str],
    location: &str,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let query_only: bool = conn
        .pragma_query_value(None, "query_only", |r| r.get(0))
        .map_err(db("reading the connection's settings"))?;
    conn.pragma_update(None, "query_only", false)
        .map_err(db("allowing temporary tables"))?;
    let result = f();
    let dropped = tables.iter().try_for_each(|table| {
        conn.execute_batch(&format!("drop table if exists temp.{table}"))
            .map_err(db("dropping temporary tables"))
    });
    conn.pragma_update(None, "query_only", query_only)
        .map_err(db("restoring the connection's settings"))?;
    let value = result?;
    dropped?;
    Ok(value)
}

/// The digests of the words `events_fts` should hold for one page (see the
/// module docs), keyed with `key`: `(seq, digest)` of each event with words.
pub fn expected_fts(
    conn: &Connection,
    page: &PageSql,
    key: &RandomState,
    location: &str,
) -> Result<ExpectedIndexes> {
    if page.is_empty() {
        return Ok(ExpectedIndexes::default());
    }
    let tables = ["pgtrail_verify_fts_expected", "pgtrail_verify_fts"];
    with_temp_tables(conn, &tables, location, || {
        index_page(conn, page, key, location)
    })
}

fn index_page(
    conn: &Connection,
    page: &PageSql,
    key: &RandomState,
    location: &str,
) -> Result<ExpectedIndexes> {
    let db = |context: &'static str| move |e| StoreError::backend(location, context, e);
    let context = "indexing the events' SQL";
    conn.execute_batch(&format!(
        "drop table if exists temp.pgtrail_verify_fts;
         create virtual table temp.pgtrail_verify_fts
             using fts5 (sql, content = '', tokenize = \"{TOKENIZER}\");"
    ))
    .map_err(db(context))?;
    {
        let mut insert = conn
            .prepare("insert into temp.pgtrail_verify_fts (rowid, sql) values (?1, ?2)")
            .map_err(db(context))?;
        for (seq, sql) in &page.sql {
            insert.execute((seq, sql)).map_err(db(context))?;
        }
    }
    if !page.undecoded.is_empty() {
        // A body that is not an event: its SQL as SQLite's JSON functions
        // read it, as readers of the file would. They stop at 1,000 levels;
        // deeper, core's reader takes the statement.
        conn.create_scalar_function(
            "pgtrail_deep_sql",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8
                | rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
            |ctx| {
                let body = ctx.get::<String>(0)?;
                Ok(match pgtrail_core::json::parse(&body) {
                    Ok(serde_json::Value::Object(event)) => {
                        event.get("sql").and_then(|s| s.as_str()).map(str::to_owned)
                    }
                    _ => None,
                })
            },
        )
        .map_err(db(context))?;
        let mut insert = conn
            .prepare(
                "insert into temp.pgtrail_verify_fts (rowid, sql)
                     select seq, sql from (
                         select seq, case when json_valid(body) then json_extract(body, '$.sql')
                                          else pgtrail_deep_sql(body) end as sql
                         from main.events where seq = ?1 and instr(body, '\"sql\":') > 0)
                     where sql is not null",
            )
            .map_err(db(context))?;
        for seq in &page.undecoded {
            insert.execute([seq]).map_err(db(context))?;
        }
    }
    // Words come in term order: each event's digest is summed by seq.
    let mut by_seq = std::collections::HashMap::with_capacity(page.sql.len());
    for_each_word(
        conn,
        "pgtrail_verify_fts_expected",
        "temp, pgtrail_verify_fts",
        key,
        location,
        |doc, digest| {
            let slot: &mut u64 = by_seq.entry(doc).or_default();
            *slot = slot.wrapping_add(digest);
        },
    )?;
    let mut digests: Vec<(i64, u64)> = by_seq.into_iter().collect();
    digests.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(ExpectedIndexes {
        words: digests,
        ..ExpectedIndexes::default()
    })
}

/// Reads a full-text index word by word through the `fts5vocab` table
/// `vocab` made over `index` ("schema, table"), handing each word's
/// document (the event's seq) and digest to `each`.
fn for_each_word(
    conn: &Connection,
    vocab: &str,
    index: &str,
    key: &RandomState,
    location: &str,
    mut each: impl FnMut(i64, u64),
) -> Result<()> {
    let db = |e: rusqlite::Error| StoreError::backend(location, "reading the full-text index", e);
    conn.execute_batch(&format!(
        "drop table if exists temp.{vocab};
         create virtual table temp.{vocab} using fts5vocab({index}, instance);"
    ))
    .map_err(db)?;
    let mut words = conn
        .prepare(&format!("select term, doc, offset from temp.{vocab}"))
        .map_err(db)?;
    let mut rows = words.query([]).map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        let doc: i64 = row.get(1).map_err(db)?;
        let term = row.get_ref(0).map_err(db)?;
        let offset: i64 = row.get(2).map_err(db)?;
        each(doc, word_digest(key, term, offset));
    }
    Ok(())
}

/// Compares `events_fts` with what the walk expected of events
/// `first..=last`: one mismatch per event whose indexed words differ, and
/// per indexed event outside the chain. See the module docs.
pub fn check_fts(
    conn: &Connection,
    first: i64,
    last: i64,
    expected: ExpectedIndexes,
    key: &RandomState,
    location: &str,
) -> Result<Vec<(i64, Mismatch)>> {
    with_temp_tables(conn, &["pgtrail_verify_fts_words"], location, || {
        compare_fts(conn, first, last, expected, key, location)
    })
}

fn compare_fts(
    conn: &Connection,
    first: i64,
    last: i64,
    expected: ExpectedIndexes,
    key: &RandomState,
    location: &str,
) -> Result<Vec<(i64, Mismatch)>> {
    let mut mismatches = Vec::new();
    let span = usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(0);
    let mut stored = vec![0u64; span];
    let mut outside: Option<i64> = None;
    // A walk that resumed after stored events (incremental verify) leaves
    // their words to the run that checked them.
    let resumed = walk_resumed(conn, first)
        .map_err(|e| StoreError::backend(location, "reading the chain's start", e))?;
    for_each_word(
        conn,
        "pgtrail_verify_fts_words",
        "main, events_fts",
        key,
        location,
        |doc, digest| {
            let slot = doc
                .checked_sub(first)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| stored.get_mut(i));
            match slot {
                Some(slot) => *slot = slot.wrapping_add(digest),
                None if resumed && doc < first => {}
                None if outside != Some(doc) => {
                    outside = Some(doc);
                    mismatches.push((
                        doc,
                        Mismatch {
                            column: "events_fts".into(),
                            found: format!("words indexed for event {doc}"),
                            expected: "no such event in the chain".into(),
                        },
                    ));
                }
                None => {}
            }
        },
    )?;

    let mut want_by_seq = expected.words;
    // Pages come in order; sorted again in case they did not.
    want_by_seq.sort_by_key(|(seq, _)| *seq);
    let mut want_by_seq = want_by_seq
        .into_iter()
        .filter(|(seq, _)| (first..=last).contains(seq))
        .peekable();
    for (i, have) in stored.iter().enumerate() {
        let seq = first + i as i64;
        let mut want = 0u64;
        while let Some((_, digest)) = want_by_seq.next_if(|(s, _)| *s == seq) {
            want = want.wrapping_add(digest);
        }
        if *have != want {
            let found = if *have == 0 {
                "no words"
            } else {
                "other words"
            };
            let expected = if want == 0 {
                "no words (the event has no SQL)"
            } else {
                "the words of its SQL"
            };
            mismatches.push((
                seq,
                Mismatch {
                    column: "events_fts".into(),
                    found: found.into(),
                    expected: expected.into(),
                },
            ));
        }
    }
    mismatches.sort_by_key(|(seq, _)| *seq);
    Ok(mismatches)
}

/// The keyed digest of the names `events_objects` should hold for each
/// statement of the page (`encode::columns`, as the append wrote them):
/// `(seq, digest)`, only for events with names.
pub fn expected_objects(page: &[StoredEvent], key: &RandomState) -> Vec<(i64, u64)> {
    page.iter()
        .filter_map(|stored| {
            let event = stored.event.as_ref().ok()?;
            let tables = columns(event).objects;
            (!tables.is_empty()).then(|| {
                let digest = tables.iter().fold(0u64, |sum, (schema, table)| {
                    sum.wrapping_add(key.hash_one((schema.as_str(), table.as_str())))
                });
                (stored.seq, digest)
            })
        })
        .collect()
}

/// Compares `events_objects` with what the walk expected of events
/// `first..=last`: one mismatch per event whose names differ (a name
/// removed hides the statement from `--table`, one added shows it where it
/// never was), and per name of an event outside the chain. One pass over
/// the whole index, in its own order.
/// The facet counts by the hour the walked `page` should add to
/// `facet_hours`, from the events it decoded (one that does not decode
/// counts nowhere: verify reports it anyway).
pub fn expected_facets(page: &[StoredEvent]) -> super::facets::Counts {
    let mut counts = super::facets::Counts::new();
    for stored in page {
        if let Ok(event) = &stored.event {
            super::facets::add(&mut counts, &columns(event), 1);
        }
    }
    counts
}

/// Whether events before `first` are stored: a verify walk that starts at
/// `first` then resumed after them (incremental verify), and leaves what
/// concerns them to the run that checked them.
pub fn walk_resumed(conn: &Connection, first: i64) -> rusqlite::Result<bool> {
    conn.query_row(
        "select exists (select 1 from events where seq < ?1)",
        [first],
        |r| r.get(0),
    )
}

/// The `seq` range of each hour the events of one page were captured in,
/// as `seq_hours` should hold it.
pub fn expected_seq_hours(page: &[StoredEvent]) -> crate::seq_hours::Ranges {
    let mut ranges = crate::seq_hours::Ranges::default();
    for stored in page {
        if let Ok(event) = &stored.event {
            ranges.add(stored.seq, event.captured_at.timestamp_micros());
        }
    }
    ranges
}

pub fn check_objects(
    conn: &Connection,
    first: i64,
    last: i64,
    mut expected: Vec<(i64, u64)>,
    key: &RandomState,
    location: &str,
) -> Result<Vec<(i64, Mismatch)>> {
    let db = |e| StoreError::backend(location, "reading the index of statements' objects", e);
    // A store verified at an older version (before 8) has no such index:
    // nothing there can mislead a reader, and `pgtrail log` builds it.
    if !super::schema::has_table(conn, "events_objects").map_err(db)? {
        return Ok(Vec::new());
    }
    let mut stored: std::collections::HashMap<i64, u64> = std::collections::HashMap::new();
    let mut mismatches = Vec::new();
    let mut outside = std::collections::BTreeSet::new();
    // A walk that resumed after stored events (incremental verify) leaves
    // their names to the run that checked them.
    let resumed = walk_resumed(conn, first).map_err(db)?;
    {
        let mut names = conn
            .prepare("select table_name, schema_name, seq from events_objects")
            .map_err(db)?;
        let mut rows = names.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            let seq: i64 = row.get(2).map_err(db)?;
            if !(first..=last).contains(&seq) {
                if !(resumed && seq < first) {
                    outside.insert(seq);
                }
                continue;
            }
            let text = |i: usize| -> Result<String> {
                Ok(match row.get_ref(i).map_err(db)? {
                    ValueRef::Text(name) => String::from_utf8_lossy(name).into_owned(),
                    other => show("", other),
                })
            };
            let (table, schema) = (text(0)?, text(1)?);
            let digest = key.hash_one((schema.as_str(), table.as_str()));
            let slot = stored.entry(seq).or_default();
            *slot = slot.wrapping_add(digest);
        }
    }
    for seq in outside {
        mismatches.push((
            seq,
            Mismatch {
                column: "events_objects".into(),
                found: format!("names indexed for event {seq}"),
                expected: "no such event in the chain".into(),
            },
        ));
    }
    expected.retain(|(seq, _)| (first..=last).contains(seq));
    for (seq, want) in expected {
        let have = stored.remove(&seq).unwrap_or(0);
        if have != want {
            mismatches.push((
                seq,
                Mismatch {
                    column: "events_objects".into(),
                    found: if have == 0 { "no names" } else { "other names" }.into(),
                    expected: "the relations the statement touched".into(),
                },
            ));
        }
    }
    for (seq, _) in stored {
        mismatches.push((
            seq,
            Mismatch {
                column: "events_objects".into(),
                found: "names indexed".into(),
                expected: "none (the event touched no relation)".into(),
            },
        ));
    }
    mismatches.sort_by_key(|(seq, _)| *seq);
    Ok(mismatches)
}
