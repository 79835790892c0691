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

    match trail.cluster {
        Some(_) => {
            trail.psql("update pgtrail.events set app_user = 'mallory@example.com' where seq = 7");
        }
        None => {
            let db = rusqlite::Connection::open(trail.sqlite_file()).expect("open sqlite");
            let changed = db
                .execute(
                    "update events set body = replace(body, 'alice@example.com', 'mallory@example.com') where seq = 7",
                    [],
                )
                .expect("tamper");
            assert_eq!(changed, 1);
        }
    }
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
