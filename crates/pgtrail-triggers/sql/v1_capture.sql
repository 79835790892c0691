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
    old jsonb,                         -- UPDATE: changed columns only
    new jsonb,
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
    tracked_at timestamptz not null default now()
);

-- Schemas whose new tables are tracked as soon as they are created.
create table if not exists pgtrail.auto_track (
    schema_name text primary key,
    ignored text[] not null default '{}',
    masked text[] not null default '{}',
    mask_mode text not null default 'hash' check (mask_mode in ('hash', 'redact')),
    capture_sql boolean not null default false
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
-- row in pgtrail.tracked. Statement-level triggers with transition tables:
-- one INSERT … SELECT per statement, however many rows it touched. UPDATEs
-- keep only the columns that changed (key columns are in pk), and an UPDATE
-- that changed only ignored columns, or nothing, is not logged.
create or replace function pgtrail.install_capture(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    t pgtrail.tracked;
    fn text := 'capture_' || rel;
    same_parts text;
    watched text;
    pk_new text;
    pk_old text;
    pk_upd text;
    keyless boolean;
    mask_open text := '';
    mask_close text := '';
    sql_expr text;
    body text;
begin
    select * into strict t from pgtrail.tracked where relid = rel;
    keyless := cardinality(t.key_columns) = 0;

    -- One CASE per column: its name when old and new are the same.
    select string_agg(format(
               case when pgtrail.has_equality(a.atttypid::regtype)
                    then 'case when (o.r).%1$I is not distinct from (n.r).%1$I then %1$L end'
                    else 'case when (o.r).%1$I::text is not distinct from (n.r).%1$I::text then %1$L end' end,
               a.attname), ', ' order by a.attnum),
           format('%L::text[]', coalesce(array_agg(a.attname::text order by a.attnum)
                      filter (where a.attname <> all (t.ignored)), '{}'))
      into same_parts, watched
      from pg_attribute a
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped;

    if keyless then
        pk_new := 'to_jsonb(n.r)';
        pk_old := 'to_jsonb(o.r)';
        pk_upd := 'to_jsonb(o.r)';
    else
        select 'jsonb_build_object(' || string_agg(format('%L, (n.r).%I::text', c, c), ', ') || ')',
               'jsonb_build_object(' || string_agg(format('%L, (o.r).%I::text', c, c), ', ') || ')'
          into pk_new, pk_old
          from unnest(t.key_columns) as c;
        pk_upd := pk_new;
    end if;

    if cardinality(t.masked) > 0 then
        mask_open := 'pgtrail.mask(';
        mask_close := format(', %L::text[], %L)', t.masked, t.mask_mode);
        pk_new := mask_open || pk_new || mask_close;
        pk_old := mask_open || pk_old || mask_close;
        pk_upd := mask_open || pk_upd || mask_close;
    end if;
    sql_expr := case when t.capture_sql then 'current_query()' else 'null::text' end;

    body := format($body$
declare
    v_db_user text := session_user;
    -- current_user is the definer here; SET ROLE shows in the setting.
    v_role text := nullif(current_setting('role'), 'none');
    v_app_user text := pgtrail.app_user();
    v_context text := pgtrail.app_context();
    v_addr inet := inet_client_addr();
    v_port int := inet_client_port();
    v_application text := current_setting('application_name');
    v_pid int := pg_backend_pid();
    v_sql text := %1$s;
begin
    if tg_op = 'INSERT' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'INSERT', tg_table_schema, tg_table_name, %2$L, %3$s, %7$sto_jsonb(n.r)%8$s,
            v_db_user, v_role, v_app_user, v_context, v_addr, v_port, v_application, v_pid, v_sql
        from (select n as r from pgtrail_new n) as n;
    elsif tg_op = 'UPDATE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'UPDATE', tg_table_schema, tg_table_name, %2$L, %5$s,
            %7$sto_jsonb(o.r) - u.same%8$s, %7$sto_jsonb(n.r) - u.same%8$s,
            v_db_user, v_role, v_app_user, v_context, v_addr, v_port, v_application, v_pid, v_sql
        -- Transition tables hold old and new rows in the same order.
        from (select row_number() over () as i, o as r from pgtrail_old o) as o
        join (select row_number() over () as i, n as r from pgtrail_new n) as n using (i)
        cross join lateral (select array_remove(array[%9$s]::text[], null) as same) as u
        where not (u.same @> %6$s);
    elsif tg_op = 'DELETE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'DELETE', tg_table_schema, tg_table_name, %2$L, %4$s, %7$sto_jsonb(o.r)%8$s,
            v_db_user, v_role, v_app_user, v_context, v_addr, v_port, v_application, v_pid, v_sql
        from (select o as r from pgtrail_old o) as o;
    else
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        values ('r', 'TRUNCATE', tg_table_schema, tg_table_name, %2$L,
            v_db_user, v_role, v_app_user, v_context, v_addr, v_port, v_application, v_pid, v_sql);
    end if;
    return null;
end;
$body$, sql_expr, keyless, pk_new, pk_old, pk_upd, watched, mask_open, mask_close, same_parts);

    execute format('create or replace function pgtrail.%I() returns trigger language plpgsql '
                   'security definer set search_path = pg_catalog, pg_temp as %L', fn, body);

    execute format('drop trigger if exists pgtrail_capture_insert on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_update on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_delete on %s', rel::regclass);
    execute format('drop trigger if exists pgtrail_capture_truncate on %s', rel::regclass);
    execute format('create trigger pgtrail_capture_insert after insert on %s referencing new table as pgtrail_new '
                   'for each statement execute function pgtrail.%I()', rel::regclass, fn);
    execute format('create trigger pgtrail_capture_update after update on %s referencing old table as pgtrail_old '
                   'new table as pgtrail_new for each statement execute function pgtrail.%I()', rel::regclass, fn);
    execute format('create trigger pgtrail_capture_delete after delete on %s referencing old table as pgtrail_old '
                   'for each statement execute function pgtrail.%I()', rel::regclass, fn);
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
    auto boolean default false
) returns pgtrail.tracked
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    kind "char";
    missing text;
    keys text[];
    result pgtrail.tracked;
begin
    select c.relkind into kind from pg_class c where c.oid = rel;
    if kind not in ('r', 'p') then
        raise exception 'pgtrail: % is not a table (only tables and partitioned tables can be tracked)', rel
            using errcode = '42809';
    end if;
    if mask_mode not in ('hash', 'redact') then
        raise exception 'pgtrail: mask mode must be hash or redact, not %', mask_mode using errcode = '22023';
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
                                      mask_mode, capture_sql, auto)
    select rel, n.nspname, c.relname, keys, coalesce(track.ignored, '{}'), coalesce(track.masked, '{}'),
           track.mask_mode, track.capture_sql, track.auto
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.oid = rel
    on conflict (relid) do update
       set schema_name = excluded.schema_name, table_name = excluded.table_name,
           key_columns = excluded.key_columns, ignored = excluded.ignored, masked = excluded.masked,
           mask_mode = excluded.mask_mode, capture_sql = excluded.capture_sql
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
                    a.mask_mode, a.capture_sql, true);
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
language sql stable set search_path = pg_catalog, pg_temp as $$
    select coalesce(nullif(current_setting('pgtrail.user', true), ''), nullif(current_setting('app.current_user', true), ''))
$$;
create or replace function pgtrail.app_context() returns text
language sql stable set search_path = pg_catalog, pg_temp as $$
    select nullif(current_setting('pgtrail.context', true), '')
$$;

drop event trigger if exists pgtrail_ddl;
create event trigger pgtrail_ddl on ddl_command_end execute function pgtrail.capture_ddl();
drop event trigger if exists pgtrail_drop;
create event trigger pgtrail_drop on sql_drop execute function pgtrail.capture_drop();
