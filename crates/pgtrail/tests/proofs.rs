//! `pgtrail prove` and `pgtrail verify-proof` on both stores: a proof file
//! round trips, and each attacker of docs/proofs.md fails: a proof file
//! edited in transit (every byte), a proof under a key the auditor did not
//! get from the operator, and someone with the store file altering an event
//! after its checkpoint and making a proof of it. The independent Python
//! verifier (`tests/verifier/verify_proof.py`, written from the docs alone)
//! accepts the same proofs and refuses the same tampering.
//!
//! Redaction (`prove --redact`): on a store whose first events were written
//! before hash version 2 (the sample has no nonces) and whose later ones
//! were not, the old events still verify and prove whole, the new ones
//! prove with values withheld, both verifiers accept those files and name
//! what they withhold, and neither accepts one where a revealed value was
//! edited or a withheld one claimed.

use std::path::{Path, PathBuf};
use std::process::Command;

use pgtrail_store::proof_file::{public_key_from_hex, ProofFile};

use crate::support::{Run, Trail, SAMPLE};

crate::both_backends!(
    a_proof_round_trips_and_says_what_it_shows,
    every_edited_byte_of_a_proof_is_caught,
    a_proof_under_a_key_the_auditor_did_not_get_fails,
    an_event_altered_after_its_checkpoint_gets_no_verifying_proof,
    the_independent_verifier_agrees,
    proofs_outlive_retention,
    redacted_proofs_verify_and_withhold_what_they_say,
);

/// The sample trail, a key pair, and a checkpoint of all 20 events.
/// Returns the public key's path.
fn signed_sample(trail: &Trail) -> String {
    let key = trail.path("signing.key").display().to_string();
    trail.run(&["keygen", "--out", &key]).ok();
    trail.import_sample();
    let early = trail.run(&["prove", "7", "--public-key", &format!("{key}.pub")]);
    assert!(
        early.error().contains("run `pgtrail checkpoint`"),
        "{early:?}"
    );
    trail
        .run_env(
            &["checkpoint"],
            &[("PGTRAIL_SIGNING__PRIVATE_KEY", key.as_str())],
        )
        .ok();
    format!("{key}.pub")
}

fn prove(trail: &Trail, event: &str, public: &str) -> String {
    let out = trail.path(&format!("proof-{event}.tlog-proof"));
    let out = out.display().to_string();
    trail
        .run(&["prove", event, "--public-key", public, "--out", &out])
        .ok();
    out
}

/// `verify-proof` as the auditor runs it: no store configured at all.
fn verify_proof(dir: &Path, file: &str, public: &str, format: &str) -> Run {
    crate::support::pgtrail_in(
        dir,
        &[
            "verify-proof",
            file,
            "--public-key",
            public,
            "--format",
            format,
        ],
        &[],
        None,
    )
}

async fn a_proof_round_trips_and_says_what_it_shows(trail: Trail) {
    let public = signed_sample(&trail);
    let auditor = tempfile::tempdir().expect("tempdir");
    for seq in [1, 7, 16, 20] {
        let file = prove(&trail, &seq.to_string(), &public);
        let report = verify_proof(auditor.path(), &file, &public, "json").json();
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["entry"], seq, "{report}");
        assert_eq!(report["event"]["seq"], seq, "{report}");
        assert_eq!(report["tree_size"], 20, "{report}");
    }
    let file = prove(&trail, "7", &public);
    let words = verify_proof(auditor.path(), &file, &public, "table");
    let text = words.ok();
    assert!(
        text.starts_with("event 7, an UPDATE on public.users id=1 by alice@example.com")
            && text.contains("is entry 7 of the log pgtrail/store/")
            && text.contains("whose signed size was 20 at"),
        "{text}"
    );
    // The same event by its id gives the same file; stdout without --out.
    let sample = std::fs::read_to_string(SAMPLE).expect("sample");
    let seventh: serde_json::Value =
        serde_json::from_str(sample.lines().nth(6).expect("7 lines")).expect("json");
    let id = seventh["id"].as_str().expect("id");
    let by_id = trail.run(&["prove", id, "--public-key", &public]);
    assert_eq!(by_id.ok(), std::fs::read_to_string(&file).expect("read"));
    // Events that are not there.
    let missing = trail.run(&["prove", "21", "--public-key", &public]);
    assert!(missing.error().contains("ends at event 20"), "{missing:?}");
    let unknown = trail.run(&[
        "prove",
        "00000000-0000-7000-8000-000000000000",
        "--public-key",
        &public,
    ]);
    assert!(unknown.error().contains("no event with id"), "{unknown:?}");
}

