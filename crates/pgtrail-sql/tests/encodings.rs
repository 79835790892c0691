//! Texts from sessions whose client encoding puts 0x5C, the backslash, in
//! the second byte of some characters (SJIS, BIG5, GBK, GB18030, JOHAB).
//! The server converts the text before reading it, so for the server that
//! byte is part of a character; the proxy gets the text decoded as UTF-8
//! and sees a backslash after a non-ASCII character. In `E'…'` that
//! backslash would escape the closing quote and hide what follows from
//! the proxy. Attacker: an application role that sets such an encoding to
//! run a DROP the proxy would read as part of a string. Whatever the
//! reading, the analysis holds every reading's classes and objects.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Analysis, Analyzer, Class, StandardStrings, TextPolicy, WITHHELD};

const MODES: [StandardStrings; 2] = [StandardStrings::On, StandardStrings::Off];

fn analyze(sql: &str, mode: StandardStrings, policy: TextPolicy) -> Analysis {
    Analyzer::new(8, &IdentityConfig::default(), policy).analyze_uncached_in(sql, mode)
}

/// `bytes` as the proxy's wire decoder hands them on: UTF-8, what is not
/// UTF-8 replaced.
fn as_the_proxy_reads(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `select E'<c>'; drop table victim; --'` where `<c>` is `character`, a
/// character whose encoding ends in 0x5C.
fn hidden_drop(character: &[u8]) -> Vec<u8> {
    let mut sql = b"select E'".to_vec();
    sql.extend_from_slice(character);
    sql.extend_from_slice(b"'; drop table victim; --'");
    sql
}

fn drops_victim(a: &Analysis) -> bool {
    a.statements
        .iter()
        .any(|s| s.classes.contains(Class::Ddl) && s.objects.iter().any(|o| o.name == "victim"))
}

#[test]
fn a_drop_behind_a_second_byte_backslash_is_ddl_in_every_reading() {
    // SJIS 0x81 0x5C ("—"), BIG5 0xA5 0x5C ("功"), and an SJIS text whose
    // bytes before the 0x5C happen to be UTF-8 (0xE3 0x81 0x81 = "ぁ").
    for character in [&[0x81, 0x5C][..], &[0xA5, 0x5C], &[0xE3, 0x81, 0x81, 0x5C]] {
        let sql = as_the_proxy_reads(&hidden_drop(character));
        for mode in MODES {
            let a = analyze(&sql, mode, TextPolicy::Secrets);
            assert!(a.ambiguous, "{sql:?} {mode:?}: {a:?}");
            assert_eq!(a.ambiguity(), Some("client_encoding"));
            assert!(drops_victim(&a), "{sql:?} {mode:?}: {a:#?}");
            for s in &a.statements {
                assert_eq!(s.class, Class::Ddl, "the weightiest class: {s:?}");
                assert_eq!(s.sql, sql.trim(), "the whole text, as the proxy read it");
            }
        }
    }
}

#[test]
fn the_same_text_without_the_high_byte_is_read_as_before() {
    // No character before the backslash: a backslash for every reader, so
    // the DROP is inside the string and nothing is ambiguous.
    let sql = r"select E'\'; drop table victim; --'";
    for mode in MODES {
        let a = analyze(sql, mode, TextPolicy::Secrets);
        assert!(!a.ambiguous, "{mode:?}: {a:?}");
        assert!(!drops_victim(&a), "{mode:?}: {a:?}");
        assert_eq!(a.statements[0].class, Class::Read);
    }
}

#[test]
fn utf8_text_whose_readings_agree_is_not_marked() {
    // A UTF-8 session's escapes after non-ASCII text: every reading is the
    // same SELECT, so the analysis is the plain one.
    let sql = "select E'日本\\n' as x from t";
    for mode in MODES {
        let a = analyze(sql, mode, TextPolicy::Secrets);
        assert!(!a.ambiguous, "{mode:?}: {a:?}");
        assert_eq!(a.statements[0].class, Class::Read);
        assert_eq!(a.statements[0].sql, sql);
    }
}

#[test]
fn more_suspects_than_can_be_read_make_the_text_unknown() {
    // Five suspect backslashes: 2^5 readings a mode is more than the
    // proxy tries; the statement is UNKNOWN (logged at every level) and
    // names no object a rule could exclude it by.
    let mut bytes = b"select E'".to_vec();
    for _ in 0..5 {
        bytes.extend_from_slice(&[0x81, 0x5C]);
    }
    bytes.extend_from_slice(b"'; drop table victim; --' from excluded_table");
    let sql = as_the_proxy_reads(&bytes);
    for mode in MODES {
        let a = analyze(&sql, mode, TextPolicy::Secrets);
        assert!(a.ambiguous, "{mode:?}: {a:?}");
        for s in &a.statements {
            assert!(s.classes.contains(Class::Unknown), "{s:?}");
            assert!(s.objects.is_empty(), "{s:?}");
        }
    }
}

#[test]
fn no_reading_stores_a_secret_or_a_constant() {
    // Whether the password is in a literal depends on the reading: the
    // text is withheld, under both text policies.
    let bytes = [
        &b"alter role app password E'"[..],
        &[0x81, 0x5C],
        b"' || 'Xq7Zk9'",
    ]
    .concat();
    let sql = as_the_proxy_reads(&bytes);
    for policy in [TextPolicy::Secrets, TextPolicy::Constants] {
        for mode in MODES {
            let a = analyze(&sql, mode, policy);
            for s in &a.statements {
                assert_eq!(s.sql, WITHHELD, "{policy:?} {mode:?}: {s:?}");
            }
        }
    }
    // Under `constants`, a literal is never stored when its bounds depend
    // on the reading, even with no secret named.
    let sql = as_the_proxy_reads(&hidden_drop(&[0x81, 0x5C]));
    let a = analyze(&sql, StandardStrings::On, TextPolicy::Constants);
    assert!(a.statements.iter().all(|s| s.sql == WITHHELD), "{a:?}");
}
