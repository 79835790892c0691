-- pgtrail trigger capture, migration 4: row images stored as typed rows,
-- converted to JSON by the sealer.
--
-- Measured in bench/triggers (callgrind, single-row UPDATE of a 15-column
-- table): row_to_json of OLD and NEW was ~80,000 of the row trigger's
-- ~185,000 instructions. Its cost is per column and per row (each
-- column's type and output function are looked up again for every row,
-- because the trigger's INSERT is set up anew each time). Copying the row
-- into a PL/pgSQL variable of a composite type with the same columns
-- (`o := old`) costs ~8,000 and no lookups; the sealer converts that
-- value with row_to_json later, off the write path.
--
-- The composite type is pgtrail's own, a "shape": one per table and
-- column layout (names, types, order) and name. It cannot be the table's
-- row type: a column of that type elsewhere would make ALTER TABLE … TYPE
-- and DROP TABLE of the application's table fail. A shape's rows go to its
-- own inbox table, pgtrail.inbox_<shape>, narrower than pgtrail.inbox:
-- what every row of a shape has in common (kind, schema, table, key
-- names) is in pgtrail.shapes, not in each row (each column of the
-- inserted row costs ~1,000 instructions). The view pgtrail.pending is
-- what the sealer and `pgtrail status` read: the inbox's own rows as they
-- are, plus every shape table's rows with those constants and their
-- images converted; pgtrail.delete_sealed removes sealed rows from all.
--
-- When the table changes (ALTER TABLE: add, drop, rename or retype a
-- column; rename the table or move it), a DDL event trigger gives it a
-- new shape in the same transaction, before any later write; rows
-- already captured keep the shape they were written with, so they are
-- sealed with the names and types of their time. An old shape's table is
-- dropped once it is empty.
--
-- Only tables whose JSON comes out exactly as before take this path:
-- plain tables (not partitioned), no masked columns (the raw values must
-- not wait in the inbox), keys the sealer can read from the image, and
-- columns of built-in types whose JSON form does not depend on session
-- settings, or timestamptz, whose offset follows the writer's TimeZone:
-- such tables also store the writer's TimeZone, and the sealer converts
-- in it. Every other table keeps migration 3's trigger (row_to_json in
-- the trigger), now pgtrail.json_capture_body.
--
-- Rows already in the inbox are sealed as they are.

-- Migration 3's row-mode body becomes the fallback.
drop function if exists pgtrail.json_capture_body(pgtrail.tracked, text);
alter function pgtrail.row_capture_body(pgtrail.tracked, text) rename to json_capture_body;

-- One row per shape: the table it was made from, as it was then.
create table if not exists pgtrail.shapes (
    id int primary key generated always as identity,
    relid oid not null,
    schema_name text not null,
    table_name text not null,
    keyless boolean not null,
    pk jsonb,                      -- key column names (read from the image); null when keyless
    signature text not null,       -- qualified name and column list: a change means a new shape
    zoned boolean not null,        -- has timestamptz: the writer's TimeZone is stored
    current boolean not null default true,
    created_at timestamptz not null default now()
);
grant select on pgtrail.shapes to pgtrail_reader;

-- Column types whose JSON, as row_to_json writes it, does not depend on
-- the session (timestamptz: on TimeZone only, which is stored). Built-in
-- types only: a shape must not depend on a type the application may drop.
create or replace function pgtrail.shape_safe_type(t oid) returns boolean
language sql immutable set search_path = pg_catalog, pg_temp as $$
    select t in ('boolean'::regtype, 'smallint'::regtype, 'integer'::regtype, 'bigint'::regtype,
                 'numeric'::regtype, 'text'::regtype, 'character varying'::regtype, 'character'::regtype,
                 'name'::regtype, 'uuid'::regtype, 'json'::regtype, 'jsonb'::regtype, 'date'::regtype,
                 'time without time zone'::regtype, 'timestamp without time zone'::regtype,
                 'timestamp with time zone'::regtype, 'inet'::regtype, 'cidr'::regtype, 'oid'::regtype)
