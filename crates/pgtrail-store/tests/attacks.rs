//! Attacks on the checkpoints, run against both stores: someone with the
//! store file (SQLite) or write access to the `pgtrail` schema (Postgres),
//! and no signing key, removes, rewrites or replays what was written. Each
//! test says what they do and what catches it: the signed notes (with the
//! public key), the witness, `--max-unsigned`, or the refusal to sign or
//! prune. Untouched stores pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::checkpoint::TrustedKey;
use pgtrail_store::signing::{check_chain, sign_head, SignError, Signed, Signer};
use pgtrail_store::{
    retention, verify_with, Checkpoint, CheckpointKind, KeyPair, ProblemKind, Store, VerifyOptions,
    VerifyReport,
};

/// A store, how to reach its raw storage, and a directory for the key's
/// witness and copies.
pub struct Target {
    pub(crate) store: Arc<dyn Store>,
    backend: Backend,
    dir: tempfile::TempDir,
    _cluster: Option<pgtrail_testkit::Cluster>,
}

enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

pub async fn sqlite() -> Target {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("trail.db");
    let store = pgtrail_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("open");
    Target {
        store: Arc::new(store),
        backend: Backend::Sqlite(path),
        dir,
        _cluster: None,
    }
}

pub async fn postgres() -> Target {
    let cluster = pgtrail_testkit::Cluster::start().expect("cluster");
    let url = cluster.create_database("attacks").await.expect("database");
    let store = pgtrail_store::postgres::PostgresStore::connect(&url)
        .await
        .expect("open");
    Target {
        store: Arc::new(store),
        backend: Backend::Postgres(url),
        dir: tempfile::tempdir().expect("tempdir"),
        _cluster: Some(cluster),
    }
}

impl Target {
    fn witness(&self) -> PathBuf {
        self.dir.path().join("witness.notes")
    }

