//! Secrets never enter the trail on logical replication capture either:
//! DDL statement text is redacted before it is held, spilled or stored, and
//! masked columns get trigger capture's keyed hash, so a masked value
//! compares equal across the two paths.

use pgtrail_cdc::mask::Masking;
use pgtrail_core::filter::TableName;
use pgtrail_core::Kind;
use pgtrail_store::postgres::PostgresStore;
use pgtrail_store::Store;
use pgtrail_triggers::{InstallOptions, TrackOptions};

use crate::common::{all_events, Running, TestDb};

const SECRETS: [&str; 6] = [
    "CdcSekret1-mapping",
    "CdcSekret2-alter-mapping",
    "CdcSekret3-subscription",
    "CdcSekret4-role-with-ddl",
    "CdcSekret5-server-uri",
    "CdcSekret6-alter-subscription",
];
const SSN: &str = "123-45-6789";

/// Every byte SQLite wrote for the store (the database file and its WAL).
fn store_bytes(db: &TestDb) -> Vec<u8> {
    let mut bytes = Vec::new();
    for name in ["trail.db", "trail.db-wal"] {
        if let Ok(content) = std::fs::read(db.dir.path().join(name)) {
            bytes.extend(content);
        }
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn ddl_secrets_are_redacted_and_masked_values_equal_trigger_captures() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_secrets",
        "create extension postgres_fdw;
         create role app login;
         create table users (id int primary key, name text, ssn text);",
    )
    .await?;
    // Trigger capture on the same table, masking the same column: its key is
    // the one logical replication capture must use.
    pgtrail_triggers::install(&db.url, &InstallOptions::default()).await?;
    let users = TableName::parse("users")?;
    let masked = TrackOptions {
        mask: vec!["ssn".into()],
        ..TrackOptions::default()
    };
    pgtrail_triggers::track(&db.client, &users, &masked).await?;

    let mut setup = db.setup_options();
    setup.selection.tables = vec![users.clone()];
    db.setup(&setup).await?;
    let mut options = db.capture_options();
    options.masking =
        Masking::parse(&["public.users.ssn".into()], &[]).map_err(anyhow::Error::msg)?;
    let store = db.store().await;
    let running = Running::start(&db, store.clone(), options);

    let [s1, s2, s3, s4, s5, s6] = SECRETS;
    for sql in [
        format!("insert into users values (1, 'Bo', '{SSN}'), (2, 'Al', null)"),
        "create server remote foreign data wrapper postgres_fdw options (host 'localhost', dbname 'x')".into(),
        format!("create user mapping for app server remote options (user 'bob', password '{s1}')"),
        format!("alter user mapping for app server remote options (set password '{s2}')"),
        format!("create subscription sub connection 'host=localhost user=rep password={s3}' publication p with (connect = false)"),
        format!("alter subscription sub connection 'postgres://rep:{s6}@localhost/x'"),
        format!("create table t1 (id int); alter role app password '{s4}'; create index on t1 (id)"),
        format!("create foreign data wrapper plain_fdw; create server other foreign data wrapper plain_fdw options (uri 'postgres://u:{s5}@h/db')"),
        format!("update users set ssn = '{SSN}-2' where id = 1"),
    ] {
        db.client.batch_execute(&sql).await?;
    }
    // The last statement's change arriving means everything before it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let events = loop {
        let events = all_events(store.as_ref()).await;
        let updated = events
            .iter()
            .any(|e| e.kind == Kind::RowChange && e.operation.as_deref() == Some("UPDATE"));
        if updated || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    running.stop().await?;

    let tags: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == Kind::Ddl)
        .filter_map(|e| e.command_tag.as_deref())
        .collect();
    for tag in [
        "CREATE USER MAPPING",
        "ALTER USER MAPPING",
        "CREATE SUBSCRIPTION",
        "ALTER SUBSCRIPTION",
        "CREATE INDEX",
        "CREATE SERVER",
    ] {
        assert!(tags.contains(&tag), "{tag} recorded: {tags:?}");
    }
    let mapping = events
        .iter()
        .find(|e| e.command_tag.as_deref() == Some("CREATE USER MAPPING"))
        .and_then(|e| e.sql.as_deref())
        .unwrap_or_default();
    assert_eq!(
        mapping,
        "create user mapping for app server remote options (user 'bob', password '<redacted>')"
    );
    // Nothing secret in the store file, at the byte level.
    let bytes = store_bytes(&db);
    assert!(!bytes.is_empty());
    for secret in SECRETS.iter().chain([&SSN]) {
        assert!(!contains(&bytes, secret), "{secret} reached the store file");
    }

    // The same row through trigger capture: the same masked value.
    let mut drainer = pgtrail_triggers_client(&db.url).await?;
    pgtrail_triggers::drain_all(&mut drainer).await?;
    let trigger_events = PostgresStore::connect(&db.url)
        .await?
        .scan(0, 10_000)
        .await?;
    let ssn_of = |events: &[pgtrail_core::Event], source: &str, id: &str| {
        events
            .iter()
            .find(|e| {
                e.kind == Kind::RowChange
                    && e.operation.as_deref() == Some("INSERT")
                    && e.pk.as_ref().is_some_and(|pk| pk["id"] == id)
            })
            .and_then(|e| e.new.as_ref())
            .map(|new| new["ssn"].clone())
            .unwrap_or_else(|| panic!("{source}: no insert of id {id}"))
    };
    let cdc = ssn_of(&events, "cdc", "1");
    let trigger = ssn_of(&trigger_events, "triggers", "1");
    assert_eq!(cdc, trigger, "a masked value compares equal across paths");
    assert_eq!(
        cdc.as_str().map(str::len),
        Some(64),
        "the keyed hash: {cdc}"
    );
    assert!(ssn_of(&events, "cdc", "2").is_null(), "NULL stays NULL");
    let update = events
        .iter()
        .find(|e| e.operation.as_deref() == Some("UPDATE"))
        .and_then(|e| e.new.as_ref())
        .map(|new| new["ssn"].clone());
    assert_ne!(update, Some(cdc), "a different value, a different hash");
    Ok(())
}

