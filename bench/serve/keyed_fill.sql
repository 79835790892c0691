-- bench/serve/keyed_fill.sql: N synthetic events (edit the 1000000 and the
-- step 2592000 µs together: 30 days) with the columns filters read and the
-- indexes both schemas share; bench/serve/README names the rest.
pragma journal_mode=off; pragma synchronous=off;
create table events (seq integer primary key, captured_at integer not null, kind text not null, schema_name text, table_name text, pk text, app_user text, db_user text, operation text, failed integer not null, body text not null, row_key integer, app_user_key integer, db_user_key integer) strict;
create table events_objects (table_name text not null, schema_name text not null, seq integer not null, primary key (table_name, schema_name, seq)) strict, without rowid;
insert into events
with recursive n(i) as (select 1 union all select i+1 from n where i < 1000000),
r as materialized (select i, abs(random()) % 300 as t, abs(random()) % 300 as u, abs(random()) % 4 as op, abs(random()) % 3 as role, abs(random()) % 3 as db, abs(random()) % 100 as k, abs(random()) % 5000 as pk from n)
select i,
  1700000000000000 + i * 2592000,
  case when k < 70 then 'row_change' when k < 96 then 'statement' else 'session' end,
  case when k < 96 then 'public' end,
  case when k < 96 then 't_' || printf('%03d', t) end,
  case when k < 70 then '{"id":"' || pk || '"}' end,
  case when role <> 2 then 'user' || printf('%03d', u) || '@example.com' end,
  case role when 0 then 'app' when 1 then 'reporting' else 'etl' end,
  case op when 0 then 'INSERT' when 1 then 'UPDATE' when 2 then 'DELETE' else 'SELECT' end,
  (i % 40 = 0),
  '{"database":"' || case db when 0 then 'crm' when 1 then 'billing' else 'shop' end || '","sql":"' || hex(randomblob(150)) || '"}',
  case when k < 96 then t * 4294967296 + pk end,
  case when role <> 2 then u end,
  1000 + role
from r;
insert into events_objects select table_name, schema_name, seq from events where kind = 'statement';
create index events_captured_at on events (captured_at);
create index events_kind on events (kind, seq);
create index events_failed on events (seq) where failed = 1;
-- Then, for schema 13's file:
--   create index events_row on events (seq >> 19, row_key) where row_key is not null;
--   create index events_app_user on events (app_user_key, captured_at) where app_user_key is not null;
--   create index events_db_user on events (db_user_key, captured_at) where db_user_key is not null;
-- and for schema 14's (a copy of the same file):
--   create index events_row on events (seq >> 19, row_key) where row_key is not null;
--   create index events_app_user on events (app_user_key, seq, captured_at) where app_user_key is not null;
--   create index events_db_user on events (db_user_key, seq, captured_at) where db_user_key is not null;
--   create index events_table on events (table_name) where table_name is not null;
