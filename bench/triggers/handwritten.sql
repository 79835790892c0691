-- The audit trigger everyone copies: a PL/pgSQL AFTER row trigger that
-- builds a JSONB session_info object and logs row_to_json(OLD) and
-- row_to_json(NEW) into a log table with three indexes.
drop table if exists audit_log cascade;
create table audit_log (
    id bigserial primary key,
    table_name text not null,
    operation text not null,
    old_data json,
    new_data json,
    session_info jsonb not null,
    changed_at timestamptz not null default now()
);
create index audit_log_table_name on audit_log (table_name);
create index audit_log_changed_at on audit_log (changed_at);

create or replace function audit_trigger() returns trigger
language plpgsql as $$
declare
    session_info jsonb;
begin
    session_info := jsonb_build_object(
        'db_user', session_user,
        'current_user', current_user,
        'app_user', current_setting('app.current_user', true),
        'client_addr', inet_client_addr(),
        'client_port', inet_client_port(),
        'application_name', current_setting('application_name'),
        'backend_pid', pg_backend_pid(),
        'txid', txid_current()
    );
    if tg_op = 'INSERT' then
        insert into audit_log (table_name, operation, new_data, session_info)
        values (tg_table_name, tg_op, row_to_json(new), session_info);
        return new;
    elsif tg_op = 'UPDATE' then
        insert into audit_log (table_name, operation, old_data, new_data, session_info)
        values (tg_table_name, tg_op, row_to_json(old), row_to_json(new), session_info);
        return new;
    else
        insert into audit_log (table_name, operation, old_data, session_info)
        values (tg_table_name, tg_op, row_to_json(old), session_info);
        return old;
    end if;
end;
$$;

create trigger accounts_audit after insert or update or delete on accounts
for each row execute function audit_trigger();
