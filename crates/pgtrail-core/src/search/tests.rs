use super::*;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z")
        .expect("valid")
        .with_timezone(&Utc)
}

fn parse(input: &str) -> Filter {
    parse_search(input, now()).unwrap_or_else(|e| panic!("{input}: {e}"))
}

fn refused(input: &str) -> String {
    match parse_search(input, now()) {
        Ok(f) => panic!("{input} was taken: {f:?}"),
        Err(e) => e.to_string(),
    }
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("valid")
        .with_timezone(&Utc)
}

#[test]
fn every_key_sets_its_field() {
    let f = parse(
        "user:alice db_user:app table:public.orders pk:id=42 op:update kind:row_change \
         source:cdc class:write ip:10.0.0.0/8 db:shop since:2026-12-01 until:2h failed",
    );
    assert_eq!(f.user.as_deref(), Some("alice"));
    assert_eq!(f.db_user.as_deref(), Some("app"));
    assert_eq!(
        f.table,
        Some(TableName::parse("public.orders").expect("ok"))
    );
    assert_eq!(f.pk, Some(PkFilter::parse("id=42").expect("ok")));
    assert_eq!(f.operation.as_deref(), Some("UPDATE"));
    assert_eq!(f.kind, Some(Kind::RowChange));
    assert_eq!(f.source, Some(Source::Cdc));
    assert_eq!(f.class.as_deref(), Some("WRITE"));
    assert_eq!(
        f.client_addr.map(|a| a.to_string()).as_deref(),
        Some("10.0.0.0/8")
    );
    assert_eq!(f.database.as_deref(), Some("shop"));
    assert_eq!(f.since, Some(t("2026-12-01T00:00:00Z")));
    assert_eq!(f.until, Some(t("2026-12-06T10:00:00Z")));
    assert!(f.failed);
    assert_eq!(f.search, None);
    assert_eq!((f.limit, f.before_seq), (None, None));
}

#[test]
fn an_empty_search_is_no_filter() {
    assert_eq!(parse(""), Filter::default());
    assert_eq!(parse("  \t\n "), Filter::default());
}