    /// Runs the attacker's SQL: `sqlite` on the file, `postgres` in the database.
    pub(crate) async fn tamper(&self, sqlite: &str, postgres: &str) {
        match &self.backend {
            Backend::Sqlite(path) => rusqlite::Connection::open(path)
                .expect("open file")
                .execute_batch(sqlite)
                .expect("tamper"),
            Backend::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect");
                tokio::spawn(connection);
                client.batch_execute(postgres).await.expect("tamper");
            }
        }
    }

    /// Removes events after `seq` and points `chain_head` at event `seq`,
    /// as an attacker hiding the newest events would.
    pub(crate) async fn truncate_after(&self, seq: i64) {
        // The hash of event `seq` (the genesis hash for an empty chain),
        // so chain_head agrees with what is left, as an attacker would make it.
        let kept = match seq {
            0 => None,
            _ => self
                .store
                .scan(seq - 1, 1)
                .await
                .expect("scan")
                .first()
                .cloned(),
        };
        let hash = match kept {
            Some(e) => e.hash.clone().expect("hash"),
            None => pgtrail_core::GENESIS_HASH.to_string(),
        };
        // What is derived from the events (the facet counts) is made
        // to agree too: the attacker leaves nothing a recount would catch.
        self.tamper(
            &format!(
                "delete from events where seq > {seq}; delete from events_fts where rowid > {seq};
                 update chain_head set seq = {seq}, hash = x'{hash}'; {recount} {ranges}",
                recount = pgtrail_store::sqlite::RECOUNT_FACETS,
                ranges = pgtrail_store::sqlite::RECOUNT_SEQ_HOURS
            ),
            &format!(
                "delete from pgtrail.events where seq > {seq};
                 update pgtrail.chain_head set seq = {seq}, hash = '{hash}'; {recount} {ranges}",
                recount = pgtrail_store::postgres::RECOUNT_FACETS,
                ranges = pgtrail_store::postgres::RECOUNT_SEQ_HOURS
            ),
        )
        .await;
    }

    pub(crate) async fn delete_checkpoints_after(&self, seq: i64) {
        self.tamper(
            &format!("delete from checkpoints where seq > {seq}"),
            &format!("delete from pgtrail.checkpoints where seq > {seq}"),
        )
        .await;
    }

    /// Changes who did event `seq`, leaving its stored hash.
    pub(crate) async fn edit_event(&self, seq: i64) {
        self.tamper(
            &format!(
                "update events set body = replace(body, '\"app\"', '\"mallory\"') where seq = {seq}"
            ),
            &format!(
                "update pgtrail.events set body = replace(body::text, '\"app\"', '\"mallory\"')::json where seq = {seq}"
            ),
        )
        .await;
    }

    /// A copy of the store as it is now, to put back later.
    pub(crate) async fn snapshot(&self) {
        match &self.backend {
            Backend::Sqlite(path) => {
                let copy = self.dir.path().join("copy.db");
                rusqlite::Connection::open(path)
                    .expect("open")
                    .execute("vacuum into ?1", [copy.display().to_string()])
                    .expect("copy");
            }
            Backend::Postgres(_) => {
                self.tamper(
                    "",
                    "create table public.copy_events as table pgtrail.events;
                     create table public.copy_checkpoints as table pgtrail.checkpoints;
                     create table public.copy_head as table pgtrail.chain_head;
                     create table public.copy_facets as table pgtrail.facet_hours;
                     create table public.copy_seq_hours as table pgtrail.seq_hours;
                     create table public.copy_objects as table pgtrail.events_objects;",
                )
                .await
            }
        }
    }

    /// Puts the copy in the store's place, as restoring an old backup does.
    pub(crate) async fn restore_snapshot(&mut self) {
        match &self.backend {
            Backend::Sqlite(_) => {
                let copy = self.dir.path().join("copy.db");
                self.store = Arc::new(
                    pgtrail_store::sqlite::SqliteStore::open(&copy)
                        .await
                        .expect("open the copy"),
                );
                self.backend = Backend::Sqlite(copy);
            }
            Backend::Postgres(_) => {
                self.tamper(
                    "",
                    "delete from pgtrail.events; insert into pgtrail.events select * from public.copy_events;
                     delete from pgtrail.checkpoints;
                     insert into pgtrail.checkpoints overriding system value select * from public.copy_checkpoints;
                     delete from pgtrail.chain_head; insert into pgtrail.chain_head select * from public.copy_head;
                     delete from pgtrail.facet_hours; insert into pgtrail.facet_hours select * from public.copy_facets;
                     delete from pgtrail.seq_hours; insert into pgtrail.seq_hours select * from public.copy_seq_hours;
                     delete from pgtrail.events_objects; insert into pgtrail.events_objects select * from public.copy_objects;",
                )
                .await
            }
        }
    }

    /// The store opened again (its migrations run).
    pub(crate) async fn reopen(&mut self) {
        self.store = match &self.backend {
            Backend::Sqlite(path) => Arc::new(
                pgtrail_store::sqlite::SqliteStore::open(path)
                    .await
                    .expect("open"),
            ),
            Backend::Postgres(url) => Arc::new(
                pgtrail_store::postgres::PostgresStore::connect(url)
                    .await
                    .expect("open"),
            ),
        };
    }

    /// Appends `n` events through the store (sealed, hashed and chained as
    /// pgtrail does: an attacker can run the same code).
    pub(crate) async fn append(&self, n: usize, who: &str) {
        let events: Vec<Event> = (0..n).map(|_| event(who, Utc::now())).collect();
        self.store.append(&events).await.expect("append");
    }

    pub(crate) async fn sign(&self, key: &KeyPair) -> Result<Signed, SignError> {
        let signer = Signer {
            key,
            trusted: &[],
            witness: Some(&self.witness()),
        };
        sign_head(&*self.store, &signer, false).await
    }

    pub(crate) async fn verify(&self, key: Option<&KeyPair>, witness: bool) -> VerifyReport {
        let options = VerifyOptions {
            keys: key
                .map(|k| TrustedKey::current(k.verifying_key()))
                .into_iter()
                .collect(),
            witness: witness.then(|| self.witness()),
            max_unsigned: None,
            ..VerifyOptions::default()
        };
        verify_with(&*self.store, &options).await.expect("verify")
    }
}

