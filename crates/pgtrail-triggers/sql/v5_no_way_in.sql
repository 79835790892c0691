-- pgtrail trigger capture, migration 5: no way into the trail but
-- pgtrail's, and alarms when capture is switched off.
--
-- What this closes (each tried on a real cluster, tests/protection.rs):
--
-- - Capture functions were executable by PUBLIC (functions are, when
--   created; migration 2 revoked only those that existed then). With USAGE
--   on schema pgtrail a role could attach one to its own temp table and
--   inject rows labelled as a tracked table. Now every pgtrail function of
--   this path is revoked from PUBLIC, and every capture function made later
--   too. Firing a trigger needs no EXECUTE (only CREATE TRIGGER checks it),
--   so the application's writes are captured as before.
-- - pgtrail_admin (the sealer's role) could DELETE pending rows, unsealed,
--   without a trace. Now only pgtrail.delete_sealed deletes them (SECURITY
--   DEFINER; the guard refuses DELETE by anyone but the owner), and it
--   refuses a transaction that has no event in the chain yet: the sealer
--   appends first, then deletes, in one transaction. The owner or a
--   superuser deleting or truncating pending rows outside it leaves an
--   alarm row in the inbox in the same transaction (and deleting that row
--   leaves another).
-- - Any session could `set pgtrail.refreshing_shapes = on` and make later
--   rows seal under stale column names. The "pgtrail is at work here" mark
--   is now a row in pgtrail.own_work, which no session can write.
-- - Dropping or disabling a capture trigger (its table's owner may) was
--   only a DDL event. It now also writes an alarm row, in the same
--   transaction; `pgtrail status --check` and `pgtrail run` notice what no
--   event trigger sees (ALTER EVENT TRIGGER … DISABLE, replica mode).
--
-- Rows already in the inbox are sealed as they are.

-- Transactions in which pgtrail's own functions are changing capture or
-- removing sealed rows. Nobody else may write here (no grant), so unlike a
-- session setting this mark cannot be forged from a session.
create table if not exists pgtrail.own_work (
    xid xid8 primary key
);
revoke all on pgtrail.own_work from public;

-- Marks this transaction as pgtrail's own work; false when it already was
-- (the caller then leaves the mark to whoever set it).
create or replace function pgtrail.begin_own_work() returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
    insert into pgtrail.own_work (xid) values (pg_current_xact_id()) on conflict do nothing;
    return found;
end;
$$;

create or replace function pgtrail.in_own_work() returns boolean
language sql stable set search_path = pg_catalog, pg_temp as $$
    select exists (select 1 from pgtrail.own_work where xid = pg_current_xact_id())
$$;

create or replace function pgtrail.end_own_work() returns void
language sql set search_path = pg_catalog, pg_temp as $$
    delete from pgtrail.own_work where xid = pg_current_xact_id()
$$;

-- Records an alarm: a row of kind 'a' in the inbox, sealed into the chain
-- as an `alarm` event with who raised it. `code` names the condition
-- (capture_trigger_dropped, …), the message says it for people.
create or replace function pgtrail.raise_alarm(code text, schema_name text, table_name text, message text)
returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
    insert into pgtrail.inbox (kind, operation, schema_name, table_name,
        db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid,
        sql, detail)
    values ('a', code, schema_name, table_name,
        session_user, nullif(current_setting('role'), 'none'), pgtrail.app_user(), pgtrail.app_context(),
        inet_client_addr(), inet_client_port(), current_setting('application_name'), pg_backend_pid(),
        current_query(), jsonb_build_object('message', message));
end;
$$;

-- The capture triggers a tracked table should have, and the problems with
-- what it has: missing (or replaced by one running another function),
-- disabled, or firing only in replica mode. One row per problem; none when
-- capture is whole.
create or replace function pgtrail.trigger_problems(rel oid)
returns table (code text, trigger_name text, message text)
language sql stable set search_path = pg_catalog, pg_temp as $$
    select case when t.oid is null then 'capture_trigger_dropped' else 'capture_trigger_disabled' end,
           w.name,
           case when t.oid is null then format('capture trigger %s of %s is missing (dropped, renamed or replaced): its changes are not captured',
                                               w.name, rel::regclass)
                when t.tgenabled = 'D' then format('capture trigger %s of %s is disabled: its changes are not captured',
                                                   w.name, rel::regclass)
                else format('capture trigger %s of %s fires only in replica mode: its changes are not captured',
                            w.name, rel::regclass) end
      from (values ('pgtrail_capture_insert'), ('pgtrail_capture_delete'), ('pgtrail_capture_truncate'),
                   ('pgtrail_capture_update')) as w(name)
      left join pg_trigger t on t.tgrelid = rel and t.tgname = w.name
                            and t.tgfoid = to_regprocedure(format('pgtrail.%I()', 'capture_' || rel))
     where (t.oid is null and (w.name <> 'pgtrail_capture_update' or exists (
                select 1 from pgtrail.tracked k
                  join pg_attribute a on a.attrelid = k.relid and a.attnum > 0 and not a.attisdropped
                 where k.relid = rel and a.attname <> all (k.ignored))))  -- no UPDATE trigger when all are ignored
        or t.tgenabled not in ('O', 'A')
$$;

-- Refuses direct DELETE on pending rows (see the guard of migration 2),
-- and raises an alarm when the owner or a superuser deletes or truncates
-- them outside pgtrail.delete_sealed.
create or replace function pgtrail.note_pending_removed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
    if not pgtrail.in_own_work() then
        perform pgtrail.raise_alarm('pending_rows_deleted', tg_table_schema, tg_table_name,
            format('%s on %I.%I removed captured rows before they were sealed: their changes are missing from the trail',
                   tg_op, tg_table_schema, tg_table_name));
    end if;
    return null;
end;
$$;

-- The guard and the alarm on the inbox and every shape table.
create or replace function pgtrail.protect_pending() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    r record;
begin
    for r in select c.oid::regclass as rel
               from pg_class c
              where c.relnamespace = 'pgtrail'::regnamespace and c.relkind = 'r'
                and (c.relname = 'inbox' or c.relname in (select 'inbox_' || s.id from pgtrail.shapes s))
                and not exists (select 1 from pg_trigger t where t.tgrelid = c.oid and t.tgname = 'pgtrail_guard_delete')
    loop
        execute format('create trigger pgtrail_guard_delete before delete on %s '
                       'for each statement execute function pgtrail.guard()', r.rel);
        execute format('create trigger pgtrail_pending_removed after delete or truncate on %s '
                       'for each statement execute function pgtrail.note_pending_removed()', r.rel);
    end loop;
end;
$fn$;

-- Removes sealed transactions' rows from the inbox and every shape table.
-- The sealer calls it in its transaction, after appending their events.
-- It is the only way to delete pending rows (pgtrail_admin may execute
-- it), so it checks what it is asked: every transaction named must have an
-- event in the chain after event `after` (the head the seal started from;
-- a seal appends a transaction's rows all together or not at all).
drop function if exists pgtrail.delete_sealed(bigint[]);
create or replace function pgtrail.delete_sealed(xids bigint[], after bigint) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
declare
    s record;
    n bigint;
    total bigint;
    mine boolean;
    unsealed bigint;
begin
    select x into unsealed
      from unnest(xids) as x
     where x not in (select e.xid from pgtrail.events e
                      where e.seq > after and e.source = 'trigger' and e.xid is not null)
     limit 1;
    if unsealed is not null then
        raise exception 'pgtrail: refused to delete the pending rows of transaction %: they are not sealed into the chain',
            unsealed using errcode = '42501';
    end if;
    mine := pgtrail.begin_own_work();
    delete from pgtrail.inbox where xid in (select x::text::xid8 from unnest(xids) as x);
    get diagnostics total = row_count;
    for s in select id from pgtrail.shapes order by id loop
        execute format('delete from pgtrail.%I where xid in (select x::text::xid8 from unnest($1) as x)',
                       'inbox_' || s.id) using xids;
        get diagnostics n = row_count;
        total := total + n;
    end loop;
    if mine then
        perform pgtrail.end_own_work();
    end if;
    return total;
end;
$fn$;

-- Drops every trigger of `rel` that runs its capture function, whatever
-- it is called now (a renamed one would otherwise fire beside the new ones).
create or replace function pgtrail.drop_capture_triggers(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    r record;
begin
    for r in select t.tgname from pg_trigger t
              where t.tgrelid = rel and not t.tgisinternal
                and t.tgfoid = coalesce(to_regprocedure(format('pgtrail.%I()', 'capture_' || rel)), 0)
                and t.tgparentid = 0 loop
        execute format('drop trigger %I on %s', r.tgname, rel::regclass);
    end loop;
end;
$fn$;

-- Capture is written by migration 3's generator, now pgtrail.write_capture;
-- install_capture wraps it: pgtrail's own DDL is not audit-worthy (event
-- triggers are quiet while it runs, and only then), the capture function
-- is revoked from PUBLIC, and new shape tables get the pending guard.
drop function if exists pgtrail.write_capture(oid);
alter function pgtrail.install_capture(oid) rename to write_capture;
create or replace function pgtrail.install_capture(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    mine boolean := pgtrail.begin_own_work();
    role_before text := current_setting('session_replication_role');
begin
    perform set_config('session_replication_role', 'replica', true);
    perform pgtrail.drop_capture_triggers(rel);
    perform pgtrail.write_capture(rel);
    execute format('revoke all on function pgtrail.%I() from public', 'capture_' || rel);
    perform pgtrail.protect_pending();
    perform set_config('session_replication_role', role_before, true);
    if mine then
        perform pgtrail.end_own_work();
    end if;
end;
$fn$;

-- Stops capture of one table; what was captured stays. Forgets the table
-- first, so that dropping its triggers is not an alarm (it is logged as
-- DDL). Returns whether it was tracked.
create or replace function pgtrail.untrack(rel regclass) returns boolean
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    was boolean;
begin
    delete from pgtrail.tracked where relid = rel;
    was := found;
    perform pgtrail.drop_capture_triggers(rel);
    execute format('drop function if exists pgtrail.%I()', 'capture_' || rel::oid);
    return was;
end;
$$;

-- Shape refresh (migration 4), with pgtrail's own work marked in
-- pgtrail.own_work instead of a session setting anyone could set.
create or replace function pgtrail.refresh_shapes() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    stale oid[];
    rel oid;
    mine boolean;
    role_before text := current_setting('session_replication_role');
begin
    if pgtrail.in_own_work() then
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
    mine := pgtrail.begin_own_work();
    perform set_config('session_replication_role', 'replica', true);
    foreach rel in array stale loop
        perform pgtrail.install_capture(rel);
    end loop;
    perform set_config('session_replication_role', role_before, true);
    if mine then
        perform pgtrail.end_own_work();
    end if;
end;
$$;

-- DDL capture (migration 1), and now: a tracked table whose capture
-- triggers an ALTER TABLE or ALTER TRIGGER disabled, renamed or set to
-- replica-only raises an alarm in the same transaction.
create or replace function pgtrail.capture_ddl() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    r record;
    a pgtrail.auto_track;
    touched oid[] := '{}';
    problem record;
begin
    for r in select * from pg_event_trigger_ddl_commands() loop
        continue when r.schema_name = 'pgtrail' or r.schema_name like 'pg\_temp%';
        if r.classid = 'pg_class'::regclass then
            touched := touched || r.objid;
        elsif r.classid = 'pg_trigger'::regclass then
            touched := touched || (select t.tgrelid from pg_trigger t where t.oid = r.objid);
        end if;
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
    for problem in select t.schema_name, t.table_name, x.code, x.message
               from pgtrail.tracked t
               cross join lateral pgtrail.trigger_problems(t.relid) as x
              where t.relid = any (touched)
                and exists (select 1 from pg_class c where c.oid = t.relid) loop
        perform pgtrail.raise_alarm(problem.code, problem.schema_name, problem.table_name, problem.message);
    end loop;
end;
$$;

-- Dropped objects (migration 1), and now: a capture trigger dropped from
-- a table that is still tracked raises an alarm in the same transaction
-- (`pgtrail untrack` forgets the table first; dropping the table ends its
-- capture and is logged as such).
create or replace function pgtrail.capture_drop() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    r record;
    rel oid;
begin
    for r in select * from pg_event_trigger_dropped_objects() loop
        if r.classid = 'pg_class'::regclass and r.object_type in ('table', 'partitioned table')
           and exists (select 1 from pgtrail.tracked where relid = r.objid) then
            delete from pgtrail.tracked where relid = r.objid;
            execute format('drop function if exists pgtrail.%I()', 'capture_' || r.objid);
        end if;
        if r.object_type = 'trigger' and cardinality(r.address_names) = 3
           and r.address_names[3] like 'pgtrail\_capture\_%' then
            rel := to_regclass(format('%I.%I', r.address_names[1], r.address_names[2]));
            if rel is not null and exists (select 1 from pgtrail.tracked t where t.relid = rel) then
                perform pgtrail.raise_alarm('capture_trigger_dropped', r.address_names[1], r.address_names[2],
                    format('capture trigger %s of %I.%I was dropped: its changes are not captured',
                           r.address_names[3], r.address_names[1], r.address_names[2]));
            end if;
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

select pgtrail.protect_pending();

-- Nothing of this path is PUBLIC's to call: not the generators, not the
-- capture functions (triggers fire without EXECUTE), not the sealer's.
-- (Logical replication's cdc_* functions are not this path's.)
do $$
declare
    r record;
begin
    for r in select p.oid::regprocedure as fn
               from pg_proc p
              where p.pronamespace = 'pgtrail'::regnamespace
                and p.proname not like 'cdc\_%' and p.proname <> 'set_context' loop
        execute format('revoke execute on function %s from public', r.fn);
    end loop;
end;
$$;
grant execute on function pgtrail.raise_alarm(text, text, text, text) to pgtrail_admin;
-- What the sealer and `pgtrail status` read, as pgtrail_admin or
-- pgtrail_reader: the installed version, the install id (not the masking
-- key beside it), whether capture is whole.
grant select on pgtrail.trigger_migrations to pgtrail_reader;
grant select (install_id) on pgtrail.capture_settings to pgtrail_admin;
grant execute on function pgtrail.trigger_problems(oid) to pgtrail_reader;
grant execute on function pgtrail.delete_sealed(bigint[], bigint) to pgtrail_admin;
