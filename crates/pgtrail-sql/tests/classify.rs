//! What a statement event says about each statement: pgAudit's classes,
//! the command, transaction control, PREPARE/EXECUTE, and several
//! statements in one text.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Analysis, Analyzer, Class, Deallocate, Statement, TextPolicy, Transaction};

fn analyzer() -> Analyzer {
    Analyzer::new(64, &IdentityConfig::default(), TextPolicy::Secrets)
}

fn one(sql: &str) -> Statement {
    let a = analyzer().analyze_uncached(sql);
    assert_eq!(a.statements.len(), 1, "{sql}: {a:?}");
    a.statements[0].clone()
}

#[track_caller]
fn check(sql: &str, class: Class, also: &[Class], command: &str) {
    let s = one(sql);
    assert_eq!(s.class, class, "class of {sql}");
    let mut want: Vec<Class> = vec![class];
    want.extend_from_slice(also);
    want.sort();
    let got: Vec<Class> = s.classes.iter().collect();
    assert_eq!(got, want, "classes of {sql}");
    assert_eq!(s.command, command, "command of {sql}");
}

#[test]
fn reads_and_writes() {
    use Class::*;
    check("SELECT * FROM t", Read, &[], "SELECT");
    check("select * from t for update", Read, &[], "SELECT");
    check("TABLE t", Read, &[], "SELECT");
    check("VALUES (1), (2)", Read, &[], "SELECT");
    check("INSERT INTO t VALUES (1)", Write, &[], "INSERT");
    check("UPDATE t SET a = 1 WHERE b = 2", Write, &[], "UPDATE");
    check(
        "DELETE FROM t USING u WHERE t.a = u.a",
        Write,
        &[],
        "DELETE",
    );
    check(
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
        Write,
        &[],
        "MERGE",
    );
    check("TRUNCATE t, u", Write, &[], "TRUNCATE TABLE");
    check("COPY t FROM STDIN", Write, &[], "COPY");
    check(
        "COPY t (a, b) FROM '/tmp/x' WITH (FORMAT csv)",
        Write,
        &[],
        "COPY",
    );
    check("COPY t TO STDOUT", Read, &[], "COPY");
    check(
        "COPY (SELECT * FROM t WHERE a > 1) TO STDOUT",
        Read,
        &[],
        "COPY",
    );
    // A data-modifying CTE makes a SELECT a write.
    check(
        "WITH moved AS (DELETE FROM t WHERE a < 0 RETURNING *) SELECT count(*) FROM moved",
        Write,
        &[Read],
        "SELECT",
    );
    check(
        "WITH n AS (INSERT INTO log VALUES (1) RETURNING id) INSERT INTO t SELECT id FROM n",
        Write,
        &[],
        "INSERT",
    );
    // SELECT INTO and CREATE TABLE AS are DDL, and read their source.
    check("SELECT * INTO t2 FROM t", Ddl, &[Read], "SELECT INTO");
    check(
        "CREATE TABLE t2 AS SELECT * FROM t",
        Ddl,
        &[Read],
        "CREATE TABLE AS",
    );
    check(
        "CREATE MATERIALIZED VIEW mv AS SELECT a FROM t",
        Ddl,
        &[Read],
        "CREATE MATERIALIZED VIEW",
    );
    check(
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t",
        Read,
        &[],
        "DECLARE CURSOR",
    );
}

#[test]
fn explain_takes_the_class_of_what_it_runs_only_with_analyze() {
    use Class::*;
    check("EXPLAIN DELETE FROM t", Misc, &[], "EXPLAIN");
    check("EXPLAIN ANALYZE DELETE FROM t", Write, &[], "EXPLAIN");
    check(
        "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1",
        Write,
        &[],
        "EXPLAIN",
    );
    check(
        "EXPLAIN (BUFFERS, ANALYZE true) UPDATE t SET a = 1",
        Write,
        &[],
        "EXPLAIN",
    );
    check(
        "EXPLAIN (ANALYZE false) UPDATE t SET a = 1",
        Misc,
        &[],
        "EXPLAIN",
    );
    check(
        "EXPLAIN (ANALYZE off, COSTS) UPDATE t SET a = 1",
        Misc,
        &[],
        "EXPLAIN",
    );
    check("EXPLAIN ANALYZE SELECT * FROM t", Read, &[], "EXPLAIN");
}

