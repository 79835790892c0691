-- pgtrail trigger capture, migration 1: the inbox, the tracked-table
-- registry and the functions that generate per-table capture triggers.
--
-- Written to be re-runnable (if not exists / or replace): `pgtrail uninstall`
-- removes the functions but keeps the data tables, and a later install runs
-- every migration again on top of what is left.

-- Settings of this install: a random id (mixed into event ids, so a
-- reinstall never reuses one) and the key of masked columns' keyed hash,
-- kept as HMAC-SHA256's inner and outer pads.
create table if not exists pgtrail.capture_settings (
    singleton boolean primary key default true check (singleton),
    install_id uuid not null,
    mask_ipad bytea not null,
    mask_opad bytea not null
);

create or replace function pgtrail.hmac_pad(key bytea, pad int) returns bytea
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
    padded bytea := decode(repeat('00', 64), 'hex');
begin
    for i in 0..63 loop
        padded := set_byte(padded, i,
            (case when i < length(key) then get_byte(key, i) else 0 end) # pad);
    end loop;
    return padded;
end;
$$;

insert into pgtrail.capture_settings (install_id, mask_ipad, mask_opad)
select gen_random_uuid(), pgtrail.hmac_pad(k, 54), pgtrail.hmac_pad(k, 92)
from (select uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()) as k) as key
on conflict (singleton) do nothing;

-- Rows written by the capture triggers, waiting to be sealed into
-- pgtrail.events. Lean on purpose: no index, no key, nothing derived.
-- The sealer reads rows of finished transactions in commit order, seals
-- them through the store and deletes them in the same transaction.
create sequence if not exists pgtrail.inbox_id_seq cache 32;
create table if not exists pgtrail.inbox (
    id bigint not null default nextval('pgtrail.inbox_id_seq'),  -- order inside a transaction
    xid xid8 not null default pg_current_xact_id(),
    captured_at timestamptz not null default statement_timestamp(),
    kind "char" not null,              -- r = row change, d = ddl
    operation text not null,           -- INSERT/UPDATE/DELETE/TRUNCATE or the command tag
    schema_name text,
    table_name text,
    keyless boolean not null default false,  -- pk is the whole old/new row
    pk jsonb,                          -- key columns -> text (keyless: the row)
    old json,                          -- json, not jsonb: row_to_json is the cheapest image
    new json,
    db_user text,
    role_name text,                    -- SET ROLE in effect, if any
    app_user text,
    context text,
    client_addr inet,
    client_port int,
    application_name text,
    backend_pid int,
    sql text,
    detail jsonb                       -- ddl: object type and identity
) with (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);

-- Tables whose changes are captured, and how.
create table if not exists pgtrail.tracked (
    relid oid primary key,
    schema_name text not null,
    table_name text not null,
    key_columns text[] not null,       -- empty: the full row is the identity
    ignored text[] not null default '{}',
    masked text[] not null default '{}',
    mask_mode text not null default 'hash' check (mask_mode in ('hash', 'redact')),
    capture_sql boolean not null default false,
    auto boolean not null default false,
    mode text not null default 'row' check (mode in ('row', 'statement')),
    tracked_at timestamptz not null default now()
);

-- Schemas whose new tables are tracked as soon as they are created.
create table if not exists pgtrail.auto_track (
    schema_name text primary key,
    ignored text[] not null default '{}',
    masked text[] not null default '{}',
    mask_mode text not null default 'hash' check (mask_mode in ('hash', 'redact')),
    capture_sql boolean not null default false,
    mode text not null default 'row' check (mode in ('row', 'statement'))
);

-- The keyed hash of a masked value: HMAC-SHA256 with this install's key,
-- so equal values still compare equal but cannot be guessed from the trail.
create or replace function pgtrail.keyed_hash(value text) returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
    select encode(sha256(s.mask_opad || sha256(s.mask_ipad || convert_to(value, 'UTF8'))), 'hex')
    from pgtrail.capture_settings s
$$;

-- `image` with the `columns` present in it masked.
create or replace function pgtrail.mask(image jsonb, columns text[], mode text) returns jsonb
language sql stable set search_path = pg_catalog, pg_temp as $$
    select case when image is null then null else image || coalesce((
        select jsonb_object_agg(c, case
            when image -> c = 'null'::jsonb then 'null'::jsonb
            when mode = 'redact' then '"***"'::jsonb
            else to_jsonb(pgtrail.keyed_hash(image ->> c)) end)
        from unnest(columns) as c
        where image ? c), '{}'::jsonb) end
