//! The `pgtrail` schema and its versioned migrations.
//!
//! Each migration runs in its own transaction under a transaction-level
//! advisory lock, and records itself in `pgtrail.schema_migrations` in that
//! same transaction: two processes opening one store at once serialize on the
//! lock, and the second finds the work done. Before migrating, the state found
//! is checked: a store from a newer pgtrail, a half-migrated one, or a schema
//! `pgtrail` that holds someone else's tables is refused, never "repaired".
//!
//! Migrations are append-only: once released, a migration's SQL never
//! changes; a later change is a new migration.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::event_row::client_addr_start;
use super::facets::facet_rows;
use super::seq_hours::seq_hour_rows;
use crate::StoreError;

/// Key of the advisory lock that serializes migrations ("pgtrail" in ASCII).
const MIGRATION_LOCK: i64 = 0x7067_7472_6169_6c00;

/// One schema change, applied at most once per store.
pub(super) struct Migration {
    /// Position in the sequence, from 1, without gaps.
    pub version: i64,
    /// What it does, recorded beside the version.
    pub name: &'static str,
    /// The SQL, run as one batch inside the migration's transaction.
    pub sql: &'static str,
    /// Tables it creates: checked to exist once it is recorded as applied.
    pub creates: &'static [&'static str],
    /// Work on the stored rows that SQL cannot do, run after `sql`.
    pub fill: Option<Fill>,
    /// SQL run after `fill`, in the same transaction.
    pub sql_after: &'static str,
}

/// Rewrites of stored rows done in Rust during a migration.
#[derive(Clone, Copy)]
pub(super) enum Fill {
    /// Migration 4: each wide row's canonical body and `failed`.
    Bodies,
    /// Migration 5: each row's `row_key`.
    RowKeys,
    /// Migration 6: each statement's `object_names`.
    ObjectNames,
    /// Migration 8: each event's `backend_pid`.
    BackendPids,
    /// Migration 9: the Merkle tree's nodes over the stored events.
    TreeNodes,
    /// Migration 15: the relations each stored statement touched.
    EventsObjects,
    /// Migration 17: the client address of the newest stored events.
    ClientAddrs,
}

/// The full-text vector of an event's SQL up to schema 15, kept for
/// migration 1's index (which migration 16 replaces): Postgres's parser
/// split words at `_`, so `customer_id` was two common words.
macro_rules! search_vector {
    () => {
        "to_tsvector('simple', regexp_replace(left(sql, 200000), '[^[:alnum:]_]+', ' ', 'g'))"
    };
}

