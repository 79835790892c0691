//! The log only grew, and the verifier remembers: consistency proofs
//! between consecutive checkpoints, and the checkpoint a verify found sound
//! held against the store on the next run (the verifier's state, kept
//! outside the store). Run against both stores. The attackers hold the
//! store (and, for the fork, the stolen signing key); the verifier's state
//! is out of their reach.

use chrono::Utc;
use pgtrail_store::checkpoint::TrustedKey;
use pgtrail_store::merkle::Frontier;
use pgtrail_store::signing::{sign_head, Signer};
use pgtrail_store::verify::consistency::ConsistencyProof;
use pgtrail_store::verify::state::{Remembered, VerifierState};
use pgtrail_store::VerifyReport;
use pgtrail_store::{verify_with, Checkpoint, CheckpointKind, KeyPair, ProblemKind, VerifyOptions};

use crate::attacks::{details, story, Target};

/// Verify with `key`, remembering `state` (and walking all with `full`).
async fn verify(t: &Target, key: &KeyPair, state: Option<&Remembered>, full: bool) -> VerifyReport {
    let options = VerifyOptions {
        keys: vec![TrustedKey::current(key.verifying_key())],
        remembered: state.cloned(),
        full,
        ..VerifyOptions::default()
    };
    verify_with(&*t.store, &options).await.expect("verify")
}

/// What the verifier keeps after a sound run.
fn remember(report: &VerifyReport) -> Remembered {
    assert!(report.ok(), "{}", details(report));
    let note = report.newest_note.as_deref().expect("a checkpoint");
    VerifierState::of(note, Utc::now())
        .expect("state")
        .checked()
        .expect("checked")
}

/// Signs the head with a stolen key, no witness in the way.
async fn sign_stolen(t: &Target, key: &KeyPair) {
    let signer = Signer {
        key,
        trusted: &[],
        witness: None,
    };
    sign_head(&*t.store, &signer, false).await.expect("sign");
}

/// A head checkpoint of the first `size` events as the store holds them,
/// signed with the stolen key and recorded after the others.
async fn forge_checkpoint(t: &Target, key: &KeyPair, size: usize) {
    let events = t.store.scan(0, size).await.expect("scan");
    let mut frontier = Frontier::new();
    for event in &events {
        let hash = event.hash.as_deref().expect("hash");
        frontier.push(pgtrail_store::merkle::event_leaf(hash).expect("leaf"));
    }
    let head = events.last().and_then(|e| e.hash.clone()).expect("hash");
    let origin =
        pgtrail_store::checkpoint::origin(&t.store.store_id().await.expect("id").expect("an id"));
    let count = i64::try_from(size).expect("size");
    let checkpoint =
        Checkpoint::signed_note(CheckpointKind::Head, &origin, &frontier, &head, count, key);
    t.store.add_checkpoint(&checkpoint).await.expect("add");
}

fn kinds(report: &VerifyReport) -> Vec<ProblemKind> {
    report.problems.iter().map(|p| p.kind).collect()
}

/// Consecutive checkpoints are proven consistent; a checkpoint recorded
/// after a larger one, at a smaller size (signed with the stolen key), is
/// named a rollback; one over a rewritten tail is named a fork.
pub async fn consecutive_checkpoints(t: Target) {
    let key = story(&t).await;
    let report = verify(&t, &key, None, false).await;
    assert!(report.ok(), "{}", details(&report));

    // A checkpoint of the first 10 events, signed again and recorded after
    // the one at 15: the log, by its own checkpoints, went back.
    forge_checkpoint(&t, &key, 10).await;
    let report = verify(&t, &key, None, false).await;
    assert_eq!(
        kinds(&report),
        [ProblemKind::Rollback],
        "{}",
        details(&report)
    );
    assert!(
        details(&report).contains("the checkpoint at event 10")
            && details(&report).contains("smaller than the one before it at event 15")
            && details(&report).contains("rolled back"),
        "{}",
        details(&report)
    );
}

/// The tail after event 12 rewritten (correct hashes and links) and signed
/// with the stolen key: the new checkpoint does not extend the one at 15.
pub async fn a_checkpoint_over_a_rewritten_tail(t: Target) {
    let key = story(&t).await;
    t.truncate_after(12).await;
    t.append(6, "mallory").await;
    forge_checkpoint(&t, &key, 18).await;
    let report = verify(&t, &key, None, false).await;
    let text = details(&report);
    assert!(kinds(&report).contains(&ProblemKind::Fork), "{text}");
    assert!(
        text.contains("the checkpoint at event 18")
            && text.contains("does not extend the one at event 15"),
        "{text}"
    );
}

