//! The SQL pgtrail installs for `--actor`, in schema [`SCHEMA`] (trigger
//! capture owns schema `pgtrail`): the statement trigger that emits the
//! actor as a transactional logical message before every captured statement
//! (see [`crate::context`] for why), the DDL event trigger, and
//! `pgtrail_cdc.set_context`.
//!
//! Who may write a `pgtrail` message decides who may forge an actor or a DDL
//! event, so the install takes EXECUTE on `pg_logical_emit_message` away
//! from PUBLIC in this database and emits only from SECURITY DEFINER
//! functions that applications cannot call: a trigger function cannot be
//! called directly, EXECUTE on it is revoked (so it cannot be attached to
//! another table), and it reads the session's identity itself. No setting
//! decides whether the actor is sent: it is sent before every statement.
//!
//! The function text is generated for the configured session settings
//! (`[identity]` in pgtrail.toml); every name goes in as a quoted literal.

use pgtrail_core::config::IdentityConfig;
use tokio_postgres::Client;

use crate::catalog::{catalog_error, Table};
use crate::connection::{quote_ident, quote_literal};
use crate::CdcError;

/// The schema of the logical-replication objects.
pub const SCHEMA: &str = "pgtrail_cdc";

/// Name of the actor trigger (a statement trigger) on each captured table.
/// It keeps its installed name, `…_context`, from before the actor had its
/// own word: renaming it would drop and recreate a trigger on every
/// published table (ARCHITECTURE.md, "Glossary").
pub const ACTOR_TRIGGER: &str = "pgtrail_cdc_context";

/// The actor trigger's expression of the statement's sqlcommenter comment.
const STATEMENT_COMMENT: &str = "case when pg_catalog.strpos(pg_catalog.current_query(), '*/') \
     operator(pg_catalog.>) 0 then pgtrail_cdc.statement_comment(pg_catalog.current_query()) end";

/// The roles, other than superusers and `owner`, that may execute
/// `pg_logical_emit_message` in the connected database (`PUBLIC` for every
/// role): each could forge pgtrail's actor and DDL messages.
pub const MESSAGE_EMITTERS_SQL: &str = "select distinct case when a.grantee = 0 then 'PUBLIC' \
     else r.rolname::text end \
     from pg_catalog.pg_proc p \
     cross join lateral pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a \
     left join pg_catalog.pg_roles r on r.oid = a.grantee \
     where p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace \
       and p.proname = 'pg_logical_emit_message' and a.privilege_type = 'EXECUTE' \
       and (a.grantee = 0 or not r.rolsuper) and r.rolname is distinct from $1 \
     order by 1";

/// The actor array the context and DDL functions send: `[session_user,
/// role set with SET ROLE ('none' when none), client_addr, client_port,
/// application_name, backend_pid, context setting, statement comment, user
/// setting 1, …]` (positions read by `Actor::parse`). Every name is
/// schema-qualified: the actor function runs as its owner without a
/// `search_path` of its own.
fn actor_array(identity: &IdentityConfig, with_comment: bool) -> String {
    let read = |s: &String| format!("pg_catalog.current_setting({}, true)", quote_literal(s));
    let comment = if with_comment {
        STATEMENT_COMMENT.to_string()
    } else {
        "null::pg_catalog.text".to_string()
    };
    let settings: Vec<String> = [read(&identity.context_setting), comment]
        .into_iter()
        .chain(identity.user_settings.iter().map(read))
        .collect();
    format!(
        "pg_catalog.to_json(array[session_user::pg_catalog.text, pg_catalog.current_setting('role'), \
         pg_catalog.host(pg_catalog.inet_client_addr()), pg_catalog.inet_client_port()::pg_catalog.text, \
         pg_catalog.current_setting('application_name'), pg_catalog.pg_backend_pid()::pg_catalog.text, \
         {}])",
        settings.join(", ")
    )
}

