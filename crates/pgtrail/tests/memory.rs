//! `verify`'s memory and `pgtrail consistency`, as a user runs them: the
//! state file remembers the last sound checkpoint, the next verify walks
//! only what is newer and names a rollback; a consistency proof handed to
//! the holder of an old checkpoint checks offline, and a changed hash does
//! not.

use std::path::Path;

use crate::both_backends;
use crate::support::{Trail, SAMPLE};

both_backends!(verify_remembers_and_consistency_proofs_check_offline);

/// Imports the sample's 20 events again under new ids (`round` apart).
fn more_events(trail: &Trail, round: usize) {
    let text = std::fs::read_to_string(SAMPLE).expect("sample");
    let mut out = String::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let mut event: serde_json::Value = serde_json::from_str(line).expect("event");
        let id = event["id"].as_str().expect("id").to_string();
        event["id"] = format!("{}{:012x}", &id[..id.len() - 12], round * 1000 + i).into();
        out.push_str(&event.to_string());
        out.push('\n');
    }
    let path = trail.path(&format!("more{round}.jsonl"));
    std::fs::write(&path, out).expect("write");
    let summary = trail
        .run(&["import", path.to_str().expect("utf8"), "--format", "json"])
        .json();
    assert_eq!(summary["imported"], 20, "{summary}");
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf8")
}

async fn verify_remembers_and_consistency_proofs_check_offline(trail: Trail) {
    let key = trail.path("signing.key");
    trail.run(&["keygen", "--out", text(&key)]).ok();
    let public = format!("{}.pub", key.display());
    let signing = [("PGTRAIL_SIGNING__PRIVATE_KEY", text(&key))];
    let state = trail.path("verifier/state.json");
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--public-key", &public, "--state", text(&state)];
        args.extend_from_slice(extra);
        trail.run(&args)
    };

    trail.import_sample();
    trail.run_env(&["checkpoint"], &signing).ok();
    let first = verify(&["--format", "table"]);
    assert!(
        first.ok().contains("checked 20 events")
            && first
                .ok()
                .contains("remembered: the checkpoint at event 20"),
        "{first:?}"
    );
    let remembered: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state")).expect("json");
    assert_eq!(remembered["size"], 20, "{remembered}");
    assert!(remembered["origin"]
        .as_str()
        .is_some_and(|o| o.starts_with("pgtrail/store/")));

    // The holder of the checkpoint at 20 keeps its note.
    let at_20 = trail.run(&["consistency", "20", "20"]);
    let (head, note) = at_20.ok().split_once("\n\n").expect("a proof");
    assert_eq!(head, "old 20", "no hashes between equal sizes");
    let old_note = trail.path("old.note");
    std::fs::write(&old_note, note).expect("write");

    more_events(&trail, 1);
    trail.run_env(&["checkpoint"], &signing).ok();
    let second = verify(&["--format", "table"]);
    assert!(
        second.ok().contains("checked 20 events up to #40")
            && second.ok().contains("resumed after event 20"),
        "{second:?}"
    );
    let third = verify(&["--format", "json"]).json();
    assert_eq!(
        (
            third["resumed_after"].as_i64(),
            third["events_checked"].as_u64()
        ),
        (Some(40), Some(0)),
        "{third}"
    );
    let full = verify(&["--full", "--format", "json"]).json();
    assert_eq!(full["events_checked"], 40, "{full}");

    // The proof from 20 to the newest checkpoint (40), checked offline.
    let proof = trail.run(&["consistency", "20"]);
    let proof_file = trail.path("proof.txt");
    std::fs::write(&proof_file, proof.ok()).expect("write");
    assert!(proof.ok().starts_with("old 20\n"), "{proof:?}");
    let from_file = trail.run(&["consistency", text(&old_note)]);
    assert_eq!(from_file.ok(), proof.ok(), "OLD as the holder's note");
    let check = |file: &Path| {
        trail.run(&[
            "verify-consistency",
            text(file),
            "--old",
            text(&old_note),
            "--public-key",
            &public,
            "--format",
            "table",
        ])
    };
    let ok = check(&proof_file);
    assert!(
        ok.ok().contains("at 40 entries") && ok.ok().contains("extends the checkpoint at 20"),
        "{ok:?}"
    );
    // One hash changed.
    let mut lines: Vec<String> = proof.ok().split('\n').map(str::to_string).collect();
    lines[1] = lines[1].replacen(
        &lines[1][..1],
        if &lines[1][..1] == "A" { "B" } else { "A" },
        1,
    );
    let tampered = trail.path("tampered.txt");
    std::fs::write(&tampered, lines.join("\n")).expect("write");
    let bad = check(&tampered);
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stdout.contains("does not extend"), "{bad:?}");

    // A state file that does not parse is an error, not a fresh start.
    std::fs::write(&state, "{\"version\": 1,").expect("write");
    let damaged = verify(&[]);
    assert_eq!(damaged.code, 2, "{damaged:?}");
    assert!(damaged.stderr.contains("damaged"), "{damaged:?}");
    let unremembered = trail.run(&["verify", "--public-key", &public, "--no-state"]);
    assert_eq!(unremembered.code, 0, "{unremembered:?}");
    assert_eq!(
        std::fs::read_to_string(&state).expect("state"),
        "{\"version\": 1,",
        "--no-state leaves the file alone"
    );

    if trail.cluster.is_none() {
        rollback_is_named(&trail, &state, &public, &signing);
    }
}

/// An older copy of the SQLite file put back after a verify.
fn rollback_is_named(trail: &Trail, state: &Path, public: &str, signing: &[(&str, &str)]) {
    std::fs::remove_file(state).expect("start afresh");
    let file = trail.sqlite_file();
    let copy = trail.path("copy.db");
    rusqlite::Connection::open(&file)
        .expect("open")
        .execute("vacuum into ?1", [text(&copy)])
        .expect("copy");
    more_events(trail, 2);
    trail.run_env(&["checkpoint"], signing).ok();
    let verify = || trail.run(&["verify", "--public-key", public, "--state", text(state)]);
    assert_eq!(verify().code, 0);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    std::fs::copy(&copy, &file).expect("put the copy back");
    let rolled_back = verify();
    assert_eq!(rolled_back.code, 1, "{rolled_back:?}");
    assert!(
        rolled_back
            .stdout
            .contains("newest checkpoint is at event 40")
            && rolled_back.stdout.contains("saw one at event 60")
            && rolled_back.stdout.contains("rollback"),
        "{rolled_back:?}"
    );
}
