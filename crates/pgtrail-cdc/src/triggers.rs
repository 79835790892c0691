//! The SQL pgtrail installs for `--context`: the function that emits the
//! actor as a transactional logical message, the statement trigger that calls
//! it once per transaction (see [`crate::context`] for why), the DDL event
//! triggers, and `pgtrail.set_context`.
//!
//! The function text is generated for the configured session settings
//! (`[identity]` in pgtrail.toml); every name goes in as a quoted literal.

use pgtrail_core::config::IdentityConfig;
use tokio_postgres::Client;

use crate::connection::quote_literal;
use crate::setup::Table;
use crate::CdcError;

/// The context trigger's expression of the statement's sqlcommenter comment.
const STATEMENT_COMMENT: &str = "case when pg_catalog.strpos(pg_catalog.current_query(), '*/') \
     operator(pg_catalog.>) 0 then pgtrail.cdc_statement_comment(pg_catalog.current_query()) end";

/// The SQL of the context and DDL functions, for the session settings in `identity`.
pub fn context_functions_sql(identity: &IdentityConfig) -> String {
    let user_exprs: Vec<String> = identity
        .user_settings
        .iter()
        .map(|s| {
            format!(
                "nullif(pg_catalog.current_setting({}, true), '')",
                quote_literal(s)
            )
        })
        .collect();
    let app_user = if user_exprs.is_empty() {
        "null::text".to_string()
    } else {
        format!("coalesce({})", user_exprs.join(", "))
    };
    let context = format!(
        "nullif(pg_catalog.current_setting({}, true), '')",
        quote_literal(&identity.context_setting)
    );
    // The context setting, the statement's comment, then the user settings
    // in their configured order (the consumer takes the first that is set
    // and not empty).
    let read = |s: &String| format!("pg_catalog.current_setting({}, true)", quote_literal(s));
    let actor_settings: Vec<String> = [read(&identity.context_setting), STATEMENT_COMMENT.into()]
        .into_iter()
        .chain(identity.user_settings.iter().map(read))
        .collect();
    // The actor of DDL messages: merged into the command's jsonb object.
    let ddl_actor = format!(
        "pg_catalog.jsonb_build_object('app_user', {app_user}, 'context', {context}, \
         'db_user', session_user::text, 'current_user', invoker, \
         'client_addr', pg_catalog.host(pg_catalog.inet_client_addr()), \
         'client_port', pg_catalog.inet_client_port(), \
         'application_name', pg_catalog.current_setting('application_name'), \
         'backend_pid', pg_catalog.pg_backend_pid())"
    );
    format!(
        r#"create schema if not exists pgtrail;

-- Emits one transactional logical message naming the actor; the session
-- fields are computed here and win over `extra`. It runs as the writer
-- (pg_logical_emit_message is executable by PUBLIC by default): no SECURITY
-- DEFINER, whose SET search_path would cost every transaction and whose
-- privileges a hostile search_path could borrow.
create or replace function pgtrail.cdc_emit(prefix text, invoker text, extra jsonb)
returns void language plpgsql security invoker as $fn$
declare
  payload text;
begin
  if prefix not in ('pgtrail', 'pgtrail.ddl') then
    raise exception 'pgtrail.cdc_emit: unknown prefix %', prefix;
  end if;
  payload := (coalesce(extra, '{{}}'::jsonb) operator(pg_catalog.||) {actor})::text;
  perform pg_catalog.pg_logical_emit_message(true, prefix, payload);
end
$fn$;
grant execute on function pgtrail.cdc_emit(text, text, jsonb) to public;
grant usage on schema pgtrail to public;

-- Runs before every captured statement, so it is kept cheap (instructions
-- per single-row transaction measured in bench/cdc): the actor is one JSON
-- array of texts (positions in pgtrail-cdc's context.rs), built by a single
-- to_json call; it is emitted once per transaction, and again only when it
-- changes (SET LOCAL, SET ROLE, ...). Assignments, not PERFORM: PL/pgSQL
-- evaluates them as simple expressions, without starting an executor.
--
-- A statement tagged with a sqlcommenter comment (/*user='…',request_id='…'*/,
-- at its end or start) sends that comment too; the consumer reads the user
-- and context from it. Looking for one costs a copy of the statement text
-- and a search for "*/" in it; the comment is cut out only when one is there.
create or replace function pgtrail.cdc_context() returns trigger
language plpgsql as $fn$
declare
  actor text := pg_catalog.to_json(array[session_user::text, current_user::text,
    pg_catalog.host(pg_catalog.inet_client_addr()), pg_catalog.inet_client_port()::text,
    pg_catalog.current_setting('application_name'), pg_catalog.pg_backend_pid()::text,
    {actor_settings}])::text;
  emitted pg_catalog.pg_lsn;
  sent text;
begin
  if actor is distinct from pg_catalog.current_setting('pgtrail.cdc_sent', true) then
    emitted := pg_catalog.pg_logical_emit_message(true, 'pgtrail', actor);
    sent := pg_catalog.set_config('pgtrail.cdc_sent', actor, true);
  end if;
  return null;
end
$fn$;

-- The sqlcommenter comment that ends (or else starts) a statement, or null.
-- Only the last and first 4 kB are searched: a comment is never longer.
create or replace function pgtrail.cdc_statement_comment(statement text) returns text
language sql immutable parallel safe as $fn$
  select coalesce(
    pg_catalog.substring(pg_catalog.right(statement, 4096), '/\*(?:[^*]|\*+[^*/])*\*+/[\s;]*$'),
    pg_catalog.substring(pg_catalog.left(statement, 4096), '^\s*/\*(?:[^*]|\*+[^*/])*\*+/'))
$fn$;
grant execute on function pgtrail.cdc_statement_comment(text) to public;

create or replace function pgtrail.cdc_ddl() returns event_trigger
language plpgsql as $fn$
declare
  objects jsonb;
  first_schema text;
begin
  if tg_event = 'sql_drop' then
    if tg_tag not like 'DROP %' then
      return; -- e.g. ALTER TABLE … DROP COLUMN: reported once, at ddl_command_end
    end if;
    select coalesce(jsonb_agg(object_identity), '[]'::jsonb), min(schema_name)
      into objects, first_schema from pg_event_trigger_dropped_objects() where original;
  elsif tg_tag like 'DROP %' then
    return; -- reported by sql_drop, with the dropped objects
  else
    select coalesce(jsonb_agg(object_identity), '[]'::jsonb), min(schema_name)
      into objects, first_schema from pg_event_trigger_ddl_commands();
  end if;
  perform pgtrail.cdc_emit('pgtrail.ddl', current_user::text, jsonb_build_object(
    'command_tag', tg_tag, 'objects', objects, 'schema', first_schema, 'sql', current_query()));
end
$fn$;

do $do$
begin
  if to_regprocedure('pgtrail.set_context(text,jsonb)') is null then
    -- Sets the actor for the rest of the current transaction.
    create function pgtrail.set_context(app_user text, context jsonb default null) returns void
    language sql as $fn$
      select set_config({user_setting}, coalesce(app_user, ''), true),
             set_config({context_setting}, coalesce(context::text, ''), true);
    $fn$;
    grant execute on function pgtrail.set_context(text, jsonb) to public;
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'pgtrail_cdc_ddl') then
    create event trigger pgtrail_cdc_ddl on ddl_command_end execute function pgtrail.cdc_ddl();
  end if;
  if not exists (select 1 from pg_event_trigger where evtname = 'pgtrail_cdc_drop') then
    create event trigger pgtrail_cdc_drop on sql_drop execute function pgtrail.cdc_ddl();
  end if;
end
$do$;
"#,
        actor_settings = actor_settings.join(", "),
        actor = ddl_actor,
        user_setting = quote_literal(
            identity
                .user_settings
                .first()
                .map_or("pgtrail.user", String::as_str)
        ),
        context_setting = quote_literal(&identity.context_setting),
    )
}

