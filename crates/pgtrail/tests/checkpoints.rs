//! `pgtrail run` signing checkpoints on its own, and `pgtrail status`
//! showing how fresh they are: a real cluster, the real binary, a SQLite
//! store for logical replication and the sealed database's own store for
//! trigger capture. Then the attacks of someone who has the store file and
//! no signing key, against `checkpoint`, `run`, `retention` and `verify`
//! with a witness, `--max-unsigned`, a retired key and `--archive`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::running::{Running, Service};
use crate::support::{pgtrail_in, Run};

/// A `Service` with a key pair in its directory.
struct Signed {
    service: Service,
    store: PathBuf,
    key: String,
}

impl std::ops::Deref for Signed {
    type Target = Service;
    fn deref(&self) -> &Service {
        &self.service
    }
}

impl Signed {
    async fn new(prefix: &str, schema_sql: &str) -> Signed {
        let service = Service::new(prefix, schema_sql).await;
        let store = service.store_file();
        let key = service.dir.path().join("signing.key").display().to_string();
        pgtrail_in(service.dir.path(), &["keygen", "--out", &key], &[], None).ok();
        Signed {
            service,
            store,
            key,
        }
    }

    /// Writes pgtrail.toml: the SQLite store, signing with the key every
    /// `every`, then `sections`.
    fn config(&self, every: &str, sections: &str) {
        let text = format!(
            "[store]\nurl = \"sqlite:{}\"\n[signing]\nprivate_key = \"{}\"\ncheckpoint_every = \"{every}\"\n{sections}",
            self.store.display(),
            self.key,
        );
        std::fs::write(self.dir.path().join("pgtrail.toml"), text).expect("write config");
    }

    fn pgtrail(&self, args: &[&str]) -> Run {
        pgtrail_in(self.dir.path(), args, &[], None)
    }

    fn public_key(&self) -> String {
        format!("{}.pub", self.key)
    }

    /// `pgtrail status` as JSON.
    fn status(&self) -> Value {
        self.pgtrail(&["status", "--db", &self.url, "--format", "json"])
            .json()
    }

    /// The status entry of the store that `holds` (`store` or `triggers`),
    /// `Null` while status does not show that store.
    fn checkpoint_status(&self, holds: &str) -> Value {
        let status = self.status();
        status["checkpoints"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["holds"] == holds))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// How many checkpoints `verify` found in the store at `store_url`.
    fn checkpoint_count(&self, store_url: &str) -> u64 {
        let report = self
            .pgtrail(&["--store", store_url, "verify", "--format", "json"])
            .json();
        report["checkpoints"].as_u64().expect("checkpoints")
    }