/// The SQL of the context and DDL functions, for the session settings in
/// `identity`. Run it in one transaction with [`repoint_and_revoke_sql`].
pub fn actor_functions_sql(identity: &IdentityConfig) -> String {
    format!(
        r#"create schema if not exists pgtrail_cdc;
revoke all on schema pgtrail_cdc from public;
-- Applications may call set_context, and nothing else here.
grant usage on schema pgtrail_cdc to public;

-- Runs before every statement on a captured table, as its owner (who may
-- emit logical messages; applications may not), and reads the session's
-- identity itself: session_user, the role set with SET ROLE, the client's
-- address and port and the backend pid are the server's; the settings and
-- the statement's sqlcommenter comment are what the application claims.
-- Sent before every statement, not once per transaction: a "sent" marker
-- would be a setting the application could set to hide its actor, and
-- emitting costs fewer instructions than keeping one (bench/cdc, (i)).
-- No SET search_path (it would cost every statement): every name is
-- qualified instead. The actor is one to_json(array[…]) of texts, an
-- assignment (a simple expression, no executor start).
create or replace function pgtrail_cdc.context() returns trigger
language plpgsql security definer as $fn$
declare
  emitted pg_catalog.pg_lsn;
begin
  emitted := pg_catalog.pg_logical_emit_message(true, 'pgtrail', {actor}::pg_catalog.text);
  return null;
end
$fn$;
revoke all on function pgtrail_cdc.context() from public;

-- The sqlcommenter comment that ends (or else starts) a statement, or null.
-- Only the last and first 4 kB are searched: a comment is never longer.
create or replace function pgtrail_cdc.statement_comment(statement pg_catalog.text) returns pg_catalog.text
language sql immutable parallel safe as $fn$
  select coalesce(
    pg_catalog.substring(pg_catalog.right(statement, 4096), '/\*(?:[^*]|\*+[^*/])*\*+/[\s;]*$'),
    pg_catalog.substring(pg_catalog.left(statement, 4096), '^\s*/\*(?:[^*]|\*+[^*/])*\*+/'))
$fn$;
revoke all on function pgtrail_cdc.statement_comment(pg_catalog.text) from public;

-- One pgtrail.ddl message per DDL command, as the owner (DDL is rare: this
-- one fixes its search_path).
create or replace function pgtrail_cdc.ddl() returns event_trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $fn$
declare
  objects jsonb;
  first_schema text;
  emitted pg_lsn;
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
  emitted := pg_logical_emit_message(true, 'pgtrail.ddl', jsonb_build_object(
    'command_tag', tg_tag, 'objects', objects, 'schema', first_schema, 'sql', current_query(),
    'actor', {ddl_actor})::text);
end
$fn$;
revoke all on function pgtrail_cdc.ddl() from public;

-- Sets the actor for the rest of the current transaction (a claim, as any
-- setting is). Runs with the caller's rights on the caller's path, so it
-- has no search_path of its own; its names are qualified all the same.
create or replace function pgtrail_cdc.set_context(app_user text, context jsonb default null) returns void
language sql as $fn$
  select pg_catalog.set_config({user_setting}, coalesce(app_user, ''), true),
         pg_catalog.set_config({context_setting}, coalesce(context::pg_catalog.text, ''), true);
$fn$;
grant execute on function pgtrail_cdc.set_context(text, jsonb) to public;

drop event trigger if exists pgtrail_cdc_ddl;
drop event trigger if exists pgtrail_cdc_drop;
create event trigger pgtrail_cdc_ddl on ddl_command_end execute function pgtrail_cdc.ddl();
create event trigger pgtrail_cdc_drop on sql_drop execute function pgtrail_cdc.ddl();
"#,
        actor = actor_array(identity, true),
        ddl_actor = actor_array(identity, false),
        user_setting = quote_literal(
            identity
                .user_settings
                .first()
                .map_or("pgtrail.user", String::as_str)
        ),
        context_setting = quote_literal(&identity.context_setting),
    )
}

