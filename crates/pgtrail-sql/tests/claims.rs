//! The application user's claims, from every channel, and the hostile
//! spellings an application (or a user typing into its search box) could
//! try to plant a claim with.

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{
    startup_options, Analyzer, Claim, ClaimChannel, ClaimField, ClaimScope, ClaimTracker,
    ClaimValue, TextPolicy,
};

fn analyzer() -> Analyzer {
    Analyzer::new(8, &IdentityConfig::default(), TextPolicy::Secrets)
}

fn claims(sql: &str) -> Vec<Claim> {
    analyzer()
        .analyze_uncached(sql)
        .statements
        .into_iter()
        .flat_map(|s| s.claims)
        .collect()
}

fn user(
    value: ClaimValue,
    channel: ClaimChannel,
    scope: ClaimScope,
    setting: Option<&str>,
) -> Claim {
    Claim {
        field: ClaimField::AppUser,
        setting: setting.map(str::to_string),
        value,
        channel,
        scope,
    }
}

fn set(v: &str) -> ClaimValue {
    ClaimValue::Set(v.into())
}

#[test]
fn every_channel() {
    use ClaimChannel::*;
    use ClaimScope::*;
    let pu = Some("pgtrail.user");
    assert_eq!(
        claims("SELECT set_config('pgtrail.user', 'alice', false)"),
        [user(set("alice"), SetConfig, Session, pu)]
    );
    assert_eq!(
        claims("select pg_catalog.set_config('PGTRAIL.USER'::text, E'al\\'ice', true)"),
        [user(set("al'ice"), SetConfig, Transaction, pu)]
    );
    assert_eq!(
        claims("SET LOCAL pgtrail.\"user\" = 'alice'"),
        [user(set("alice"), Set, Transaction, pu)]
    );
    assert_eq!(
        claims("SET SESSION pgtrail.\"user\" TO 'alice'"),
        [user(set("alice"), Set, Session, pu)]
    );
    assert_eq!(claims("SET app.current_user TO bob"), []);
    assert_eq!(
        claims("SET app.\"current_user\" TO bob"),
        [user(set("bob"), Set, Session, Some("app.current_user"))]
    );
    assert_eq!(
        claims("SET pgtrail.\"user\" TO DEFAULT"),
        [user(ClaimValue::Reset, Set, Session, pu)]
    );
    assert_eq!(
        claims("RESET pgtrail.\"user\""),
        [user(ClaimValue::Reset, Set, Session, pu)]
    );
    assert_eq!(claims("RESET ALL").len(), 2, "user and context");
    assert_eq!(
        claims("UPDATE t SET a = 1 /*request_id='r1',user='alice%40example.com'*/"),
        [user(
            set("alice@example.com"),
            Comment,
            Statement,
            Some("user")
        )]
    );
    assert_eq!(
        claims("/* app_user='carol' */ SELECT 1"),
        [user(set("carol"), Comment, Statement, Some("app_user"))]
    );
    let s = &analyzer()
        .analyze_uncached("SELECT 1 /*request_id='r1'*/;")
        .statements[0];
    assert_eq!(s.comment, [("request_id".to_string(), "r1".to_string())]);
    let ctx = claims("SELECT set_config('pgtrail.context', '{\"tenant\":\"acme\"}', true)");
    assert_eq!(ctx[0].field, ClaimField::Context);
}

#[test]
fn what_is_not_a_claim() {
    for sql in [
        // A comment-like text inside a string literal.
        "SELECT '/*user=''mallory''*/'",
        "SELECT * FROM t WHERE note = '/*user=''mallory''*/'",
        "SELECT $$ /*user='mallory'*/ $$",
        // A nested comment: the sqlcommenter-looking part is inside another comment.
        "SELECT 1 /* x /*user='mallory'*/ */",
        "SELECT 1 /* /*user='mallory'*/*/",
        // A -- comment is not sqlcommenter.
        "SELECT 1 -- user='mallory'",
        // A comment in the middle of the statement.
        "SELECT /*user='mallory'*/ 1 FROM t",
        // A column or another schema's function named set_config.
        "SELECT set_config FROM t",
        "SELECT app.set_config('pgtrail.user', 'mallory', false)",
        // Other settings.
        "SET application_name = 'mallory'",
        "SELECT set_config('application_name', 'mallory', false)",
        // `user` is reserved: Postgres rejects this, so nothing was set.
        "SET pgtrail.user = 'mallory'",
    ] {
        assert_eq!(claims(sql), [], "{sql}");
    }
}

