//! Assembly of decoded messages into events, without a database.

use bytes::Bytes;
use serde_json::json;

use super::*;
use crate::pgoutput::RelationColumn;

fn col(name: &str, type_oid: u32, key: bool) -> RelationColumn {
    RelationColumn {
        replica_key: key,
        name: name.into(),
        type_oid,
        type_modifier: -1,
    }
}

fn relation(columns: Vec<RelationColumn>, identity: u8) -> PgOutput {
    PgOutput::Relation {
        xid: None,
        relation: Relation {
            oid: 100,
            schema: "public".into(),
            name: "accounts".into(),
            replica_identity: identity,
            columns,
        },
    }
}

fn t(text: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(text.as_bytes()))
}

fn begin(xid: Xid) -> PgOutput {
    PgOutput::Begin {
        final_lsn: Lsn(0x500),
        commit_time: 1_000_000,
        xid,
    }
}

fn commit() -> PgOutput {
    PgOutput::Commit {
        commit_lsn: Lsn(0x500),
        end_lsn: Lsn(0x530),
        commit_time: 1_000_000,
    }
}

fn message(xid: Option<Xid>, prefix: &str, content: &str) -> PgOutput {
    PgOutput::Message {
        xid,
        transactional: true,
        lsn: Lsn(0x400),
        prefix: prefix.into(),
        content: Bytes::copy_from_slice(content.as_bytes()),
    }
}

fn run(assembler: &mut Assembler, messages: Vec<PgOutput>) -> Vec<CommittedTx> {
    messages
        .into_iter()
        .filter_map(|m| assembler.apply(m).expect("assembles"))
        .collect()
}

fn assembler() -> Assembler {
    Assembler::new("sys/db", "db", TypeRegistry::builtin())
}

fn basic_transaction() -> Vec<PgOutput> {
    vec![
        begin(7),
        relation(
            vec![
                col("id", 23, true),
                col("balance", 1700, false),
                col("note", 25, false),
            ],
            b'd',
        ),
        message(
            None,
            CONTEXT_PREFIX,
            r#"{"app_user":"alice","db_user":"app","backend_pid":9}"#,
        ),
        PgOutput::Insert {
            xid: None,
            relation: 100,
            new: vec![t("1"), t("10.50"), t("hello")],
        },
        PgOutput::Update {
            xid: None,
            relation: 100,
            old: None,
            new: vec![t("1"), t("11.00"), ColumnValue::UnchangedToast],
        },
        PgOutput::Delete {
            xid: None,
            relation: 100,
            old: (
                OldKind::Key,
                vec![t("1"), ColumnValue::Null, ColumnValue::Null],
            ),
        },
        commit(),
    ]
}

#[test]
fn a_transaction_becomes_ordered_events_with_actor_and_keys() {
    let txs = run(&mut assembler(), basic_transaction());
    assert_eq!(txs.len(), 1);
    let tx = &txs[0];
    assert_eq!((tx.xid, tx.end_lsn), (7, Lsn(0x530)));
    let ops: Vec<_> = tx
        .events
        .iter()
        .map(|e| e.operation.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(ops, ["INSERT", "UPDATE", "DELETE"]);
    for (i, e) in tx.events.iter().enumerate() {
        assert_eq!(e.tx_seq, Some(i as i64));
        assert_eq!(e.lsn.as_deref(), Some("0/500"));
        assert_eq!(e.xid, Some(7));
        assert_eq!(e.app_user.as_deref(), Some("alice"));
        assert_eq!(e.db_user.as_deref(), Some("app"));
        assert_eq!(
            e.pk,
            Some(json!({"id": "1"}).as_object().expect("object").clone())
        );
        assert_eq!(e.source, Source::Cdc);
        assert_eq!(e.database.as_deref(), Some("db"));
        assert_eq!(e.committed_at.map(|t| t.timestamp()), Some(946_684_801));
    }
    let insert = &tx.events[0];
    assert_eq!(
        serde_json::to_value(&insert.new).expect("json"),
        json!({"id": 1, "balance": "10.50", "note": "hello"})
    );
    let update = &tx.events[1];
    assert_eq!(
        update.partial,
        ["note"],
        "an unchanged TOAST value is never a fake NULL"
    );
    assert!(!update.new.as_ref().expect("new").contains_key("note"));
    let delete = &tx.events[2];
    assert_eq!(
        serde_json::to_value(&delete.old).expect("json"),
        json!({"id": 1})
    );
}

#[test]
fn ids_are_deterministic_across_replays_and_distinct_within() {
    let first = run(&mut assembler(), basic_transaction());
    let second = run(&mut assembler(), basic_transaction());
    let ids = |txs: &[CommittedTx]| txs[0].events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&second));
    let mut unique = ids(&first);
    unique.dedup();
    assert_eq!(unique.len(), 3);
    assert_eq!(first[0].events[0].id.get_version_num(), 7);
    let other_stream = run(
        &mut Assembler::new("sys/other", "db", TypeRegistry::builtin()),
        basic_transaction(),
    );
    assert_ne!(ids(&first), ids(&other_stream));
}