$$;

-- Whether values of type `t` can be compared with IS DISTINCT FROM
-- (json, xml, point … cannot: they are compared as text).
create or replace function pgtrail.has_equality(t regtype) returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
    execute format('select null::%s is distinct from null::%s', t, t);
    return true;
exception when others then
    return false;
end;
$$;

-- Writes the capture function and triggers of one tracked table from its
-- row in pgtrail.tracked, in one of two modes (measured in bench/triggers):
--
-- row (default): AFTER … FOR EACH ROW triggers, each running one cached
--   INSERT … VALUES. The cheapest per statement, so the best for OLTP.
--   An UPDATE that changed nothing (binary row equality, *=), or only
--   ignored columns, returns before writing. (A WHEN clause did that in C
--   but was measured at ~30 µs per statement: its expression is prepared
--   anew for every statement.) The images are whole rows (two parameters):
--   picking the changed columns here would pass every column of OLD and
--   NEW as a parameter, measured at 3× the cost; the sealer keeps only the
--   changed columns.
-- statement: AFTER … FOR EACH STATEMENT triggers with transition tables,
--   one INSERT … SELECT per statement however many rows it touched: the
--   best for bulk statements. Old and new rows are paired by position
--   (transition tables keep both in the order rows were updated); plans
--   are made per call (force_custom_plan) so they fit the row count.
--
-- Either way a sealed UPDATE keeps only the columns that changed (the key
-- is in pk), and nothing is derived that the sealer can derive later.
create or replace function pgtrail.install_capture(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    t pgtrail.tracked;
    fn text := 'capture_' || rel;
    o text;                 -- how the old row is named: old (row) or o (statement)
    n text;
    img_old text;           -- UPDATE images: only the changed columns
    img_new text;
    watched_old text;
    watched_new text;
    pk_new text;
    pk_old text;
    keyless boolean;
    mask_open text := '';
    mask_close text := '';
    who text;
    body text;
    settings text := 'set search_path = pg_catalog, pg_temp';
    target text := 'tg_table_schema, tg_table_name';
begin
    select * into strict t from pgtrail.tracked where relid = rel;
    -- Row triggers of a partitioned table run on its partitions: name the
    -- table that was tracked, not the partition.
    if (select c.relkind from pg_class c where c.oid = rel) = 'p' then
        target := format('%L, %L', t.schema_name, t.table_name);
    end if;
    keyless := cardinality(t.key_columns) = 0;
    if t.mode = 'row' then
        o := 'old';
        n := 'new';
    else
        o := 'o';
        n := 'n';
        -- Plans fit each statement's row count; pairing 200,000 rows sorts
        -- or hashes them in memory rather than on disk.
        -- JIT compiling the capture query costs more than it saves.
        settings := settings || ' set plan_cache_mode = force_custom_plan set work_mem = ''128MB'' set jit = off';
    end if;

    -- Per column: a one-key object when it changed, else '{}': converting
    -- only changed values to JSON is what keeps a wide row's UPDATE cheap
    -- (to_jsonb of a whole 15-column row costs ~7 µs; this, under 1).
    -- And the watched columns as row constructors. Types without an
    -- equality operator (json, xml, point…) compare as text.
    select string_agg(format('case when %s is distinct from %s then jsonb_build_object(%L, %s.%I) else ''{}''::jsonb end',
                             col_old, col_new, a.attname, o, a.attname), ' || ' order by a.attnum),
           string_agg(format('case when %s is distinct from %s then jsonb_build_object(%L, %s.%I) else ''{}''::jsonb end',
                             col_old, col_new, a.attname, n, a.attname), ' || ' order by a.attnum),
           string_agg(col_old, ', ' order by a.attnum) filter (where a.attname <> all (t.ignored)),
           string_agg(col_new, ', ' order by a.attnum) filter (where a.attname <> all (t.ignored))
      into img_old, img_new, watched_old, watched_new
      from pg_attribute a
      cross join lateral (select pgtrail.has_equality(a.atttypid::regtype) as eq) e
      cross join lateral (
          select format(case when e.eq then '%s.%I' else '%s.%I::text' end, o, a.attname) as col_old,
                 format(case when e.eq then '%s.%I' else '%s.%I::text' end, n, a.attname) as col_new) c
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped;
    if watched_old is not null then
        watched_old := 'row(' || watched_old || ')';
        watched_new := 'row(' || watched_new || ')';
    end if;

    if keyless then
        pk_new := format('to_jsonb(%s)', n);
        pk_old := format('to_jsonb(%s)', o);
    else
        select 'jsonb_build_object(' || string_agg(format('%L, %s.%I::text', c, n, c), ', ') || ')',
               'jsonb_build_object(' || string_agg(format('%L, %s.%I::text', c, o, c), ', ') || ')'
          into pk_new, pk_old
          from unnest(t.key_columns) as c;
    end if;
    if cardinality(t.masked) > 0 then
        pk_new := format('pgtrail.mask(%s, %L::text[], %L)', pk_new, t.masked, t.mask_mode);
        pk_old := format('pgtrail.mask(%s, %L::text[], %L)', pk_old, t.masked, t.mask_mode);
        mask_open := 'pgtrail.mask((';
        mask_close := format(')::jsonb, %L::text[], %L)::json', t.masked, t.mask_mode);
    end if;
    -- current_user is the definer here; a SET ROLE shows in the setting.
    who := 'session_user, nullif(current_setting(''role''), ''none''), pgtrail.app_user(), pgtrail.app_context(), '
           'inet_client_addr(), inet_client_port(), current_setting(''application_name''), pg_backend_pid(), '
           || case when t.capture_sql then 'current_query()' else 'null' end;

    if t.mode = 'row' then
        body := format($body$
begin
    if tg_op = 'UPDATE' then
        if old *= new%11$s then
            return null;  -- nothing (watched) changed
        end if;
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'UPDATE', %10$s, %2$L, %8$s,
            %5$srow_to_json(old)%6$s, %5$srow_to_json(new)%6$s, %7$s);
    elsif tg_op = 'INSERT' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'INSERT', %10$s, %2$L, %3$s, %5$srow_to_json(new)%6$s, %7$s);
    elsif tg_op = 'DELETE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'DELETE', %10$s, %2$L, %4$s, %5$srow_to_json(old)%6$s, %7$s);
    else
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'TRUNCATE', %10$s, %2$L, %7$s);
    end if;
    return null;
