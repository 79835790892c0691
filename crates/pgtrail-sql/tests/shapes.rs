//! The analyzer's cache of shapes (a text's constants scanned out): a text
//! answered from another text's parse must get exactly what its own parse
//! gives (class, command, objects, claims, stored text, span), and no
//! literal, comment or quoting a client crafts may make two different
//! statements share an entry.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Analyzer, Class, TextPolicy};

/// Groups of texts that differ only in their constants' values: pgbench's
/// scripts as `-M simple` sends them, the client matrix's statements as
/// drivers that inline parameters send them, and hostile values.
const GROUPS: &[&[&str]] = &[
    &[
        "UPDATE pgbench_accounts SET abalance = abalance + -3123 WHERE aid = 45123;",
        "UPDATE pgbench_accounts SET abalance = abalance + -17 WHERE aid = 9;",
    ],
    &[
        "SELECT abalance FROM pgbench_accounts WHERE aid = 45123;",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
    ],
    &[
        "UPDATE pgbench_tellers SET tbalance = tbalance + -3123 WHERE tid = 7;",
        "UPDATE pgbench_tellers SET tbalance = tbalance + -4999 WHERE tid = 10;",
    ],
    &[
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 45123, -3123, CURRENT_TIMESTAMP);",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (3, 2, 8, -12, CURRENT_TIMESTAMP);",
    ],
    &[
        "INSERT INTO mark_psycopg_insert (id, name) VALUES (1, 'one'), (2, 'two')",
        "INSERT INTO mark_psycopg_insert (id, name) VALUES (3, 'it''s'), (4, '')",
        "INSERT INTO mark_psycopg_insert (id, name) VALUES (5, $$x$$), (6, $q$'); DELETE FROM t; --$q$)",
    ],
    &[
        "SELECT id, name FROM mark_psql_select WHERE id IN (1, 2) ORDER BY id",
        "SELECT id, name FROM mark_psql_select WHERE id IN (999999999, 0) ORDER BY id",
    ],
    &[
        "UPDATE \"accounts\" SET \"plan\" = 'pro', \"updated_at\" = '2026-01-01' WHERE \"accounts\".\"id\" = 3 /*controller='billing',user='alice'*/",
        "UPDATE \"accounts\" SET \"plan\" = 'free', \"updated_at\" = '2027-12-31' WHERE \"accounts\".\"id\" = 41 /*controller='billing',user='alice'*/",
    ],
    &[
        "DELETE FROM sessions WHERE user_id = 12 AND token = 'abc' RETURNING id, (SELECT count(*) FROM audit)",
        "DELETE FROM sessions WHERE user_id = 13 AND token = 'x/*y*/z' RETURNING id, (SELECT count(*) FROM audit)",
    ],
    &[
        "WITH gone AS (DELETE FROM q WHERE id = 5 RETURNING *) INSERT INTO done SELECT * FROM gone",
        "WITH gone AS (DELETE FROM q WHERE id = 77 RETURNING *) INSERT INTO done SELECT * FROM gone",
    ],
    &[
        "SELECT x FROM t WHERE y = 'a'\n'b' AND z > 1.5",
        "SELECT x FROM t WHERE y = '--'\n'/*' AND z > 22.25",
    ],
    &[
        "SELECT 'é', \"naïve\" FROM t WHERE v = 'ü' /* ünïcode */",
        "SELECT '日本', \"naïve\" FROM t WHERE v = '' /* ünïcode */",
    ],
    // Values that mention secrets: the stored text is redacted again.
    &[
        "SELECT * FROM servers WHERE conninfo = 'host=a password=s3cret'",
        "SELECT * FROM servers WHERE conninfo = 'postgres://u:hunter2@h/db'",
        "SELECT * FROM servers WHERE conninfo = 'host=b'",
    ],
    &[
        "UPDATE users SET password = 'old' WHERE id = 1",
        "UPDATE users SET password = 'new' WHERE id = 2",
    ],
    &[
        "SELECT 1::float(53), 2::float(24)",
        "SELECT 7::float(53), 9::float(24)",
    ],
];

fn analyzer(policy: TextPolicy) -> Analyzer {
    Analyzer::new(256, &IdentityConfig::default(), policy)
}

/// Each text of a group, after another of its group was analyzed, is
/// answered from the cache, and exactly as its own parse answers it.
#[test]
fn texts_of_one_shape_share_a_parse_and_get_their_own_analysis() {
    for policy in [TextPolicy::Secrets, TextPolicy::Constants] {
        for group in GROUPS {
            let mut cached = analyzer(policy);
            let fresh = analyzer(policy);
            cached.analyze(group[0]);
            for sql in &group[1..] {
                let (hits, _) = cached.stats();
                let got = cached.analyze(sql);
                assert_eq!(*got, fresh.analyze_uncached(sql), "{policy:?} {sql}");
                assert_eq!(cached.stats().0, hits + 1, "{policy:?}: a hit for {sql}");
            }
        }
    }
}