async fn every_edited_byte_of_a_proof_is_caught(trail: Trail) {
    let public = signed_sample(&trail);
    let file = prove(&trail, "7", &public);
    let text = std::fs::read_to_string(&file).expect("read");
    let key = public_key_from_hex(&std::fs::read_to_string(&public).expect("key")).expect("key");
    assert!(ProofFile::parse(&text).and_then(|f| f.verify(&key)).is_ok());
    // Every byte, three flips each (low bit, case/space bit, high bit):
    // none may leave a file that still verifies.
    let bytes = text.as_bytes();
    let mut tried = 0;
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut changed = bytes.to_vec();
            changed[at] ^= flip;
            let verdict = String::from_utf8(changed)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|t| {
                    ProofFile::parse(&t)
                        .and_then(|f| f.verify(&key))
                        .map_err(|e| e.to_string())
                });
            assert!(verdict.is_err(), "byte {at} ^ {flip:#x} still verifies");
            tried += 1;
        }
    }
    assert!(tried > 1_000, "{tried}");
    // And through the binary, one edit in each part of the file.
    let auditor = tempfile::tempdir().expect("tempdir");
    let lines: Vec<&str> = text.split('\n').collect();
    let blank = lines.iter().position(|l| l.is_empty()).expect("blank line");
    let parts = [
        ("extra", 1, 40),
        ("index", 2, 6),
        ("a proof hash", 3, 5),
        ("the last proof hash", blank - 1, 20),
        ("the origin", blank + 1, 16),
        ("the tree size", blank + 2, 0),
        ("the root", blank + 3, 3),
        ("the checkpoint's pgtrail line", blank + 4, 10),
        ("the signature", lines.len() - 2, 60),
    ];
    for (part, line, column) in parts {
        let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        let mut chars: Vec<char> = edited[line].chars().collect();
        chars[column] = if chars[column] == '1' { '2' } else { '1' };
        edited[line] = chars.into_iter().collect();
        let path = auditor.path().join("edited.tlog-proof");
        std::fs::write(&path, edited.join("\n")).expect("write");
        let run = verify_proof(
            auditor.path(),
            &path.display().to_string(),
            &public,
            "table",
        );
        assert_eq!(run.code, 1, "{part}: {run:?}");
        assert!(run.stdout.starts_with("FAILED: "), "{part}: {run:?}");
    }
}

async fn a_proof_under_a_key_the_auditor_did_not_get_fails(trail: Trail) {
    let public = signed_sample(&trail);
    let genuine = prove(&trail, "7", &public);
    // The operator rewrites the sample (alice's update now by mallory) into
    // another store, signs it with a key of their own and proves it.
    let forged_store = trail.another_store().await;
    let sample = std::fs::read_to_string(SAMPLE).expect("sample");
    let altered = trail.path("altered.jsonl");
    std::fs::write(
        &altered,
        sample.replacen("alice@example.com", "mallory@example.com", 1),
    )
    .expect("write");
    let other_key = trail.path("other.key").display().to_string();
    trail.run(&["keygen", "--out", &other_key]).ok();
    let other_public = format!("{other_key}.pub");
    let on_forged = |args: &[&str]| {
        let mut all = vec!["--store", forged_store.as_str()];
        all.extend_from_slice(args);
        trail.run_env(
            &all,
            &[("PGTRAIL_SIGNING__PRIVATE_KEY", other_key.as_str())],
        )
    };
    on_forged(&["import", &altered.display().to_string()]).ok();
    on_forged(&["checkpoint"]).ok();
    let forged = trail.path("forged.tlog-proof").display().to_string();
    on_forged(&["prove", "7", "--out", &forged]).ok();

    let auditor = tempfile::tempdir().expect("tempdir");
    // Under the key the auditor got from the operator, it fails.
    let refused = verify_proof(auditor.path(), &forged, &public, "json");
    assert_eq!(refused.code, 1, "{refused:?}");
    let report: serde_json::Value = serde_json::from_str(&refused.stdout).expect("json");
    assert_eq!(report["ok"], false);
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not signed by this public key")),
        "{report}"
    );
    // It verifies only under the other key, and then names another log.
    let other = verify_proof(auditor.path(), &forged, &other_public, "json").json();
    let genuine = verify_proof(auditor.path(), &genuine, &public, "json").json();
    assert_ne!(other["origin"], genuine["origin"]);
    // The genuine proof fails under the other key too.
    let crossed = verify_proof(
        auditor.path(),
        &trail.path("proof-7.tlog-proof").display().to_string(),
        &other_public,
        "table",
    );
    assert_eq!(crossed.code, 1, "{crossed:?}");
}