/// An older copy of the store is put back after a verify: the next verify
/// names the rollback, with the sizes, though the copy is a genuine older
/// store that passes on its own.
pub async fn a_restored_older_copy_is_a_rollback(mut t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(10, "app").await;
    sign_stolen(&t, &key).await;
    t.snapshot().await;
    t.append(5, "app").await;
    sign_stolen(&t, &key).await;
    let state = remember(&verify(&t, &key, None, false).await);
    assert_eq!(state.size(), 15);
    t.restore_snapshot().await;
    assert!(
        verify(&t, &key, None, false).await.ok(),
        "the copy on its own passes"
    );
    let report = verify(&t, &key, Some(&state), false).await;
    let text = details(&report);
    assert_eq!(kinds(&report), [ProblemKind::Rollback], "{text}");
    assert!(
        text.contains("newest checkpoint is at event 10")
            && text.contains("saw one at event 15")
            && text.contains("(rollback)"),
        "{text}"
    );
}

/// With the stolen key, the attacker rewrites an old event, seals the chain
/// again from there and signs all new checkpoints: the store verifies on
/// its own, but not against the verifier's memory: a fork.
pub async fn a_rewritten_and_resigned_log_is_a_fork(t: Target) {
    let key = story(&t).await;
    let state = remember(&verify(&t, &key, None, false).await);
    assert_eq!(state.size(), 15);
    t.truncate_after(4).await;
    t.delete_checkpoints_after(0).await;
    t.append(10, "mallory").await;
    sign_stolen(&t, &key).await;
    t.append(6, "app").await;
    sign_stolen(&t, &key).await;
    assert!(
        verify(&t, &key, None, false).await.ok(),
        "a log rewritten and signed again with the key passes on its own"
    );
    for full in [false, true] {
        let report = verify(&t, &key, Some(&state), full).await;
        let text = details(&report);
        assert_eq!(kinds(&report), [ProblemKind::Fork], "{text}");
        assert!(
            text.contains("checkpoint at event 20")
                && text.contains("does not extend the checkpoint at event 15 this verifier saw")
                && text.contains("fork"),
            "{text}"
        );
    }
}

/// After a verify, only the events after the remembered checkpoint are
/// walked. The trade-off: an old event edited after that verify (its
/// stored hash left as it was) is not seen by the incremental verify, only
/// by `--full`.
pub async fn incremental_verify_reads_only_new_events(t: Target) {
    let key = story(&t).await;
    let first = verify(&t, &key, None, false).await;
    assert_eq!(first.events_checked, 18);
    let state = remember(&first);
    t.append(7, "app").await;
    sign_stolen(&t, &key).await;
    t.append(2, "app").await;
    let report = verify(&t, &key, Some(&state), false).await;
    assert!(report.ok(), "{}", details(&report));
    assert_eq!(report.resumed_after, Some(15));
    assert_eq!(report.events_checked, 12, "events 16 to 27 only");
    assert_eq!(report.head_seq, 27);
    let next = remember(&report);
    assert_eq!(next.size(), 25);

    // A new event is tampered with: the incremental walk sees it.
    t.edit_event(26).await;
    let report = verify(&t, &key, Some(&next), false).await;
    assert_eq!(
        kinds(&report)[0],
        ProblemKind::Modified,
        "{}",
        details(&report)
    );
    t.tamper(
        "update events set body = replace(body, '\"mallory\"', '\"app\"') where seq = 26",
        "update pgtrail.events set body = replace(body::text, '\"mallory\"', '\"app\"')::json where seq = 26",
    )
    .await;
    assert!(verify(&t, &key, Some(&next), false).await.ok());

    // An old one is: only --full sees it.
    t.edit_event(3).await;
    let report = verify(&t, &key, Some(&next), false).await;
    assert!(
        report.ok(),
        "incremental verify does not read event 3 again"
    );
    let report = verify(&t, &key, Some(&next), true).await;
    assert_eq!(report.resumed_after, None, "--full walks from event 1");
    assert_eq!(
        report.problems.first().map(|p| (p.kind, p.seq)),
        Some((ProblemKind::Modified, 3)),
        "{}",
        details(&report)
    );
}

/// An incremental verify that walks past kept Merkle tree nodes (a node
/// every 256 events) computes them on from where it resumed: the nodes
/// the checkpoints kept are the tree's, so it finds nothing, and an
/// altered node among the new events is still caught.
pub async fn incremental_verify_checks_the_kept_nodes_it_passes(t: Target) {
    let key = story(&t).await;
    t.append(300, "app").await;
    sign_stolen(&t, &key).await;
    let state = remember(&verify(&t, &key, None, false).await);
    assert_eq!(state.size(), 318);
    t.append(500, "app").await;
    sign_stolen(&t, &key).await;
    let report = verify(&t, &key, Some(&state), false).await;
    assert_eq!(report.resumed_after, Some(318));
    assert!(report.ok(), "{}", details(&report));
    // The node over events 513 to 768, all after the resume point.
    t.tamper(
        "update tree_nodes set hash = zeroblob(32) where height = 8 and idx = 2",
        "update pgtrail.tree_nodes set hash = decode(repeat('00', 32), 'hex') where height = 8 and idx = 2",
    )
    .await;
    let report = verify(&t, &key, Some(&state), false).await;
    let text = details(&report);
    assert!(
        kinds(&report).iter().all(|k| *k == ProblemKind::TreeNode)
            && text.contains("height 8, index 2"),
        "a damaged node is named, and no fork: {text}"
    );
    // A node before the remembered checkpoint: the incremental walk does
    // not pass it, the consistency proof from the nodes trips on it, and
    // the events' hashes say the log is sound and the node is not.
    t.tamper(
        "update tree_nodes set hash = zeroblob(32) where height = 8 and idx = 0",
        "update pgtrail.tree_nodes set hash = decode(repeat('00', 32), 'hex') where height = 8 and idx = 0",
    )
    .await;
    let report = verify(&t, &key, Some(&state), false).await;
    let text = details(&report);
    assert!(
        !kinds(&report).is_empty() && kinds(&report).iter().all(|k| *k == ProblemKind::TreeNode),
        "{text}"
    );
}