$$;

-- The shape's column list of a table ("a bigint, b text[], …"), or null
-- when a column's type is not safe (see above); arrays of safe types are.
create or replace function pgtrail.shape_columns(rel oid) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
    select case when bool_and(pgtrail.shape_safe_type(case when e.typelem <> 0 and e.typlen = -1
                                                            then e.typelem else a.atttypid end))
                then string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', '
                                order by a.attnum) end
      from pg_attribute a
      join pg_type e on e.oid = a.atttypid
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped
$$;

-- What makes a shape: the table's qualified name and its column list.
create or replace function pgtrail.shape_signature(rel oid) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
    select format('%I.%I (%s)', n.nspname, c.relname, pgtrail.shape_columns(rel))
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = rel
$$;

-- row_to_json of an image in the writer's TimeZone (timestamptz offsets
-- come out as the trigger of migration 3 wrote them). The zone stays set
-- for the rest of the sealer's transaction (nothing else there reads
-- timestamps as text), so that a run of rows written in one zone sets it
-- once: the view calls this only when the zone differs from the current
-- one, and row_to_json directly otherwise. Stable, though it sets
-- TimeZone: so that a query of the view that does not read the images
-- does not convert them.
create or replace function pgtrail.json_in_zone(image anyelement, zone text) returns json
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
begin
    if image is null then
        return null;
    end if;
    if zone is not null then
        perform set_config('TimeZone', zone, true);
    end if;
    return row_to_json(image);
end;
$$;

-- The view the sealer reads: the inbox's own rows, and every shape
-- table's rows with their images as JSON. Rewritten whenever a shape is
-- made or dropped.
create or replace function pgtrail.refresh_pending() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    columns text := 'id, xid, captured_at, kind, operation, schema_name, table_name, keyless, pk, old, new, '
                    'db_user, role_name, app_user, context, client_addr, client_port, application_name, '
                    'backend_pid, sql, detail';
    shape_selects text;
begin
    select string_agg(format('select id, xid, captured_at, ''r''::"char", operation, %L::text, %L::text, %L::boolean, '
                             'case when operation <> ''TRUNCATE'' then %L::jsonb end, %s, %s, '
                             'db_user, role_name, app_user, context, client_addr, client_port, application_name, '
                             'backend_pid, sql, null::jsonb from pgtrail.%I',
                             s.schema_name, s.table_name, s.keyless, s.pk,
                             case when s.zoned then 'case when zone = current_setting(''TimeZone'') then row_to_json(old_row) '
                                                    'else pgtrail.json_in_zone(old_row, zone) end'
                                  else 'row_to_json(old_row)' end,
                             case when s.zoned then 'case when zone = current_setting(''TimeZone'') then row_to_json(new_row) '
                                                    'else pgtrail.json_in_zone(new_row, zone) end'
                                  else 'row_to_json(new_row)' end,
                             'inbox_' || s.id),
                      ' union all ' order by s.id)
      into shape_selects
      from pgtrail.shapes s;
    execute format('create or replace view pgtrail.pending as select %s from pgtrail.inbox%s',
                   columns, coalesce(' union all ' || shape_selects, ''));
    grant select on pgtrail.pending to pgtrail_reader;
end;
$fn$;

-- Removes sealed transactions' rows from the inbox and every shape table
-- (the sealer calls it in its transaction, after appending their events).
create or replace function pgtrail.delete_sealed(xids bigint[]) returns bigint
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    s record;
    n bigint;
    total bigint;
begin
    delete from pgtrail.inbox where xid in (select x::text::xid8 from unnest(xids) as x);
    get diagnostics total = row_count;
    for s in select id from pgtrail.shapes order by id loop
        execute format('delete from pgtrail.%I where xid in (select x::text::xid8 from unnest($1) as x)',
                       'inbox_' || s.id) using xids;
        get diagnostics n = row_count;
        total := total + n;
    end loop;
    return total;