end;
$body$, img_old, keyless, pk_new, pk_old, mask_open, mask_close, who,
            -- UPDATE: the new key; keyless tables: the old row, as it was known.
            case when keyless then pk_old else pk_new end, img_new, target,
            -- Only ignored columns changed: compare the rest.
            case when cardinality(t.ignored) = 0 then ''
                 else format(' or (row_to_json(old)::jsonb - %1$L::text[]) = (row_to_json(new)::jsonb - %1$L::text[])',
                             t.ignored) end);
    else
        body := format($body$
begin
    if tg_op = 'UPDATE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'UPDATE', tg_table_schema, tg_table_name, %2$L, %8$s,
            (%5$s%1$s%6$s)::json, (%5$s%11$s%6$s)::json, %7$s
        from (select row_number() over () as pgtrail_ordinal, * from pgtrail_old) as o
        join (select row_number() over () as pgtrail_ordinal, * from pgtrail_new) as n using (pgtrail_ordinal)
        where %9$s is distinct from %10$s;
    elsif tg_op = 'INSERT' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'INSERT', tg_table_schema, tg_table_name, %2$L, %3$s, %5$srow_to_json(n)%6$s, %7$s
        from pgtrail_new as n;
    elsif tg_op = 'DELETE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'DELETE', tg_table_schema, tg_table_name, %2$L, %4$s, %5$srow_to_json(o)%6$s, %7$s
        from pgtrail_old as o;
    else
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'TRUNCATE', tg_table_schema, tg_table_name, %2$L, %7$s);
    end if;
    return null;