#[test]
fn values_the_text_does_not_show_are_unknown_never_guessed() {
    use ClaimChannel::*;
    use ClaimScope::*;
    assert_eq!(
        claims("SELECT set_config('pgtrail.user', $1::text || 'x', false)"),
        [user(
            ClaimValue::Unknown,
            SetConfig,
            Session,
            Some("pgtrail.user")
        )]
    );
    assert_eq!(
        claims("SELECT set_config('pgtrail.user', lower('ALICE'), true)"),
        [user(
            ClaimValue::Unknown,
            SetConfig,
            Transaction,
            Some("pgtrail.user")
        )]
    );
    // A setting named by an expression may be the user's.
    assert_eq!(
        claims("SELECT set_config(name, 'alice', false) FROM settings_to_apply"),
        [user(ClaimValue::Unknown, SetConfig, Session, None)]
    );
    assert_eq!(
        claims("SELECT set_config('pgtrail.' || 'user', 'alice', false)"),
        [user(ClaimValue::Unknown, SetConfig, Session, None)]
    );
}

#[test]
fn a_statement_that_sets_and_uses_the_user() {
    let id = IdentityConfig::default();
    let mut tracker = ClaimTracker::new(&id);
    tracker.apply(
        &claims("SELECT set_config('pgtrail.user', 'alice', false)"),
        false,
    );
    let c = claims("SELECT set_config('pgtrail.user', 'bob', false), * FROM patients");
    // The statement runs under the user before it; its claim is recorded beside.
    assert_eq!(
        tracker.app_user_for(&c),
        Some((&set("alice"), ClaimChannel::SetConfig))
    );
    tracker.apply(&c, false);
    assert_eq!(tracker.app_user().map(|h| &h.value), Some(&set("bob")));
    // Its own comment names the user of that statement, and only of it.
    let c = claims("SELECT set_config('pgtrail.user', 'carol', false) /*user='dave'*/");
    assert_eq!(
        tracker.app_user_for(&c),
        Some((&set("dave"), ClaimChannel::Comment))
    );
    tracker.apply(&c, false);
    assert_eq!(tracker.app_user().map(|h| &h.value), Some(&set("carol")));
}

#[test]
fn transaction_scope_follows_postgres() {
    let id = IdentityConfig::default();
    let value = |t: &ClaimTracker| t.app_user().map(|h| h.value.clone());
    let mut t = ClaimTracker::new(&id);
    t.apply(&claims("SET pgtrail.\"user\" = 'alice'"), false);
    // SET LOCAL ends with the transaction.
    t.apply(&claims("SET LOCAL pgtrail.\"user\" = 'bob'"), true);
    assert_eq!(value(&t), Some(set("bob")));
    t.end_transaction(true);
    assert_eq!(value(&t), Some(set("alice")));
    // set_config(…, true) too.
    t.apply(
        &claims("SELECT set_config('pgtrail.user', 'bob', true)"),
        true,
    );
    assert_eq!(value(&t), Some(set("bob")));
    t.end_transaction(false);
    assert_eq!(value(&t), Some(set("alice")));
    // A session SET in a transaction that rolls back is undone ...
    t.apply(&claims("SET pgtrail.\"user\" = 'mallory'"), true);
    assert_eq!(value(&t), Some(set("mallory")));
    t.end_transaction(false);
    assert_eq!(value(&t), Some(set("alice")));
    // ... and kept when it commits.
    t.apply(&claims("SET pgtrail.\"user\" = 'carol'"), true);
    t.end_transaction(true);
    assert_eq!(value(&t), Some(set("carol")));
    // Outside a transaction block, set_config(…, true) ends with its statement.
    t.apply(
        &claims("SELECT set_config('pgtrail.user', 'bob', true)"),
        false,
    );
    assert_eq!(value(&t), Some(set("carol")));
    // An unknown setting name may have changed the user: unknown, not carol.
    t.apply(&claims("SELECT set_config($1, $2, false)"), false);
    assert_eq!(value(&t), Some(ClaimValue::Unknown));
    t.apply(&claims("RESET ALL"), false);
    assert_eq!(value(&t), None);
    t.apply(&claims("SET pgtrail.\"user\" = 'alice'"), false);
    t.apply(&claims("DISCARD ALL"), false);
    assert_eq!(value(&t), None, "DISCARD ALL resets every setting");
}

