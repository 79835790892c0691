-- pgtrail trigger capture, migration 2: roles and protection of the trail.
--
-- Application roles get nothing in schema pgtrail: the capture functions
-- are SECURITY DEFINER, so writes to tracked tables reach the inbox without
-- any privilege on it. pgtrail_reader reads the trail; pgtrail_admin also
-- tracks tables and seals. Nobody but the owner (and superusers) may
-- UPDATE, DELETE or TRUNCATE sealed events: privileges say so, and a guard
-- trigger says it again should someone GRANT too much by mistake.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'pgtrail_reader') then
        create role pgtrail_reader nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'pgtrail_admin') then
        create role pgtrail_admin nologin;
    end if;
end;
$$;
grant pgtrail_reader to pgtrail_admin;

revoke all on schema pgtrail from public;
revoke all on all tables in schema pgtrail from public;
revoke all on all sequences in schema pgtrail from public;
revoke execute on all functions in schema pgtrail from public;
grant usage on schema pgtrail to pgtrail_reader;
grant select on pgtrail.events, pgtrail.checkpoints, pgtrail.chain_head, pgtrail.schema_migrations,
    pgtrail.tracked, pgtrail.auto_track, pgtrail.inbox to pgtrail_reader;
-- Sealing: read and delete the inbox, append to the chain.
grant delete on pgtrail.inbox to pgtrail_admin;
grant insert on pgtrail.events, pgtrail.checkpoints to pgtrail_admin;
grant update on pgtrail.chain_head to pgtrail_admin;
grant execute on function pgtrail.track(regclass, text[], text[], text, boolean, boolean, text),
    pgtrail.untrack(regclass) to pgtrail_admin;
grant insert, update, delete on pgtrail.auto_track to pgtrail_admin;

-- Refuses changes to the trail by anyone but its owner or a superuser.
create or replace function pgtrail.guard() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
    if not (select r.rolsuper from pg_roles r where r.rolname = current_user)
       and not pg_has_role(current_user, (select c.relowner from pg_class c where c.oid = tg_relid), 'member') then
        raise exception 'pgtrail: % on %.% refused: the audit trail is append-only', tg_op, tg_table_schema, tg_table_name
            using errcode = '42501';
    end if;
    if tg_level = 'STATEMENT' then
        return null;
    elsif tg_op = 'DELETE' then
        return old;
    end if;
    return new;
end;
$$;

drop trigger if exists pgtrail_guard on pgtrail.events;
create trigger pgtrail_guard before update or delete on pgtrail.events
    for each row execute function pgtrail.guard();
drop trigger if exists pgtrail_guard_truncate on pgtrail.events;
create trigger pgtrail_guard_truncate before truncate on pgtrail.events
    for each statement execute function pgtrail.guard();
drop trigger if exists pgtrail_guard on pgtrail.inbox;
create trigger pgtrail_guard before update or truncate on pgtrail.inbox
    for each statement execute function pgtrail.guard();
