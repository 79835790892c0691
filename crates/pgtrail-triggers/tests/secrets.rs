//! Secrets never enter the trail: passwords and connection-string
//! credentials in captured statement text are redacted when sealed, and
//! `--sql` text of an install with masked columns keeps no constant.

use pgtrail_core::filter::TableName;
use pgtrail_core::Kind;
use pgtrail_triggers::TrackOptions;

use crate::support::Db;

/// Every secret the statements below carry: none may be found in the store.
const SECRETS: [&str; 10] = [
    "Sekret1-mapping",
    "Sekret2-alter-mapping",
    "Sekret3-server-token",
    "Sekret4-server-uri",
    "Sekret5-alter-server",
    "Sekret6-subscription",
    "Sekret7-alter-subscription",
    "Sekret8-role-with-ddl",
    "Sekret9-create-role-with-ddl",
    "Sekret10-row-sql",
];

/// The whole store, as text: the events table's rows, bodies included.
async fn store_text(db: &Db) -> String {
    db.client
        .query_one(
            "select coalesce(string_agg(e::text, E'\\n'), '') from pgtrail.events e",
            &[],
        )
        .await
        .expect("read the store")
        .get(0)
}

#[tokio::test]
async fn passwords_in_captured_ddl_are_redacted_before_they_are_sealed() {
    let db = Db::installed("secrets_ddl").await;
    let [s1, s2, s3, s4, s5, s6, s7, s8, s9, _] = SECRETS;
    db.sql("create extension postgres_fdw; create role app login; create table t0 (id int)")
        .await;
    // The attacker is whoever can read the trail: a DBA typing these, or a
    // migration tool, never meant them to be kept.
    for sql in [
        "create server remote foreign data wrapper postgres_fdw options (host 'localhost', dbname 'x')".to_string(),
        format!("create user mapping for app server remote options (user 'bob', password '{s1}')"),
        format!("alter user mapping for app server remote options (set password E'{s2}')"),
        "create foreign data wrapper plain_fdw".to_string(),
        format!("create server other foreign data wrapper plain_fdw options (api_token $t${s3}$t$, uri 'postgres://u:{s4}@h/db')"),
        format!("alter server other options (set api_token '{s5}')"),
        format!("create subscription sub connection 'host=localhost dbname=x user=rep password={s6}' publication p with (connect = false)"),
        format!("alter subscription sub connection 'postgresql://rep:{s7}@localhost/x'"),
        // One query string: captured DDL and a password change together.
        format!("create table t1 (id int); alter role app password '{s8}'; create index on t1 (id)"),
        format!("create role app2 login encrypted password '{s9}'; /* rotate */ create table t2 (id int)"),
    ] {
        db.sql(&sql).await;
    }
    let events = db.sealed_events().await;
    let ddl: Vec<_> = events.iter().filter(|e| e.kind == Kind::Ddl).collect();
    let tags: Vec<&str> = ddl
        .iter()
        .filter_map(|e| e.command_tag.as_deref())
        .collect();
    for tag in [
        "CREATE USER MAPPING",
        "ALTER USER MAPPING",
        "CREATE SERVER",
        "ALTER SERVER",
        "CREATE SUBSCRIPTION",
        "ALTER SUBSCRIPTION",
        "CREATE TABLE",
        "CREATE INDEX",
    ] {
        assert!(tags.contains(&tag), "{tag} recorded: {tags:?}");
    }
    let text = store_text(&db).await;
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} reached the store");
    }
    // The statements are kept, readable, with the secrets replaced.
    let sql_of = |tag: &str| {
        ddl.iter()
            .find(|e| e.command_tag.as_deref() == Some(tag))
            .and_then(|e| e.sql.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        sql_of("CREATE USER MAPPING"),
        "create user mapping for app server remote options (user 'bob', password '<redacted>')"
    );
    assert_eq!(
        sql_of("CREATE SUBSCRIPTION"),
        "create subscription sub connection 'host=localhost dbname=x user=rep password=<redacted>' publication p with (connect = false)"
    );
    assert_eq!(
        sql_of("ALTER SUBSCRIPTION"),
        "alter subscription sub connection 'postgresql://rep:<redacted>@localhost/x'"
    );
    assert_eq!(
        sql_of("CREATE INDEX"),
        "create table t1 (id int); alter role app password '<redacted>'; create index on t1 (id)"
    );
    // Sealed rows leave the inbox: the raw text is gone from the database.
    let pending: i64 = db
        .client
        .query_one("select count(*) from pgtrail.inbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn statement_text_of_row_events_loses_passwords_and_with_masking_every_constant() {
    let db = Db::installed("secrets_sql").await;
    let s10 = SECRETS[9];
    db.sql(
        "create role app login;
         create table orders (id int primary key, note text);
         create table people (id int primary key, name text, ssn text);",
    )
    .await;
    let with_sql = TrackOptions {
        capture_sql: true,
        ..TrackOptions::default()
    };
    let orders = TableName::parse("orders").expect("name");
    pgtrail_triggers::track(&db.client, &orders, &with_sql)
        .await
        .expect("track");
    db.sql(&format!(
        "insert into orders values (1, 'first'); alter role app password '{s10}'"
    ))
    .await;
    let events = db.row_events("orders").await;
    assert_eq!(
        events[0].sql.as_deref(),
        Some("insert into orders values (1, 'first'); alter role app password '<redacted>'"),
        "no masked column yet: literals kept, the password not"
    );

    // Masking a column anywhere: statement text keeps no constant at all,
    // also for tables without masked columns (a function argument can carry
    // a masked value into any statement).
    let people = TableName::parse("people").expect("name");
    let masked = TrackOptions {
        capture_sql: true,
        mask: vec!["ssn".into()],
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &people, &masked)
        .await
        .expect("track");
    db.sql(
        "create function add_person(id int, ssn text) returns void language sql \
         as $$ insert into people values (id, 'x', ssn) $$;
         create function log_order(id int, note text) returns void language sql \
         as $$ insert into orders values (id, note) $$;",
    )
    .await;
    db.sql("insert into people values (2, 'Bo', '123-45-6789') /*app_user='alice'*/")
        .await;
    db.sql("select add_person(3, '987-65-4321'), log_order(4, '555-12-3456')")
        .await;
    // A DDL event's text is the client's whole query string: a masked value
    // sent in the same string as a migration must not ride in with it.
    db.sql("create table later (id int, note text default 'n/a'); insert into people values (5, 'Cy', '111-22-3333')")
        .await;
    db.drain().await;
    let ddl: Vec<pgtrail_core::Event> = db
        .sealed_events()
        .await
        .into_iter()
        .filter(|e| e.kind == Kind::Ddl)
        .collect();
    assert_eq!(
        ddl.last().and_then(|e| e.sql.as_deref()),
        Some("create table later (id int, note text default 'n/a'); insert into people values ($1, $2, $3)"),
        "the schema change keeps its text, the data statement beside it loses its constants"
    );
    let text = store_text(&db).await;
    // Sealed first, so the store holds what it will ever hold of them.
    // (555-12-3456 is an unmasked column's value in orders' row image: it
    // may be there, just never in statement text, checked below.)
    for value in ["123-45-6789", "987-65-4321", "111-22-3333", s10] {
        assert!(!text.contains(value), "{value} reached the store");
    }
    let people_events = db.row_events("people").await;
    assert_eq!(
        people_events[0].sql.as_deref(),
        Some("insert into people values ($1, $2, $3) /*app_user='alice'*/")
    );
    assert_eq!(
        people_events[0].app_user.as_deref(),
        Some("alice"),
        "the sqlcommenter comment still names the user"
    );
    let orders_events = db.row_events("orders").await;
    assert_eq!(
        orders_events.last().and_then(|e| e.sql.as_deref()),
        Some("select add_person($1, $2), log_order($3, $4)")
    );
    for event in db.sealed_events().await {
        let sql = event.sql.as_deref().unwrap_or_default();
        assert!(
            !["555-12-3456", "111-22-3333"]
                .iter()
                .any(|v| sql.contains(v)),
            "a constant in the statement text of a {:?} event: {sql}",
            event.kind
        );
    }
}
