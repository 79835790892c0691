-- pgtrail trigger capture, migration 3: a leaner row-mode trigger.
--
-- Measured in bench/triggers (instructions per single-row UPDATE of a
-- 15-column table, callgrind): most of a row trigger's cost is the
-- executor start of its INSERT, which compiles every expression of the
-- VALUES list anew for every row, and row_to_json, which looks up each
-- column's type for every row. This migration removes what can go:
--
-- - No `SET search_path` on row-mode capture functions (~11,000
--   instructions per row: the setting is parsed, applied and undone on
--   every call). They are still SECURITY DEFINER, so every name in their
--   body is schema-qualified instead: functions, types, and operators as
--   OPERATOR(pg_catalog.x). No IS DISTINCT FROM or NULLIF, which look up
--   `=` on the search path.
-- - The key is not built per row when it can be read from the row image:
--   keys of types whose JSON form, read as text, is their text output
--   (integers, numeric, text, uuid …) and not masked store the key column
--   names (a constant) and the sealer picks the values from the image.
--   Tables without a key store no key at all: it is the image.
-- - Session settings are stored as read (an empty app user or context,
--   role 'none'); the sealer turns those into "not set".
--
-- Tried and not kept (measured): session fields written once per
-- transaction (on its first change, remembered in a transaction-local
-- setting) cost ~1% less on a 2,000-row transaction but ~11% more on a
-- single-row one (the setting's save and restore); building the changed
-- columns' images in PL/pgSQL cost 8% less inside one long transaction but
-- twice as much per single-row transaction (its expressions are compiled
-- once per transaction).
--
-- Fixed on the way: statement mode named the transition rows o and n, so a
-- tracked table with a column named o or n failed its writes; they are
-- pgtrail_o and pgtrail_n now.
--
-- The inbox is unchanged: rows captured before this migration are sealed
-- as they are.

-- Key column types whose value, as row_to_json writes it and read back as
-- text, equals `value::text` (no DateStyle, no boolean t/f, no arrays; not
-- char(n) either: its image keeps the padding that ::text trims), so the
-- sealer can take the key from the image.
create or replace function pgtrail.key_readable_from_image(t regtype) returns boolean
language sql immutable set search_path = pg_catalog, pg_temp as $$
    select t in ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'numeric'::regtype, 'oid'::regtype,
                 'text'::regtype, 'character varying'::regtype, 'name'::regtype, 'uuid'::regtype)
$$;

-- The body of a row-mode capture function (AFTER … FOR EACH ROW): one
-- INSERT … VALUES per change, everything qualified (see above).
create or replace function pgtrail.row_capture_body(t pgtrail.tracked, target text) returns text
language plpgsql stable set search_path = pg_catalog, pg_temp as $fn$
declare
    keyless boolean := cardinality(t.key_columns) = 0;
    mask_open text := '';
    mask_close text := '';
    pk_new text;
    pk_old text;
    who text;
    skip text;
    columns text := 'kind, operation, schema_name, table_name, keyless, pk, old, new, '
                    'db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql';