fn event(who: &str, at: chrono::DateTime<Utc>) -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Statement, at);
    e.db_user = Some(who.into());
    e.table = Some("accounts".into());
    e.operation = Some("UPDATE".into());
    e.command_tag = Some("UPDATE 1".into());
    e
}

/// Ten events, a signed checkpoint, five more, another, three unsigned:
/// checkpoints at 10 and 15 in the store and the witness, head at 18.
pub(crate) async fn story(t: &Target) -> KeyPair {
    let key = KeyPair::generate().expect("key");
    story_with(t, &key).await;
    key
}

async fn story_with(t: &Target, key: &KeyPair) {
    t.append(10, "app").await;
    assert!(matches!(t.sign(key).await, Ok(Signed::New(_))));
    t.append(5, "app").await;
    assert!(matches!(t.sign(key).await, Ok(Signed::New(_))));
    t.append(3, "app").await;
}

pub(crate) fn details(report: &VerifyReport) -> String {
    report
        .problems
        .iter()
        .map(|p| format!("[{:?} {}] {}", p.kind, p.seq, p.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

fn refused(result: Result<Signed, SignError>) -> String {
    match result {
        Err(SignError::Inconsistent { detail, .. }) => detail,
        other => panic!("signing was not refused: {other:?}"),
    }
}

pub async fn an_untouched_store_passes_every_check(t: Target) {
    let key = story(&t).await;
    let report = t.verify(Some(&key), true).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(
        (
            report.events_checked,
            report.checkpoints_signed,
            report.witnessed,
            report.newest_signed_seq,
            report.unsigned_events
        ),
        (18, 2, Some(2), Some(15), 3)
    );
    let strict = VerifyOptions {
        keys: vec![TrustedKey::current(key.verifying_key())],
        witness: Some(t.witness()),
        max_unsigned: Some(2),
        ..VerifyOptions::default()
    };
    let report = verify_with(&*t.store, &strict).await.expect("verify");
    assert_eq!(
        report.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        [ProblemKind::Unsigned],
        "3 unsigned events are more than 2: {}",
        details(&report)
    );
    // A heartbeat: signing an unchanged head again is a new, valid note.
    assert!(matches!(t.sign(&key).await, Ok(Signed::New(_))));
    assert!(matches!(t.sign(&key).await, Ok(Signed::New(_))));
    let report = t.verify(Some(&key), true).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(report.witnessed, Some(4));
    let witness = std::fs::read_to_string(t.witness()).expect("witness");
    assert!(witness.contains("\n18\n") && witness.contains("\u{2014} pgtrail/store/"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.witness())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the witness is private");
    }
}

/// The attacker removes the newest events, points `chain_head` back, and
/// deletes the checkpoint that covered them.
pub async fn removing_the_newest_events_and_their_checkpoint(t: Target) {
    let key = story(&t).await;
    t.truncate_after(10).await;
    t.delete_checkpoints_after(10).await;
    let with_key = t.verify(Some(&key), false).await;
    assert!(
        with_key.ok(),
        "without a witness, the checkpoint at 10 still holds: this is what the witness is for"
    );
    let report = t.verify(Some(&key), true).await;
    let text = details(&report);
    assert!(!report.ok());
    assert!(
        text.contains("the witness saw the chain at event 15")
            && text.contains("the store ends at event 10"),
        "{text}"
    );
    assert!(text.contains("the store lacks 1 checkpoint(s)"), "{text}");
    let why = refused(t.sign(&key).await);
    assert!(
        why.contains("the store lacks the checkpoint at event 15"),
        "{why}"
    );
}

/// The attacker replaces events 13 to 18 with forged ones that carry
/// correct hashes and links (appended through the store's own code), and
/// `chain_head` follows.
pub async fn rewriting_the_tail_with_correct_hashes(t: Target) {
    let key = story(&t).await;
    t.truncate_after(12).await;
    t.append(6, "mallory").await;
    let report = t.verify(Some(&key), false).await;
    let text = details(&report);
    assert!(
        text.contains("head checkpoint at event 15")
            && text.contains("Merkle root of the chain at event 15 is not the one signed"),
        "{text}"
    );
    let why = refused(t.sign(&key).await);
    assert!(
        why.contains("event 16") || why.contains("event 15"),
        "{why}"
    );
}

/// The same, and the checkpoints after event 10 are deleted too.
pub async fn rewriting_the_tail_and_deleting_its_checkpoints(t: Target) {
    let key = story(&t).await;
    t.truncate_after(12).await;
    t.append(6, "mallory").await;
    t.delete_checkpoints_after(10).await;
    let report = t.verify(Some(&key), true).await;
    let text = details(&report);
    assert!(
        text.contains("the chain up to event 15 is not the one the witness saw"),
        "{text}"
    );
    assert!(text.contains("the store lacks 1 checkpoint(s)"), "{text}");
    let why = refused(t.sign(&key).await);
    assert!(why.contains("witness"), "{why}");
}

/// Every checkpoint deleted: with the key, a store with no checkpoint by
/// that key fails.
pub async fn deleting_every_checkpoint(t: Target) {
    let key = story(&t).await;
    t.delete_checkpoints_after(0).await;
    let report = t.verify(Some(&key), false).await;
    assert_eq!(
        report.problems.iter().map(|p| p.kind).collect::<Vec<_>>(),
        [ProblemKind::Unsigned],
        "{}",
        details(&report)
    );
    let report = t.verify(Some(&key), true).await;
    assert!(details(&report).contains("the store lacks 2 checkpoint(s)"));
}

/// Everything removed: events, checkpoints, the head.
pub async fn truncating_the_store(t: Target) {
    let key = story(&t).await;
    t.delete_checkpoints_after(0).await;
    t.truncate_after(0).await;
    let report = t.verify(None, false).await;
    assert!(
        report.ok(),
        "an empty store proves nothing without a witness"
    );
    let report = t.verify(Some(&key), true).await;
    let text = details(&report);
    assert!(
        text.contains("the store ends at event 0") && text.contains("lacks 2 checkpoint(s)"),
        "{text}"
    );
}

/// A copy taken after the first checkpoint is put back later.
pub async fn replaying_an_older_copy(mut t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(10, "app").await;
    t.sign(&key).await.expect("sign");
    t.snapshot().await;
    t.append(5, "app").await;
    t.sign(&key).await.expect("sign");
    t.restore_snapshot().await;
    let report = t.verify(Some(&key), false).await;
    assert!(report.ok(), "the copy is a genuine older store");
    let report = t.verify(Some(&key), true).await;
    let text = details(&report);
    assert!(
        text.contains("an older copy of the store was put back"),
        "{text}"
    );
    let why = refused(t.sign(&key).await);
    assert!(why.contains("older copy"), "{why}");
}

/// An unsigned prune checkpoint is forged, first over events that are
/// still there, then with those events deleted.
pub async fn a_forged_unsigned_prune_checkpoint(t: Target) {
    let key = story(&t).await;
    let fifth = t.store.scan(4, 1).await.expect("scan")[0].clone();
    let forged = Checkpoint::new(
        CheckpointKind::Prune,
        5,
        fifth.hash.clone().expect("hash"),
        5,
    );
    t.store.add_checkpoint(&forged).await.expect("forge");
    let report = t.verify(None, false).await;
    assert_eq!(report.events_checked, 18, "no event is skipped");
    t.edit_event(3).await;
    let report = t.verify(None, false).await;
    assert_eq!(
        report.problems.first().map(|p| (p.kind, p.seq)),
        Some((ProblemKind::Modified, 3)),
        "{}",
        details(&report)
    );
    t.tamper(
        "update events set body = replace(body, '\"mallory\"', '\"app\"') where seq = 3",
        "update pgtrail.events set body = replace(body::text, '\"mallory\"', '\"app\"')::json where seq = 3",
    )
    .await;

    t.tamper(
        "delete from events where seq <= 5; delete from events_fts where rowid <= 5;",
        "delete from pgtrail.events where seq <= 5;",
    )
    .await;
    // The facet counts by the hour still count the deleted events: a
    // prune made by hand must recount them too, as `prune` does.
    let report = t.verify(None, false).await;
    assert!(
        details(&report).contains("facet_hours (outcome 'ok'"),
        "{}",
        details(&report)
    );
    t.tamper(
        &format!(
            "{} {}",
            pgtrail_store::sqlite::RECOUNT_FACETS,
            pgtrail_store::sqlite::RECOUNT_SEQ_HOURS
        ),
        &format!(
            "{} {}",
            pgtrail_store::postgres::RECOUNT_FACETS,
            pgtrail_store::postgres::RECOUNT_SEQ_HOURS
        ),
    )
    .await;
    let report = t.verify(None, false).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(
        report.unverified_prefix,
        Some(5),
        "without a key, verify says the removal is not proven"
    );
    let report = t.verify(Some(&key), false).await;
    assert!(
        details(&report).contains("prune checkpoint at event 5")
            && details(&report).contains("not signed"),
        "{}",
        details(&report)
    );
}

/// Tampering while pgtrail was stopped: an unsigned event is edited, or an
/// event is inserted in the signed part. Nothing new gets signed.
pub async fn tampering_while_stopped_is_never_signed(t: Target) {
    let key = story(&t).await;
    t.edit_event(17).await;
    let why = refused(t.sign(&key).await);
    assert!(
        why.contains("event 17") && why.contains("modified"),
        "{why}"
    );
    let checkpoints = t.store.checkpoints().await.expect("checkpoints");
    assert_eq!(checkpoints.len(), 2, "nothing was signed");
    let witness = pgtrail_store::witness::read(&t.witness()).expect("witness");
    assert_eq!(witness.notes.len(), 2, "nothing was witnessed");
}

/// Retention over a prefix someone edited: nothing is removed or signed.
pub async fn retention_refuses_a_tampered_prefix(t: Target) {
    let key = KeyPair::generate().expect("key");
    let old: Vec<Event> = (0..6)
        .map(|i| event("app", Utc::now() - Duration::days(100 - i)))
        .collect();
    t.store.append(&old).await.expect("append");
    t.append(4, "app").await;
    t.sign(&key).await.expect("sign");
    t.edit_event(2).await;
    let outcome = retention::apply(
        &*t.store,
        Duration::days(30),
        Utc::now(),
        Some(&t.dir.path().join("archive")),
        Some(&key),
        &[],
        Some(&t.witness()),
    )
    .await;
    match outcome {
        Err(SignError::Inconsistent { detail, .. }) => {
            assert!(detail.contains("event 2"), "{detail}")
        }
        other => panic!("retention went ahead: {other:?}"),
    }
    assert_eq!(t.store.scan(0, 100).await.expect("scan").len(), 10);
    assert_eq!(t.store.checkpoints().await.expect("checkpoints").len(), 1);
    assert!(
        std::fs::read_dir(t.dir.path().join("archive"))
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "no archive is left behind"
    );
}

/// Retention on an intact store: the prune checkpoint keeps the tree's
/// frontier, later checkpoints and verify still compute roots, and the
/// archive checks against its prune checkpoint (and fails when edited).
pub async fn retention_keeps_the_tree_and_its_archive_verifies(t: Target) {
    let key = KeyPair::generate().expect("key");
    let old: Vec<Event> = (0..6)
        .map(|i| event("app", Utc::now() - Duration::days(100 - i)))
        .collect();
    t.store.append(&old).await.expect("append");
    t.append(4, "app").await;
    t.sign(&key).await.expect("sign");
    let dir = t.dir.path().join("archive");
    let outcome = retention::apply(
        &*t.store,
        Duration::days(30),
        Utc::now(),
        Some(&dir),
        Some(&key),
        &[],
        Some(&t.witness()),
    )
    .await
    .expect("retention");
    assert_eq!(outcome.through_seq, Some(6));
    t.append(3, "app").await;
    t.sign(&key).await.expect("sign after the prune");
    let report = t.verify(Some(&key), true).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!((report.events_checked, report.witnessed), (7, Some(3)));

    let archive = outcome.archive.expect("archive");
    let trusted = [TrustedKey::current(key.verifying_key())];
    let report = retention::check_archive(&*t.store, &archive, &trusted)
        .await
        .expect("check");
    assert!(report.ok() && report.signed, "{:?}", report.problems);
    assert_eq!(report.events_checked, 6);

    rewrite_archive(&archive, |line| line.replace("\"app\"", "\"mallory\""));
    let report = retention::check_archive(&*t.store, &archive, &trusted)
        .await
        .expect("check");
    assert!(
        report.problems.iter().any(|p| p.contains("SHA-256"))
            && report.problems.iter().any(|p| p.contains("was modified")),
        "{:?}",
        report.problems
    );
}

fn rewrite_archive(path: &Path, edit: impl Fn(&str) -> String) {
    use std::io::{Read, Write};
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).expect("open"))
        .read_to_string(&mut text)
        .expect("read");
    let mut out = flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::default(),
    );
    out.write_all(edit(&text).as_bytes()).expect("write");
    out.finish().expect("finish");
}