async fn an_event_altered_after_its_checkpoint_gets_no_verifying_proof(trail: Trail) {
    let public = signed_sample(&trail);
    let genuine = prove(&trail, "7", &public);
    let genuine_text = std::fs::read_to_string(&genuine).expect("read");
    std::fs::remove_file(&genuine).expect("remove");
    // Someone with the store file changes who made event 7.
    trail.edit_stored_body(7, "alice@example.com", "mallory@example.com");
    // prove refuses and writes nothing.
    let out = trail.path("proof-7.tlog-proof");
    let refused = trail.run(&[
        "prove",
        "7",
        "--public-key",
        &public,
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("run `pgtrail verify`"),
        "{refused:?}"
    );
    assert!(!out.exists());
    // A proof made by hand from the altered event (the genuine proof's
    // hashes and checkpoint, the store's event) does not verify.
    let altered = trail
        .run(&["log", "--format", "jsonl", "--limit", "100"])
        .events()
        .into_iter()
        .find(|e| e.seq == Some(7))
        .expect("event 7");
    assert_eq!(altered.app_user.as_deref(), Some("mallory@example.com"));
    let genuine = ProofFile::parse(&genuine_text).expect("parse");
    let forged =
        ProofFile::build(&altered, genuine.hashes.clone(), &genuine.checkpoint).expect("build");
    let key = public_key_from_hex(&std::fs::read_to_string(&public).expect("key")).expect("key");
    let err = forged.verify(&key).expect_err("an altered event");
    assert!(err.to_string().contains("root"), "{err}");
    let path = trail.path("forged.tlog-proof");
    std::fs::write(&path, forged.to_text()).expect("write");
    let auditor = tempfile::tempdir().expect("tempdir");
    let run = verify_proof(
        auditor.path(),
        &path.display().to_string(),
        &public,
        "table",
    );
    assert_eq!(run.code, 1, "{run:?}");
    // Other events' proofs still verify: they hold the stored hash of 7.
    let other = prove(&trail, "3", &public);
    verify_proof(auditor.path(), &other, &public, "table").ok();
}

async fn proofs_outlive_retention(trail: Trail) {
    let public = signed_sample(&trail);
    let before = prove(&trail, "7", &public);
    // One event of today, then retention removes the 20 from March 2026.
    let mut recent =
        pgtrail_core::Event::new(pgtrail_core::Source::Trigger, pgtrail_core::Kind::Ddl);
    recent.operation = Some("CREATE INDEX".into());
    recent.sql = Some("create index on users (email)".into());
    trail
        .run_stdin(
            &["import", "-"],
            format!("{}\n", serde_json::to_string(&recent).expect("json")).as_bytes(),
        )
        .ok();
    let key = trail.path("signing.key").display().to_string();
    let signing = [("PGTRAIL_SIGNING__PRIVATE_KEY", key.as_str())];
    let pruned = trail
        .run_env(
            &["retention", "--keep", "30d", "--format", "json"],
            &signing,
        )
        .json();
    assert_eq!(pruned["removed"], 20, "{pruned}");

    let gone = trail.run(&["prove", "7", "--public-key", &public]);
    assert!(gone.error().contains("removed by retention"), "{gone:?}");
    // The proof made before still verifies: it needs no store.
    let auditor = tempfile::tempdir().expect("tempdir");
    verify_proof(auditor.path(), &before, &public, "table").ok();
    // A kept event is proven under a new checkpoint, its proof's hashes
    // of the removed part coming from the prune checkpoint's frontier.
    trail.run_env(&["checkpoint"], &signing).ok();
    let after = prove(&trail, "21", &public);
    let words = verify_proof(auditor.path(), &after, &public, "table");
    assert!(
        words.ok().starts_with("event 21, a CREATE INDEX (DDL) by"),
        "{words:?}"
    );
    assert!(python(&after, &public).status.success());
}

/// The Python verifier written from docs/proofs.md.
const VERIFIER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/verifier/verify_proof.py"
);

