//! Nothing the analyzer outputs carries a secret: not the statement text,
//! not an object or function name, not a setting's value, not a comment
//! pair, not a rejected statement. Each output is checked whole (its JSON
//! and its Debug form), not field by field, so a new field cannot leak.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Analyzer, Class, TextPolicy};

const SECRET: &str = "s3cr3t-Pa55";

#[test]
fn no_output_carries_a_secret() {
    let statements = [
        format!("CREATE ROLE app LOGIN PASSWORD '{SECRET}'"),
        format!("ALTER USER app WITH ENCRYPTED PASSWORD '{SECRET}' VALID UNTIL 'infinity'"),
        format!("ALTER ROLE app UNENCRYPTED PASSWORD '{SECRET}'"), // rejected by the parser
        format!("CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password '{SECRET}')"),
        format!("CREATE SUBSCRIPTION sub CONNECTION 'host=h password={SECRET}' PUBLICATION p"),
        format!("SET app.api_token = '{SECRET}'"),
        format!("SELECT set_config('app.secret', '{SECRET}', false)"),
        format!("SELECT 1 /*user='alice',password='{SECRET}'*/"),
        format!("SELECT 1 /*user='alice',db='postgres://u:{SECRET}@h/x'*/"),
        format!("BEGIN; ALTER ROLE app PASSWORD '{SECRET}'; COMMIT"),
        format!("PREPARE p AS SELECT * FROM t WHERE token = '{SECRET}'"),
        format!("DO $$BEGIN EXECUTE 'ALTER ROLE app PASSWORD ''{SECRET}'''; END$$"),
        format!("SELEC password '{SECRET}'"),
        format!("select '{SECRET}"), // cannot even be scanned
    ];
    for policy in [TextPolicy::Secrets, TextPolicy::Constants] {
        let mut analyzer = Analyzer::new(64, &IdentityConfig::default(), policy);
        for sql in &statements {
            let analysis = analyzer.analyze(sql);
            let json = serde_json::to_string(&*analysis).expect("serializable");
            let debug = format!("{analysis:?}");
            for out in [&json, &debug] {
                assert!(!out.contains("s3cr3t"), "{policy:?} {sql}: {out}");
            }
        }
    }
}

#[test]
fn with_constants_redacted_no_constant_survives_anywhere() {
    // EXECUTE's arguments are kept (they fill a prepared set_config's
    // parameters) but never shown.
    let mut analyzer = Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Constants);
    for sql in [
        format!("EXECUTE p('{SECRET}')"),
        format!("EXECUTE p(1, '{SECRET}')"),
        format!("SELECT * FROM people WHERE ssn = '{SECRET}'"),
    ] {
        let analysis = analyzer.analyze(&sql);
        let json = serde_json::to_string(&*analysis).expect("serializable");
        let debug = format!("{analysis:?}");
        for out in [&json, &debug] {
            assert!(!out.contains("s3cr3t"), "{sql}: {out}");
        }
    }
}

#[test]
fn role_statements_are_role_and_redacted_whatever_the_policy() {
    let mut analyzer = Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Secrets);
    let a = analyzer.analyze(&format!("ALTER ROLE app PASSWORD '{SECRET}'"));
    assert_eq!(a.statements[0].class, Class::Role);
    assert_eq!(a.statements[0].sql, "ALTER ROLE app PASSWORD '<redacted>'");
}