/// After a rotation the old key is trusted through event 15 only; someone
/// who later holds it signs a checkpoint of a forged tail.
pub async fn a_retired_key_signs_nothing_after_its_rotation(t: Target) {
    let old = story(&t).await;
    let new = KeyPair::generate().expect("key");
    let retired = TrustedKey {
        key: old.verifying_key(),
        through_seq: Some(15),
    };
    let signer = Signer {
        key: &new,
        trusted: std::slice::from_ref(&retired),
        witness: Some(&t.witness()),
    };
    assert!(matches!(
        sign_head(&*t.store, &signer, false).await,
        Ok(Signed::New(_))
    ));
    let keys = vec![TrustedKey::current(new.verifying_key()), retired.clone()];
    let options = VerifyOptions {
        keys: keys.clone(),
        witness: Some(t.witness()),
        max_unsigned: None,
        ..VerifyOptions::default()
    };
    let report = verify_with(&*t.store, &options).await.expect("verify");
    assert!(report.ok(), "{}", details(&report));

    // The thief appends a forged event and signs it with the old key.
    t.append(1, "mallory").await;
    let chain = check_chain(&*t.store, &keys, None, None)
        .await
        .expect("chain");
    let forged = Checkpoint::signed_note(
        CheckpointKind::Head,
        &chain.origin,
        chain.frontier.as_ref().expect("a tree"),
        &chain.hash,
        19,
        &old,
    );
    t.store.add_checkpoint(&forged).await.expect("forge");
    let report = verify_with(&*t.store, &options).await.expect("verify");
    let text = details(&report);
    assert!(
        text.contains("head checkpoint at event 19")
            && text.contains("retired key")
            && text.contains("only up to event 15"),
        "{text}"
    );
}

