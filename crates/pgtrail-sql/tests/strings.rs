//! Texts that read differently with `standard_conforming_strings` on and
//! off (issue 11's hole): whichever mode the analysis expects, neither
//! reading escapes (its classes and objects are in every statement), and
//! no reading's secret is stored.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Access, Analysis, Analyzer, Class, StandardStrings, TextPolicy, WITHHELD};

const MODES: [StandardStrings; 2] = [StandardStrings::On, StandardStrings::Off];

/// On: one SELECT of a string. Off: a SELECT of `'`, then a DELETE.
const HOSTILE: &str = r"select '\'' ; delete from t; -- '";

fn analyze(sql: &str, mode: StandardStrings) -> Analysis {
    Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Secrets).analyze_uncached_in(sql, mode)
}

#[test]
fn the_hidden_delete_is_a_write_whichever_mode_is_expected() {
    for mode in MODES {
        let a = analyze(HOSTILE, mode);
        assert!(a.ambiguous && a.parsed, "{mode:?}: {a:?}");
        // The statements follow the expected mode's reading.
        let count = if mode == StandardStrings::On { 1 } else { 2 };
        assert_eq!(a.statements.len(), count, "{mode:?}");
        for s in &a.statements {
            assert_eq!(s.class, Class::Write, "{mode:?}: {s:?}");
            assert!(s.classes.contains(Class::Read) && s.classes.contains(Class::Write));
            assert!(
                s.objects
                    .iter()
                    .any(|o| o.name == "t" && o.access == Access::Write),
                "{mode:?}: {s:?}"
            );
            // The whole text: the server may have split it either way.
            assert_eq!(s.sql, HOSTILE.trim());
        }
    }
}

#[test]
fn backslashes_outside_plain_literals_read_the_same_in_both_modes() {
    for sql in [
        r"select E'\'' from t",
        r"select $$\'$$ from t",
        r"select $x$ \' $x$; delete from t",
        "select 1 from t -- it\\'s\n",
        r"/* \' */ delete from t",
        r#"select "a\b" from t"#,
        r"select 'C:\\' from t",
        r"select 'a\nb' from t",
    ] {
        let on = analyze(sql, StandardStrings::On);
        let off = analyze(sql, StandardStrings::Off);
        assert!(!on.ambiguous && on.parsed, "{sql}: {on:?}");
        assert_eq!(on, off, "{sql}");
    }
}

#[test]
fn a_reading_the_parser_rejects_gives_way_to_the_one_it_accepts() {
    // On: `'it\'` then an unterminated `s'`; off: a DELETE of one row.
    let sql = r"delete from t where note = 'it\'s'";
    for mode in MODES {
        let a = analyze(sql, mode);
        assert!(a.parsed && a.ambiguous, "{mode:?}: {a:?}");
        let [s] = a.statements.as_slice() else {
            panic!("{mode:?}: {a:?}");
        };
        assert_eq!(s.class, Class::Write, "{mode:?}");
        assert!(!s.classes.contains(Class::Unknown), "{mode:?}: {s:?}");
        assert_eq!(s.command, "DELETE");
    }
}

#[test]
fn no_part_of_a_password_is_stored_in_either_reading() {
    // Off: the password is `Xq7'Zk9; select 1 -- `. On: `Xq7\` then `Zk9; …`.
    for sql in [
        r"alter role app password 'Xq7\'Zk9; select 1 -- '",
        r"alter role app password 'Xq7\' ; select 'Zk9'",
        r"create role app login password 'Xq7\'' ; select 1; -- Zk9'",
    ] {
        for policy in [TextPolicy::Secrets, TextPolicy::Constants] {
            for mode in MODES {
                let a = Analyzer::new(8, &IdentityConfig::default(), policy)
                    .analyze_uncached_in(sql, mode);
                for s in &a.statements {
                    assert!(
                        !s.sql.contains("Xq7") && !s.sql.contains("Zk9"),
                        "{sql} {policy:?} {mode:?}: {:?}",
                        s.sql
                    );
                }
                if a.ambiguous {
                    assert!(a.statements.iter().all(|s| s.sql == WITHHELD), "{sql}");
                    assert!(a.statements.iter().all(|s| s.classes.contains(Class::Role)));
                }
            }
        }
    }
}

