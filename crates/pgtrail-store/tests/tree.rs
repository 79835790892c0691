//! The Merkle tree's kept interior nodes, on both stores: proofs made from
//! them are the proofs the events give (`proof::subtree_from_events`, the
//! slow path), they verify against the signed root, and someone with the
//! store file (SQLite) or the `pgtrail` schema's owner (Postgres) who
//! rewrites, inserts or deletes nodes is named by `verify` and never gets
//! a proof that verifies out of it.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use pgtrail_core::{Event, Kind, Source};
use pgtrail_store::checkpoint::TrustedKey;
use pgtrail_store::merkle::{self, Hash, Subtree};
use pgtrail_store::signing::{sign_head, Signed, Signer};
use pgtrail_store::{
    proof, retention, verify_with, Checkpoint, KeyPair, ProblemKind, VerifyOptions, VerifyReport,
};

use crate::attacks::details;

/// The attacks' target (`crate::attacks::Target`: either store and the
/// attacker's raw SQL on it), with what these tests add: appends in bulk,
/// signing without a witness file, the kept nodes.
pub struct Target(crate::attacks::Target);

impl std::ops::Deref for Target {
    type Target = crate::attacks::Target;
    fn deref(&self) -> &crate::attacks::Target {
        &self.0
    }
}

pub async fn sqlite() -> Target {
    Target(crate::attacks::sqlite().await)
}

pub async fn postgres() -> Target {
    Target(crate::attacks::postgres().await)
}

impl Target {
    /// The store opened again (migrations run).
    async fn reopen(&mut self) {
        self.0.reopen().await;
    }

    async fn append_at(&self, n: usize, at: DateTime<Utc>) {
        let mut left = n;
        while left > 0 {
            let batch = left.min(10_000);
            let events: Vec<Event> = (0..batch).map(|_| event(at)).collect();
            self.store.append(&events).await.expect("append");
            left -= batch;
        }
    }

    async fn append(&self, n: usize) {
        self.append_at(n, Utc::now()).await;
    }

    /// Signs the head; the checkpoint and its root.
    async fn sign(&self, key: &KeyPair) -> (Checkpoint, Hash) {
        let signer = Signer {
            key,
            trusted: &[],
            witness: None,
        };
        match sign_head(&*self.store, &signer, false).await.expect("sign") {
            Signed::New(checkpoint) => {
                let root = checkpoint
                    .parsed_note()
                    .expect("a note")
                    .expect("parses")
                    .tree
                    .root;
                (checkpoint, root)
            }
            other => panic!("nothing signed: {other:?}"),
        }
    }

    async fn verify(&self, key: &KeyPair) -> VerifyReport {
        let options = VerifyOptions {
            keys: vec![TrustedKey::current(key.verifying_key())],
            ..VerifyOptions::default()
        };
        verify_with(&*self.store, &options).await.expect("verify")
    }

    async fn kept_nodes(&self) -> usize {
        self.store
            .tree_nodes((i64::MIN, i64::MIN), usize::MAX)
            .await
            .expect("nodes")
            .len()
    }

    /// The event's leaf hash.
    async fn leaf(&self, index: u64) -> Hash {
        let event = self.store.scan(index as i64, 1).await.expect("scan");
        merkle::event_leaf(event[0].hash.as_deref().expect("sealed")).expect("hash")
    }
}

fn event(at: DateTime<Utc>) -> Event {
    let mut e = Event::at(Source::Proxy, Kind::Statement, at);
    e.db_user = Some("app".into());
    e.table = Some("accounts".into());
    e.operation = Some("UPDATE".into());
    e.command_tag = Some("UPDATE 1".into());
    e
}

/// Interior nodes of heights 8, 16, ... in a tree of `n` leaves.
fn nodes_in(n: u64) -> usize {
    (1..8).map(|k| (n >> (8 * k)) as usize).sum()
}

/// Checks, for the events `indexes` of a tree of `size`: every subtree of
/// their proofs from the store is the one the events give (slow path), and
/// each proof verifies against `root`.
async fn proofs_agree(t: &Target, indexes: &[u64], size: u64, root: &Hash) {
    let mut subtrees = BTreeSet::new();
    for &index in indexes {
        for (start, end) in merkle::inclusion_ranges(index, size).expect("ranges") {
            subtrees.extend(Subtree::cover(start, end));
        }
    }
    let subtrees: Vec<Subtree> = subtrees.into_iter().collect();
    let fast = t.store.subtree_hashes(&subtrees).await.expect("subtrees");
    for (tree, hash) in subtrees.iter().zip(&fast) {
        let slow = proof::subtree_from_events(&*t.store, *tree)
            .await
            .expect("slow path");
        assert_eq!(*hash, slow, "{tree:?} of a tree of {size}");
    }
    for &index in indexes {
        let path = proof::inclusion(&*t.store, index, size)
            .await
            .expect("proof");
        let leaf = t.leaf(index).await;
        merkle::verify_inclusion(index, size, &leaf, &path, root)
            .unwrap_or_else(|e| panic!("event {} of {size}: {e}", index + 1));
    }
}