/// Migration 1: the events table, the chain head and the checkpoints.
const V1_EVENTS: &str = concat!(
    r#"
create schema if not exists pgtrail;

create table pgtrail.schema_migrations (
    version bigint primary key,
    name text not null,
    applied_at timestamptz not null default now()
);

-- One row per sealed event. Column names follow the Event's JSON fields
-- (schema -> schema_name, table -> table_name); other writers (the trigger
-- capture path) rely on them. Unset optional fields are NULL; empty arrays
-- may be NULL or '{}'. old/new/context/params are json, not jsonb, so the
-- exact text (number spelling, key order) survives and the hash recomputes.
create table pgtrail.events (
    -- identity
    id uuid not null,                  -- UUIDv7 of the event
    seq bigint not null,               -- chain position, from 1, gap-free
    source text not null,              -- trigger | cdc | proxy
    kind text not null,                -- row_change | ddl | statement | session | snapshot
    captured_at timestamptz not null,  -- partition key (monthly)
    -- actor
    db_user text,
    app_user text,
    client_addr text,
    client_port int,
    application_name text,
    backend_pid int,
    session_id text,
    context json,                      -- object supplied by the application
    -- target
    database text,
    schema_name text,
    table_name text,
    operation text,                    -- INSERT/UPDATE/DELETE/TRUNCATE or a command tag
    objects text[],                    -- relations a statement touched, qualified
    -- row change
    pk jsonb,                          -- key columns -> values as strings
    old json,
    new json,
    changed text[],
    partial text[],
    -- statement
    sql text,
    params json,                       -- array
    command_tag text,
    rows bigint,
    duration_us bigint,
    sqlstate text,
    error text,
    -- transaction
    xid bigint,
    lsn text,
    committed_at timestamptz,
    tx_seq bigint,
    -- seal
    prev_hash text not null,
    hash text not null,
    primary key (id, captured_at)
) partition by range (captured_at);

-- Rows of months without their own partition land here, so a write never
-- fails for lack of a partition; prepare_until moves them out.
create table pgtrail.events_default partition of pgtrail.events default;

-- The primary key (id, captured_at) also serves lookups by id.
create index events_seq_idx on pgtrail.events (seq);
create index events_row_idx on pgtrail.events (table_name, pk);
create index events_truncate_idx on pgtrail.events (table_name)
    where upper(operation) = 'TRUNCATE';
-- BRIN: captured_at grows with seq, so block ranges narrow time filters at a
-- fraction of a btree's cost per append.
create index events_captured_at_idx on pgtrail.events using brin (captured_at);
create index events_app_user_idx on pgtrail.events (app_user) where app_user is not null;
create index events_db_user_idx on pgtrail.events (db_user) where db_user is not null;
create index events_sql_search_idx on pgtrail.events using gin ("#,
    search_vector!(),
    r#")
    -- A large pending list: most GIN work happens in (auto)vacuum, not in appends.
    with (gin_pending_list_limit = 32768) where sql is not null;

-- The newest sealed event. Appenders lock this one row FOR UPDATE, which
-- serializes them across processes; seq 0 means an empty chain.
create table pgtrail.chain_head (
    singleton boolean primary key default true check (singleton),
    seq bigint not null,
    hash text not null
);
insert into pgtrail.chain_head (seq, hash)
    values (0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Head and prune checkpoints, oldest first by id.
create table pgtrail.checkpoints (
    id bigint generated always as identity primary key,
    kind text not null,                -- head | prune
    seq bigint not null,
    hash text not null,
    count bigint not null,
    created_at timestamptz not null,
    public_key text,                   -- hex Ed25519 key, when signed
    signature text                     -- hex signature, when signed
);
"#
);

/// Migration 2: checkpoints become signed notes over a Merkle tree of the
/// events (see `checkpoint`): the note and the tree's frontier at its size
/// sit beside the old columns. The store gets a random id, named in every
/// note's origin, so a checkpoint of one store cannot pass for another's.
const V2_NOTES: &str = r#"
create table pgtrail.store_identity (
    singleton boolean primary key default true check (singleton),
    id text not null
);
insert into pgtrail.store_identity (id) values (replace(gen_random_uuid()::text, '-', ''));
alter table pgtrail.checkpoints add column note text;      -- C2SP signed note
alter table pgtrail.checkpoints add column frontier text;  -- Merkle frontier at seq, hex
"#;

/// Migration 3: the event's `provenance` (which actor fields the server
/// vouches for, which the application claims). Events stored before have
/// none, and their body is unchanged: the column is NULL.
const V3_PROVENANCE: &str = "alter table pgtrail.events add column provenance json;";

/// Migration 4, first part: the lean table's new columns. Then each stored
/// event's canonical body is written from its wide row ([`Fill::Bodies`]),
/// and [`V4_LEAN_AFTER`] drops the columns the body made redundant.
///
/// The event's canonical body (the bytes that were hashed, without the seal)
/// is kept once, in `body`; beside it only what indexes and filters need:
/// `id`, `seq`, `captured_at` (partition key), `source`, `kind`, the users,
/// the target (`schema_name`, `table_name`, `operation`, `pk`), `sql` (the
/// full-text index's input, read without parsing the body), `xid` (the
/// trigger path finds a transaction's events by it), `failed`, and the seal.
/// Row images, context, params and the rest were columns of their own,
/// written a second time by the store from the event beside the body the
/// hash was computed from; now they are read from the body.
///
/// Every row is rewritten once, in one transaction: on a large store this
/// takes a while and leaves the old row versions for VACUUM.
const V4_LEAN_BEFORE: &str =
    "alter table pgtrail.events add column body json, add column failed boolean;";

/// Migration 4, last part (after the bodies are written).
const V4_LEAN_AFTER: &str = r#"
alter table pgtrail.events
    drop column client_addr, drop column client_port, drop column application_name,
    drop column backend_pid, drop column session_id, drop column context, drop column database,
    drop column objects, drop column old, drop column new, drop column changed,
    drop column partial, drop column params, drop column command_tag, drop column rows,
    drop column duration_us, drop column sqlstate, drop column error, drop column lsn,
    drop column committed_at, drop column tx_seq, drop column provenance,
    alter column body set not null, alter column failed set not null;
"#;

/// Migration 5, first part: a cheaper append (profiled with `bench/store`).
/// The row index becomes one integer per (table, key), [`super::row_key`],
/// computed by the writer: the `(table_name, pk)` btree compared `jsonb`
/// keys on every insert and cost a quarter of the server's CPU per event.
/// Then every stored row gets its key ([`Fill::RowKeys`]) and
/// [`V5_CHEAPER_APPEND_AFTER`] swaps the indexes.
const V5_CHEAPER_APPEND_BEFORE: &str = "alter table pgtrail.events add column row_key bigint;";

/// Migration 5, last part. The body becomes `text`: a `json` column has the
/// server parse every body it is sent (a tenth of an append's server CPU),
/// while pgtrail reads it back with its own parser anyway and verify holds
/// it to the canonical bytes, which no parse of the server's can vouch for.
/// Changing the type rewrites the table once.
const V5_CHEAPER_APPEND_AFTER: &str = r#"
drop index pgtrail.events_row_idx;
create index events_row_key_idx on pgtrail.events (row_key) where row_key is not null;
alter table pgtrail.events alter column body type text;
"#;

/// Migration 6, first part: `pgtrail log --table T` finds a proxy statement
/// that touched `T` anywhere (a JOIN, a subquery), not only its target.
/// `object_names` holds each relation of a statement's `objects` under its
/// qualified name and its bare one, always double-quoted (`"public"."patients"`,
/// `"patients"`, see `pgtrail_core::filter::object_index_names`), so one
/// exact array containment answers either form. Then the statements already
/// stored get theirs ([`Fill::ObjectNames`]) and [`V6_OBJECT_NAMES_AFTER`]
/// builds the index.
const V6_OBJECT_NAMES_BEFORE: &str = "alter table pgtrail.events add column object_names text[];";

/// Migration 6, last part. GIN over the names, partial: only statements
/// have them, so row changes cost the index nothing. Statements are the
/// highest-volume events: without it, the question reads every statement.
const V6_OBJECT_NAMES_AFTER: &str = "
create index events_object_names_idx on pgtrail.events using gin (object_names)
    with (gin_pending_list_limit = 32768) where object_names is not null;
";

/// Migration 7: `ip:10.0.0.0/8` in a search. An event's `client_addr` is
/// text (what Postgres printed for an `inet`, or the proxy's peer); this
/// reads it as an `inet`, and text that is not one as NULL, so a stored
/// value can never make a search fail. Immutable, so it can be indexed.
const V7_CLIENT_INET: &str = "
create function pgtrail.client_inet(addr text) returns inet
    language plpgsql immutable strict parallel safe
    set search_path = pg_catalog
as $$
begin
    return addr::inet;
exception when others then
    return null;
end
$$;
";

/// Migration 8: the link between a proxy statement and the row changes
/// its transaction made (`pgtrail_store::link`) looks events up by the
/// server backend that ran them, in a time window, and by transaction id.
/// `backend_pid` comes back as a column copied from the body (verify holds
/// it to the body, as the others), filled for the events stored before
/// ([`Fill::BackendPids`]); then [`V8_LINK_AFTER`] builds the indexes.
const V8_LINK: &str = "alter table pgtrail.events add column backend_pid int;";

/// Migration 8, last part. Both indexes are partial, so events without a
/// backend or a transaction cost them nothing.
const V8_LINK_AFTER: &str = "
create index events_backend_pid_idx on pgtrail.events (backend_pid, captured_at)
    where backend_pid is not null;
create index events_xid_idx on pgtrail.events (xid) where xid is not null;
";

/// Migration 9: the Merkle tree's interior nodes of height 8, 16, 24, ...
/// (`crate::tree`): a proof of any event reads a few dozen of them and at
/// most a few thousand event hashes, instead of every hash under it. Then
/// the nodes of the events already stored are filled
/// ([`Fill::TreeNodes`], `super::tree::fill`).
const V9_TREE_NODES: &str = "
create table pgtrail.tree_nodes (
    height int not null,
    idx bigint not null,
    hash bytea not null check (length(hash) = 32),
    primary key (height, idx)
);
";

/// Witness servers' cosignatures (C2SP `tlog-cosignature`) of checkpoints:
/// the exact checkpoint text each covers, and the signature line.
const COSIGNATURES: &str = "
create table pgtrail.cosignatures (
    seq bigint not null,
    checkpoint text not null,
    line text not null,
    received_at timestamptz not null,
    unique (checkpoint, line)
);
create index cosignatures_seq_idx on pgtrail.cosignatures (seq);
";

/// Migration 11: facet counts by the hour (`super::facets`), filled here
/// from the events stored; kept by every append after. The trigger sealer
/// appends as `pgtrail_admin`, so that role may add to it (and readers
/// read it) when trigger capture is installed; an install after this
/// migration grants the same (`pgtrail_triggers` `READER_GRANTS_SQL`).
const V11_FACET_HOURS: &str = concat!(
    "
create table pgtrail.facet_hours (
    hour bigint not null,              -- hours since 1970-01-01 UTC
    facet text not null,               -- user | table | operation | source | outcome
    value text not null,
    count bigint not null,
    primary key (hour, facet, value)
);
insert into pgtrail.facet_hours (hour, facet, value, count)
select hour, facet, value, count(*) from (",
    facet_rows!(),
    ") r group by 1, 2, 3;
do $$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
        grant select on pgtrail.facet_hours to pgtrail_reader;
    end if;
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_admin') then
        grant select, insert, update on pgtrail.facet_hours to pgtrail_admin;
    end if;
end
$$;
"
);

/// Migration 12: a table's, a user's and a role's newest events are one
/// walk of an index in chain order, newest first, stopping at the page's
/// limit (`super::query`): by name alone the matches were gathered by
/// bitmap and sorted, which grows with the store. The name-only user
/// indexes are dropped: the new ones serve the same equalities, and an
/// append keeps two fewer indexes than it would beside them. Indexes need
/// no grant: the reader uses them through its `select`.
const V12_KEYED_WALKS: &str = "
drop index if exists pgtrail.events_app_user_idx;
drop index if exists pgtrail.events_db_user_idx;
create index events_table_seq_idx on pgtrail.events (table_name, seq)
    where table_name is not null;
create index events_app_user_seq_idx on pgtrail.events (app_user, seq)
    where app_user is not null;
create index events_db_user_seq_idx on pgtrail.events (db_user, seq)
    where db_user is not null;
";

/// Migration 13: the `seq` range of each capture hour (`super::seq_hours`),
/// filled here from the events stored; kept by every append after. A
/// windowed search reads the range of its hours and walks only that stretch
/// of the chain. The trigger sealer appends as `pgtrail_admin`, so that
/// role may add to it, as to `facet_hours`; readers read it. Nothing else:
/// application roles have no right on schema `pgtrail`.
const V13_SEQ_HOURS: &str = concat!(
    "
create table pgtrail.seq_hours (
    hour bigint primary key,           -- hours since 1970-01-01 UTC
    first_seq bigint not null,         -- least seq captured in the hour
    last_seq bigint not null           -- greatest seq captured in the hour
);
insert into pgtrail.seq_hours (hour, first_seq, last_seq) ",
    seq_hour_rows!("true"),
    ";
do $$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
        grant select on pgtrail.seq_hours to pgtrail_reader;
    end if;
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_admin') then
        grant select, insert, update on pgtrail.seq_hours to pgtrail_admin;
    end if;
end
$$;
"
);

/// Migration 14: `pgtrail.client_inet` runs in the leader only. Its
/// exception block starts a subtransaction, which a parallel worker cannot:
/// declared `parallel safe`, a parallel plan of an `ip:` search (the
/// planner's choice on a large store) failed with "cannot start
/// subtransactions during a parallel operation".
const V14_CLIENT_INET_RESTRICTED: &str =
    "alter function pgtrail.client_inet(text) parallel restricted;";

/// Migration 15: the relations each statement touched, in chain order
/// (`super::objects`), filled from the statements' bodies
/// ([`Fill::EventsObjects`]); the `object_names` column and its GIN index
/// go (a GIN index has no order: `table:` sorted every statement that
/// ever touched the table to return the newest page). The trigger sealer
/// appends as `pgtrail_admin`, so that role may add to it; readers read it.
const V15_EVENTS_OBJECTS_BEFORE: &str = "
create table pgtrail.events_objects (
    name text not null,                -- quoted, bare or qualified (object_index_names)
    seq bigint not null,
    primary key (name, seq)
);
";
const V15_EVENTS_OBJECTS_AFTER: &str = "
drop index if exists pgtrail.events_object_names_idx;
alter table pgtrail.events drop column if exists object_names;
do $$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
        grant select on pgtrail.events_objects to pgtrail_reader;
    end if;
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_admin') then
        grant select, insert on pgtrail.events_objects to pgtrail_admin;
    end if;
end
$$;
";

/// Migration 16: SQL text is searched by the words SQLite's index and
/// `search_words` cut it into: runs of letters, digits and `_`, lowercased
/// (`pgtrail.sql_words`), and a search is those words of the search text,
/// all required (`pgtrail.sql_words_query`, the same cut, so both sides
/// agree on every character). The index holds them and the blocks of the
/// chain the event is in (`pgtrail.sql_index_words`), so a search reads
/// the newest slice of the chain first (`super::word_slices`). The index of
/// migration 1 ran Postgres's parser, which splits at `_`: `customer_id`
/// found "customer … id" anywhere (SQLite does not), and `t_011` was `t`
/// and `011`, words in nearly every statement, whose long posting lists
/// every such search read. Only the first 200,000 characters are indexed
/// (at most 800 kB of words, under tsvector's 1 MB); a word longer than
/// 2,047 bytes (a lexeme's limit) is not indexed, so no statement can fail
/// its append. Readers call the three functions; nobody else needs them.
const V16_SQL_WORDS: &str = r#"
create or replace function pgtrail.sql_words(sql text) returns tsvector
    language sql immutable strict parallel safe
    set search_path = pg_catalog
as $$
    select array_to_tsvector(array(
        select word
        from unnest(regexp_split_to_array(lower(left(sql, 200000)), '[^[:alnum:]_]+')) as word
        where word <> '' and octet_length(word) <= 2047))
$$;
-- The same words and the event's blocks, in one function (a nested call,
-- or a second tsvector concatenated, tripled the CPU an append spends on
-- the index: bench/store/pg_text_index_cost.py).
create or replace function pgtrail.sql_index_words(sql text, seq bigint) returns tsvector
    language sql immutable strict parallel safe
    set search_path = pg_catalog
as $$
    select array_to_tsvector(array(
        select word
        from unnest(regexp_split_to_array(lower(left(sql, 200000)), '[^[:alnum:]_]+')
            || array['#16_' || (seq >> 16), '#20_' || (seq >> 20), '#24_' || (seq >> 24)]) as word
        where word <> '' and octet_length(word) <= 2047))
$$;
create or replace function pgtrail.sql_words_query(search text) returns tsquery
    language sql immutable strict parallel safe
    set search_path = pg_catalog
as $$
    select coalesce(string_agg('''' || word || '''', ' & '), '')::tsquery
    from unnest(tsvector_to_array(pgtrail.sql_words(search))) as word
$$;
revoke execute on function pgtrail.sql_words(text), pgtrail.sql_index_words(text, bigint),
    pgtrail.sql_words_query(text) from public;
do $do$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
        grant execute on function pgtrail.sql_words(text),
            pgtrail.sql_index_words(text, bigint), pgtrail.sql_words_query(text)
            to pgtrail_reader;
    end if;
end
$do$;
drop index if exists pgtrail.events_sql_search_idx;
-- A large pending list: most GIN work happens in (auto)vacuum, not in appends.
create index if not exists events_sql_words_idx on pgtrail.events
    using gin (pgtrail.sql_index_words(sql, seq))
    with (gin_pending_list_limit = 32768) where sql is not null;
"#;

/// Migration 17: each event's client address as an `inet` column, which
/// `ip:` compares instead of parsing every body of its window (at 10M
/// events, ~16 µs a row: JSON, then `client_inet`'s subtransaction; the
/// dashboard's own access records fill a recent window). The append
/// writes it (`event_row::client_addr`: the address before any `/`, as
/// `AddrFilter::contains` and SQLite's column read it). Filling every
/// stored row would rewrite them all, so only the newest 100,000 are
/// filled here (the recent windows a dashboard searches most), and
/// `column_starts` says from which `seq` the column holds
/// ([`Fill::ClientAddrs`]); below it `ip:` reads the body as `db:` does
/// (`query::body_field`). `verify` holds the column to the body, and NULL
/// below that `seq` only.
const V17_CLIENT_ADDR: &str = "
alter table pgtrail.events add column client_addr inet;
create table pgtrail.column_starts (
    name text primary key,             -- a column of pgtrail.events
    first_seq bigint not null          -- the first seq whose row has it written
);
insert into pgtrail.column_starts (name, first_seq)
    select 'client_addr', greatest(coalesce(max(seq), 0) + 1 - 100000, 1) from pgtrail.events;
do $$
begin
    if exists (select from pg_catalog.pg_roles where rolname = 'pgtrail_reader') then
        grant select on pgtrail.column_starts to pgtrail_reader;
    end if;
end
$$;
";

/// Every migration this build knows, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events, chain head, checkpoints",
        sql: V1_EVENTS,
        creates: &[
            "schema_migrations",
            "events",
            "events_default",
            "chain_head",
            "checkpoints",
        ],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 2,
        name: "store identity; checkpoints as signed notes with a tree frontier",
        sql: V2_NOTES,
        creates: &["store_identity"],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 3,
        name: "event provenance",
        sql: V3_PROVENANCE,
        creates: &[],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 4,
        name: "lean events: the canonical body once, and the columns filters need",
        sql: V4_LEAN_BEFORE,
        creates: &[],
        fill: Some(Fill::Bodies),
        sql_after: V4_LEAN_AFTER,
    },
    Migration {
        version: 5,
        name: "cheaper append: an integer row key, the body as text",
        sql: V5_CHEAPER_APPEND_BEFORE,
        creates: &[],
        fill: Some(Fill::RowKeys),
        sql_after: V5_CHEAPER_APPEND_AFTER,
    },
    Migration {
        version: 6,
        name: "an index of the relations each statement touched",
        sql: V6_OBJECT_NAMES_BEFORE,
        creates: &[],
        fill: Some(Fill::ObjectNames),
        sql_after: V6_OBJECT_NAMES_AFTER,
    },
    Migration {
        version: 7,
        name: "client addresses read as inet, for searches by CIDR block",
        sql: V7_CLIENT_INET,
        creates: &[],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 8,
        name: "indexes of the backend and the transaction of each event",
        sql: V8_LINK,
        creates: &[],
        fill: Some(Fill::BackendPids),
        sql_after: V8_LINK_AFTER,
    },
    Migration {
        version: 9,
        name: "interior nodes of the Merkle tree, for proofs",
        sql: V9_TREE_NODES,
        creates: &["tree_nodes"],
        fill: Some(Fill::TreeNodes),
        sql_after: "",
    },
    Migration {
        version: 10,
        name: "witness servers' cosignatures of checkpoints",
        sql: COSIGNATURES,
        creates: &["cosignatures"],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 11,
        name: "facet counts by the hour",
        sql: V11_FACET_HOURS,
        creates: &["facet_hours"],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 12,
        name: "indexes of tables and users in chain order, for keyed searches",
        sql: V12_KEYED_WALKS,
        creates: &[],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 13,
        name: "the seq range of each capture hour, for windowed searches",
        sql: V13_SEQ_HOURS,
        creates: &["seq_hours"],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 14,
        name: "client addresses read in the leader of a parallel plan",
        sql: V14_CLIENT_INET_RESTRICTED,
        creates: &[],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 15,
        name: "the relations each statement touched, in chain order",
        sql: V15_EVENTS_OBJECTS_BEFORE,
        creates: &["events_objects"],
        fill: Some(Fill::EventsObjects),
        sql_after: V15_EVENTS_OBJECTS_AFTER,
    },
    Migration {
        version: 16,
        name: "SQL text searched by the words SQLite cuts it into",
        sql: V16_SQL_WORDS,
        creates: &[],
        fill: None,
        sql_after: "",
    },
    Migration {
        version: 17,
        name: "client addresses as a column",
        sql: V17_CLIENT_ADDR,
        creates: &["column_starts"],
        fill: Some(Fill::ClientAddrs),
        sql_after: "",
    },
];

/// The schema version this build writes.
pub(super) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Brings the store's schema up to [`latest_version`], refusing states it
/// must not touch.
pub(super) async fn migrate(client: &mut Client, location: &str) -> Result<(), StoreError> {
    migrate_to(client, location, latest_version()).await
}

/// Brings the store's schema up to version `target` (tests build stores
/// of earlier versions with it).
pub(super) async fn migrate_to(
    client: &mut Client,
    location: &str,
    target: i64,
) -> Result<(), StoreError> {
    let backend = |context: &str| {
        let context = context.to_string();
        move |e: tokio_postgres::Error| StoreError::backend(location, context, e)
    };
    loop {
        let tx = client
            .transaction()
            .await
            .map_err(backend("starting a migration"))?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(backend("taking the migration lock"))?;
        let current = current_version(&tx, location).await?;
        let next = MIGRATIONS
            .iter()
            .find(|m| m.version == current + 1 && m.version <= target);
        let Some(next) = next else {
            tx.commit().await.map_err(backend("checking the schema"))?;
            return Ok(());
        };
        let context = format!("applying migration {} ({})", next.version, next.name);
        tx.batch_execute(next.sql)
            .await
            .map_err(backend(&context))?;
        match next.fill {
            Some(Fill::Bodies) => super::wide_row::fill_bodies(&tx, location).await?,
            Some(Fill::RowKeys) => fill_row_keys(&tx, location).await?,
            Some(Fill::ObjectNames) => fill_object_names(&tx, location).await?,
            Some(Fill::BackendPids) => fill_backend_pids(&tx, location).await?,
            Some(Fill::ClientAddrs) => fill_client_addrs(&tx, location).await?,
            Some(Fill::TreeNodes) => super::tree::fill(&tx, location).await?,
            Some(Fill::EventsObjects) => {
                super::objects::fill(&tx).await.map_err(backend(&context))?
            }
            None => {}
        }
        if !next.sql_after.is_empty() {
            tx.batch_execute(next.sql_after)
                .await
                .map_err(backend(&context))?;
        }
        tx.execute(
            "insert into pgtrail.schema_migrations (version, name) values ($1, $2)",
            &[&next.version, &next.name],
        )
        .await
        .map_err(backend(&context))?;
        tx.commit().await.map_err(backend(&context))?;
        tracing::info!(
            store = location,
            version = next.version,
            "Applied store migration."
        );
    }
}

/// Rows read and given their key at a time by [`fill_row_keys`].
const ROW_KEY_BATCH: i32 = 10_000;

/// Migration 5's fill, inside its transaction: each stored row's
/// `row_key`, from its `table_name` and `pk` columns (what the index it
/// replaces held). Reads through one cursor and writes each row by its
/// primary key. A row whose columns were changed after it was sealed gets
/// the key of its changed columns: verify, which recomputes every copied
/// column from the body, reports it as before.
async fn fill_row_keys(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<(), StoreError> {
    use super::json::RawJson;
    let backend = |e| StoreError::backend(location, "writing the row keys (migration 5)", e);
    // One primary-key probe per row, whatever the planner thinks of a
    // still-unanalyzed table.
    tx.batch_execute("set local enable_hashjoin = off; set local enable_mergejoin = off")
        .await
        .map_err(backend)?;
    let portal = tx
        .bind(
            "select id, captured_at, table_name, pk from pgtrail.events where table_name is not null",
            &[],
        )
        .await
        .map_err(backend)?;
    loop {
        let rows = tx
            .query_portal(&portal, ROW_KEY_BATCH)
            .await
            .map_err(backend)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: uuid::Uuid = row.try_get(0).map_err(backend)?;
            let table: String = row.try_get(2).map_err(backend)?;
            let pk: Option<RawJson> = row.try_get(3).map_err(backend)?;
            // jsonb respaces its text: the key is of the canonical text.
            let pk = match pk {
                None => None,
                Some(RawJson(text)) => Some(
                    pgtrail_core::json::parse(text)
                        .ok()
                        .and_then(|v| v.as_object().map(pgtrail_core::filter::canonical_pk))
                        .ok_or_else(|| StoreError::Open {
                            location: location.to_string(),
                            reason: format!(
                                "migrating to schema 5 needs every stored key, and event {id} \
                                 has a pk that is not a JSON object; the store is left at version 4"
                            ),
                            source: None,
                        })?,
                ),
            };
            ids.push(id);
            times.push(
                row.try_get::<_, chrono::DateTime<chrono::Utc>>(1)
                    .map_err(backend)?,
            );
            keys.push(super::row_key::row_key(&table, pk.as_deref().unwrap_or("")));
        }
        tx.execute(
            "update pgtrail.events e set row_key = b.row_key \
             from unnest($1::uuid[], $2::timestamptz[], $3::int8[]) as b(id, captured_at, row_key) \
             where e.id = b.id and e.captured_at = b.captured_at",
            &[&ids, &times, &keys],
        )
        .await
        .map_err(backend)?;
    }
}

/// Migration 6's fill, inside its transaction: each stored statement's
/// `object_names`, from the `objects` of its body. Only bodies that name
/// objects at all are parsed.
async fn fill_object_names(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<(), StoreError> {
    fill_from_bodies(
        tx,
        location,
        "indexing statement objects (migration 6)",
        "select id, captured_at, body from pgtrail.events \
         where kind = 'statement' and strpos(body, '\"objects\":') > 0",
        "update pgtrail.events e \
         set object_names = array(select json_array_elements_text(b.value::json)) \
         from unnest($1::uuid[], $2::timestamptz[], $3::text[]) as b(id, captured_at, value) \
         where e.id = b.id and e.captured_at = b.captured_at",
        // One text per event (a 2-D array needs equal lengths).
        |event| {
            super::event_row::object_names(event)
                .map(|names| serde_json::to_string(&names).unwrap_or_default())
        },
    )
    .await
}

/// Migration 8's fill, inside its transaction: each stored event's
/// `backend_pid`, from its body. Only bodies that name one are parsed.
async fn fill_backend_pids(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<(), StoreError> {
    fill_from_bodies(
        tx,
        location,
        "copying backend pids (migration 8)",
        "select id, captured_at, body from pgtrail.events \
         where strpos(body, '\"backend_pid\":') > 0",
        "update pgtrail.events e set backend_pid = b.value \
         from unnest($1::uuid[], $2::timestamptz[], $3::int4[]) as b(id, captured_at, value) \
         where e.id = b.id and e.captured_at = b.captured_at",
        |event| event.backend_pid,
    )
    .await
}

/// Migration 17's fill: the `client_addr` column of the newest stored
/// events (from `column_starts`). The others keep NULL: `ip:` reads their
/// body.
async fn fill_client_addrs(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
) -> Result<(), StoreError> {
    fill_from_bodies(
        tx,
        location,
        "copying client addresses (migration 17)",
        concat!(
            "select id, captured_at, body from pgtrail.events where seq >= ",
            client_addr_start!()
        ),
        "update pgtrail.events e set client_addr = b.value \
         from unnest($1::uuid[], $2::timestamptz[], $3::inet[]) as b(id, captured_at, value) \
         where e.id = b.id and e.captured_at = b.captured_at",
        super::event_row::client_addr,
    )
    .await
}

/// A migration's fill of a column copied from the body: walks the events
/// `select` names (`id, captured_at, body`) through one cursor, as
/// [`fill_row_keys`] does, and per batch runs `update` with the ids, times
/// and `value` of each event (`$1`, `$2`, `$3`). A body that does not
/// decode, or has no value, gets none: verify reports such a row anyway.
async fn fill_from_bodies<T: ToSql + Sync>(
    tx: &tokio_postgres::Transaction<'_>,
    location: &str,
    action: &'static str,
    select: &str,
    update: &str,
    value: impl Fn(&pgtrail_core::Event) -> Option<T>,
) -> Result<(), StoreError> {
    let backend = |e| StoreError::backend(location, action, e);
    tx.batch_execute("set local enable_hashjoin = off; set local enable_mergejoin = off")
        .await
        .map_err(backend)?;
    let portal = tx.bind(select, &[]).await.map_err(backend)?;
    loop {
        let rows = tx
            .query_portal(&portal, ROW_KEY_BATCH)
            .await
            .map_err(backend)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut times = Vec::with_capacity(rows.len());
        let mut values = Vec::with_capacity(rows.len());
        for row in &rows {
            let body: &str = row.try_get(2).map_err(backend)?;
            let Ok(event) = serde_json::from_str::<pgtrail_core::Event>(body) else {
                continue;
            };
            let Some(value) = value(&event) else {
                continue;
            };
            ids.push(row.try_get::<_, uuid::Uuid>(0).map_err(backend)?);
            times.push(
                row.try_get::<_, chrono::DateTime<chrono::Utc>>(1)
                    .map_err(backend)?,
            );
            values.push(value);
        }
        tx.execute(update, &[&ids, &times, &values])
            .await
            .map_err(backend)?;
    }
}

/// Checks, in a read-only transaction, that the database holds a pgtrail
/// store of this build's version, for verify (which never migrates).
pub(super) async fn check_for_verify(
    client: &mut Client,
    location: &str,
) -> Result<(), StoreError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| StoreError::backend(location, "starting a read-only transaction", e))?;
    let version = current_version(&tx, location).await?;
    if version == 0 {
        return Err(StoreError::Foreign {
            location: location.to_string(),
            reason: "the database has no pgtrail store (no schema pgtrail with its tables)".into(),
        });
    }
    if version != latest_version() {
        return Err(StoreError::Open {
            location: location.to_string(),
            reason: format!(
                "it has schema version {version} and this pgtrail verifies version {}: \
                 open it once with `pgtrail log` to migrate it, then verify",
                latest_version()
            ),
            source: None,
        });
    }
    Ok(())
}

/// The version recorded in the store, after checking that what is there is
/// a pgtrail store this build may use. 0 means nothing is there yet.
async fn current_version(tx: &Transaction<'_>, location: &str) -> Result<i64, StoreError> {
    let backend = |e| StoreError::backend(location, "reading the schema state", e);
    let schema_exists: bool = tx
        .query_one(
            "select exists (select 1 from pg_namespace where nspname = 'pgtrail')",
            &[],
        )
        .await
        .map_err(backend)?
        .get(0);
    if !schema_exists {
        return Ok(0);
    }
    let tables: Vec<String> = tx
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'pgtrail' and c.relkind in ('r', 'p', 'v', 'm', 'f') order by 1",
            &[],
        )
        .await
        .map_err(backend)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let has = |name: &str| tables.iter().any(|t| t == name);

    if !has("schema_migrations") {
        if tables.is_empty() {
            // An empty schema, e.g. created ahead by an administrator.
            return Ok(0);
        }
        let ours = MIGRATIONS.iter().flat_map(|m| m.creates).any(|t| has(t));
        if ours {
            return Err(StoreError::HalfMigrated {
                location: location.to_string(),
                version: 1,
            });
        }
        return Err(StoreError::Foreign {
            location: location.to_string(),
            reason: format!(
                "schema pgtrail holds other tables ({}) and no pgtrail.schema_migrations",
                tables.join(", ")
            ),
        });
    }

    let versions: Vec<i64> = tx
        .query(
            "select version from pgtrail.schema_migrations order by version",
            &[],
        )
        .await
        .map_err(|e| StoreError::Foreign {
            location: location.to_string(),
            reason: format!(
                "pgtrail.schema_migrations is not pgtrail's ({})",
                describe(&e)
            ),
        })?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let Some(&newest) = versions.last() else {
        return Err(StoreError::HalfMigrated {
            location: location.to_string(),
            version: 1,
        });
    };
    if newest > latest_version() {
        return Err(StoreError::TooNew {
            location: location.to_string(),
            found: newest,
            supported: latest_version(),
        });
    }
    if let Some(missing) = (1..=newest).find(|v| !versions.contains(v)) {
        return Err(StoreError::HalfMigrated {
            location: location.to_string(),
            version: missing,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version <= newest) {
        if !migration.creates.iter().all(|t| has(t)) {
            return Err(StoreError::HalfMigrated {
                location: location.to_string(),
                version: migration.version,
            });
        }
    }
    Ok(newest)
}

/// A one-line description of a Postgres error with its cause: tokio-postgres
/// prints only the kind ("db error") in its own message.
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
