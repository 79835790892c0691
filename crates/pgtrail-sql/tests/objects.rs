//! The relations a statement touches, with read or write, and their
//! schemas. The attacker here is an application role that wants to read
//! a watched table (`patients`) without the trail saying so: every
//! hiding place it tries is found.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Access, Analyzer, ObjectRef, Resolution, SearchPath, TextPolicy};

fn objects(sql: &str) -> Vec<(String, Access, bool)> {
    let a = Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Secrets).analyze_uncached(sql);
    assert!(a.parsed, "{sql}");
    a.statements
        .iter()
        .flat_map(|s| s.objects.iter())
        .map(|o: &ObjectRef| {
            let name = match &o.schema {
                Some(s) => format!("{s}.{}", o.name),
                None => o.name.clone(),
            };
            (name, o.access, o.maybe_cte)
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn touches(sql: &str, name: &str, access: Access) -> bool {
    objects(sql)
        .iter()
        .any(|(n, a, _)| n.rsplit('.').next() == Some(name) && *a == access)
}

#[test]
fn reads_and_writes_with_schema() {
    use Access::*;
    assert_eq!(
        objects("SELECT * FROM patients p JOIN clinic.visits v ON v.pid = p.id"),
        [
            ("clinic.visits".into(), Read, false),
            ("patients".into(), Read, false)
        ]
    );
    assert_eq!(
        objects("INSERT INTO audit.copy SELECT * FROM patients"),
        [
            ("audit.copy".into(), Write, false),
            ("patients".into(), Read, false)
        ]
    );
    assert_eq!(objects("UPDATE t SET a = 1"), [("t".into(), Write, false)]);
    assert_eq!(
        objects("TRUNCATE a, b.c"),
        [("a".into(), Write, false), ("b.c".into(), Write, false)]
    );
    assert_eq!(objects("COPY t FROM STDIN"), [("t".into(), Write, false)]);
    assert_eq!(objects("COPY t TO STDOUT"), [("t".into(), Read, false)]);
    assert_eq!(
        objects("CREATE TABLE x.y (a int)"),
        [("x.y".into(), Ddl, false)]
    );
    assert_eq!(
        objects("SELECT * INTO newt FROM patients"),
        [
            ("newt".into(), Ddl, false),
            ("patients".into(), Read, false)
        ]
    );
    // Quoted names keep their case; unquoted ones fold.
    assert_eq!(
        objects("SELECT * FROM \"Clinic\".Patients"),
        [("Clinic.patients".into(), Read, false)]
    );
}

#[test]
fn a_read_hidden_anywhere_in_the_statement_is_found() {
    for sql in [
        "SELECT 1 LIMIT (SELECT count(*) FROM patients)",
        "SELECT 1 OFFSET (SELECT 0 FROM patients LIMIT 1)",
        "INSERT INTO t VALUES ((SELECT ssn FROM patients LIMIT 1))",
        // libpg_query 18.1's own walk stops at RETURNING: pgtrail reads it itself.
        "UPDATE t SET a = 1 RETURNING (SELECT ssn FROM patients LIMIT 1)",
        "DELETE FROM t RETURNING t.*, (SELECT ssn FROM patients LIMIT 1)",
        "INSERT INTO t VALUES (1) RETURNING WITH (OLD AS o, NEW AS n) (SELECT 1 FROM patients)",
        "WITH x AS (UPDATE t SET a = 1 RETURNING (SELECT ssn FROM patients LIMIT 1) AS s) SELECT * FROM x",
        "SELECT (SELECT ssn FROM patients LIMIT 1) AS x",
        "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM patients WHERE id = t.id)",
        "SELECT * FROM t ORDER BY (SELECT max(id) FROM patients)",
        "SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > (SELECT count(*) FROM patients)",
        "SELECT * FROM LATERAL (SELECT * FROM patients) p",
        "SELECT * FROM generate_series(1, (SELECT count(*)::int FROM patients))",
        "SELECT 1 UNION SELECT ssn FROM patients",
        "VALUES ((SELECT ssn FROM patients LIMIT 1))",
        "COPY (SELECT * FROM patients) TO STDOUT",
        "DECLARE c CURSOR FOR SELECT * FROM patients",
        "DECLARE c NO SCROLL CURSOR WITH HOLD FOR WITH x AS (SELECT * FROM patients) SELECT * FROM x",
        "PREPARE q AS SELECT * FROM patients",
        "EXPLAIN ANALYZE SELECT * FROM patients",
        "CREATE TABLE leak AS SELECT * FROM patients",
        "SELECT * FROM t WHERE a = ANY (ARRAY(SELECT id FROM patients))",
        "SELECT CASE WHEN true THEN (SELECT ssn FROM patients LIMIT 1) END",
        "SELECT * FROM t JOIN (patients p JOIN visits v ON v.pid = p.id) ON true",
    ] {
        assert!(touches(sql, "patients", Access::Read), "{sql}: {:?}", objects(sql));
    }
}

#[test]
fn a_cte_named_like_the_table_does_not_hide_it() {
    // The CTE's own name inside its body is the real table.
    assert!(touches(
        "WITH patients AS (SELECT * FROM patients) SELECT * FROM patients",
        "patients",
        Access::Read
    ));
    // A CTE in a nested scope, named like the table read at the top.
    assert!(touches(
        "SELECT * FROM patients, (WITH patients AS (SELECT 1) SELECT * FROM patients) s",
        "patients",
        Access::Read
    ));
    // A later sibling CTE is not visible to an earlier one.
    assert!(touches(
        "WITH a AS (SELECT * FROM patients), patients AS (SELECT 1) SELECT * FROM a",
        "patients",
        Access::Read
    ));
    // An ordinary CTE is reported as a possible relation, marked as such.
    assert_eq!(
        objects("WITH totals AS (SELECT sum(a) FROM t) SELECT * FROM totals"),
        [
            ("t".into(), Access::Read, false),
            ("totals".into(), Access::Read, true)
        ]
    );
}

#[test]
fn a_data_modifying_cte_writes() {
    assert!(touches(
        "WITH gone AS (DELETE FROM patients RETURNING *) SELECT count(*) FROM gone",
        "patients",
        Access::Write
    ));
}

#[test]
fn unqualified_names_resolve_against_the_search_path() {
    let mut analyzer = Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Secrets);
    let a = analyzer.analyze("SET search_path TO clinic, \"Billing\", public");
    let (path, _) = a.statements[0]
        .search_path
        .clone()
        .expect("a search_path change");
    let path = path.expect("a path");
    assert_eq!(path.schemas(), ["clinic", "Billing", "public"]);
    let s = analyzer.analyze("SELECT * FROM patients JOIN public.x USING (id)");
    let resolved: Vec<(String, Resolution)> = s.statements[0]
        .objects
        .iter()
        .map(|o| o.resolve(&path, None))
        .map(|o| (o.qualified(), o.resolution))
        .collect();
    assert_eq!(
        resolved,
        [
            ("clinic.patients".to_string(), Resolution::Assumed),
            ("public.x".to_string(), Resolution::Qualified)
        ]
    );
    // set_config sets it too; RESET goes back to the default.
    let a = analyzer.analyze("SELECT set_config('search_path', 'app, public', true)");
    let (path, _) = a.statements[0].search_path.clone().expect("change");
    assert_eq!(path.expect("path").schemas(), ["app", "public"]);
    let a = analyzer.analyze("RESET search_path");
    assert_eq!(a.statements[0].search_path.clone().expect("change").0, None);
    assert_eq!(
        SearchPath::default().assumed_schema("patients"),
        Some("public")
    );
}