async fn proofs_from_nodes_are_the_events_proofs(t: Target) {
    let key = KeyPair::generate().expect("key");
    let mut size = 0u64;
    for target in [1u64, 255, 256, 257, 1_000] {
        t.append((target - size) as usize).await;
        size = target;
        let (_, root) = t.sign(&key).await;
        assert_eq!(t.kept_nodes().await, nodes_in(size), "size {size}");
        let all: Vec<u64> = (0..size).collect();
        proofs_agree(&t, &all, size, &root).await;
    }
    // Past the newest checkpoint the nodes are not kept yet: the events
    // under them are read instead, with the same answers.
    t.append(100).await;
    let head = t.store.head().await.expect("head").expect("events").seq as u64;
    assert_eq!(t.kept_nodes().await, nodes_in(1_000));
    let mut frontier = merkle::Frontier::new();
    for index in 0..head {
        frontier.push(t.leaf(index).await);
    }
    let every_ninth: Vec<u64> = (0..head).step_by(9).chain([head - 1]).collect();
    proofs_agree(&t, &every_ninth, head, &frontier.root()).await;
    // Consistency proofs between the sizes signed.
    let roots = {
        let mut roots = std::collections::HashMap::new();
        let mut f = merkle::Frontier::new();
        for index in 0..head {
            f.push(t.leaf(index).await);
            roots.insert(f.size(), f.root());
        }
        roots
    };
    for (old, new) in [
        (1, 257),
        (255, 1_000),
        (256, 1_100),
        (1_000, 1_100),
        (257, 258),
    ] {
        let path = proof::consistency(&*t.store, old, new)
            .await
            .expect("consistency");
        merkle::verify_consistency(old, new, &roots[&old], &roots[&new], &path)
            .unwrap_or_else(|e| panic!("{old} to {new}: {e}"));
    }
    assert!(proof::inclusion(&*t.store, 0, head + 1).await.is_err());
    let report = t.verify(&key).await;
    assert!(report.ok(), "{}", details(&report));
}

async fn a_large_store_keeps_a_node_every_256_events(t: Target) {
    let key = KeyPair::generate().expect("key");
    let size = 70_000u64;
    t.append(size as usize).await;
    let (_, root) = t.sign(&key).await;
    assert_eq!(t.kept_nodes().await, nodes_in(size));
    let mut sample: Vec<u64> = (0..size).step_by(1_009).collect();
    sample.extend([255, 256, 257, 65_535, 65_536, size - 1]);
    proofs_agree(&t, &sample, size, &root).await;
}

async fn a_rewritten_node_is_named_and_forges_nothing(t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(1_000).await;
    let (_, root) = t.sign(&key).await;
    // The attacker rewrites the node over events 257 to 512, and plants
    // one past the chain's end.
    t.tamper(
        "update tree_nodes set hash = zeroblob(32) where height = 8 and idx = 1;
         insert into tree_nodes values (8, 9, zeroblob(32));",
        "update pgtrail.tree_nodes set hash = decode(repeat('00', 32), 'hex') where height = 8 and idx = 1;
         insert into pgtrail.tree_nodes values (8, 9, decode(repeat('00', 32), 'hex'));",
    )
    .await;
    let report = t.verify(&key).await;
    let named: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::TreeNode)
        .collect();
    assert_eq!(named.len(), 2, "{}", details(&report));
    assert!(
        named[0].detail.contains("height 8, index 1")
            && named[0].detail.contains("events 257 to 512")
            && named[0].seq == 512,
        "{}",
        details(&report)
    );
    assert!(
        named[1].detail.contains("height 8, index 9") && named[1].detail.contains("past"),
        "{}",
        details(&report)
    );
    // A proof that goes through the node does not verify; one that does
    // not still does.
    let path = proof::inclusion(&*t.store, 10, 1_000).await.expect("proof");
    assert!(merkle::verify_inclusion(10, 1_000, &t.leaf(10).await, &path, &root).is_err());
    let path = proof::inclusion(&*t.store, 300, 1_000)
        .await
        .expect("proof");
    merkle::verify_inclusion(300, 1_000, &t.leaf(300).await, &path, &root).expect("verifies");
}

