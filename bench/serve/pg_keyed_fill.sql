-- bench/serve/pg_keyed_fill.sql: :n synthetic events straight into a
-- pgtrail.events shaped as the Postgres store's (schema 11/12: the columns
-- filters read, monthly partitions, the v1-v11 indexes the searches touch),
-- 30 days ending 2026-12-07, spread as bench/serve/keyed_fill.sql spreads
-- SQLite's: 300 tables, 300 app users, roles app/reporting/etl (etl has no
-- app user), 70% row changes, 26% statements (each touching its table and
-- the next), 4% sessions. No sealing, no full-text index.
--   psql -v n=1000000 -v new=true -f pg_keyed_fill.sql   (schema 12's indexes)
--   psql -v n=1000000 -v new=false -f pg_keyed_fill.sql  (schema 11's)
create schema pgtrail;
create table pgtrail.events (
    id uuid not null, seq bigint not null, source text not null, kind text not null,
    captured_at timestamptz not null, db_user text, app_user text,
    schema_name text, table_name text, operation text, pk jsonb, sql text,
    xid bigint, prev_hash text not null, hash text not null, body text not null,
    failed boolean not null, row_key bigint, object_names text[], backend_pid int,
    primary key (id, captured_at)
) partition by range (captured_at);
create table pgtrail.events_default partition of pgtrail.events default;
create table pgtrail.events_2026_11 partition of pgtrail.events
    for values from ('2026-11-01') to ('2026-12-01');
create table pgtrail.events_2026_12 partition of pgtrail.events
    for values from ('2026-12-01') to ('2027-01-01');
insert into pgtrail.events
select gen_random_uuid(), i, 'proxy',
  case when k < 70 then 'row_change' when k < 96 then 'statement' else 'session' end,
  timestamptz '2026-11-07 00:00:00+00' + i * (interval '30 days' / :n),
  case role when 0 then 'app' when 1 then 'reporting' else 'etl' end,
  case when role <> 2 then 'user' || lpad(u::text, 3, '0') || '@example.com' end,
  case when k < 96 then 'public' end,
  case when k < 96 then 't_' || lpad(t::text, 3, '0') end,
  case op when 0 then 'INSERT' when 1 then 'UPDATE' when 2 then 'DELETE' else 'SELECT' end,
  case when k < 70 then jsonb_build_object('id', pk::text) end,
  case when k >= 70 and k < 96 then 'select * from t_' || t end,
  i, md5(i::text), md5((i + 1)::text),
  '{"database":"' || case db when 0 then 'crm' when 1 then 'billing' else 'shop' end
      || '","sql":"' || repeat(md5(i::text), 5) || '"}',
  i % 40 = 0,
  case when k < 96 then t::bigint * 4294967296 + pk end,
  case when k >= 70 and k < 96 then array[
      '"public"."t_' || lpad(t::text, 3, '0') || '"', '"t_' || lpad(t::text, 3, '0') || '"',
      '"public"."t_' || lpad(((t + 1) % 300)::text, 3, '0') || '"',
      '"t_' || lpad(((t + 1) % 300)::text, 3, '0') || '"'] end,
  1000 + role
from (select i, (random() * 299)::int as t, (random() * 299)::int as u,
             (random() * 3)::int % 4 as op, (random() * 2)::int as role,
             (random() * 2)::int as db, (random() * 99)::int as k,
             (random() * 4999)::int as pk
      from generate_series(1, :n) as i) r;
-- Schema 11's indexes the reads touch (v1, v5, v6, v8).
create index events_seq_idx on pgtrail.events (seq);
create index events_truncate_idx on pgtrail.events (table_name) where upper(operation) = 'TRUNCATE';
create index events_captured_at_idx on pgtrail.events using brin (captured_at);
create index events_row_key_idx on pgtrail.events (row_key) where row_key is not null;
create index events_object_names_idx on pgtrail.events using gin (object_names)
    with (gin_pending_list_limit = 32768) where object_names is not null;
create index events_xid_idx on pgtrail.events (xid) where xid is not null;
\if :new
-- Schema 12 (schema.rs V12_KEYED_WALKS).
create index events_table_seq_idx on pgtrail.events (table_name, seq) where table_name is not null;
create index events_app_user_seq_idx on pgtrail.events (app_user, seq) where app_user is not null;
create index events_db_user_seq_idx on pgtrail.events (db_user, seq) where db_user is not null;
\else
create index events_app_user_idx on pgtrail.events (app_user) where app_user is not null;
create index events_db_user_idx on pgtrail.events (db_user) where db_user is not null;
\endif
vacuum analyze pgtrail.events;