/// Installs the context functions, the DDL event triggers and a statement
/// trigger on each of `tables`.
pub async fn install_context(
    client: &Client,
    identity: &IdentityConfig,
    tables: &[Table],
) -> Result<(), CdcError> {
    client
        .batch_execute(&context_functions_sql(identity))
        .await
        .map_err(crate::setup::catalog_error(
            "installing pgtrail's context functions",
        ))?;
    for table in tables {
        let sql = format!(
            "create or replace trigger pgtrail_cdc_context before insert or update or delete or truncate on {} \
             for each statement execute function pgtrail.cdc_context()",
            table.quoted()
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(crate::setup::catalog_error(format!(
                "adding the context trigger to {}",
                table.quoted()
            )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_sql_uses_the_configured_settings_quoted() {
        let identity = IdentityConfig {
            user_settings: vec!["app.current_user".into(), "pgtrail.user".into()],
            context_setting: "app.ctx".into(),
            ..IdentityConfig::default()
        };
        let sql = context_functions_sql(&identity);
        let first = sql
            .find("current_setting('app.current_user', true)")
            .expect("first setting");
        let second = sql
            .find("current_setting('pgtrail.user', true)")
            .expect("second setting");
        assert!(first < second, "settings are tried in configured order");
        assert!(sql.contains("current_setting('app.ctx', true)"));
        assert!(sql.contains("select set_config('app.current_user'"));
    }
}