async fn deleted_nodes_leave_proofs_right(t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(1_000).await;
    let (_, root) = t.sign(&key).await;
    t.tamper(
        "delete from tree_nodes where idx % 2 = 0;",
        "delete from pgtrail.tree_nodes where idx % 2 = 0;",
    )
    .await;
    let all: Vec<u64> = (0..1_000).collect();
    proofs_agree(&t, &all, 1_000, &root).await;
    // Missing nodes are not a problem: they are a cache.
    let report = t.verify(&key).await;
    assert!(report.ok(), "{}", details(&report));
}

async fn a_prune_inside_a_block_keeps_proofs(t: Target) {
    let key = KeyPair::generate().expect("key");
    let old = Utc::now() - Duration::days(60);
    t.append_at(300, old).await;
    t.append(100).await;
    t.sign(&key).await;
    let outcome = retention::apply(
        &*t.store,
        Duration::days(30),
        Utc::now(),
        None,
        Some(&key),
        &[],
        None,
    )
    .await
    .expect("retention");
    assert_eq!(outcome.through_seq, Some(300), "inside the second block");
    t.append(700).await;
    let (_, root) = t.sign(&key).await;
    let kept: Vec<u64> = (300..1_100).collect();
    for index in kept {
        let path = proof::inclusion(&*t.store, index, 1_100)
            .await
            .expect("proof");
        merkle::verify_inclusion(index, 1_100, &t.leaf(index).await, &path, &root)
            .unwrap_or_else(|e| panic!("event {}: {e}", index + 1));
    }
    // The block the prune cut through is kept: made by the sign after it.
    assert_eq!(t.kept_nodes().await, nodes_in(1_100));
    let report = t.verify(&key).await;
    assert!(report.ok(), "{}", details(&report));
    // Events the prune removed have no proof.
    assert!(proof::inclusion(&*t.store, 5, 1_100).await.is_err());
}

async fn an_upgraded_store_fills_its_nodes(mut t: Target) {
    let key = KeyPair::generate().expect("key");
    t.append(3_000).await;
    let (_, root) = t.sign(&key).await;
    // As a store from before the nodes: no table, an older schema.
    t.tamper(
        "drop index events_operation; drop table seq_hours; drop table cosignatures; drop table tree_nodes; \
         drop index events_table; \
         drop index events_client_addr; drop index events_database; \
         drop index events_backend_pid; drop index events_xid; \
         alter table events drop column client_addr; alter table events drop column database; \
         alter table events drop column backend_pid; alter table events drop column xid; \
         create index events_backend_pid on events ((json_extract(body, '$.backend_pid'))); \
         create index events_xid on events ((json_extract(body, '$.xid'))); \
         delete from pgtrail_migrations where version >= 12; pragma user_version = 11;",
        "drop table pgtrail.facet_hours, pgtrail.seq_hours, pgtrail.events_objects; \
         alter table pgtrail.events drop column client_addr; \
         drop table pgtrail.column_starts; \
         drop table pgtrail.cosignatures; \
         drop table pgtrail.tree_nodes; drop index pgtrail.events_table_seq_idx, \
         pgtrail.events_app_user_seq_idx, pgtrail.events_db_user_seq_idx; \
         delete from pgtrail.schema_migrations where version >= 9;",
    )
    .await;
    assert_eq!(t.kept_nodes().await, 0);
    // Proofs work without the table (a store read at its own version).
    proofs_agree(&t, &[0, 1_500, 2_999], 3_000, &root).await;
    t.reopen().await;
    assert_eq!(t.kept_nodes().await, nodes_in(3_000));
    let all: Vec<u64> = (0..3_000).step_by(7).collect();
    proofs_agree(&t, &all, 3_000, &root).await;
    let report = t.verify(&key).await;
    assert!(report.ok(), "{}", details(&report));
}

macro_rules! tree {
    ($backend:ident) => {
        mod $backend {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn proofs_from_nodes_are_the_events_proofs() {
                super::proofs_from_nodes_are_the_events_proofs(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_large_store_keeps_a_node_every_256_events() {
                super::a_large_store_keeps_a_node_every_256_events(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_rewritten_node_is_named_and_forges_nothing() {
                super::a_rewritten_node_is_named_and_forges_nothing(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn deleted_nodes_leave_proofs_right() {
                super::deleted_nodes_leave_proofs_right(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_prune_inside_a_block_keeps_proofs() {
                super::a_prune_inside_a_block_keeps_proofs(super::$backend().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_upgraded_store_fills_its_nodes() {
                super::an_upgraded_store_fills_its_nodes(super::$backend().await).await;
            }
        }
    };
}

tree!(sqlite);
tree!(postgres);
