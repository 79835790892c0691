-- Removes trigger capture: the capture triggers of every tracked table, the
-- event triggers, the guards and pgtrail's functions. The trail stays:
-- pgtrail.events and its checkpoints, and the inbox and tracked-table list,
-- so that a later install picks up where this one stopped.
-- The event triggers go first: dropping capture triggers here is no alarm.
drop event trigger if exists pgtrail_ddl;
drop event trigger if exists pgtrail_drop;
drop event trigger if exists pgtrail_shapes;
do $$
declare
    r record;
begin
    for r in select t.tgrelid::regclass as rel, t.tgname
               from pg_trigger t
               join pg_proc p on p.oid = t.tgfoid
               join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'pgtrail' and not t.tgisinternal loop
        execute format('drop trigger if exists %I on %s', r.tgname, r.rel);
    end loop;
end;
$$;
-- Rebuilt by the next install (it calls a function removed below); the
-- shape tables it reads stay, with their rows.
drop view if exists pgtrail.pending;
do $$
declare
    r record;
begin
    for r in select p.oid::regprocedure as fn
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
              where n.nspname = 'pgtrail'
                and (p.proname like 'capture\_%' or p.proname in ('hmac_pad', 'keyed_hash', 'mask',
                     'has_equality', 'install_capture', 'track', 'untrack', 'reinstall_captures',
                     'guard', 'app_user', 'app_context', 'comment_user_keys', 'key_readable_from_image',
                     'row_capture_body', 'json_capture_body', 'shape_safe_type', 'shape_columns',
                     'shape_signature', 'json_in_zone', 'refresh_pending', 'delete_sealed', 'drop_sealed_shapes', 'shape_for',
                     'refresh_shapes', 'begin_own_work', 'in_own_work', 'end_own_work',
                     'raise_alarm', 'trigger_problems', 'note_pending_removed', 'protect_pending',
                     'write_capture', 'drop_capture_triggers')) loop
        execute format('drop function if exists %s', r.fn);
    end loop;
end;
$$;
drop table if exists pgtrail.trigger_migrations;