begin
    if cardinality(t.masked) > 0 then
        mask_open := 'pgtrail.mask((';
        mask_close := format(')::pg_catalog.jsonb, %L::pg_catalog.text[], %L)::pg_catalog.json', t.masked, t.mask_mode);
    end if;

    if keyless then
        -- The sealer reads the whole row from the image.
        pk_new := 'null';
        pk_old := 'null';
    elsif not exists (
        select 1 from unnest(t.key_columns) as c
          left join pg_attribute a on a.attrelid = t.relid and a.attname = c and a.attnum > 0 and not a.attisdropped
         where a.attname is null or not pgtrail.key_readable_from_image(a.atttypid::regtype) or c = any (t.masked)) then
        -- The key column names, a constant: the sealer takes the values
        -- from the image (the new one, or the old one of a DELETE).
        pk_new := format('%L::pg_catalog.jsonb', to_jsonb(t.key_columns));
        pk_old := pk_new;
    else
        select 'pg_catalog.jsonb_build_object(' || string_agg(format('%L, new.%I::pg_catalog.text', c, c), ', ') || ')',
               'pg_catalog.jsonb_build_object(' || string_agg(format('%L, old.%I::pg_catalog.text', c, c), ', ') || ')'
          into pk_new, pk_old
          from unnest(t.key_columns) as c;
        if cardinality(t.masked) > 0 then
            pk_new := format('pgtrail.mask(%s, %L::pg_catalog.text[], %L)', pk_new, t.masked, t.mask_mode);
            pk_old := format('pgtrail.mask(%s, %L::pg_catalog.text[], %L)', pk_old, t.masked, t.mask_mode);
        end if;
    end if;

    -- current_user is the definer here; a SET ROLE shows in the setting.
    who := 'session_user, pg_catalog.current_setting(''role''), pgtrail.app_user(), pgtrail.app_context(), '
           'pg_catalog.inet_client_addr(), pg_catalog.inet_client_port(), '
           'pg_catalog.current_setting(''application_name''), pg_catalog.pg_backend_pid(), '
           || case when t.capture_sql then 'pg_catalog.current_query()' else 'null' end;

    -- Nothing changed (binary row equality), or only ignored columns.
    skip := 'old operator(pg_catalog.*=) new';
    if cardinality(t.ignored) > 0 then
        skip := skip || format(' or (pg_catalog.row_to_json(old)::pg_catalog.jsonb operator(pg_catalog.-) %1$L::pg_catalog.text[])'
                               ' operator(pg_catalog.=) '
                               '(pg_catalog.row_to_json(new)::pg_catalog.jsonb operator(pg_catalog.-) %1$L::pg_catalog.text[])',
                               t.ignored);
    end if;

    return format($body$
begin
    if tg_op operator(pg_catalog.=) 'UPDATE' then
        if %1$s then
            return null;
        end if;
        insert into pgtrail.inbox (%2$s)
        values ('r', 'UPDATE', %3$s, %4$L, %5$s,
            %7$spg_catalog.row_to_json(old)%8$s, %7$spg_catalog.row_to_json(new)%8$s, %9$s);
    elsif tg_op operator(pg_catalog.=) 'INSERT' then
        insert into pgtrail.inbox (%2$s)
        values ('r', 'INSERT', %3$s, %4$L, %5$s, null, %7$spg_catalog.row_to_json(new)%8$s, %9$s);
    elsif tg_op operator(pg_catalog.=) 'DELETE' then
        insert into pgtrail.inbox (%2$s)
        values ('r', 'DELETE', %3$s, %4$L, %6$s, %7$spg_catalog.row_to_json(old)%8$s, null, %9$s);
    else
        insert into pgtrail.inbox (%2$s)
        values ('r', 'TRUNCATE', %3$s, %4$L, null, null, null, %9$s);
    end if;
    return null;
end;
$body$, skip, columns, target, keyless,
        -- UPDATE and INSERT: the new key; DELETE: the old one.
        pk_new, pk_old, mask_open, mask_close, who);
end;
$fn$;

-- Writes the capture function and triggers of one tracked table from its
-- row in pgtrail.tracked (see migration 1 for the two modes). Row mode's
-- body comes from pgtrail.row_capture_body; statement mode is unchanged.
create or replace function pgtrail.install_capture(rel oid) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
    t pgtrail.tracked;
    fn text := 'capture_' || rel;
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
    settings text := '';
    target text := 'tg_table_schema, tg_table_name';