/// `pgtrail consistency`'s proof, from the store, checked offline by the
/// holder of the old checkpoint; a changed hash, a swapped checkpoint or
/// another key fails.
pub async fn a_consistency_proof_checks_offline(t: Target) {
    let key = story(&t).await;
    t.append(7, "app").await;
    sign_stolen(&t, &key).await;
    let notes: Vec<String> = t
        .store
        .checkpoints()
        .await
        .expect("checkpoints")
        .into_iter()
        .filter_map(|c| c.note)
        .collect();
    assert_eq!(notes.len(), 3, "checkpoints at 10, 15 and 25");
    let keys = [key.verifying_key()];
    for (old, new) in [(0, 1), (0, 2), (1, 2), (2, 2)] {
        let old_size = [10, 15, 25][old];
        let new_size = [10, 15, 25][new];
        let proof = ConsistencyProof {
            old: old_size,
            hashes: pgtrail_store::proof::consistency(&*t.store, old_size, new_size)
                .await
                .expect("proof"),
            note: notes[new].clone(),
        };
        let text = proof.to_text();
        let (o, n) = ConsistencyProof::check(&text, &notes[old], &keys)
            .unwrap_or_else(|e| panic!("{old_size} to {new_size}: {e}\n{text}"));
        assert_eq!((o.tree.size, n.tree.size), (old_size, new_size));
    }

    let good = ConsistencyProof {
        old: 10,
        hashes: pgtrail_store::proof::consistency(&*t.store, 10, 25)
            .await
            .expect("proof"),
        note: notes[2].clone(),
    };
    let fails = |text: &str, old: &str| {
        ConsistencyProof::check(text, old, &keys).expect_err("must not verify")
    };
    // Every hash, one bit changed.
    for i in 0..good.hashes.len() {
        let mut bad = good.clone();
        bad.hashes[i][7] ^= 1;
        let why = fails(&bad.to_text(), &notes[0]);
        assert!(why.contains("does not extend"), "{why}");
    }
    // A hash left out, one added.
    let mut short = good.clone();
    short.hashes.pop();
    fails(&short.to_text(), &notes[0]);
    let mut long = good.clone();
    long.hashes.push([0; 32]);
    fails(&long.to_text(), &notes[0]);
    // The old checkpoint swapped for another: the size no longer matches,
    // and with the size changed too the roots do not.
    let why = fails(&good.to_text(), &notes[1]);
    assert!(why.contains("starts at 10"), "{why}");
    let resized = ConsistencyProof {
        old: 15,
        ..good.clone()
    };
    fails(&resized.to_text(), &notes[1]);
    // The new checkpoint swapped for the one at 15.
    let swapped = ConsistencyProof {
        note: notes[1].clone(),
        ..good.clone()
    };
    fails(&swapped.to_text(), &notes[0]);
    // The new checkpoint's root or size edited: its signature fails.
    let edited = good.to_text().replacen("\n25\n", "\n26\n", 1);
    let why = fails(&edited, &notes[0]);
    assert!(why.contains("not signed"), "{why}");
    // Another key.
    let other = KeyPair::generate().expect("key");
    let why = ConsistencyProof::check(&good.to_text(), &notes[0], &[other.verifying_key()])
        .expect_err("another key");
    assert!(why.contains("not signed"), "{why}");
}

macro_rules! memory {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_consistency_proof_checks_offline() {
                super::a_consistency_proof_checks_offline(crate::attacks::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consecutive_checkpoints() {
                super::consecutive_checkpoints(crate::attacks::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_checkpoint_over_a_rewritten_tail() {
                super::a_checkpoint_over_a_rewritten_tail(crate::attacks::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_restored_older_copy_is_a_rollback() {
                super::a_restored_older_copy_is_a_rollback(crate::attacks::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rewritten_and_resigned_log_is_a_fork() {
                super::a_rewritten_and_resigned_log_is_a_fork(crate::attacks::$backend().await)
                    .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn incremental_verify_checks_the_kept_nodes_it_passes() {
                super::incremental_verify_checks_the_kept_nodes_it_passes(
                    crate::attacks::$backend().await,
                )
                .await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn incremental_verify_reads_only_new_events() {
                super::incremental_verify_reads_only_new_events(crate::attacks::$backend().await)
                    .await;
            }
        }
    };
}

memory!(sqlite);
memory!(postgres);