end;
$body$, img_old, keyless, pk_new, pk_old, mask_open, mask_close, who,
            case when keyless then '(' || pk_old || ' - ''pgtrail_ordinal'')' else pk_new end,
            coalesce(watched_old, 'null::record'), coalesce(watched_new, 'null::record'), img_new);
    end if;

    execute format('create or replace function pgtrail.%I() returns trigger language plpgsql '
                   'security definer %s as %L', fn, settings, body);

    execute format('drop trigger if exists pgtrail_capture_insert on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_update on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_delete on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_truncate on %s', rel::regclass);
    if t.mode = 'row' then
        execute format('create trigger pgtrail_capture_insert after insert on %s '
                       'for each row execute function pgtrail.%I()', rel::regclass, fn);
        if watched_old is not null then
            execute format('create trigger pgtrail_capture_update after update on %s for each row '
                           'execute function pgtrail.%I()', rel::regclass, fn);
        end if;
        execute format('create trigger pgtrail_capture_delete after delete on %s '
                       'for each row execute function pgtrail.%I()', rel::regclass, fn);
    else
        execute format('create trigger pgtrail_capture_insert after insert on %s referencing new table as pgtrail_new '
                       'for each statement execute function pgtrail.%I()', rel::regclass, fn);
        if watched_old is not null then
            execute format('create trigger pgtrail_capture_update after update on %s referencing old table as pgtrail_old '
                           'new table as pgtrail_new for each statement execute function pgtrail.%I()', rel::regclass, fn);
        end if;
        execute format('create trigger pgtrail_capture_delete after delete on %s referencing old table as pgtrail_old '
                       'for each statement execute function pgtrail.%I()', rel::regclass, fn);
    end if;
    execute format('create trigger pgtrail_capture_truncate after truncate on %s '
                   'for each statement execute function pgtrail.%I()', rel::regclass, fn);
end;
$fn$;

-- Starts (or re-configures) capture of one table. Refuses what is not a
-- table and columns that do not exist, with the name in the message.
create or replace function pgtrail.track(
    rel regclass,
    ignored text[] default '{}',
    masked text[] default '{}',
    mask_mode text default 'hash',
    capture_sql boolean default false,
    auto boolean default false,
    mode text default 'row'
) returns pgtrail.tracked
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    kind "char";
    missing text;
    keys text[];
    result pgtrail.tracked;
begin
    select c.relkind into kind from pg_class c where c.oid = rel;
    if (select c.relnamespace from pg_class c where c.oid = rel) = 'pgtrail'::regnamespace then
        raise exception 'pgtrail: % is pgtrail''s own table: it cannot be tracked', rel using errcode = '42809';
    end if;
    if kind not in ('r', 'p') then
        raise exception 'pgtrail: % is not a table (only tables and partitioned tables can be tracked)', rel
            using errcode = '42809';
    end if;
    if mask_mode not in ('hash', 'redact') then
        raise exception 'pgtrail: mask mode must be hash or redact, not %', mask_mode using errcode = '22023';
    end if;
    if mode not in ('row', 'statement') then
        raise exception 'pgtrail: capture mode must be row or statement, not %', mode using errcode = '22023';
    end if;
    select string_agg(c, ', ') into missing
      from unnest(coalesce(ignored, '{}') || coalesce(masked, '{}')) as c
     where not exists (select 1 from pg_attribute a
                        where a.attrelid = rel and a.attname = c and a.attnum > 0 and not a.attisdropped);
    if missing is not null then
        raise exception 'pgtrail: table % has no column %', rel, missing using errcode = '42703';
    end if;
    select coalesce(array_agg(a.attname::text order by k.ord), '{}') into keys
      from pg_index i
      cross join lateral unnest(i.indkey) with ordinality as k(attnum, ord)
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = rel and i.indisprimary;

    insert into pgtrail.tracked as t (relid, schema_name, table_name, key_columns, ignored, masked,
                                      mask_mode, capture_sql, auto, mode)
    select rel, n.nspname, c.relname, keys, coalesce(track.ignored, '{}'), coalesce(track.masked, '{}'),
           track.mask_mode, track.capture_sql, track.auto, track.mode
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = rel
    on conflict (relid) do update
       set schema_name = excluded.schema_name, table_name = excluded.table_name,
           key_columns = excluded.key_columns, ignored = excluded.ignored, masked = excluded.masked,
           mask_mode = excluded.mask_mode, capture_sql = excluded.capture_sql, mode = excluded.mode
    returning * into result;
    perform pgtrail.install_capture(rel);
    return result;
end;
$$;

-- Stops capture of one table; what was captured stays. Returns whether it
-- was tracked.
create or replace function pgtrail.untrack(rel regclass) returns boolean
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
    execute format('drop trigger if exists pgtrail_capture_insert on %s', rel);
    execute format('drop trigger if exists pgtrail_capture_update on %s', rel);
    execute format('drop trigger if exists pgtrail_capture_delete on %s', rel);
    execute format('drop trigger if exists pgtrail_capture_truncate on %s', rel);
    execute format('drop function if exists pgtrail.%I()', 'capture_' || rel::oid);
    delete from pgtrail.tracked where relid = rel;
    return found;
end;
$$;

-- Regenerates every tracked table's capture (after an upgrade changed the
-- generator). Forgets tables that no longer exist.
create or replace function pgtrail.reinstall_captures() returns integer
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
    rel oid;
    n integer := 0;
