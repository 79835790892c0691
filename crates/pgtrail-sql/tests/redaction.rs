//! Every statement form that carries a secret, and hostile spellings of
//! them: the secret never survives, the rest of the text does.

use pgtrail_sql::{redact_constants, redact_secrets, Redaction, WITHHELD};

const SECRET: &str = "s3cr3t-Pa55";

/// Redacts `sql`, asserts no trace of the secret is left, returns the text.
fn redacted(sql: &str) -> (String, Redaction) {
    let (out, outcome) = redact_secrets(sql);
    for needle in [SECRET, "s3cr3t", "Pa55"] {
        assert!(
            !out.contains(needle),
            "{needle} survived in {out:?} (from {sql:?})"
        );
    }
    (out, outcome)
}

#[test]
fn role_passwords_in_create_and_alter() {
    for (sql, kept) in [
        (
            format!("CREATE ROLE app LOGIN PASSWORD '{SECRET}'"),
            "CREATE ROLE app LOGIN PASSWORD '<redacted>'",
        ),
        (
            format!("create user app with encrypted password '{SECRET}' valid until '2030-01-01'"),
            "create user app with encrypted password '<redacted>' valid until '2030-01-01'",
        ),
        (
            format!("ALTER ROLE app WITH PASSWORD '{SECRET}'"),
            "ALTER ROLE app WITH PASSWORD '<redacted>'",
        ),
        (
            format!("alter user \"App\" password '{SECRET}'"),
            "alter user \"App\" password '<redacted>'",
        ),
    ] {
        let (out, outcome) = redacted(&sql);
        assert_eq!(out, kept);
        assert_eq!(outcome, Redaction::Redacted);
    }
    // Refused by the parser since Postgres 10: redacted all the same.
    let (out, outcome) = redacted(&format!("ALTER ROLE app UNENCRYPTED PASSWORD '{SECRET}'"));
    assert_eq!(out, "ALTER ROLE app UNENCRYPTED PASSWORD '<redacted>'");
    assert_eq!(outcome, Redaction::Unparsed);
    // Nothing to hide: the text is kept exactly.
    let sql = "ALTER ROLE app PASSWORD NULL";
    assert_eq!(redact_secrets(sql), (sql.to_string(), Redaction::Unchanged));
}

#[test]
fn server_and_user_mapping_options() {
    for (sql, kept) in [
        (format!("CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'bob', password '{SECRET}')"),
         "CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'bob', password '<redacted>')"),
        (format!("ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password '{SECRET}')"),
         "ALTER USER MAPPING FOR app SERVER remote OPTIONS (SET password '<redacted>')"),
        (format!("alter user mapping for public server remote options (add \"password\" '{SECRET}', drop user)"),
         "alter user mapping for public server remote options (add \"password\" '<redacted>', drop user)"),
        (format!("CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db', dbname 'x', password '{SECRET}')"),
         "CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db', dbname 'x', password '<redacted>')"),
        (format!("ALTER SERVER remote OPTIONS (SET api_token '{SECRET}')"),
         "ALTER SERVER remote OPTIONS (SET api_token '<redacted>')"),
    ] {
        assert_eq!(redacted(&sql).0, kept);
    }
}

#[test]
fn subscription_connection_strings() {
    for (sql, kept) in [
        (format!("CREATE SUBSCRIPTION s CONNECTION 'host=pub port=5432 user=rep password={SECRET} dbname=x' PUBLICATION p WITH (connect = false)"),
         "CREATE SUBSCRIPTION s CONNECTION 'host=pub port=5432 user=rep password=<redacted> dbname=x' PUBLICATION p WITH (connect = false)"),
        (format!("ALTER SUBSCRIPTION s CONNECTION 'host=pub password = ''{SECRET} with space'' dbname=x'"),
         "ALTER SUBSCRIPTION s CONNECTION 'host=pub password = <redacted> dbname=x'"),
        (format!("CREATE SUBSCRIPTION s CONNECTION 'postgres://rep:{SECRET}@pub:5432/x?sslmode=require' PUBLICATION p"),
         "CREATE SUBSCRIPTION s CONNECTION 'postgres://rep:<redacted>@pub:5432/x?sslmode=require' PUBLICATION p"),
        (format!("CREATE SUBSCRIPTION s CONNECTION 'postgresql://pub/x?user=rep&password={SECRET}&sslmode=require' PUBLICATION p"),
         "CREATE SUBSCRIPTION s CONNECTION 'postgresql://pub/x?user=rep&password=<redacted>&sslmode=require' PUBLICATION p"),
    ] {
        assert_eq!(redacted(&sql).0, kept);
    }
}