#[test]
fn functions() {
    use Class::*;
    check("DO $$BEGIN PERFORM 1; END$$", Function, &[], "DO");
    check("CALL archive_orders(30)", Function, &[], "CALL");
    // pgAudit: a SELECT calling a function is READ, and FUNCTION too.
    check("SELECT refresh_totals()", Read, &[Function], "SELECT");
    check(
        "SELECT * FROM t WHERE app.can_see(t.id)",
        Read,
        &[Function],
        "SELECT",
    );
    // Built-ins (resolved in pg_catalog, searched first) are not.
    check("SELECT count(*), max(a), now() FROM t", Read, &[], "SELECT");
    check("SELECT pg_catalog.upper(a) FROM t", Read, &[], "SELECT");
    let s = one("SELECT app.can_see(1), count(*)");
    assert_eq!(s.functions, ["app.can_see"]);
}

#[test]
fn roles_and_ddl() {
    use Class::*;
    check("GRANT SELECT ON patients TO reporting", Role, &[], "GRANT");
    check("REVOKE ALL ON patients FROM public", Role, &[], "REVOKE");
    check("GRANT admin TO alice", Role, &[], "GRANT ROLE");
    check(
        "CREATE ROLE app LOGIN PASSWORD 'x'",
        Role,
        &[],
        "CREATE ROLE",
    );
    check("CREATE USER app", Role, &[], "CREATE ROLE");
    check("ALTER ROLE app PASSWORD 'x'", Role, &[], "ALTER ROLE");
    check(
        "ALTER USER app SET work_mem = '1MB'",
        Role,
        &[],
        "ALTER ROLE",
    );
    check("ALTER ROLE app RENAME TO app2", Role, &[], "ALTER ROLE");
    check("DROP ROLE app", Role, &[], "DROP ROLE");
    check("DROP USER IF EXISTS app", Role, &[], "DROP ROLE");
    check(
        "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password 'x')",
        Role,
        &[],
        "CREATE USER MAPPING",
    );
    check(
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reporting",
        Role,
        &[],
        "ALTER DEFAULT PRIVILEGES",
    );
    check("CREATE TABLE t (a int)", Ddl, &[], "CREATE TABLE");
    check(
        "CREATE TEMP TABLE IF NOT EXISTS t (a int)",
        Ddl,
        &[],
        "CREATE TABLE",
    );
    check("ALTER TABLE t ADD COLUMN b int", Ddl, &[], "ALTER TABLE");
    check("ALTER TABLE t RENAME TO u", Ddl, &[], "ALTER TABLE");
    check("DROP TABLE IF EXISTS t CASCADE", Ddl, &[], "DROP TABLE");
    check(
        "CREATE UNIQUE INDEX CONCURRENTLY i ON t (a)",
        Ddl,
        &[],
        "CREATE INDEX",
    );
    check(
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        Ddl,
        &[],
        "CREATE FUNCTION",
    );
    check("CREATE VIEW v AS SELECT * FROM t", Ddl, &[], "CREATE VIEW");
    check(
        "DROP MATERIALIZED VIEW mv",
        Ddl,
        &[],
        "DROP MATERIALIZED VIEW",
    );
    check("CREATE SCHEMA s", Ddl, &[], "CREATE SCHEMA");
    check("COMMENT ON TABLE t IS 'x'", Ddl, &[], "COMMENT");
    check(
        "REFRESH MATERIALIZED VIEW mv",
        Ddl,
        &[],
        "REFRESH MATERIALIZED VIEW",
    );
    check(
        "ALTER SYSTEM SET work_mem = '8MB'",
        Ddl,
        &[],
        "ALTER SYSTEM",
    );
}