/// The stored text is the text's own, redacted as its own parse would.
#[test]
fn the_stored_text_is_each_texts_own() {
    let mut a = analyzer(TextPolicy::Secrets);
    a.analyze("  SELECT * FROM t WHERE id = 1 AND name = 'x' ;  ");
    let b = a.analyze("  SELECT * FROM t WHERE id = 22 AND name = 'yy' ;  ");
    assert_eq!(a.stats(), (1, 1));
    let s = &b.statements[0];
    assert_eq!(s.sql, "SELECT * FROM t WHERE id = 22 AND name = 'yy'");
    assert_eq!(s.span, 2..2 + s.sql.len());
    let c = a.analyze("  SELECT * FROM t WHERE id = 3 AND name = 'password=hunter2' ;  ");
    assert_eq!(a.stats(), (2, 1));
    assert!(!c.statements[0].sql.contains("hunter2"), "{c:?}");
}

/// Texts a naive scanner would give one key, though they are different
/// statements (a DELETE passed off as the SELECT cached before it, a name
/// passed off as a value, a comment's claims as another's): each is
/// analyzed as what it is. The cache is warmed with every text first, so a
/// wrongly shared key would answer one with the other's analysis.
#[test]
fn crafted_texts_cannot_share_an_entry_with_another_statement() {
    let hostile: &[&str] = &[
        "select * from a1 where x = 1",
        "select * from a2 where x = 1",
        "select * from t where x = 1",
        "select * from t where x = '1'",
        "select * from t where x = \"1\"",
        "select * from t where x = 1.5",
        "select 123456789 from t",
        "select 1234567890 from t",
        "select 1::float(53) from t",
        "select 1::float(54) from t",
        "select 'a' 'b' from t",
        "select 'a'\n'b' from t",
        // A quote inside a comment, a comment inside a string.
        "select * from t /* ' */ where x = 1 -- '",
        "select * from t where x = '/*' -- */ delete from t",
        "select * from t where x = '' /* '' */",
        // Nested comments: the quote is still inside a comment.
        "select * from t /* /* */ ' */ where x = 1",
        // Backslashes end nothing in a standard string; E'' is not shaped.
        "select * from t where x = 'a\\'; delete from t; --'",
        "select * from t where x = E'a\\'; delete from t; --'",
        "select * from t where x = 'a\\' ; delete from t; --'",
        // Dollar quotes: a tag inside another's body, `$1` vs `$$`.
        "select * from t where x = $a$ $b$ ; delete from t; $b$ $a$",
        "select * from t where x = $b$ x $b$ ; delete from t; select $$ $$",
        "select * from t where x = $1 and y = 2",
        "delete from t where x = $1 and y = 2",
        // Claims in comments and set_config are per text.
        "select 1 /*user='alice'*/",
        "select 1 /*user='bob'*/",
        "select set_config('pgtrail.user', 'alice', true), 1",
        "select set_config('pgtrail.user', 'bob', true), 1",
        "select set_config('app.other', 'bob', true), 1",
        // Unicode escapes and prefixes.
        "select U&'\\0041' from t where x = 1",
        "select U&'!0041' UESCAPE '!' from t where x = 1",
        "select * from t where x = B'101'",
        "select * from t where x = X'1f'",
        "select * from t where x = N'1'",
        "select * from t where x = 0x1f",
        "select * from t where x = 1_000",
        "delete from t where x = 1",
        "update t set x = 1",
        "insert into t values (1)",
    ];
    for policy in [TextPolicy::Secrets, TextPolicy::Constants] {
        let mut cached = analyzer(policy);
        let fresh = analyzer(policy);
        for sql in hostile {
            cached.analyze(sql);
        }
        for sql in hostile.iter().rev() {
            assert_eq!(
                *cached.analyze(sql),
                fresh.analyze_uncached(sql),
                "{policy:?} {sql}"
            );
        }
    }
    // And what the attack was after: the DELETE is a WRITE.
    let mut cached = analyzer(TextPolicy::Secrets);
    cached.analyze("select * from t where x = 'a\\' ; select 1; --'");
    let a = cached.analyze("select * from t where x = 'a\\' ; delete from t; --'");
    assert!(
        a.statements.iter().any(|s| s.class == Class::Write),
        "{a:?}"
    );
}