/// A checkpoint copied from another store (same key) does not pass here.
pub async fn a_checkpoint_from_another_store_is_refused(t: Target, other: Target) {
    let key = story(&t).await;
    story_with(&other, &key).await;
    let foreign = other.store.checkpoints().await.expect("checkpoints")[1].clone();
    t.store.add_checkpoint(&foreign).await.expect("copy");
    let report = t.verify(Some(&key), false).await;
    assert!(
        details(&report).contains("belongs to another store"),
        "{}",
        details(&report)
    );
}

/// A store from before notes keeps its old-style signed checkpoints: they
/// still verify, and the first note is signed over them (after checking
/// the chain from its start, since they hold no tree).
pub async fn old_style_checkpoints_still_verify(t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(10, "app").await;
    let head = t.store.head().await.expect("head").expect("head");
    let legacy = Checkpoint::new(CheckpointKind::Head, head.seq, head.hash, head.seq).signed(&key);
    t.store.add_checkpoint(&legacy).await.expect("legacy");
    t.append(2, "app").await;
    assert!(matches!(t.sign(&key).await, Ok(Signed::New(_))));
    let report = t.verify(Some(&key), true).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(report.checkpoints_signed, 2);
    t.edit_event(4).await;
    let report = t.verify(Some(&key), true).await;
    assert_eq!(
        report.problems.first().map(|p| (p.kind, p.seq)),
        Some((ProblemKind::Modified, 4))
    );
}