/// Removes what versions before schema `pgtrail_cdc` installed in schema
/// `pgtrail` (its table triggers must already point at the new function),
/// takes back the USAGE on schema `pgtrail` they granted to PUBLIC, and
/// revokes PUBLIC's EXECUTE on every `pg_logical_emit_message` of this
/// database. A REVOKE the connected role may not make is only a warning:
/// [`install_actor`] checks the outcome.
pub const REPOINT_AND_REVOKE_SQL: &str = r#"
drop function if exists pgtrail.cdc_context();
drop function if exists pgtrail.cdc_ddl();
drop function if exists pgtrail.cdc_emit(text, text, jsonb);
drop function if exists pgtrail.cdc_statement_comment(text);
drop function if exists pgtrail.set_context(text, jsonb);
do $do$
declare
  f pg_catalog.regprocedure;
begin
  if pg_catalog.to_regnamespace('pgtrail') is not null then
    revoke usage on schema pgtrail from public;
  end if;
  for f in select p.oid::pg_catalog.regprocedure from pg_catalog.pg_proc p
    where p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace and p.proname = 'pg_logical_emit_message'
  loop
    execute pg_catalog.format('revoke execute on function %s from public', f);
  end loop;
end
$do$;
"#;

/// Installs the actor functions and the DDL event triggers, puts the
/// statement trigger on each of `tables` (and moves every actor trigger an
/// earlier version installed to the new function), and revokes PUBLIC's
/// EXECUTE on `pg_logical_emit_message` — all in one transaction, which is
/// rolled back when the connected role cannot make the revoke (a
/// superuser's job) or cannot emit messages itself. Returns the roles other
/// than superusers and the connected one that may still emit messages
/// (granted explicitly): each of them could forge an actor.
pub async fn install_actor(
    client: &Client,
    identity: &IdentityConfig,
    tables: &[Table],
) -> Result<Vec<String>, CdcError> {
    client
        .batch_execute("begin")
        .await
        .map_err(catalog_error("starting the actor install"))?;
    let result = install_in_transaction(client, identity, tables).await;
    let end = if result.is_ok() { "commit" } else { "rollback" };
    client
        .batch_execute(end)
        .await
        .map_err(catalog_error("finishing the actor install"))?;
    result
}

async fn install_in_transaction(
    client: &Client,
    identity: &IdentityConfig,
    tables: &[Table],
) -> Result<Vec<String>, CdcError> {
    client
        .batch_execute(&actor_functions_sql(identity))
        .await
        .map_err(catalog_error("installing pgtrail's actor functions"))?;
    // The selected tables, and every table an earlier setup gave the trigger.
    let mut quoted: Vec<String> = tables.iter().map(Table::quoted).collect();
    let installed = client
        .query(
            "select n.nspname::text, c.relname::text from pg_trigger t join pg_class c on c.oid = t.tgrelid \
             join pg_namespace n on n.oid = c.relnamespace where t.tgname = $1",
            &[&ACTOR_TRIGGER],
        )
        .await
        .map_err(catalog_error("listing actor triggers"))?;
    for row in &installed {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let name = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        if !quoted.contains(&name) {
            quoted.push(name);
        }
    }
    for table in &quoted {
        let sql = format!(
            "create or replace trigger {ACTOR_TRIGGER} before insert or update or delete or truncate on {table} \
             for each statement execute function pgtrail_cdc.context()",
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error(format!(
                "adding the actor trigger to {table}"
            )))?;
    }
    client
        .batch_execute(REPOINT_AND_REVOKE_SQL)
        .await
        .map_err(catalog_error(
            "revoking PUBLIC's EXECUTE on pg_logical_emit_message",
        ))?;
    let row = client
        .query_one(
            "select current_user::text, \
             has_function_privilege(current_user, 'pg_catalog.pg_logical_emit_message(boolean,text,text)', 'execute')",
            &[],
        )
        .await
        .map_err(catalog_error("checking who may emit logical messages"))?;
    let (me, can_emit): (String, bool) = (row.get(0), row.get(1));
    let emitters = message_emitters(client, &me).await?;
    if emitters.iter().any(|role| role == "PUBLIC") || !can_emit {
        return Err(CdcError::NotReady {
            problem: format!(
                "role '{me}' could not take EXECUTE on pg_logical_emit_message away from PUBLIC \
                 (or may not emit messages itself): every role could forge the actor of its changes"
            ),
            hint: format!(
                "run --setup --actor as a superuser, or have a superuser run in this database: \
                 revoke execute on function pg_logical_emit_message(boolean, text, text), \
                 pg_logical_emit_message(boolean, text, bytea) from public; \
                 grant execute on function pg_logical_emit_message(boolean, text, text) to {}",
                quote_ident(&me)
            ),
        });
    }
    Ok(emitters)
}