#[test]
fn full_old_image_fills_toast_and_lists_changed_columns() {
    let txs = run(
        &mut assembler(),
        vec![
            begin(8),
            relation(
                vec![
                    col("id", 23, true),
                    col("n", 23, true),
                    col("doc", 25, true),
                ],
                b'f',
            ),
            PgOutput::Update {
                xid: None,
                relation: 100,
                old: Some((OldKind::Full, vec![t("1"), t("5"), t("big")])),
                new: vec![t("1"), t("6"), ColumnValue::UnchangedToast],
            },
            commit(),
        ],
    );
    let e = &txs[0].events[0];
    assert!(e.partial.is_empty());
    assert_eq!(e.new.as_ref().expect("new")["doc"], "big");
    assert_eq!(e.changed, ["n"]);
    assert_eq!(
        e.pk, None,
        "FULL identity without a known primary key has no key"
    );
}

#[test]
fn primary_key_from_catalog_wins_over_full_identity() {
    let mut a = assembler();
    a.set_primary_key(100, Some(vec!["n".into(), "id".into()]));
    let txs = run(
        &mut a,
        vec![
            begin(8),
            relation(vec![col("id", 23, true), col("n", 23, true)], b'f'),
            PgOutput::Insert {
                xid: None,
                relation: 100,
                new: vec![t("1"), t("2")],
            },
            commit(),
        ],
    );
    assert_eq!(
        txs[0].events[0].pk,
        Some(
            json!({"id": "1", "n": "2"})
                .as_object()
                .expect("object")
                .clone()
        )
    );
}

#[test]
fn a_relation_change_mid_transaction_applies_to_later_changes() {
    let txs = run(
        &mut assembler(),
        vec![
            begin(9),
            relation(vec![col("id", 23, true)], b'd'),
            PgOutput::Insert {
                xid: None,
                relation: 100,
                new: vec![t("1")],
            },
            message(
                None,
                DDL_PREFIX,
                r#"{"command_tag":"ALTER TABLE","objects":["public.accounts"],"db_user":"postgres"}"#,
            ),
            relation(vec![col("id", 23, true), col("flag", 16, false)], b'd'),
            PgOutput::Insert {
                xid: None,
                relation: 100,
                new: vec![t("2"), t("t")],
            },
            PgOutput::Truncate {
                xid: None,
                relations: vec![100],
                cascade: false,
                restart_identity: false,
            },
            commit(),
        ],
    );
    let events = &txs[0].events;
    assert_eq!(events.len(), 4);
    assert_eq!(events[1].kind, Kind::Ddl);
    assert_eq!(events[1].objects, ["public.accounts"]);
    assert_eq!(events[2].new.as_ref().expect("new")["flag"], true);
    assert_eq!(events[3].operation.as_deref(), Some("TRUNCATE"));
}

#[test]
fn streamed_transactions_drop_aborted_subtransactions() {
    let insert = |xid, id: &str| PgOutput::Insert {
        xid: Some(xid),
        relation: 100,
        new: vec![t(id)],
    };
    let mut a = assembler();
    let txs = run(
        &mut a,
        vec![
            PgOutput::StreamStart {
                xid: 50,
                first_segment: true,
            },
            PgOutput::Relation {
                xid: Some(50),
                relation: Relation {
                    oid: 100,
                    schema: "public".into(),
                    name: "accounts".into(),
                    replica_identity: b'd',
                    columns: vec![col("id", 23, true)],
                },
            },
            message(Some(50), CONTEXT_PREFIX, r#"{"app_user":"bob"}"#),
            insert(50, "1"),
            insert(51, "2"),
            PgOutput::StreamStop,
            // An ordinary transaction can commit between the chunks.
            begin(60),
            PgOutput::Insert {
                xid: None,
                relation: 100,
                new: vec![t("9")],
            },
            commit(),
            PgOutput::StreamStart {
                xid: 50,
                first_segment: false,
            },
            insert(52, "3"),
            PgOutput::StreamStop,
            PgOutput::StreamAbort {
                xid: 50,
                subxid: 51,
            },
            PgOutput::StreamCommit {
                xid: 50,
                commit_lsn: Lsn(0x900),
                end_lsn: Lsn(0x930),
                commit_time: 5,
            },
        ],
    );
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].xid, 60);
    let keys: Vec<_> = txs[1]
        .events
        .iter()
        .map(|e| e.pk.as_ref().expect("pk")["id"].clone())
        .collect();
    assert_eq!(keys, [json!("1"), json!("3")]);
    assert!(txs[1]
        .events
        .iter()
        .all(|e| e.app_user.as_deref() == Some("bob")));
    assert!(!a.in_transaction());

    // A whole streamed transaction aborted leaves nothing.
    let txs = run(
        &mut a,
        vec![
            PgOutput::StreamStart {
                xid: 70,
                first_segment: true,
            },
            insert(70, "4"),
            PgOutput::StreamStop,
            PgOutput::StreamAbort {
                xid: 70,
                subxid: 70,
            },
        ],
    );
    assert!(txs.is_empty());
    assert!(!a.in_transaction());
}

#[test]
fn protocol_violations_are_errors() {
    let mut a = assembler();
    assert!(a
        .apply(PgOutput::Insert {
            xid: None,
            relation: 100,
            new: vec![]
        })
        .is_err());
    assert!(a.apply(commit()).is_err());
    a.apply(begin(1)).expect("begin");
    assert!(matches!(
        a.apply(PgOutput::Insert {
            xid: None,
            relation: 4242,
            new: vec![]
        }),
        Err(AssembleError::UnknownRelation { oid: 4242 })
    ));
    a.apply(relation(vec![col("id", 23, true)], b'd'))
        .expect("relation");
    assert!(matches!(
        a.apply(PgOutput::Insert {
            xid: None,
            relation: 100,
            new: vec![t("1"), t("2")]
        }),
        Err(AssembleError::ColumnCount { .. })
    ));
}