/// A store pruned the old way (a prune checkpoint without a tree) still
/// verifies, and goes on with old-style checkpoints (no tree to continue),
/// still refused over a tampered chain.
pub async fn an_old_style_prune_still_verifies(t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(8, "app").await;
    let fifth = t.store.scan(4, 1).await.expect("scan")[0].clone();
    let prune = Checkpoint::new(
        CheckpointKind::Prune,
        5,
        fifth.hash.clone().expect("hash"),
        5,
    )
    .signed(&key);
    t.store
        .add_checkpoint(&prune)
        .await
        .expect("prune checkpoint");
    t.store.prune(5).await.expect("prune");
    let report = t.verify(Some(&key), false).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!((report.events_checked, report.unverified_prefix), (3, None));
    match t.sign(&key).await {
        Ok(Signed::New(checkpoint)) => assert!(checkpoint.note.is_none() && checkpoint.seq == 8),
        other => panic!("not signed: {other:?}"),
    }
    let report = t.verify(Some(&key), false).await;
    assert!(report.ok(), "{}", details(&report));
    t.append(2, "app").await;
    t.edit_event(9).await;
    let why = refused(t.sign(&key).await);
    assert!(why.contains("event 9"), "{why}");
}

/// Not an attack: capture appends while the checkpointer checks and signs;
/// no round is refused, and everything verifies.
pub async fn signing_while_events_arrive_is_never_refused(t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(5, "app").await;
    let store = t.store.clone();
    let writer = tokio::spawn(async move {
        for _ in 0..40 {
            store
                .append(&[event("app", Utc::now())])
                .await
                .expect("append");
        }
    });
    for _ in 0..15 {
        t.sign(&key).await.expect("signed while events arrive");
    }
    writer.await.expect("writer");
    t.sign(&key).await.expect("sign");
    let report = t.verify(Some(&key), true).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(report.events_checked, 45);
}

