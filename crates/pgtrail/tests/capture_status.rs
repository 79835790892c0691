//! The dashboard's integrity page reading the audited databases named in
//! the config: tracked tables and rows waiting to be sealed, the slot's
//! state; a database that does not answer is a line on the page, not a
//! page that fails.

use crate::running::{http_get, Service, Serving};
use crate::support::pgtrail_in;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_integrity_page_shows_what_the_audited_database_says() {
    let s = Service::new(
        "capture_page",
        "create table t (id int primary key, v text); create table u (id int primary key);",
    )
    .await;
    pgtrail_in(s.dir.path(), &["install", "--db", &s.url], &[], None).ok();
    pgtrail_in(
        s.dir.path(),
        &["track", "--db", &s.url, "public.t"],
        &[],
        None,
    )
    .ok();
    // Nothing drains: the three rows wait in the inbox.
    s.insert(1..=3).await;
    s.client
        .batch_execute(
            "select pg_catalog.pg_create_logical_replication_slot('audit_slot', 'pgoutput')",
        )
        .await
        .expect("slot");
    let store = format!("sqlite:{}", s.store_file().display());
    pgtrail_store::open::open(&store).await.expect("store");
    // A second cluster's port that nobody listens on: the page must still render.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let config = |replication_db: &str| {
        format!(
            "[store]\nurl = \"{store}\"\n[triggers]\ndb = \"{}\"\n[replication]\ndb = \"{replication_db}\"\nslot = \"audit_slot\"\n",
            s.url
        )
    };
    std::fs::write(s.dir.path().join("pgtrail.toml"), config(&s.url)).expect("config");
    let server = Serving::start(s.dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let (code, page) = http_get(&server.address, "/integrity", None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"capture-status\""), "{page}");
    assert!(page.contains("1 tables tracked"), "{page}");
    assert!(page.contains("3 rows waiting to be sealed"), "{page}");
    assert!(
        page.contains("slot audit_slot: no consumer holds it"),
        "{page}"
    );
    assert!(
        !page.contains("postgres:postgres@") && !page.contains("password"),
        "no credential on the page: {page}"
    );
    drop(server);

    let down = format!("postgres://postgres@127.0.0.1:{gone}/nothing?connect_timeout=2");
    std::fs::write(s.dir.path().join("pgtrail.toml"), config(&down)).expect("config");
    let server = Serving::start(s.dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    let (code, page) = http_get(&server.address, "/integrity", None);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("1 tables tracked"),
        "the other path still shows: {page}"
    );
    assert!(page.contains("cannot read it"), "{page}");
}