fn python(file: &str, public: &str) -> std::process::Output {
    let python = std::env::var("PGTRAIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python)
        .args([VERIFIER, file, public])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 (set PGTRAIL_TEST_PYTHON to choose one)")
}

async fn the_independent_verifier_agrees(trail: Trail) {
    let public = signed_sample(&trail);
    let dir = tempfile::tempdir().expect("tempdir");
    for seq in [1, 7, 20] {
        let file = prove(&trail, &seq.to_string(), &public);
        let out = python(&file, &public);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains(&format!("entry {seq} ")), "{stdout}");
    }
    // Under another key, it fails.
    let other = trail.path("other.key").display().to_string();
    trail.run(&["keygen", "--out", &other]).ok();
    let out = python(
        &trail.path("proof-7.tlog-proof").display().to_string(),
        &format!("{other}.pub"),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Tampered copies: one edit in each part, and an event moved to another
    // index; the Python verifier refuses each, as verify-proof does.
    let text = std::fs::read_to_string(trail.path("proof-7.tlog-proof")).expect("read");
    let cases: Vec<(&str, String)> = vec![
        ("index", text.replacen("\nindex 6\n", "\nindex 5\n", 1)),
        ("extra", flip_in_line(&text, 1, 30)),
        ("hash", flip_in_line(&text, 3, 10)),
        ("size", text.replacen("\n20\n", "\n21\n", 1)),
        (
            "signature",
            flip_in_line(&text, text.split('\n').count() - 2, 50),
        ),
    ];
    for (what, tampered) in cases {
        let path: PathBuf = dir.path().join(format!("{what}.tlog-proof"));
        std::fs::write(&path, &tampered).expect("write");
        let file = path.display().to_string();
        let out = python(&file, &public);
        assert!(!out.status.success(), "python accepted {what}: {out:?}");
        assert_eq!(verify_proof(dir.path(), &file, &public, "table").code, 1);
    }
}

/// `text` with one character of line `line` changed.
fn flip_in_line(text: &str, line: usize, column: usize) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let mut chars: Vec<char> = lines[line].chars().collect();
    chars[column] = if chars[column] == 'A' { 'B' } else { 'A' };
    lines[line] = chars.into_iter().collect();
    lines.join("\n")
}

/// The sample again as events recorded since hash version 2: fresh ids,
/// each with a nonce (returned in order). Appended after the sample, so the
/// store holds version 1 events (1-20) and then version 2 ones (21-40).
fn import_v2_sample(trail: &Trail) -> Vec<String> {
    let mut nonces = Vec::new();
    let mut lines = String::new();
    for mut event in crate::support::sample_events() {
        let fresh = pgtrail_core::Event::new(event.source, event.kind);
        event.id = fresh.id;
        nonces.push(fresh.nonce.clone().expect("a new event has a nonce"));
        event.nonce = fresh.nonce.clone();
        lines.push_str(&serde_json::to_string(&event).expect("json"));
        lines.push('\n');
    }
    let path = trail.path("sample-v2.jsonl");
    std::fs::write(&path, lines).expect("write");
    let summary = trail
        .run(&["import", &path.display().to_string(), "--format", "json"])
        .json();
    assert_eq!(summary["imported"], 20, "{summary}");
    nonces
}

/// The decoded `extra` of a proof file.
fn extra_of(text: &str) -> Vec<u8> {
    ProofFile::parse(text).expect("a proof file").extra
}

/// `text` with its extra replaced by `extra`.
fn with_extra(text: &str, extra: &serde_json::Value) -> String {
    let mut file = ProofFile::parse(text).expect("a proof file");
    file.extra = pgtrail_core::json::to_string(extra).into_bytes();
    file.to_text()
}