/// The roles, other than superusers and `owner`, that may execute
/// `pg_logical_emit_message` in this database (`PUBLIC` for all).
pub async fn message_emitters(client: &Client, owner: &str) -> Result<Vec<String>, CdcError> {
    let rows = client
        .query(MESSAGE_EMITTERS_SQL, &[&owner])
        .await
        .map_err(catalog_error("listing who may emit logical messages"))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Whether the actor trigger is installed in this database, and its
/// owner (the role allowed to emit messages).
pub async fn actor_trigger_owner(client: &Client) -> Result<Option<String>, CdcError> {
    let row = client
        .query_opt(
            "select pg_catalog.pg_get_userbyid(p.proowner)::text from pg_catalog.pg_proc p \
             where p.oid = pg_catalog.to_regprocedure('pgtrail_cdc.context()')",
            &[],
        )
        .await
        .map_err(catalog_error("looking up pgtrail's actor function"))?;
    Ok(row.map(|row| row.get(0)))
}

/// Removes the actor triggers, the DDL event triggers and schema
/// [`SCHEMA`] (and the `cdc_*` functions older versions kept in `pgtrail`).
/// Returns what was removed.
pub async fn uninstall_actor(client: &Client) -> Result<Vec<String>, CdcError> {
    let mut removed = Vec::new();
    let triggers = client
        .query(
            "select n.nspname::text, c.relname::text from pg_trigger t join pg_class c on c.oid = t.tgrelid \
             join pg_namespace n on n.oid = c.relnamespace where t.tgname = 'pgtrail_cdc_context'",
            &[],
        )
        .await
        .map_err(catalog_error("listing actor triggers"))?;
    for row in &triggers {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let sql = format!(
            "drop trigger if exists pgtrail_cdc_context on {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(catalog_error("dropping a actor trigger"))?;
        removed.push(format!("actor trigger on {schema}.{table}"));
    }
    let had_functions: bool = client
        .query_one(
            "select exists (select 1 from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
             where (n.nspname = 'pgtrail' and p.proname like 'cdc\\_%') or n.nspname = 'pgtrail_cdc')",
            &[],
        )
        .await
        .map_err(catalog_error("looking up pgtrail functions"))?
        .get(0);
    // PUBLIC's EXECUTE on pg_logical_emit_message stays revoked: whether to
    // give it back is the operator's decision (docs/cdc.md).
    client
        .batch_execute(
            "drop event trigger if exists pgtrail_cdc_ddl; drop event trigger if exists pgtrail_cdc_drop; \
             drop function if exists pgtrail.cdc_context(); drop function if exists pgtrail.cdc_ddl(); \
             drop function if exists pgtrail.cdc_emit(text, text, jsonb); \
             drop function if exists pgtrail.cdc_statement_comment(text); \
             drop function if exists pgtrail.set_context(text, jsonb); \
             drop schema if exists pgtrail_cdc cascade;",
        )
        .await
        .map_err(catalog_error("dropping pgtrail's actor functions"))?;
    if had_functions {
        removed.push("actor functions and DDL event triggers".into());
    }
    Ok(removed)
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
        let sql = actor_functions_sql(&identity);
        let first = sql
            .find("current_setting('app.current_user', true)")
            .expect("first setting");
        let second = sql
            .find("current_setting('pgtrail.user', true)")
            .expect("second setting");
        assert!(first < second, "settings are tried in configured order");
        assert!(sql.contains("current_setting('app.ctx', true)"));
        assert!(sql.contains("select pg_catalog.set_config('app.current_user'"));
    }
}
