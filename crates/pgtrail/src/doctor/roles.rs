//! The roles: who holds more privilege than an application needs, and what
//! that lets them do to the trail (docs/security.md, the threat model).
//!
//! Needs: nothing (`pg_roles` and `pg_has_role` are every role's).

use super::tables::TableFacts;
use super::{ident, Finding, Look, Severity, Subject};

const ROLES: &str = "\
select r.rolname::text, r.rolsuper, r.rolreplication, r.rolbypassrls, r.rolcreaterole, r.rolcanlogin, \
       r.oid = 10 \
from pg_roles r where r.rolname !~ '^pg_' order by 1";

/// Login roles that act as the owner of the named roles (the owner itself,
/// or a member): each pair `(login, owner)`. Superusers are left out: they
/// are reported as superusers.
const OWNERS: &str = "\
select l.rolname::text, o.rolname::text \
from pg_roles o join pg_roles l on l.rolcanlogin and not l.rolsuper \
 and pg_has_role(l.oid, o.oid, 'MEMBER') \
where o.rolname = any($1) order by 2, 1";

/// What each attribute lets a role do to the trail.
const SUPERUSER: &str = "can do anything unseen: write with session_replication_role = replica \
    (trigger capture misses it), edit pgtrail's tables, functions and the catalogs; logical \
    replication still sees its row changes";
const REPLICATION: &str = "can drop or advance pgtrail's slot (changes skipped; an alarm at the \
    next look), create slots that hold WAL, and copy every table through physical replication \
    (pg_basebackup) past table privileges";
const BYPASSRLS: &str = "reads and writes rows that row-level security hides from others; its \
    writes are still captured, but it needs no such reach to be audited";
const CREATEROLE: &str = "can create roles and grant membership in non-superuser roles, \
    pgtrail_admin among them (untrack tables, append events of its making)";

/// Adds the role findings.
pub async fn examine(
    look: &mut Look<'_>,
    tables: &[TableFacts],
) -> Result<(), tokio_postgres::Error> {
    let Some(rows) = look.query("the roles", "nothing", ROLES, &[]).await? else {
        return Ok(());
    };
    for r in &rows {
        let name: String = r.get(0);
        let bootstrap: bool = r.get(6);
        let login: bool = r.get(5);
        let who = format!(
            "role {}{}",
            ident(&name),
            if login {
                ""
            } else {
                " (NOLOGIN, granted to others)"
            }
        );
        let quoted = pgtrail_cdc::connection::quote_ident(&name);
        if bootstrap {
            // Every cluster has one; keep its logins rare.
            look.add(Finding::new(
                "bootstrap_superuser",
                Severity::Info,
                Subject::role(&name),
                format!("{who} is the bootstrap superuser: it {SUPERUSER}; keep its logins rare and watched"),
            ));
            continue;
        }
        if r.get(1) {
            look.add(
                Finding::new(
                    "role_superuser",
                    Severity::Warn,
                    Subject::role(&name),
                    format!("{who} is a superuser: it {SUPERUSER}"),
                )
                .fix(format!("ALTER ROLE {quoted} NOSUPERUSER;")),
            );
            // Its other attributes add nothing to a superuser's reach.
            continue;
        }
        if r.get(2) {
            look.add(
                Finding::new(
                    "role_replication",
                    Severity::Warn,
                    Subject::role(&name),
                    format!(
                        "{who} has REPLICATION: it {REPLICATION}; only pgtrail's consumer needs it"
                    ),
                )
                .fix(format!("ALTER ROLE {quoted} NOREPLICATION;")),
            );
        }
        if r.get(3) {
            look.add(
                Finding::new(
                    "role_bypassrls",
                    Severity::Warn,
                    Subject::role(&name),
                    format!("{who} has BYPASSRLS: it {BYPASSRLS}"),
                )
                .fix(format!("ALTER ROLE {quoted} NOBYPASSRLS;")),
            );
        }
        if r.get(4) {
            look.add(
                Finding::new(
                    "role_createrole",
                    Severity::Warn,
                    Subject::role(&name),
                    format!("{who} has CREATEROLE: it {CREATEROLE}"),
                )
                .fix(format!("ALTER ROLE {quoted} NOCREATEROLE;")),
            );
        }
    }
    owners(look, tables).await
}

/// Login roles that own audited tables (or would, once captured): an owner
/// can disable or drop the capture triggers of its tables.
async fn owners(look: &mut Look<'_>, tables: &[TableFacts]) -> Result<(), tokio_postgres::Error> {
    // Audited tables; before anything is captured, every table doctor advises on.
    let audited: Vec<&TableFacts> = if tables
        .iter()
        .any(|t| t.triggers.is_some() || t.in_publication)
    {
        tables
            .iter()
            .filter(|t| t.triggers.is_some() || t.in_publication)
            .collect()
    } else {
        tables.iter().collect()
    };
    let mut owners: Vec<String> = audited.iter().map(|t| t.owner.clone()).collect();
    owners.sort();
    owners.dedup();
    if owners.is_empty() {
        return Ok(());
    }
    let Some(rows) = look
        .query(
            "who acts as the tables' owners",
            "nothing",
            OWNERS,
            &[&owners],
        )
        .await?
    else {
        return Ok(());
    };
    for r in &rows {
        let login: String = r.get(0);
        let owner: String = r.get(1);
        let owned: Vec<String> = audited
            .iter()
            .filter(|t| t.owner == owner)
            .map(|t| format!("{}.{}", ident(&t.schema), ident(&t.name)))
            .collect();
        let shown = if owned.len() > 5 {
            format!("{} and {} more", owned[..5].join(", "), owned.len() - 5)
        } else {
            owned.join(", ")
        };
        let via = if login == owner {
            "owns".to_string()
        } else {
            format!("is a member of {}, which owns", ident(&owner))
        };
        look.add(
            Finding::new(
                "role_owns_audited_tables",
                Severity::Warn,
                Subject::role(&login),
                format!(
                    "login role {} {via} {shown}: an owner can disable or drop their capture \
                     triggers and the actor trigger (each recorded as an alarm, but capture is \
                     cut until restored) and change their replica identity; an application \
                     needs only SELECT, INSERT, UPDATE, DELETE",
                    ident(&login)
                ),
            )
            .fix(format!(
                "make a NOLOGIN role own the tables (ALTER TABLE … OWNER TO app_owner;) and GRANT \
                 the application role {} the DML it needs",
                pgtrail_cdc::connection::quote_ident(&login)
            )),
        );
    }
    Ok(())
}