#[test]
fn free_words_are_text_search() {
    let f = parse("drop table user:bob accounts");
    assert_eq!(f.search.as_deref(), Some("drop table accounts"));
    assert_eq!(f.user.as_deref(), Some("bob"));
    // A quoted phrase is its words; a quoted key is text.
    let f = parse(r#""drop table" "usr:alice""#);
    assert_eq!(f.search.as_deref(), Some("drop table usr:alice"));
    // Times and addresses are words, not keys.
    assert_eq!(parse("12:30").search.as_deref(), Some("12:30"));
    assert_eq!(parse("::1").search.as_deref(), Some("::1"));
}

#[test]
fn quoted_values_keep_spaces_and_escapes() {
    assert_eq!(
        parse(r#"user:"alice smith""#).user.as_deref(),
        Some("alice smith")
    );
    assert_eq!(
        parse(r#"user:"say \"hi\"""#).user.as_deref(),
        Some(r#"say "hi""#)
    );
    assert_eq!(
        parse(r#"user:"back\\slash""#).user.as_deref(),
        Some(r"back\slash")
    );
    assert_eq!(parse(r#"USER:"a b""#).user.as_deref(), Some("a b"));
    assert_eq!(parse(r#"db:"my db""#).database.as_deref(), Some("my db"));
    assert_eq!(
        parse(r#"op:"create table""#).operation.as_deref(),
        Some("CREATE TABLE")
    );
}

#[test]
fn tables_take_identifier_quotes() {
    let f = parse(r#"table:"My Schema"."t.1""#);
    let table = f.table.expect("table");
    assert_eq!(table.schema.as_deref(), Some("My Schema"));
    assert_eq!(table.table, "t.1");
    // A quoted name with a dot is one name, as in SQL.
    let f = parse(r#"table:"public.orders""#);
    assert_eq!(f.table.expect("table").schema, None);
    assert_eq!(parse("table:orders").table.expect("table").table, "orders");
}

#[test]
fn keys_take_json_or_pairs() {
    let f = parse(r#"pk:{"id":42,"region":"eu"}"#);
    assert_eq!(
        f.pk.expect("pk").canonical(),
        r#"{"id":"42","region":"eu"}"#
    );
    let f = parse(r#"pk:"note=a b,id=1""#);
    assert_eq!(f.pk.expect("pk").canonical(), r#"{"id":"1","note":"a b"}"#);
    let f = parse(r#"pk:"id=it's""#);
    assert_eq!(f.pk.expect("pk").canonical(), r#"{"id":"it's"}"#);
}

#[test]
fn leaving_out_a_role() {
    assert_eq!(
        parse("-user:reporting").not_user.as_deref(),
        Some("reporting")
    );
    assert_eq!(
        parse("-db_user:reporting").not_user.as_deref(),
        Some("reporting")
    );
    assert_eq!(
        parse("not_user:reporting").not_user.as_deref(),
        Some("reporting")
    );
    assert!(refused("-table:orders").contains("only -user:"));
    // A lone dash or a negative number is text.
    assert_eq!(parse("- -1").search.as_deref(), Some("- -1"));
}

#[test]
fn every_time_form() {
    for (text, expected) in [
        ("since:2026-12-06T02:19:01Z", "2026-12-06T02:19:01Z"),
        ("since:2026-12-06", "2026-12-06T00:00:00Z"),
        (
            r#"since:"2026-12-06 02:19:01.57915+00""#,
            "2026-12-06T02:19:01.57915Z",
        ),
        (
            r#"since:"2026-12-06 07:49:01+05:30""#,
            "2026-12-06T02:19:01Z",
        ),
        ("since:2h", "2026-12-06T10:00:00Z"),
        ("since:7d", "2026-11-29T12:00:00Z"),
        ("since:today", "2026-12-06T00:00:00Z"),
        ("since:yesterday", "2026-12-05T00:00:00Z"),
        (r#"since:"last week""#, "2026-11-29T12:00:00Z"),
        ("since:last_week", "2026-11-29T12:00:00Z"),
    ] {
        assert_eq!(parse(text).since, Some(t(expected)), "{text}");
    }
    assert_eq!(parse("until:today").until, Some(t("2026-12-06T00:00:00Z")));
}

#[test]
fn errors_name_the_term_and_the_reason() {
    let e = refused("user:alice since:tomorrow");
    assert!(
        e.starts_with("since:tomorrow: invalid time 'tomorrow'"),
        "{e}"
    );
    let e = refused("usr:alice");
    assert!(e.starts_with("usr:alice: unknown key 'usr'"), "{e}");
    assert!(e.contains("quote the term"), "{e}");
    let e = refused("kind:rowchange");
    assert!(e.contains("row_change"), "{e}");
    assert!(refused("source:web").contains("trigger"));
    assert!(refused("class:reads").contains("unknown class"));
    assert!(refused("ip:10.0.0.0/33").contains("invalid address"));
    assert!(refused("pk:42").contains("invalid key"));
    assert!(refused("table:a.b.c").contains("invalid table"));
    assert!(refused("user:").contains("needs a value"));
    assert!(refused(r#"user:"""#).contains("needs a value"));
    assert!(refused("user:a user:b").contains("given twice"));
    assert!(refused("failed failed").contains("given twice"));
    assert!(refused("failed:no").contains("failed alone"));
    assert!(refused("outcome:ok").contains("outcome:failed"));
    assert!(parse("outcome:failed").failed);
    assert_eq!(parse("tx:123").xid, Some(123));
    assert!(refused("tx:4242@2026-12-06").contains("transaction id"));
    assert!(refused("tx:-1").contains("transaction id"));
    assert!(refused("col:").contains("unknown key 'col'"));
}

#[test]
fn unbalanced_quotes_are_refused() {
    for bad in [r#"user:"alice"#, r#"""#, r#"drop "table"#, r#"user:"a\""#] {
        let e = refused(bad);
        assert!(e.starts_with("unbalanced quote"), "{bad}: {e}");
    }
}

#[test]
fn sql_and_fts_syntax_stay_values_or_words() {
    // SQL metacharacters in a value are the value: the stores bind it.
    let f = parse(r#"user:"x' or '1'='1" db:a;drop"#);
    assert_eq!(f.user.as_deref(), Some("x' or '1'='1"));
    assert_eq!(f.database.as_deref(), Some("a;drop"));
    assert_eq!(f.search, None);
    // FTS syntax is free text; the stores split it into plain words.
    let f = parse(r#"NEAR(a b) * "x" OR^ -- /*"#);
    let search = f.search.expect("text");
    assert_eq!(
        crate::filter::search_words(&search),
        ["near", "a", "b", "x", "or"]
    );
    // A quote inside a table value is identifier syntax, never SQL.
    let f = parse(r#"table:"o""rders""#);
    assert_eq!(f.table.expect("table").table, r#"o"rders"#);
}

#[test]
fn hostile_sizes_and_characters_are_refused() {
    let huge = "a".repeat(1 << 20);
    let e = refused(&huge);
    assert!(
        e.starts_with("the search is too long (1048576 bytes"),
        "{e}"
    );
    assert!(e.len() < 200);
    let huge_value = format!("user:{}", "x".repeat(MAX_SEARCH_LEN));
    assert!(refused(&huge_value).contains("too long"));
    // At the limit, taken.
    let at_limit = format!("user:{}", "x".repeat(MAX_SEARCH_LEN - 5));
    assert_eq!(
        parse(&at_limit).user.map(|u| u.len()),
        Some(MAX_SEARCH_LEN - 5)
    );
    for bad in ["user:a\0b", "\u{1b}[31mred", "x\u{7f}", "since:\u{0}2h"] {
        let e = refused(bad);
        assert!(e.starts_with("the search holds a control character"), "{e}");
        assert!(!e.contains('\0') && !e.contains('\u{1b}'), "{e}");
    }
    // Tabs and newlines separate terms.
    let f = parse("user:a\tdb:b\nfailed");
    assert_eq!(
        (f.user.as_deref(), f.database.as_deref(), f.failed),
        (Some("a"), Some("b"), true)
    );
    // An error echoes at most a short prefix of a long term.
    let long_term = format!("since:{}", "9".repeat(3000));
    assert!(refused(&long_term).len() < 400);
    // Many terms are fine and linear.
    let many = "w ".repeat(MAX_SEARCH_LEN / 2);
    assert_eq!(
        parse(&many).search.map(|s| s.len()),
        Some(MAX_SEARCH_LEN / 2 * 2 - 1)
    );
}

#[test]
fn unicode_is_text() {
    let f = parse("user:Zoë 表 café");
    assert_eq!(f.user.as_deref(), Some("Zoë"));
    assert_eq!(f.search.as_deref(), Some("表 café"));
}