end;
$fn$;

-- Drops the tables and types of shapes no longer written to, once their
-- rows are sealed: the old shapes of `rel` (whose writers the caller has
-- locked out) and those of tables no longer tracked. A table is dropped
-- only when it can be locked at once (a seal holding it keeps it for next
-- time), and only in a READ COMMITTED transaction, where the emptiness
-- check sees every committed row.
create or replace function pgtrail.drop_sealed_shapes(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    s record;
    empty boolean;
    dropped int[] := '{}';
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        return;
    end if;
    -- Not while a seal runs (it holds this lock): it may be deleting from
    -- the tables about to go. Sealers wait for this transaction instead.
    begin
        lock table pgtrail.inbox in share update exclusive mode nowait;
    exception when lock_not_available then
        return;
    end;
    for s in select sh.id from pgtrail.shapes sh
              where (sh.relid = rel and not sh.current)
                 or not exists (select 1 from pgtrail.tracked t where t.relid = sh.relid)
              order by sh.id loop
        begin
            execute format('lock table pgtrail.%I in access exclusive mode nowait', 'inbox_' || s.id);
            execute format('select not exists (select from pgtrail.%I)', 'inbox_' || s.id) into empty;
            if empty then
                dropped := dropped || s.id;
            end if;
        exception when lock_not_available then
            null;
        end;
    end loop;
    if cardinality(dropped) = 0 then
        return;
    end if;
    delete from pgtrail.shapes where id = any (dropped);
    perform pgtrail.refresh_pending();
    for s in select unnest(dropped) as id loop
        execute format('drop table pgtrail.%I', 'inbox_' || s.id);
        execute format('drop type pgtrail.%I', 'shape_' || s.id);
    end loop;
end;
$fn$;

-- The shape a row-mode table is captured with now, made if needed; null
-- when the table does not qualify (see the top of this file).
create or replace function pgtrail.shape_for(t pgtrail.tracked) returns int
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    columns text := pgtrail.shape_columns(t.relid);
    sig text := pgtrail.shape_signature(t.relid);
    is_keyless boolean := cardinality(t.key_columns) = 0;
    key_names jsonb;
    zoned boolean;
    shape int;
    inbox text;
    role_before text := current_setting('session_replication_role');
begin
    if t.mode <> 'row' or columns is null or cardinality(t.masked) > 0
       or (select c.relkind from pg_class c where c.oid = t.relid) <> 'r'
       -- (A key column renamed since tracking is no obstacle: the sealer
       -- then identifies the change by the whole row, and says so.)
       or exists (select 1 from unnest(t.key_columns) as k
                    join pg_attribute a on a.attrelid = t.relid and a.attname = k and a.attnum > 0
                                        and not a.attisdropped
                   where not pgtrail.key_readable_from_image(a.atttypid::regtype)) then
        update pgtrail.shapes set current = false where relid = t.relid and current;
        return null;
    end if;
    if not is_keyless then
        key_names := to_jsonb(t.key_columns);
    end if;
    -- Writers of the table wait from here to the end of the transaction
    -- (install_capture would take this lock next anyway): none is using
    -- a shape of it that is dropped below.
    execute format('lock table %s in share row exclusive mode', t.relid::regclass);
    select exists (select 1 from pg_attribute a join pg_type e on e.oid = a.atttypid
                    where a.attrelid = t.relid and a.attnum > 0 and not a.attisdropped
                      and 'timestamp with time zone'::regtype in (a.atttypid, e.typelem))
      into zoned;

    select s.id into shape from pgtrail.shapes s
     where s.relid = t.relid and s.signature = sig and s.keyless = is_keyless
       and s.pk is not distinct from key_names
     order by s.id desc limit 1;
    -- pgtrail's own DDL below is not audit-worthy (as in an install):
    -- event triggers are quiet until the end of this function, and only
    -- until then.
    perform set_config('session_replication_role', 'replica', true);
    if shape is null then
        insert into pgtrail.shapes (relid, schema_name, table_name, keyless, pk, signature, zoned)
        values (t.relid, t.schema_name, t.table_name, is_keyless, key_names, sig, zoned)
        returning id into shape;
        -- schema_name and table_name as the table is named now (tracked
        -- may hold the name it had when tracked).
        update pgtrail.shapes s set schema_name = n.nspname, table_name = c.relname
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where s.id = shape and c.oid = t.relid;
        inbox := 'inbox_' || shape;
        execute format('create type pgtrail.%I as (%s)', 'shape_' || shape, columns);
        -- pgtrail.inbox's columns less those pgtrail.shapes holds.
        execute format('create table pgtrail.%I ( '
                       'id bigint not null default nextval(''pgtrail.inbox_id_seq''), '
                       'xid xid8 not null default pg_current_xact_id(), '
                       'captured_at timestamptz not null default statement_timestamp(), '
                       'operation text not null, old_row pgtrail.%I, new_row pgtrail.%I, '
                       'zone text, '  -- the writer's TimeZone, for zoned shapes
                       'db_user text, role_name text, app_user text, context text, client_addr inet, '
                       'client_port int, application_name text, backend_pid int, sql text) '
                       'with (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02)',
                       inbox, 'shape_' || shape, 'shape_' || shape);
        execute format('create trigger pgtrail_guard before update or truncate on pgtrail.%I '
                       'for each statement execute function pgtrail.guard()', inbox);
        execute format('revoke all on pgtrail.%I from public', inbox);
        execute format('grant select on pgtrail.%I to pgtrail_reader', inbox);
        execute format('grant select, delete on pgtrail.%I to pgtrail_admin', inbox);
    end if;
    update pgtrail.shapes set current = (id = shape)
     where relid = t.relid and (current or id = shape);
    perform pgtrail.drop_sealed_shapes(t.relid);
    perform pgtrail.refresh_pending();
    perform set_config('session_replication_role', role_before, true);
    return shape;
end;
$fn$;

-- The body of a row-mode capture function: with a shape, the images are
-- copied into variables of the shape's type and inserted as they are;
-- otherwise migration 3's body (row_to_json in the trigger).
create or replace function pgtrail.row_capture_body(t pgtrail.tracked, target text) returns text
language plpgsql volatile set search_path = pg_catalog, pg_temp as $fn$
declare
    shape int := pgtrail.shape_for(t);
    zoned boolean;
    inbox text;
    columns text;
    who text;
    skip text;
begin
    if shape is null then
        -- A key column renamed since tracking: the whole row is the key
        -- (migration 3's body would name the missing column).
        if exists (select 1 from unnest(t.key_columns) as k
                    where not exists (select 1 from pg_attribute a
                                       where a.attrelid = t.relid and a.attname = k and a.attnum > 0
                                         and not a.attisdropped)) then
            t.key_columns := '{}';
        end if;
        return pgtrail.json_capture_body(t, target);
    end if;
    select s.zoned into zoned from pgtrail.shapes s where s.id = shape;
    inbox := format('pgtrail.%I', 'inbox_' || shape);
    columns := 'operation, old_row, new_row, zone, db_user, role_name, app_user, context, client_addr, client_port, '
               'application_name, backend_pid, sql';
    -- As in migration 3: every name qualified (no search_path per call).
    who := case when zoned then 'pg_catalog.current_setting(''TimeZone'')' else 'null' end
           || ', session_user, pg_catalog.current_setting(''role''), pgtrail.app_user(), pgtrail.app_context(), '
           'pg_catalog.inet_client_addr(), pg_catalog.inet_client_port(), '
           'pg_catalog.current_setting(''application_name''), pg_catalog.pg_backend_pid(), '
           || case when t.capture_sql then 'pg_catalog.current_query()' else 'null' end;
    skip := 'old operator(pg_catalog.*=) new';
    if cardinality(t.ignored) > 0 then
        skip := skip || format(' or (pg_catalog.row_to_json(old)::pg_catalog.jsonb operator(pg_catalog.-) %1$L::pg_catalog.text[])'
                               ' operator(pg_catalog.=) '
                               '(pg_catalog.row_to_json(new)::pg_catalog.jsonb operator(pg_catalog.-) %1$L::pg_catalog.text[])',
                               t.ignored);
    end if;

    return format($body$
declare
    o pgtrail.%1$I;
    n pgtrail.%1$I;
begin
    if tg_op operator(pg_catalog.=) 'UPDATE' then
        if %2$s then
            return null;
        end if;
        o := old;
        n := new;
        insert into %3$s (%4$s) values ('UPDATE', o, n, %5$s);
    elsif tg_op operator(pg_catalog.=) 'INSERT' then
        n := new;
        insert into %3$s (%4$s) values ('INSERT', null, n, %5$s);
    elsif tg_op operator(pg_catalog.=) 'DELETE' then
        o := old;
        insert into %3$s (%4$s) values ('DELETE', o, null, %5$s);
    else
        insert into %3$s (%4$s) values ('TRUNCATE', null, null, %5$s);
    end if;
    return null;
end;
$body$, 'shape_' || shape, skip, inbox, columns, who);
end;
$fn$;

-- After any DDL command: tables whose shape no longer matches them (a
-- column added, dropped, renamed or retyped, the table renamed or moved,
-- a parent's ALTER TABLE reaching a tracked child) get a new shape and
-- capture function before the transaction writes to them again. pgtrail's
-- own DDL here is not audit-worthy (as in an install): event triggers are
-- quiet while it runs, and only while it runs. This trigger itself fires
-- always, replica mode included (a stale shape would store values under
-- the wrong column names), so it skips the DDL it runs itself.
create or replace function pgtrail.refresh_shapes() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    stale oid[];
    rel oid;
    role_before text := current_setting('session_replication_role');
begin
    if current_setting('pgtrail.refreshing_shapes', true) = 'on' then
        return;
    end if;
    select array_agg(s.relid order by s.relid) into stale
      from pgtrail.shapes s
      join pgtrail.tracked t on t.relid = s.relid and t.mode = 'row'
     where s.current and s.signature is distinct from pgtrail.shape_signature(s.relid)
       and exists (select 1 from pg_class c where c.oid = s.relid);
    if stale is null then
        return;
    end if;
    perform set_config('session_replication_role', 'replica', true);
    perform set_config('pgtrail.refreshing_shapes', 'on', true);
    foreach rel in array stale loop
        perform pgtrail.install_capture(rel);
    end loop;
    perform set_config('pgtrail.refreshing_shapes', 'off', true);
    perform set_config('session_replication_role', role_before, true);
end;
$$;

drop event trigger if exists pgtrail_shapes;
create event trigger pgtrail_shapes on ddl_command_end execute function pgtrail.refresh_shapes();
alter event trigger pgtrail_shapes enable always;

select pgtrail.refresh_pending();

revoke execute on function pgtrail.shape_safe_type(oid), pgtrail.shape_columns(oid), pgtrail.shape_signature(oid),
    pgtrail.refresh_pending(), pgtrail.delete_sealed(bigint[]), pgtrail.drop_sealed_shapes(oid), pgtrail.shape_for(pgtrail.tracked),
    pgtrail.row_capture_body(pgtrail.tracked, text), pgtrail.json_capture_body(pgtrail.tracked, text),
    pgtrail.refresh_shapes() from public;
revoke execute on function pgtrail.json_in_zone(anyelement, text) from public;
-- The view calls it as whoever reads the view: the sealer and readers.
grant execute on function pgtrail.json_in_zone(anyelement, text) to pgtrail_reader;
grant execute on function pgtrail.delete_sealed(bigint[]) to pgtrail_admin;