#[test]
fn settings_and_misc() {
    use Class::*;
    check("SET search_path = app, public", MiscSet, &[], "SET");
    check("SET LOCAL statement_timeout = 0", MiscSet, &[], "SET");
    check("RESET ALL", MiscSet, &[], "RESET");
    check("SET SESSION AUTHORIZATION alice", MiscSet, &[], "SET");
    check("SHOW search_path", Misc, &[], "SHOW");
    check("VACUUM (ANALYZE) t", Misc, &[], "VACUUM");
    check("ANALYZE t", Misc, &[], "ANALYZE");
    check("CHECKPOINT", Misc, &[], "CHECKPOINT");
    check("DISCARD ALL", Misc, &[], "DISCARD ALL");
    check("LISTEN jobs", Misc, &[], "LISTEN");
    check("NOTIFY jobs, 'x'", Misc, &[], "NOTIFY");
    check(
        "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
        Misc,
        &[],
        "LOCK TABLE",
    );
    check("FETCH 10 FROM c", Misc, &[], "FETCH");
    check("CLOSE c", Misc, &[], "CLOSE CURSOR");
    check("BEGIN", Misc, &[], "BEGIN");
}

#[test]
fn transaction_control() {
    let tx = |sql: &str| one(sql).transaction;
    assert_eq!(tx("BEGIN"), Some(Transaction::Begin));
    assert_eq!(
        tx("START TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
        Some(Transaction::Begin)
    );
    assert_eq!(tx("COMMIT"), Some(Transaction::Commit { chain: false }));
    assert_eq!(tx("end"), Some(Transaction::Commit { chain: false }));
    assert_eq!(
        tx("COMMIT AND CHAIN"),
        Some(Transaction::Commit { chain: true })
    );
    assert_eq!(
        tx("COMMIT AND NO CHAIN"),
        Some(Transaction::Commit { chain: false })
    );
    assert_eq!(tx("ROLLBACK"), Some(Transaction::Rollback { chain: false }));
    assert_eq!(
        tx("ABORT AND CHAIN"),
        Some(Transaction::Rollback { chain: true })
    );
    assert_eq!(
        tx("SAVEPOINT s1"),
        Some(Transaction::Savepoint("s1".into()))
    );
    assert_eq!(
        tx("RELEASE SAVEPOINT s1"),
        Some(Transaction::Release("s1".into()))
    );
    assert_eq!(
        tx("ROLLBACK TO SAVEPOINT \"S1\""),
        Some(Transaction::RollbackTo("S1".into()))
    );
    assert_eq!(
        tx("ROLLBACK TO s1"),
        Some(Transaction::RollbackTo("s1".into()))
    );
    assert_eq!(
        tx("PREPARE TRANSACTION 'g1'"),
        Some(Transaction::PrepareTransaction)
    );
    assert_eq!(
        tx("COMMIT PREPARED 'g1'"),
        Some(Transaction::CommitPrepared)
    );
    assert_eq!(
        tx("ROLLBACK PREPARED 'g1'"),
        Some(Transaction::RollbackPrepared)
    );
    assert_eq!(tx("SELECT 1"), None);
    assert_eq!(one("COMMIT PREPARED 'g1'").command, "COMMIT PREPARED");
    assert_eq!(one("START TRANSACTION").command, "START TRANSACTION");
}

#[test]
fn prepare_is_classified_by_what_it_prepares_and_execute_by_what_it_runs() {
    let ins = one("PREPARE ins (int) AS INSERT INTO payments VALUES ($1)");
    assert_eq!((ins.class, ins.command.as_str()), (Class::Write, "PREPARE"));
    assert_eq!(ins.prepare.as_deref(), Some("ins"));
    assert_eq!(ins.objects[0].name, "payments");
    let q = one("PREPARE q AS SELECT * FROM t");
    assert_eq!(q.class, Class::Read);

    let exec = one("EXECUTE ins(42)");
    assert_eq!(exec.execute.as_deref(), Some("ins"));
    assert_eq!(exec.command, "EXECUTE");
    // Unresolved: UNKNOWN, never a guess.
    assert_eq!(exec.class, Class::Unknown);
    let runs = exec.runs(|name| (name == "ins").then_some(&ins));
    assert_eq!(runs.class, Class::Write);
    assert_eq!(runs.objects[0].name, "payments");
    let runs = exec.runs(|_| None);
    assert_eq!(runs.class, Class::Unknown);
    // A statement that is not EXECUTE runs itself.
    assert_eq!(q.runs(|_| None).class, Class::Read);

    assert_eq!(
        one("DEALLOCATE ins").deallocate,
        Some(Deallocate::Name("ins".into()))
    );
    assert_eq!(
        one("DEALLOCATE PREPARE ALL").deallocate,
        Some(Deallocate::All)
    );
    assert_eq!(one("DISCARD ALL").deallocate, Some(Deallocate::All));
}

#[test]
fn several_statements_each_with_its_own_span() {
    let sql =
        "BEGIN; UPDATE accounts SET balance = 0 WHERE id = 1;\n  SELECT * FROM patients ; COMMIT";
    let a = analyzer().analyze_uncached(sql);
    assert!(a.parsed);
    let got: Vec<(&str, Class, &str)> = a
        .statements
        .iter()
        .map(|s| (&sql[s.span.clone()], s.class, s.sql.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("BEGIN", Class::Misc, "BEGIN"),
            (
                "UPDATE accounts SET balance = 0 WHERE id = 1",
                Class::Write,
                "UPDATE accounts SET balance = 0 WHERE id = 1"
            ),
            (
                "SELECT * FROM patients",
                Class::Read,
                "SELECT * FROM patients"
            ),
            ("COMMIT", Class::Misc, "COMMIT"),
        ]
    );
    // A semicolon inside a literal or a function body splits nothing.
    let a = analyzer().analyze_uncached(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT ';'",
    );
    assert_eq!(a.statements.len(), 2, "{a:?}");
    assert_eq!(a.statements[0].command, "CREATE FUNCTION");
}

#[test]
fn text_the_parser_rejects_is_unknown_and_still_recorded() {
    // Too deep for the parser's stack, and NUL bytes: rejected, never a panic.
    let deep = format!("SELECT {}1{}", "(".repeat(20_000), ")".repeat(20_000));
    for sql in [
        "SELEC 1",
        "SELECT 1; SELEC 2",
        "SET pgtrail.user = 'x'",
        "select 'unterminated",
        "SELECT set_config('pgtrail.user', 'x', false)\0",
        deep.as_str(),
    ] {
        let a: Analysis = analyzer().analyze_uncached(sql);
        assert!(!a.parsed, "{sql}");
        assert_eq!(a.statements.len(), 1, "{sql}");
        assert_eq!(a.statements[0].class, Class::Unknown);
        assert!(
            a.statements[0].claims.is_empty(),
            "{sql}: a rejected SET claims nothing"
        );
    }
}

#[test]
fn the_cache_answers_repeats_and_stays_bounded() {
    let mut analyzer = Analyzer::new(4, &IdentityConfig::default(), TextPolicy::Secrets);
    let first = analyzer.analyze("SELECT * FROM t WHERE id = $1");
    let again = analyzer.analyze("SELECT * FROM t WHERE id = $1");
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(analyzer.stats(), (1, 1));
    for i in 0..20 {
        analyzer.analyze(&format!("SELECT {i}"));
        assert!(analyzer.len() <= 4);
    }
    // A text differing only in a constant is another text (its claims and
    // redacted text may differ).
    let a = analyzer.analyze("SELECT set_config('pgtrail.user', 'alice', false)");
    let b = analyzer.analyze("SELECT set_config('pgtrail.user', 'bob', false)");
    assert_ne!(a.statements[0].claims, b.statements[0].claims);
}

#[test]
fn constants_policy_redacts_every_literal() {
    let mut analyzer = Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Constants);
    let a = analyzer.analyze("SELECT * FROM patients WHERE ssn = '123-45-6789'");
    assert_eq!(a.statements[0].sql, "SELECT * FROM patients WHERE ssn = $1");
}