macro_rules! attacks {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn signing_while_events_arrive_is_never_refused() {
                super::signing_while_events_arrive_is_never_refused(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_old_style_prune_still_verifies() {
                super::an_old_style_prune_still_verifies(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn old_style_checkpoints_still_verify() {
                super::old_style_checkpoints_still_verify(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_untouched_store_passes_every_check() {
                super::an_untouched_store_passes_every_check(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn removing_the_newest_events_and_their_checkpoint() {
                super::removing_the_newest_events_and_their_checkpoint(super::$backend().await)
                    .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rewriting_the_tail_with_correct_hashes() {
                super::rewriting_the_tail_with_correct_hashes(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rewriting_the_tail_and_deleting_its_checkpoints() {
                super::rewriting_the_tail_and_deleting_its_checkpoints(super::$backend().await)
                    .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deleting_every_checkpoint() {
                super::deleting_every_checkpoint(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn truncating_the_store() {
                super::truncating_the_store(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn replaying_an_older_copy() {
                super::replaying_an_older_copy(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_forged_unsigned_prune_checkpoint() {
                super::a_forged_unsigned_prune_checkpoint(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tampering_while_stopped_is_never_signed() {
                super::tampering_while_stopped_is_never_signed(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_refuses_a_tampered_prefix() {
                super::retention_refuses_a_tampered_prefix(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn retention_keeps_the_tree_and_its_archive_verifies() {
                super::retention_keeps_the_tree_and_its_archive_verifies(super::$backend().await)
                    .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_retired_key_signs_nothing_after_its_rotation() {
                super::a_retired_key_signs_nothing_after_its_rotation(super::$backend().await)
                    .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_checkpoint_from_another_store_is_refused() {
                super::a_checkpoint_from_another_store_is_refused(
                    super::$backend().await,
                    super::$backend().await,
                )
                .await;
            }
        }
    };
}

attacks!(sqlite);
attacks!(postgres);