#[tokio::test]
async fn masking_without_a_key_is_refused_at_start_and_setup_creates_one() -> anyhow::Result<()> {
    let db = TestDb::new(
        "cdc_mask_key",
        "create table users (id int primary key, ssn text);",
    )
    .await?;
    db.setup(&db.setup_options()).await?;
    let mut options = db.capture_options();
    options.masking =
        Masking::parse(&["public.users.ssn".into()], &[]).map_err(anyhow::Error::msg)?;
    let running = Running::start(&db, db.store().await, options.clone());
    let error = running.task.await?.expect_err("no key, no capture");
    assert!(error.to_string().contains("no masking key"), "{error}");

    // What `pgtrail replicate --setup` does when masks are configured.
    pgtrail_cdc::mask::ensure_key(&db.client).await?;
    let key: Vec<u8> = db
        .client
        .query_one("select mask_ipad from pgtrail.capture_settings", &[])
        .await?
        .get(0);
    pgtrail_cdc::mask::ensure_key(&db.client).await?;
    let again: Vec<u8> = db
        .client
        .query_one("select mask_ipad from pgtrail.capture_settings", &[])
        .await?
        .get(0);
    assert_eq!(key, again, "an existing key is kept");
    // An application role cannot read it.
    db.client
        .batch_execute("create role app login; grant usage on schema pgtrail to app")
        .await?;
    let (app, connection) = tokio_postgres::connect(
        &db.url.replacen("postgres@", "app@", 1),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    let denied = app
        .query_one("select mask_ipad from pgtrail.capture_settings", &[])
        .await
        .expect_err("the key is not readable by applications");
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    let store = db.store().await;
    let running = Running::start(&db, store.clone(), options);
    db.client
        .batch_execute(&format!("insert into users values (1, '{SSN}')"))
        .await?;
    let rows = crate::common::wait_for_row_changes(store.as_ref(), 1).await;
    running.stop().await?;
    let ssn = rows[0].new.as_ref().map(|new| new["ssn"].clone());
    assert!(
        ssn.as_ref()
            .and_then(|v| v.as_str())
            .is_some_and(|s| s.len() == 64),
        "{ssn:?}"
    );
    Ok(())
}

async fn pgtrail_triggers_client(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}