begin
    delete from pgtrail.tracked t where not exists (select 1 from pg_class c where c.oid = t.relid);
    for rel in select relid from pgtrail.tracked order by relid loop
        perform pgtrail.install_capture(rel);
        n := n + 1;
    end loop;
    return n;
end;
$$;

-- DDL capture: one inbox row per command, with the same who/where fields.
-- New tables in an auto-tracked schema are tracked here, in the creating
-- transaction. pgtrail's own objects are not logged.
create or replace function pgtrail.capture_ddl() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    r record;
    a pgtrail.auto_track;
begin
    for r in select * from pg_event_trigger_ddl_commands() loop
        continue when r.schema_name = 'pgtrail' or r.schema_name like 'pg\_temp%';
        -- pgtrail's own capture triggers (tracking a table): listed by
        -- `pgtrail status`, not logged as schema changes. Dropping or
        -- disabling them is logged.
        continue when r.command_tag = 'CREATE TRIGGER' and exists (
            select 1 from pg_trigger t join pg_proc p on p.oid = t.tgfoid
             where t.oid = r.objid and p.pronamespace = 'pgtrail'::regnamespace);
        insert into pgtrail.inbox (kind, operation, schema_name, table_name,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid,
            sql, detail)
        values ('d', r.command_tag, r.schema_name,
            case when r.classid = 'pg_class'::regclass
                 then (select c.relname::text from pg_class c where c.oid = r.objid) end,
            session_user, nullif(current_setting('role'), 'none'), pgtrail.app_user(), pgtrail.app_context(),
            inet_client_addr(), inet_client_port(), current_setting('application_name'), pg_backend_pid(),
            current_query(),
            jsonb_build_object('object_type', r.object_type, 'object_identity', r.object_identity));
        if r.command_tag in ('CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO') and r.object_type = 'table' then
            select * into a from pgtrail.auto_track where schema_name = r.schema_name;
            if found then
                -- The schema's options apply to the columns this table has.
                perform pgtrail.track(r.objid::regclass,
                    array(select c from unnest(a.ignored) c
                          where exists (select 1 from pg_attribute x where x.attrelid = r.objid and x.attname = c
                                        and x.attnum > 0 and not x.attisdropped)),
                    array(select c from unnest(a.masked) c
                          where exists (select 1 from pg_attribute x where x.attrelid = r.objid and x.attname = c
                                        and x.attnum > 0 and not x.attisdropped)),
                    a.mask_mode, a.capture_sql, true, a.mode);
            end if;
        end if;
    end loop;
end;
$$;

-- Dropped objects: logged, and a dropped tracked table is forgotten.
create or replace function pgtrail.capture_drop() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    r record;
begin
    for r in select * from pg_event_trigger_dropped_objects() loop
        if r.classid = 'pg_class'::regclass and r.object_type in ('table', 'partitioned table')
           and exists (select 1 from pgtrail.tracked where relid = r.objid) then
            delete from pgtrail.tracked where relid = r.objid;
            execute format('drop function if exists pgtrail.%I()', 'capture_' || r.objid);
        end if;
        continue when not r.original or r.schema_name = 'pgtrail' or r.schema_name like 'pg\_temp%';
        insert into pgtrail.inbox (kind, operation, schema_name, table_name,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid,
            sql, detail)
        values ('d', tg_tag, r.schema_name,
            case when r.classid = 'pg_class'::regclass then r.object_name end,
            session_user, nullif(current_setting('role'), 'none'), pgtrail.app_user(), pgtrail.app_context(),
            inet_client_addr(), inet_client_port(), current_setting('application_name'), pg_backend_pid(),
            current_query(),
            jsonb_build_object('object_type', r.object_type, 'object_identity', r.object_identity));
    end loop;
end;
$$;

-- Application identity: defaults here, rewritten by every install from the
-- [identity] configuration.
create or replace function pgtrail.app_user() returns text
language sql stable as $$
    select coalesce(nullif(current_setting('pgtrail.user', true), ''), nullif(current_setting('app.current_user', true), ''))
$$;
create or replace function pgtrail.app_context() returns text
language sql stable as $$
    select nullif(current_setting('pgtrail.context', true), '')
$$;

drop event trigger if exists pgtrail_ddl;
create event trigger pgtrail_ddl on ddl_command_end execute function pgtrail.capture_ddl();
drop event trigger if exists pgtrail_drop;
create event trigger pgtrail_drop on sql_drop execute function pgtrail.capture_drop();