#[test]
fn multi_statement_strings_mixing_ddl_and_a_password_change() {
    let sql = format!(
        "CREATE TABLE t (id int primary key, note text default 'x');\n\
         ALTER ROLE app PASSWORD '{SECRET}';\n\
         CREATE INDEX ON t (note); SELECT dblink_connect('host=h password={SECRET}')"
    );
    let (out, _) = redacted(&sql);
    assert_eq!(
        out,
        "CREATE TABLE t (id int primary key, note text default 'x');\n\
         ALTER ROLE app PASSWORD '<redacted>';\n\
         CREATE INDEX ON t (note); SELECT dblink_connect('host=h password=<redacted>')"
    );
}

#[test]
fn odd_quoting_of_the_secret() {
    for sql in [
        format!("ALTER ROLE app PASSWORD E'{SECRET}\\''"),
        format!("ALTER ROLE app PASSWORD e'{SECRET}\\n'"),
        format!(
            "ALTER ROLE app PASSWORD ${SECRET_TAG}${SECRET}${SECRET_TAG}$",
            SECRET_TAG = "pw"
        ),
        format!("ALTER ROLE app PASSWORD $${SECRET}$$"),
        format!("ALTER ROLE app PASSWORD U&'{SECRET}\\0041'"),
        "ALTER ROLE app PASSWORD 's3cr3t'\n  '-Pa55'".to_string(),
        format!("ALTER ROLE app /* the new one: */ PASSWORD /* here */ '{SECRET}'"),
        format!("ALTER ROLE app PASSWORD N'{SECRET}'"),
        format!("ALTER ROLE \"pässwörd-ü\" PASSWORD 'ünïcødé-{SECRET}-日本'"),
    ] {
        let (out, _) = redacted(&sql);
        // A U&'…' literal is an error with standard_conforming_strings
        // off: the two readings differ, and the text is withheld.
        if sql.contains("U&") {
            assert_eq!(out, pgtrail_sql::WITHHELD);
            continue;
        }
        assert!(
            out.contains("PASSWORD") && out.contains("<redacted>"),
            "{out}"
        );
    }
    // Unicode around the secret is kept intact.
    let (out, _) = redacted(&format!(
        "CREATE ROLE \"rôle-日本\" PASSWORD '{SECRET}' -- née ü"
    ));
    assert_eq!(
        out,
        "CREATE ROLE \"rôle-日本\" PASSWORD '<redacted>' -- née ü"
    );
}

#[test]
fn comments_mentioning_password_are_kept_and_credentials_in_them_are_not() {
    let sql = "-- reset the password of the app role\nCREATE TABLE password_resets (id int)";
    assert_eq!(redact_secrets(sql), (sql.to_string(), Redaction::Unchanged));
    let (out, _) = redacted(&format!(
        "/* was: postgres://app:{SECRET}@db/x and password={SECRET} */ CREATE TABLE t (id int)"
    ));
    assert_eq!(
        out,
        "/* was: postgres://app:<redacted>@db/x and password=<redacted> */ CREATE TABLE t (id int)"
    );
}

#[test]
fn secrets_inside_function_bodies_and_dynamic_sql() {
    let sql = format!(
        "CREATE FUNCTION rotate() RETURNS void LANGUAGE plpgsql AS $body$\n\
         BEGIN\n  EXECUTE 'ALTER ROLE app PASSWORD ''{SECRET}''';\n  \
         PERFORM dblink_connect('host=h password={SECRET}');\nEND\n$body$"
    );
    let (out, _) = redacted(&sql);
    assert!(
        out.starts_with("CREATE FUNCTION rotate() RETURNS void LANGUAGE plpgsql AS $body$\nBEGIN"),
        "{out}"
    );
    // PL/pgSQL is not SQL: the body does not parse, so all its literals go.
    assert!(out.contains("EXECUTE '<redacted>';"), "{out}");
    assert!(
        out.contains("PERFORM dblink_connect('<redacted>');\nEND\n$body$"),
        "{out}"
    );
    // A body that is SQL keeps its other literals.
    let sql = format!(
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT dblink_connect('host=h password={SECRET}'), 'kept' $$"
    );
    let (out, _) = redacted(&sql);
    assert!(
        out.ends_with("AS $$ SELECT dblink_connect('host=h password=<redacted>'), 'kept' $$"),
        "{out}"
    );

    let sql = format!(
        "DO $$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', 'app', '{SECRET}'); END $$"
    );
    redacted(&sql);
}