    /// Waits until the newest checkpoint of the store that `holds` is at
    /// its head, and the head at `seq` or past it.
    async fn wait_for_checkpoint(&self, holds: &str, seq: i64, run: &mut Running) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self.checkpoint_status(holds);
            let newest = status["newest"]["seq"].as_i64();
            if newest.is_some_and(|n| n >= seq) && newest == status["head_seq"].as_i64() {
                return status;
            }
            if let Ok(Some(exit)) = run.0.try_wait() {
                panic!("pgtrail run exited ({exit}): {}", run.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint at event {seq} after 60 s: {status}\n{}",
                run.stderr()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_signs_checkpoints_that_catch_removed_events() {
    let s = Signed::new("cp_capture", "create table t (id int primary key, v text);").await;
    s.set_up_capture();
    let capture = format!("[replication]\ndb = \"{}\"\nbatch_wait_ms = 10\n", s.url);
    let store_url = format!("sqlite:{}", s.store.display());
    s.config("1s", &capture);

    // Events arrive: each burst gets signed within a round or two.
    let mut run = s.start(&[]);
    s.insert(1..=10).await;
    s.wait_for_checkpoint("store", 10, &mut run).await;
    s.insert(11..=20).await;
    let fresh = s.wait_for_checkpoint("store", 20, &mut run).await;
    assert_eq!(fresh["events_since"], 0, "{fresh}");
    assert_eq!(fresh["newest"]["signed"], true, "{fresh}");
    assert!(fresh["warning"].is_null(), "{fresh}");

    // Idle: rounds go by, each signs a heartbeat of the same head, so a
    // quiet period is asserted rather than assumed.
    let idle_before = s.checkpoint_count(&store_url);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        s.checkpoint_count(&store_url) > idle_before,
        "heartbeats while nothing arrives: {}",
        run.stderr()
    );
    assert_eq!(s.checkpoint_status("store")["newest"]["seq"], 20);
    let stderr = run.stop().await;
    assert!(
        stderr.contains("signing checkpoints of") && !stderr.contains("ERROR"),
        "{stderr}"
    );

    // Rounds an hour apart and a batch held a minute: only the checkpoint
    // at stop, signed after the batch in hand was stored, covers these.
    s.config("1h", &capture);
    let run = s.start(&["--batch-wait-ms", "60000"]);
    s.insert(21..=24).await;
    let inside: String = s
        .client
        .query_one(
            "insert into t (id, v) values (25, 'v') returning pg_current_wal_insert_lsn()::text",
            &[],
        )
        .await
        .expect("insert")
        .get(0);
    s.wait_until_received(&inside, &run).await;
    let stderr = run.stop().await;
    assert!(
        stderr.contains("signed a last checkpoint") && stderr.contains("at event 25"),
        "{stderr}"
    );
    assert_eq!(s.checkpoint_status("store")["newest"]["seq"], 25);

    let public = s.public_key();
    let verified = s
        .pgtrail(&["verify", "--public-key", &public, "--format", "json"])
        .json();
    assert_eq!(verified["events_checked"], 25, "{verified}");
    assert_eq!(
        verified["checkpoints_signed"], verified["checkpoints"],
        "{verified}"
    );

    // Without the checkpoints, removing the newest events (and moving
    // chain_head back with them) leaves a chain that verifies: a copy of
    // the store shows it.
    let copy = s.dir.path().join("copy.db");
    {
        let db = rusqlite::Connection::open(&s.store).expect("open store");
        db.execute("vacuum into ?1", [copy.display().to_string()])
            .expect("copy");
        let unsigned = rusqlite::Connection::open(&copy).expect("open copy");
        unsigned
            .execute_batch(
                "delete from events where seq > 22; delete from checkpoints; \
                 update chain_head set seq = 22, hash = (select hash from events where seq = 22);",
            )
            .expect("tamper with the copy");
        // The facet counts and the hours' seq ranges are recounted too,
        // as a careful attacker would.
        unsigned
            .execute_batch(pgtrail_store::sqlite::RECOUNT_FACETS)
            .expect("recount the copy's facets");
        unsigned
            .execute_batch(pgtrail_store::sqlite::RECOUNT_SEQ_HOURS)
            .expect("recount the copy's seq ranges");
        db.execute("delete from events where seq > 22", [])
            .expect("tamper");
    }
    let copy_url = format!("sqlite:{}", copy.display());
    let unnoticed = s.pgtrail(&["--store", &copy_url, "verify", "--format", "table"]);
    assert!(unnoticed.ok().contains("OK"), "{unnoticed:?}");

    let caught = s.pgtrail(&["verify", "--public-key", &public, "--format", "table"]);
    assert_eq!(caught.code, 1, "{caught:?}");
    assert!(
        caught.stdout.contains("head checkpoint at event 25")
            && caught.stdout.contains("the chain ends at event 22"),
        "{caught:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_signs_the_sealed_store_and_status_warns_when_stale() {
    let s = Signed::new(
        "cp_triggers",
        "create table t (id int primary key, v text);",
    )
    .await;
    s.pgtrail(&["install", "--db", &s.url]).ok();
    s.pgtrail(&["track", "--db", &s.url, "public.t"]).ok();
    let triggers = format!("[triggers]\ndb = \"{}\"\ndrain_interval_ms = 100\n", s.url);

    // No key: run says checkpoints are off and how to turn them on.
    std::fs::write(
        s.dir.path().join("pgtrail.toml"),
        format!(
            "[store]\nurl = \"sqlite:{}\"\n{triggers}",
            s.store.display()
        ),
    )
    .expect("write config");
    let unsigned = s.start(&[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !unsigned.stderr().contains("running;") {
        assert!(Instant::now() < deadline, "{}", unsigned.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = unsigned.stderr();
    assert!(
        said.contains("checkpoints: off") && said.contains("private_key"),
        "{said}"
    );
    drop(unsigned);

    // The drainer appends to the database's own store: that is what gets
    // signed. While the store refuses checkpoints, sealing goes on and the
    // failure is logged loudly; the next round after it is fixed signs.
    s.client
        .batch_execute(
            "create function public.refuse() returns trigger language plpgsql as \
             $$ begin raise exception 'checkpoints refused for this test'; end $$; \
             create trigger refuse before insert on pgtrail.checkpoints \
             for each row execute function public.refuse();",
        )
        .await
        .expect("refuse checkpoints");
    s.config("1s", &triggers);
    let mut run = s.start(&[]);
    s.insert(1..=5).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sealed = s
            .client
            .query_one(
                "select count(*) from pgtrail.events where table_name = 't'",
                &[],
            )
            .await
            .expect("count")
            .get::<_, i64>(0);
        let said = run.stderr();
        if sealed == 5 && said.contains("ERROR") && said.contains("checkpoints refused") {
            break;
        }
        assert!(Instant::now() < deadline, "sealed {sealed}: {said}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(s.checkpoint_status("triggers")["newest"].is_null());
    s.client
        .batch_execute("drop trigger refuse on pgtrail.checkpoints")
        .await
        .expect("accept checkpoints");
    let fresh = s.wait_for_checkpoint("triggers", 5, &mut run).await;
    assert!(fresh["warning"].is_null(), "{fresh}");
    assert!(
        !s.store.exists(),
        "nothing captured into [store] url, so nothing created there"
    );
    run.stop().await;
    let public = s.public_key();
    let verified = s.pgtrail(&[
        "--store",
        &s.url,
        "verify",
        "--public-key",
        &public,
        "--format",
        "table",
    ]);
    assert!(verified.ok().contains("OK"), "{verified:?}");
    let checked = s.pgtrail(&["status", "--db", &s.url, "--check", "--format", "json"]);
    assert_eq!(checked.code, 0, "fresh: nothing to warn about: {checked:?}");

    // Sealed while nothing signs, and older than twice the interval: a warning.
    let signed = fresh["newest"]["seq"].as_i64().expect("seq");
    s.insert(6..=8).await;
    s.pgtrail(&["drain", "--db", &s.url]).ok();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let stale = s.checkpoint_status("triggers");
    assert_eq!(stale["events_since"], 3, "{stale}");
    assert!(
        stale["warning"].as_str().is_some_and(
            |w| w.contains(&format!("event {signed})")) && w.contains("3 event(s) arrived")
        ),
        "{stale}"
    );
    let text = s.pgtrail(&["status", "--db", &s.url, "--format", "table"]);
    assert!(
        text.ok().contains("checkpoints:") && text.ok().contains("warning:"),
        "{text:?}"
    );
    let checked = s.pgtrail(&["status", "--db", &s.url, "--check"]);
    assert_eq!(checked.code, 1, "stale: {checked:?}");
}

#[test]
fn an_unreadable_key_stops_run_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.key");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").expect("write");
    for (key, says) in [(&missing, "cannot read"), (&garbage, "not a private key")] {
        let run = pgtrail_in(
            dir.path(),
            &[
                "run",
                "--replication-db",
                "postgres://nobody@127.0.0.1:1/none",
                "--private-key",
                &key.display().to_string(),
            ],
            &[],
            None,
        );
        let line = run.error();
        assert!(
            line.contains(&key.display().to_string()) && line.contains(says),
            "{line}"
        );
        assert!(!Path::new(&dir.path().join("pgtrail.db")).exists());
    }
}

/// A SQLite trail with the sample imported, a key pair and a witness, run
/// with the binary as an operator would.
struct Guarded {
    trail: crate::support::Trail,
    key: String,
}

impl Guarded {
    async fn new() -> Guarded {
        let trail = crate::support::Trail::new(crate::support::Backend::Sqlite).await;
        trail.import_sample();
        let key = trail.path("signing.key").display().to_string();
        trail.run(&["keygen", "--out", &key]).ok();
        Guarded { trail, key }
    }

    fn witness(&self) -> String {
        self.trail.path("witness.notes").display().to_string()
    }

    fn public(&self) -> String {
        format!("{}.pub", self.key)
    }

    /// Runs pgtrail with the key and the witness configured by environment.
    fn run(&self, args: &[&str]) -> Run {
        let witness = self.witness();
        self.trail.run_env(
            args,
            &[
                ("PGTRAIL_SIGNING__PRIVATE_KEY", self.key.as_str()),
                ("PGTRAIL_SIGNING__WITNESS", witness.as_str()),
            ],
        )
    }

    /// Appends `n` events by `who` through the store's own code.
    async fn append(&self, n: usize, who: &str) {
        let store = pgtrail_store::sqlite::SqliteStore::open(&self.trail.sqlite_file())
            .await
            .expect("open");
        let events: Vec<pgtrail_core::Event> = (0..n)
            .map(|_| {
                let mut e = pgtrail_core::Event::new(
                    pgtrail_core::Source::Proxy,
                    pgtrail_core::Kind::Statement,
                );
                e.db_user = Some(who.into());
                e
            })
            .collect();
        pgtrail_store::Store::append(&store, &events)
            .await
            .expect("append");
    }

    fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.trail.sqlite_file()).expect("open file")
    }
}

/// Someone keeps a copy of the store file and later puts it back: the
/// store alone is a genuine older store, the witness knows better, and
/// nothing is signed on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_catches_an_older_copy_put_back() {
    let g = Guarded::new().await;
    let signed = g.run(&["checkpoint", "--format", "table"]);
    assert!(signed.ok().contains("witnessed in"), "{signed:?}");
    let copy = g.trail.path("copy.db");
    g.raw()
        .execute("vacuum into ?1", [copy.display().to_string()])
        .expect("copy");
    g.append(3, "app").await;
    g.run(&["checkpoint"]).ok();
    let public = g.public();
    g.run(&["verify", "--public-key", &public]).ok();

    let file = g.trail.sqlite_file();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    std::fs::copy(&copy, &file).expect("put the copy back");
    let alone = g
        .trail
        .run(&["verify", "--public-key", &public, "--format", "table"]);
    assert!(alone.ok().contains("OK"), "{alone:?}");
    let caught = g.run(&["verify", "--public-key", &public]);
    assert_eq!(caught.code, 1, "{caught:?}");
    assert!(
        caught
            .stdout
            .contains("the witness saw the chain at event 23")
            && caught
                .stdout
                .contains("older copy of the store was put back"),
        "{caught:?}"
    );
    let refused = g.run(&["checkpoint"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("refusing to sign") && refused.stderr.contains("older copy"),
        "{refused:?}"
    );
}

/// Events edited while pgtrail was stopped: `checkpoint` refuses to sign
/// them, and `run` refuses to start on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_while_stopped_is_refused_by_checkpoint_and_run() {
    let g = Guarded::new().await;
    g.run(&["checkpoint"]).ok();
    g.append(2, "app").await;
    g.raw()
        .execute(
            "update events set body = replace(body, '\"app\"', '\"mallory\"') where seq = 22",
            [],
        )
        .expect("tamper");
    let refused = g.run(&["checkpoint"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("event 22") && refused.stderr.contains("modified"),
        "{refused:?}"
    );
    let run = g.run(&[
        "run",
        "--replication-db",
        "postgres://nobody@127.0.0.1:1/none",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("error: the store does not agree with its signed checkpoints: not starting")
            && run.stderr.contains("event 22")
            && !run.stderr.contains("capturing database"),
        "{run:?}"
    );
    let public = g.public();
    let report = g.run(&["verify", "--public-key", &public, "--format", "json"]);
    assert_eq!(report.code, 1);
    assert_eq!(
        serde_json::from_str::<Value>(&report.stdout).expect("json")["checkpoints"],
        1,
        "nothing more was signed"
    );
}

/// `retention` over a prefix someone edited removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_refuses_a_tampered_prefix_and_its_archive_verifies_otherwise() {
    let g = Guarded::new().await;
    g.run(&["checkpoint"]).ok();
    g.raw()
        .execute(
            "update events set body = replace(body, 'shop-web', 'shop-www') where seq = 20",
            [],
        )
        .expect("tamper");
    let archive = g.trail.path("archive").display().to_string();
    let refused = g.run(&["retention", "--keep", "1d", "--archive", &archive]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("nothing was removed") && refused.stderr.contains("event 20"),
        "{refused:?}"
    );
    g.raw()
        .execute(
            "update events set body = replace(body, 'shop-www', 'shop-web') where seq = 20",
            [],
        )
        .expect("undo");

    let pruned = g.run(&[
        "retention",
        "--keep",
        "1d",
        "--archive",
        &archive,
        "--format",
        "json",
    ]);
    let file = pruned.json()["archive"]
        .as_str()
        .expect("archive")
        .to_string();
    g.append(1, "app").await;
    g.run(&["checkpoint"]).ok();
    let public = g.public();
    let verified = g.run(&["verify", "--public-key", &public, "--format", "table"]);
    assert!(verified.ok().contains("OK"), "{verified:?}");
    let archived = g.run(&[
        "verify",
        "--public-key",
        &public,
        "--archive",
        &file,
        "--format",
        "table",
    ]);
    assert!(
        archived.ok().contains("checked 20 events (1 to 20)"),
        "{archived:?}"
    );
    std::fs::write(format!("{file}.sha256"), "0000  x\n").expect("tamper with the checksum");
    let caught = g.run(&["verify", "--public-key", &public, "--archive", &file]);
    assert_eq!(caught.code, 1, "{caught:?}");
    assert!(caught.stdout.contains("SHA-256"), "{caught:?}");
}

/// `--max-unsigned`, a key that signed nothing, and a rotated-out key used
/// after its rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_limits_unsigned_events_and_retired_keys() {
    let g = Guarded::new().await;
    g.run(&["checkpoint"]).ok();
    let old_public = g.public();
    let new_key = g.trail.path("new.key").display().to_string();
    g.trail.run(&["keygen", "--out", &new_key]).ok();
    let new_public = format!("{new_key}.pub");
    g.append(2, "app").await;
    g.run(&["checkpoint", "--private-key", &new_key]).ok();
    let retired = format!("{old_public}@20");
    g.run(&[
        "verify",
        "--public-key",
        &new_public,
        "--public-key",
        &retired,
    ])
    .ok();

    g.append(1, "app").await;
    let strict = g.run(&["verify", "--public-key", &new_public, "--max-unsigned", "0"]);
    assert_eq!(strict.code, 1, "{strict:?}");
    assert!(
        strict
            .stdout
            .contains("1 events follow the newest signed checkpoint (at event 22)"),
        "{strict:?}"
    );
    let stranger = g.trail.path("stranger.key").display().to_string();
    g.trail.run(&["keygen", "--out", &stranger]).ok();
    let nobody = g.run(&["verify", "--public-key", &format!("{stranger}.pub")]);
    assert!(
        nobody
            .stdout
            .contains("no checkpoint is signed by the given public key"),
        "{nobody:?}"
    );

    // Someone who later gets the old key signs the newest event with it.
    g.run(&["checkpoint"]).ok();
    let caught = g.run(&[
        "verify",
        "--public-key",
        &new_public,
        "--public-key",
        &retired,
    ]);
    assert_eq!(caught.code, 1, "{caught:?}");
    assert!(
        caught.stdout.contains("head checkpoint at event 23")
            && caught.stdout.contains("retired key"),
        "{caught:?}"
    );
}