#[test]
fn startup_options_as_libpq_escapes_them() {
    assert_eq!(
        startup_options("-c pgtrail.user=alice\\ smith  -csearch_path=app --statement-timeout=5s"),
        [
            ("pgtrail.user".to_string(), "alice smith".to_string()),
            ("search_path".to_string(), "app".to_string()),
            ("statement_timeout".to_string(), "5s".to_string()),
        ]
    );
    assert_eq!(
        startup_options("-c a\\\\b=c\\\\"),
        [("a\\b".to_string(), "c\\".to_string())]
    );
    let a = analyzer();
    assert_eq!(
        a.startup_claims(&[("user", "app"), ("options", "-c pgtrail.user=ci\\ bot")]),
        [user(
            set("ci bot"),
            ClaimChannel::StartupOption,
            ClaimScope::Session,
            Some("pgtrail.user")
        )]
    );
    // A custom setting may also be a startup parameter of its own.
    assert_eq!(
        a.startup_claims(&[("pgtrail.user", "ci")]),
        [user(
            set("ci"),
            ClaimChannel::StartupOption,
            ClaimScope::Session,
            Some("pgtrail.user")
        )]
    );
    let mut t = ClaimTracker::new(&IdentityConfig::default());
    t.apply(
        &a.startup_claims(&[("options", "-c pgtrail.user=ci")]),
        false,
    );
    assert_eq!(
        t.app_user().map(|h| h.channel),
        Some(ClaimChannel::StartupOption)
    );
}

#[test]
fn configured_names_are_the_ones_read() {
    let id = IdentityConfig {
        user_settings: vec!["myapp.actor".into()],
        context_setting: "myapp.ctx".into(),
        comment_user_keys: vec!["actor".into()],
    };
    let a = Analyzer::new(8, &id, TextPolicy::Secrets);
    let c = |sql: &str| -> Vec<Claim> {
        a.analyze_uncached(sql)
            .statements
            .into_iter()
            .flat_map(|s| s.claims)
            .collect()
    };
    assert_eq!(c("SET myapp.actor = 'x'").len(), 1);
    assert_eq!(c("SET pgtrail.\"user\" = 'x'"), []);
    assert_eq!(c("SELECT 1 /*actor='x',user='y'*/")[0].value, set("x"));
}

#[test]
fn a_parameter_is_filled_from_bind_or_execute_and_prepare_claims_nothing_yet() {
    // Extended protocol: Parse once, Bind each time with the user.
    let c = claims("SELECT set_config('pgtrail.user', $1, true)");
    assert_eq!(c[0].value, ClaimValue::Parameter(1));
    assert_eq!(c[0].with_parameters(&[Some("alice")]).value, set("alice"));
    // NULL, binary, or missing: unknown, never guessed.
    assert_eq!(c[0].with_parameters(&[None]).value, ClaimValue::Unknown);
    assert_eq!(c[0].with_parameters(&[]).value, ClaimValue::Unknown);
    let mut t = ClaimTracker::new(&IdentityConfig::default());
    t.apply(&c, false);
    t.apply(
        &claims("SELECT set_config('pgtrail.user', $1, false)"),
        false,
    );
    assert_eq!(
        t.app_user().map(|h| h.value.clone()),
        Some(ClaimValue::Unknown)
    );

    // SQL-level PREPARE: nothing is set until EXECUTE, which fills $1.
    let a = analyzer();
    let prep = a
        .analyze_uncached("PREPARE su (text) AS SELECT set_config('pgtrail.user', $1, false)")
        .statements
        .remove(0);
    assert!(prep.claims.is_empty());
    let exec = a.analyze_uncached("EXECUTE su('bob')").statements.remove(0);
    let runs = exec.runs(|n| (n == "su").then_some(&prep));
    assert_eq!(
        runs.claims,
        [user(
            set("bob"),
            ClaimChannel::SetConfig,
            ClaimScope::Session,
            Some("pgtrail.user")
        )]
    );
    let exec = a
        .analyze_uncached("EXECUTE su(lower(name))")
        .statements
        .remove(0);
    assert_eq!(
        exec.runs(|_| Some(&prep)).claims[0].value,
        ClaimValue::Unknown
    );
}