#[test]
fn settings_and_assignments_named_like_secrets() {
    let (out, _) = redacted(&format!("SET app.api_token = '{SECRET}'"));
    assert_eq!(out, "SET app.api_token = '<redacted>'");
    let (out, _) = redacted(&format!("ALTER SYSTEM SET my.secret TO '{SECRET}'"));
    assert_eq!(out, "ALTER SYSTEM SET my.secret TO '<redacted>'");
    let (out, _) = redacted(&format!(
        "UPDATE users SET password = crypt('{SECRET}', gen_salt('bf')), name = 'Bob' WHERE id = 1"
    ));
    assert_eq!(
        out,
        "UPDATE users SET password = crypt('<redacted>', gen_salt('<redacted>')), name = 'Bob' WHERE id = 1"
    );
}

#[test]
fn ordinary_statements_are_kept_exactly() {
    for sql in [
        "CREATE TABLE orders (id bigint primary key, note text default 'n/a')",
        "ALTER TABLE orders ADD COLUMN paid boolean DEFAULT false",
        "SELECT 'password' AS word, $1::text",
        "COMMENT ON TABLE orders IS 'holds passwords? no.'",
        "CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db', dbname 'x')",
    ] {
        assert_eq!(redact_secrets(sql).0, sql);
    }
}

#[test]
fn unparsable_text_loses_every_string_literal() {
    let sql = format!("ALTER ROLE app PASSWORD '{SECRET}' frobnicate 'other'");
    let (out, outcome) = redacted(&sql);
    assert_eq!(outcome, Redaction::Unparsed);
    assert_eq!(
        out,
        "ALTER ROLE app PASSWORD '<redacted>' frobnicate '<redacted>'"
    );
    // A secret under an unknown option name: still gone, as the text does not parse.
    let (out, outcome) = redacted(&format!("CREATE ROLE x WITH SHHH '{SECRET}'"));
    assert_eq!(outcome, Redaction::Unparsed);
    assert!(out.starts_with("CREATE ROLE x WITH SHHH"), "{out}");
}

#[test]
fn unscannable_text_is_withheld() {
    for sql in [
        format!("ALTER ROLE app PASSWORD '{SECRET}"),
        format!("ALTER ROLE app PASSWORD $x${SECRET}"),
        format!("ALTER ROLE app PASSWORD '{SECRET}\0'"),
    ] {
        let (out, outcome) = redacted(&sql);
        assert_eq!(outcome, Redaction::Withheld);
        assert_eq!(out, WITHHELD);
    }
}

#[test]
fn constants_are_all_replaced_for_masked_tables() {
    let (out, outcome) = redact_constants(
        "UPDATE users SET ssn = '123-45-6789', score = 4.5, n = -3 WHERE id = $1 /* app:1 */",
    );
    assert_eq!(outcome, Redaction::Redacted);
    assert_eq!(
        out,
        "UPDATE users SET ssn = $2, score = $3, n = -$4 WHERE id = $1 /* app:1 */"
    );
    let (out, _) = redact_constants(
        "INSERT INTO users VALUES (E'123\\'45', $$x$$, B'101', X'1F', U&'\\0041')",
    );
    // `U&'…'` cannot be scanned with standard_conforming_strings off: a
    // statement that may have failed is withheld; one that ran (the
    // trigger drainer's) can only have been read with it on.
    assert_eq!(out, WITHHELD);
    let out = pgtrail_sql::Redactor::default().redact(
        "INSERT INTO users VALUES (E'123\\'45', $$x$$, B'101', X'1F', U&'\\0041')",
        pgtrail_sql::RedactMode::Constants,
    );
    assert_eq!(out, "INSERT INTO users VALUES ($1, $2, $3, $4, $5)");
    let (out, _) =
        redact_constants("DO $$ BEGIN UPDATE users SET ssn = '1'; END $$; -- password=hunter2");
    assert_eq!(out, "DO $1; -- password=<redacted>");
    assert_eq!(
        redact_constants("UPDATE users SET ssn = '1").1,
        Redaction::Withheld
    );
}

#[test]
fn set_config_of_a_secret_named_setting() {
    let (out, _) = redacted(&format!(
        "SELECT set_config('app.api_token', '{SECRET}', false), set_config('pgtrail.user', 'alice', true)"
    ));
    assert_eq!(
        out,
        "SELECT set_config('app.api_token', '<redacted>', false), set_config('pgtrail.user', 'alice', true)"
    );
}