async fn redacted_proofs_verify_and_withhold_what_they_say(trail: Trail) {
    let key = trail.path("signing.key").display().to_string();
    trail.run(&["keygen", "--out", &key]).ok();
    let public = format!("{key}.pub");
    trail.import_sample();
    let nonces = import_v2_sample(&trail);
    trail
        .run_env(
            &["checkpoint"],
            &[("PGTRAIL_SIGNING__PRIVATE_KEY", key.as_str())],
        )
        .ok();
    // The whole store, old and new events, verifies.
    trail.run(&["verify"]).ok();
    let auditor = tempfile::tempdir().expect("tempdir");

    // Event 27 is the sample's event 7 (an UPDATE of Alice's name) as v2.
    let out = trail.path("redacted.tlog-proof").display().to_string();
    let args = [
        "prove",
        "27",
        "--redact",
        "name,role",
        "--public-key",
        &public,
    ];
    trail.run(&[&args[..], &["--out", &out]].concat()).ok();
    let text = std::fs::read_to_string(&out).expect("read");
    let report = verify_proof(auditor.path(), &out, &public, "json").json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["withheld"],
        serde_json::json!(["new.name", "new.role", "old.name", "old.role"]),
        "{report}"
    );
    assert_eq!(
        report["event"]["new"],
        serde_json::json!({"email": "alice@example.com", "id": 1})
    );
    let words = verify_proof(auditor.path(), &out, &public, "table")
        .ok()
        .to_string();
    assert!(
        words.contains("withheld: new.name, new.role, old.name, old.role \u{2014} their commitments are in the file"),
        "{words}"
    );
    let python_out = python(&out, &public);
    let python_said = String::from_utf8_lossy(&python_out.stdout);
    assert!(python_out.status.success(), "{python_out:?}");
    assert!(
        python_said.contains("entry 27 ")
            && python_said.contains("withheld: new.name, new.role, old.name, old.role"),
        "{python_said}"
    );

    // Neither the withheld values ("Alice", "Alice Smith") nor the nonce,
    // in the file or in its decoded extra.
    let extra = String::from_utf8(extra_of(&text)).expect("utf8");
    for secret in ["Alice", nonces[6].as_str()] {
        assert!(
            !text.contains(secret) && !extra.contains(secret),
            "{secret} in {extra}"
        );
    }

    // The same event unredacted shows every value; the old v1 event 7
    // proves whole, as before, under both verifiers.
    let whole = prove(&trail, "27", &public);
    let report = verify_proof(auditor.path(), &whole, &public, "json").json();
    assert_eq!(report["event"]["new"]["name"], "Alice Smith", "{report}");
    assert!(report.get("withheld").is_none(), "{report}");
    assert!(!std::fs::read_to_string(&whole)
        .expect("read")
        .contains(&nonces[6]));
    let old = prove(&trail, "7", &public);
    assert_eq!(
        verify_proof(auditor.path(), &old, &public, "json").json()["ok"],
        true
    );
    assert!(python(&old, &public).status.success());

    // What cannot be withheld: an old event, a column the event lacks.
    let v1 = trail.run(&["prove", "7", "--redact", "name", "--public-key", &public]);
    assert!(v1.error().contains("before hash version 2"), "{v1:?}");
    let missing = trail.run(&["prove", "27", "--redact", "salary", "--public-key", &public]);
    assert!(
        missing.error().contains("no column 'salary'"),
        "{missing:?}"
    );

    // Forgeries both verifiers refuse: a revealed value edited, a withheld
    // value claimed with a guessed value and some salt, a withheld
    // commitment edited, a salt edited.
    let genuine: serde_json::Value =
        serde_json::from_slice(&extra_of(&text)).expect("the extra is JSON");
    let some_hex = serde_json::json!("ab".repeat(32));
    let mut forgeries: Vec<(&str, serde_json::Value)> = Vec::new();
    let mut edited = genuine.clone();
    edited["event"]["new"]["email"] = serde_json::json!("mallory@example.com");
    forgeries.push(("a revealed value", edited));
    let mut claimed = genuine.clone();
    claimed["withheld"]["new"]
        .as_object_mut()
        .expect("o")
        .remove("name");
    claimed["event"]["new"]["name"] = serde_json::json!("Bob");
    claimed["salts"]["new"]["name"] = some_hex.clone();
    forgeries.push(("a withheld value claimed", claimed));
    let mut commitment = genuine.clone();
    commitment["withheld"]["old"]["role"] = some_hex.clone();
    forgeries.push(("a withheld commitment", commitment));
    let mut salt = genuine.clone();
    salt["salts"]["pk"]["id"] = some_hex.clone();
    forgeries.push(("a salt", salt));
    for (what, extra) in forgeries {
        let path = auditor.path().join("forged.tlog-proof");
        std::fs::write(&path, with_extra(&text, &extra)).expect("write");
        let file = path.display().to_string();
        let run = verify_proof(auditor.path(), &file, &public, "table");
        assert_eq!(run.code, 1, "{what}: {run:?}");
        let out = python(&file, &public);
        assert_eq!(
            out.status.code(),
            Some(1),
            "python accepted {what}: {out:?}"
        );
    }
}