#[test]
fn the_cache_never_answers_one_mode_with_the_other() {
    let mut analyzer = Analyzer::new(64, &IdentityConfig::default(), TextPolicy::Secrets);
    for _ in 0..2 {
        assert_eq!(
            analyzer
                .analyze_in(HOSTILE, StandardStrings::Off)
                .statements
                .len(),
            2
        );
        assert_eq!(
            analyzer
                .analyze_in(HOSTILE, StandardStrings::On)
                .statements
                .len(),
            1
        );
    }
    // Texts without a backslash are one entry for both modes.
    let plain = "select 1 from t where a = 'x'";
    analyzer.analyze_in(plain, StandardStrings::On);
    let before = analyzer.len();
    analyzer.analyze_in(plain, StandardStrings::Off);
    assert_eq!(analyzer.len(), before);
}

/// The redaction every capture path stores statement text through (the
/// trigger drainer's `current_query()` too): a password one reading finds
/// is not stored through the other.
#[test]
fn redact_secrets_withholds_what_the_two_readings_redact_differently() {
    let (text, _) =
        pgtrail_sql::redact_secrets(r"alter role app password 'Xq7\'Zk9; select 1 -- '");
    assert_eq!(text, WITHHELD);
    // Read alike: redacted as before.
    let (text, _) = pgtrail_sql::redact_secrets(r"alter role app password 'Xq7\\Zk9'");
    assert_eq!(text, "alter role app password '<redacted>'");
    let (text, _) = pgtrail_sql::redact_secrets(r"select 'a\b' from t");
    assert_eq!(text, r"select 'a\b' from t");
}

/// `U&'…'` is an error with the setting off (the server runs nothing of
/// the text), and has no backslash to read differently otherwise: it is
/// read `on` whatever the session's mode, so its one cache entry is the
/// same whichever session made it.
#[test]
fn a_text_without_a_backslash_is_read_on_in_either_mode() {
    let sql = "delete from t where a = U&'x'";
    for mode in MODES {
        let a = analyze(sql, mode);
        assert!(a.parsed && !a.ambiguous, "{mode:?}: {a:?}");
        assert_eq!(a.statements[0].class, Class::Write);
    }
}

#[test]
fn constants_hidden_from_one_reading_are_never_stored() {
    // With standard_conforming_strings off the server reads two literals,
    // the second the masked value; read with it on, `secret` is a bare
    // word between literals, and replacing constants alone would keep it.
    // The trigger and logical-replication paths store statement text
    // through these two when columns are masked.
    let sql = r"update pay set note = '\'' , 'secret-4242' -- '";
    for (name, redact) in [
        (
            "redact_constants",
            pgtrail_sql::redact_constants as fn(&str) -> _,
        ),
        (
            "redact_constants_outside_ddl",
            pgtrail_sql::redact_constants_outside_ddl,
        ),
    ] {
        let (text, _) = redact(sql);
        assert!(!text.contains("4242"), "{name} stored {text:?}");
    }
    for mode in [
        pgtrail_sql::RedactMode::Constants,
        pgtrail_sql::RedactMode::ConstantsOutsideDdl,
    ] {
        let text = pgtrail_sql::Redactor::default().redact(sql, mode);
        assert!(
            !text.contains("4242"),
            "the trigger drainer's {mode:?} stored {text:?}"
        );
    }
    // A text the modes read alike keeps its shape.
    let (text, _) = pgtrail_sql::redact_constants(r"update pay set note = E'a\'b' where id = 7");
    assert_eq!(text, "update pay set note = $1 where id = $2");
}