begin
    select * into strict t from pgtrail.tracked where relid = rel;
    -- Row triggers of a partitioned table run on its partitions: name the
    -- table that was tracked, not the partition.
    if (select c.relkind from pg_class c where c.oid = rel) = 'p' then
        target := format('%L, %L', t.schema_name, t.table_name);
    end if;
    keyless := cardinality(t.key_columns) = 0;

    -- The watched columns (all but the ignored ones), and for statement
    -- mode the changed-columns images. Types without an equality operator
    -- (json, xml, point…) compare as text.
    select string_agg(format('case when %s is distinct from %s then jsonb_build_object(%L, pgtrail_o.%I) else ''{}''::jsonb end',
                             col_old, col_new, a.attname, a.attname), ' || ' order by a.attnum),
           string_agg(format('case when %s is distinct from %s then jsonb_build_object(%L, pgtrail_n.%I) else ''{}''::jsonb end',
                             col_old, col_new, a.attname, a.attname), ' || ' order by a.attnum),
           string_agg(col_old, ', ' order by a.attnum) filter (where a.attname <> all (t.ignored)),
           string_agg(col_new, ', ' order by a.attnum) filter (where a.attname <> all (t.ignored))
      into img_old, img_new, watched_old, watched_new
      from pg_attribute a
      cross join lateral (select pgtrail.has_equality(a.atttypid::regtype) as eq) e
      cross join lateral (
          select format(case when e.eq then 'pgtrail_o.%I' else 'pgtrail_o.%I::text' end, a.attname) as col_old,
                 format(case when e.eq then 'pgtrail_n.%I' else 'pgtrail_n.%I::text' end, a.attname) as col_new) c
     where a.attrelid = rel and a.attnum > 0 and not a.attisdropped;

    if t.mode = 'row' then
        body := pgtrail.row_capture_body(t, target);
    else
        if watched_old is not null then
            watched_old := 'row(' || watched_old || ')';
            watched_new := 'row(' || watched_new || ')';
        end if;
        -- Plans fit each statement's row count; pairing 200,000 rows sorts
        -- or hashes them in memory rather than on disk.
        -- JIT compiling the capture query costs more than it saves.
        settings := 'set search_path = pg_catalog, pg_temp set plan_cache_mode = force_custom_plan '
                    'set work_mem = ''128MB'' set jit = off';
        if keyless then
            pk_new := 'to_jsonb(pgtrail_n)';
            pk_old := 'to_jsonb(pgtrail_o)';
        else
            select 'jsonb_build_object(' || string_agg(format('%L, pgtrail_n.%I::text', c, c), ', ') || ')',
                   'jsonb_build_object(' || string_agg(format('%L, pgtrail_o.%I::text', c, c), ', ') || ')'
              into pk_new, pk_old
              from unnest(t.key_columns) as c;
        end if;
        if cardinality(t.masked) > 0 then
            pk_new := format('pgtrail.mask(%s, %L::text[], %L)', pk_new, t.masked, t.mask_mode);
            pk_old := format('pgtrail.mask(%s, %L::text[], %L)', pk_old, t.masked, t.mask_mode);
            mask_open := 'pgtrail.mask((';
            mask_close := format(')::jsonb, %L::text[], %L)::json', t.masked, t.mask_mode);
        end if;
        who := 'session_user, nullif(current_setting(''role''), ''none''), pgtrail.app_user(), pgtrail.app_context(), '
               'inet_client_addr(), inet_client_port(), current_setting(''application_name''), pg_backend_pid(), '
               || case when t.capture_sql then 'current_query()' else 'null' end;
        body := format($body$
begin
    if tg_op = 'UPDATE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'UPDATE', tg_table_schema, tg_table_name, %2$L, %8$s,
            (%5$s%1$s%6$s)::json, (%5$s%11$s%6$s)::json, %7$s
        from (select row_number() over () as pgtrail_ordinal, * from pgtrail_old) as pgtrail_o
        join (select row_number() over () as pgtrail_ordinal, * from pgtrail_new) as pgtrail_n using (pgtrail_ordinal)
        where %9$s is distinct from %10$s;
    elsif tg_op = 'INSERT' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, new,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'INSERT', tg_table_schema, tg_table_name, %2$L, %3$s, %5$srow_to_json(pgtrail_n)%6$s, %7$s
        from pgtrail_new as pgtrail_n;
    elsif tg_op = 'DELETE' then
        insert into pgtrail.inbox (kind, operation, schema_name, table_name, keyless, pk, old,
            db_user, role_name, app_user, context, client_addr, client_port, application_name, backend_pid, sql)
        select 'r', 'DELETE', tg_table_schema, tg_table_name, %2$L, %4$s, %5$srow_to_json(pgtrail_o)%6$s, %7$s
        from pgtrail_old as pgtrail_o;
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

-- Application identity, as read (identity_sql rewrites these from the
-- configuration on every install): qualified, because the row-mode
-- capture functions inline them without a fixed search_path.
create or replace function pgtrail.app_user() returns text
language sql stable as $$
    select case when pg_catalog.current_setting('pgtrail.user', true) operator(pg_catalog.<>) ''
                then pg_catalog.current_setting('pgtrail.user', true)
                else pg_catalog.current_setting('app.current_user', true) end
$$;
create or replace function pgtrail.app_context() returns text
language sql stable as $$
    select pg_catalog.current_setting('pgtrail.context', true)
$$;
revoke execute on function pgtrail.key_readable_from_image(regtype), pgtrail.row_capture_body(pgtrail.tracked, text),
    pgtrail.app_user(), pgtrail.app_context() from public;
