//! verify, checkpoints and keys, tampering, retention.

use crate::both_backends;
use crate::support::{Backend, Trail};

both_backends!(
    verify_catches_a_modified_event,
    signed_checkpoints_verify_with_the_public_key,
    retention_keeps_the_chain_provable
);

async fn verify_catches_a_modified_event(trail: Trail) {
    trail.import_sample();
    let clean = trail.run(&["verify", "--format", "table"]);
    assert!(
        clean.ok().contains("checked 20 events") && clean.ok().contains("OK"),
        "{clean:?}"
    );

    trail.edit_stored_body(7, "alice@example.com", "mallory@example.com");
    let tampered = trail.run(&["verify", "--format", "table"]);
    assert_eq!(tampered.code, 1, "{tampered:?}");
    assert!(
        tampered.stdout.contains("event 7") && tampered.stdout.contains("modified"),
        "{tampered:?}"
    );
    let json = trail.run(&["verify", "--format", "json"]);
    assert_eq!(json.code, 1);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(report["problems"][0]["seq"], 7, "{report}");
    assert_eq!(report["problems"][0]["kind"], "modified", "{report}");
}

async fn signed_checkpoints_verify_with_the_public_key(trail: Trail) {
    let key = trail.path("signing.key");
    let key = key.to_str().expect("utf8");
    let public = format!("{key}.pub");
    let made = trail.run(&["keygen", "--out", key]);
    assert!(made.ok().contains(&public), "{made:?}");
    assert!(trail
        .run(&["keygen", "--out", key])
        .error()
        .contains("already exists"));

    trail.import_sample();
    let signing = [("PGTRAIL_SIGNING__PRIVATE_KEY", key)];
    let checkpoint = trail.run_env(&["checkpoint", "--format", "table"], &signing);
    assert!(
        checkpoint.ok().contains("signed checkpoint at event 20"),
        "{checkpoint:?}"
    );

    let good = trail
        .run(&["verify", "--public-key", &public, "--format", "json"])
        .json();
    assert_eq!(
        (
            good["checkpoints"].as_u64(),
            good["checkpoints_signed"].as_u64()
        ),
        (Some(1), Some(1)),
        "{good}"
    );

    let other = trail.path("other.key");
    trail
        .run(&["keygen", "--out", other.to_str().expect("utf8")])
        .ok();
    let other_public = format!("{}.pub", other.display());
    let wrong = trail.run(&["verify", "--public-key", &other_public, "--format", "table"]);
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong.stdout.contains("event 20") && wrong.stdout.contains("signature"),
        "{wrong:?}"
    );

    // A key rotation: the next checkpoint is signed with the new key. The
    // old key alone rejects it; both keys together accept every checkpoint.
    let rotated = [(
        "PGTRAIL_SIGNING__PRIVATE_KEY",
        other.to_str().expect("utf8"),
    )];
    trail.run_env(&["checkpoint"], &rotated).ok();
    let old_only = trail.run(&["verify", "--public-key", &public, "--format", "json"]);
    assert_eq!(old_only.code, 1, "{old_only:?}");
    let both = trail
        .run(&[
            "verify",
            "--public-key",
            &other_public,
            "--public-key",
            &public,
            "--format",
            "json",
        ])
        .json();
    assert_eq!(
        (
            both["checkpoints"].as_u64(),
            both["checkpoints_signed"].as_u64(),
            both["problems"].as_array().map(Vec::len)
        ),
        (Some(2), Some(2), Some(0)),
        "{both}"
    );

    let unkeyed = trail.run(&["checkpoint"]);
    assert!(unkeyed.error().contains("pgtrail keygen"), "{unkeyed:?}");
}

async fn retention_keeps_the_chain_provable(trail: Trail) {
    // The sample is from March 2026; one event of today must survive.
    trail.import_sample();
    let mut recent =
        pgtrail_core::Event::new(pgtrail_core::Source::Trigger, pgtrail_core::Kind::Ddl);
    recent.sql = Some("create index on users (email)".into());
    trail
        .run_stdin(
            &["import", "-"],
            format!("{}\n", serde_json::to_string(&recent).expect("json")).as_bytes(),
        )
        .ok();
    let key = trail.path("signing.key");
    let key = key.to_str().expect("utf8");
    trail.run(&["keygen", "--out", key]).ok();
    let signing = [("PGTRAIL_SIGNING__PRIVATE_KEY", key)];

    let nothing = trail.run_env(
        &["retention", "--keep", "100000d", "--format", "table"],
        &signing,
    );
    assert!(
        nothing.ok().contains("nothing older than 100000d"),
        "{nothing:?}"
    );

    let archive = trail.path("archive");
    let run = trail.run_env(
        &[
            "retention",
            "--keep",
            "30d",
            "--archive",
            archive.to_str().expect("utf8"),
            "--format",
            "json",
        ],
        &signing,
    );
    let outcome = run.json();
    assert_eq!(outcome["removed"], 20, "{outcome}");
    assert_eq!(outcome["through_seq"], 20, "{outcome}");
    let archived = outcome["archive"]
        .as_str()
        .expect("archive path")
        .to_string();
    assert!(std::path::Path::new(&archived).is_file());
    assert!(std::path::Path::new(&format!("{archived}.sha256")).is_file());

    let left = trail.run(&["log"]).events();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(21)]);
    let public = format!("{key}.pub");
    let verified = trail.run(&["verify", "--public-key", &public, "--format", "table"]);
    assert!(verified.ok().contains("OK"), "{verified:?}");
}

#[tokio::test]
async fn verify_needs_a_readable_public_key() {
    let trail = Trail::new(Backend::Sqlite).await;
    let run = trail.run(&["verify", "--public-key", "/nonexistent/k.pub"]);
    assert!(run.error().contains("/nonexistent/k.pub"), "{run:?}");
}

/// Every file in `dir` with a digest of its bytes, to show nothing was
/// created or changed.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).unwrap_or_default();
            let mut digest = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut digest);
            (path.display().to_string(), digest.finish())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn verify_of_a_missing_empty_or_foreign_store_fails_and_creates_nothing() {
    use crate::support::pgtrail_in;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("zero.db"), b"").expect("write");
    std::fs::write(dir.path().join("notes.txt"), b"shopping list\n").expect("write");
    let empty_sqlite = dir.path().join("empty-sqlite.db");
    rusqlite::Connection::open(&empty_sqlite)
        .and_then(|c| c.execute_batch("pragma user_version = 0; vacuum;"))
        .expect("an empty SQLite database");
    let other_app = dir.path().join("other.db");
    rusqlite::Connection::open(&other_app)
        .and_then(|c| c.execute_batch("create table notes (t text);"))
        .expect("someone else's database");
    let before = snapshot(dir.path());
    for (file, says) in [
        ("missing.db", "no store at"),
        ("zero.db", "the file is empty"),
        ("notes.txt", "not a SQLite database"),
        ("empty-sqlite.db", "not a pgtrail store"),
        ("other.db", "not a pgtrail store"),
    ] {
        let url = format!("sqlite:{}", dir.path().join(file).display());
        let run = pgtrail_in(dir.path(), &["--store", &url, "verify"], &[], None);
        assert_eq!(run.code, 1, "{file}: {run:?}");
        assert!(
            run.stderr.contains("FAILED") && run.stderr.contains(says),
            "{file}: {run:?}"
        );
    }
    assert_eq!(
        snapshot(dir.path()),
        before,
        "verify created or changed files"
    );
}

#[test]
fn verify_reads_a_copy_in_a_read_only_directory_without_changing_it() {
    use std::os::unix::fs::PermissionsExt;

    use crate::support::pgtrail_in;
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let url = format!("sqlite:{}", work.join("trail.db").display());
    let imported = pgtrail_in(
        &work,
        &["--store", &url, "import", crate::support::SAMPLE],
        &[],
        None,
    );
    assert_eq!(imported.code, 0, "{imported:?}");

    // A copy of the closed store (the file alone: no -wal, no -shm), read-only.
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).expect("mkdir");
    let copy = copy_dir.join("trail.db");
    std::fs::copy(work.join("trail.db"), &copy).expect("copy");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    std::fs::set_permissions(&copy_dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let before = snapshot(&copy_dir);
    let copy_url = format!("sqlite:{}", copy.display());
    let run = pgtrail_in(
        dir.path(),
        &["--store", &copy_url, "verify", "--format", "table"],
        &[],
        None,
    );
    let after = snapshot(&copy_dir);
    std::fs::set_permissions(&copy_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("checked 20 events"), "{run:?}");
    assert_eq!(after, before, "verify created or changed files");
}

/// A store written by pgtrail with schema version 6 (the sample trail, one
/// event of every kind with awkward values, a signed head checkpoint),
/// checked in: every later pgtrail must verify it unchanged and read it.
/// Its key's public half is beside it; the private half was thrown away.
#[test]
fn a_version_6_store_verifies_and_reads_unchanged() {
    use crate::support::pgtrail_in;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("store-v6.db");
    std::fs::copy(format!("{fixtures}/store-v6.db"), &copy).expect("copy");
    let url = format!("sqlite:{}", copy.display());
    let public = format!("{fixtures}/store-v6.key.pub");
    let run = |args: &[&str]| {
        let mut all = vec!["--store", url.as_str()];
        all.extend_from_slice(args);
        pgtrail_in(dir.path(), &all, &[], None)
    };

    let verified = run(&["verify", "--public-key", &public, "--format", "json"]);
    assert_eq!(verified.code, 0, "{verified:?}");
    let report = verified.json();
    assert_eq!(report["events_checked"], 32, "{report}");
    assert_eq!(report["checkpoints_signed"], 1, "{report}");

    let log = run(&["log", "--limit", "100", "--format", "jsonl"]).events();
    assert_eq!(log.len(), 32);
    for kind in [
        "row_change",
        "ddl",
        "statement",
        "session",
        "snapshot",
        "alarm",
        "quarantine",
    ] {
        assert!(
            log.iter().any(|e| e.kind.as_str() == kind),
            "no {kind} event in the fixture"
        );
    }
    let history = run(&["history", "public.users", "id=2", "--format", "json"]).json();
    let seqs: Vec<&serde_json::Value> = history
        .as_array()
        .expect("array")
        .iter()
        .map(|entry| &entry["event"]["seq"])
        .collect();
    assert_eq!(seqs, [18, 13, 12, 4], "{history}");
    let searched = run(&["log", "--search", "note", "--format", "jsonl"]).events();
    assert_eq!(
        searched.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [Some(23)]
    );
    let by_user = run(&["log", "--user", "bob@example.com", "--format", "jsonl"]).events();
    assert_eq!(by_user.len(), 7, "{by_user:?}");
}
