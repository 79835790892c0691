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

/// A committed transaction with all its events taken.
struct Done {
    xid: Xid,
    end_lsn: Lsn,
    events: Vec<Event>,
}

fn run(assembler: &mut Assembler, messages: Vec<PgOutput>) -> Vec<Done> {
    messages
        .into_iter()
        .filter_map(|m| assembler.apply(m).expect("assembles"))
        .map(|tx| Done {
            xid: tx.xid,
            end_lsn: tx.end_lsn,
            events: tx.into_events().expect("events"),
        })
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
    // numeric as a JSON number with exactly its digits.
    assert_eq!(
        serde_json::to_string(&insert.new).expect("json"),
        r#"{"balance":10.50,"id":1,"note":"hello"}"#
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
    let ids = |txs: &[Done]| txs[0].events.iter().map(|e| e.id).collect::<Vec<_>>();
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

fn spilling(dir: &std::path::Path, memory_limit: usize) -> Assembler {
    assembler().with_spill(SpillDir::open(dir).expect("spill dir"), memory_limit)
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).expect("lists").count()
}

/// A transaction of `rows` inserts with a changing actor, wide enough to spill.
fn large_transaction(rows: usize) -> Vec<PgOutput> {
    let mut messages = vec![
        begin(7),
        relation(
            vec![
                col("id", 23, true),
                col("amount", 1700, false),
                col("note", 25, false),
            ],
            b'd',
        ),
    ];
    for i in 0..rows {
        if i % 10 == 0 {
            messages.push(message(
                None,
                CONTEXT_PREFIX,
                &format!(r#"{{"app_user":"user-{i}"}}"#),
            ));
        }
        let note = if i % 3 == 0 {
            ColumnValue::Null
        } else {
            t(&"x".repeat(100 + i))
        };
        messages.push(PgOutput::Insert {
            xid: None,
            relation: 100,
            new: vec![
                t(&i.to_string()),
                t("12345678901234567890.0000000001"),
                note,
            ],
        });
    }
    messages.push(commit());
    messages
}

/// Events without `captured_at`, which is the decoding time, and without
/// their nonce, which is random per event made.
fn comparable(mut events: Vec<Event>) -> Vec<Event> {
    for e in &mut events {
        e.captured_at = chrono::DateTime::UNIX_EPOCH;
        e.nonce = None;
    }
    events
}

#[test]
fn a_spilled_transaction_yields_what_memory_would_in_chunks() {
    let expected = comparable(
        run(&mut assembler(), large_transaction(300))
            .remove(0)
            .events,
    );
    assert_eq!(expected.len(), 300);

    let temp = tempfile::tempdir().expect("temp dir");
    let mut a = spilling(temp.path(), 8 * 1024);
    let mut committed = None;
    let mut peak = 0;
    for m in large_transaction(300) {
        if let Some(tx) = a.apply(m).expect("assembles") {
            committed = Some(tx);
        }
        peak = peak.max(a.held_bytes());
        assert!(a.held_bytes() <= 8 * 1024, "held {}", a.held_bytes());
    }
    assert!(peak > 0);
    assert_eq!(a.held_bytes(), 0);
    let mut tx = committed.expect("committed");
    assert!(tx.was_spilled());
    assert_eq!(files_in(temp.path()), 1, "spilled to one file");

    // Taken in chunks of at most 7 events or about 2 kB.
    let mut events = Vec::new();
    let mut chunks = 0;
    while !tx.is_done() {
        let before = events.len();
        tx.take_events(&mut events, 7, 2048).expect("reads back");
        assert!((1..=7).contains(&(events.len() - before)));
        chunks += 1;
    }
    assert!(chunks > 300 / 7);
    assert_eq!(comparable(events), expected);
    assert_eq!(files_in(temp.path()), 0, "read back: removed");
}

#[test]
fn spilled_items_of_aborted_subtransactions_and_transactions_are_dropped() {
    let temp = tempfile::tempdir().expect("temp dir");
    // Every item spills at once.
    let mut a = spilling(temp.path(), 1);
    let insert = |xid, id: &str| PgOutput::Insert {
        xid: Some(xid),
        relation: 100,
        new: vec![t(id)],
    };
    let stream = |xid, messages: Vec<PgOutput>| {
        let mut all = vec![PgOutput::StreamStart {
            xid,
            first_segment: false,
        }];
        all.extend(messages);
        all.push(PgOutput::StreamStop);
        all
    };
    let mut messages = stream(
        50,
        vec![
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
            message(Some(51), CONTEXT_PREFIX, r#"{"app_user":"mallory"}"#),
            insert(51, "2"),
            insert(52, "3"),
        ],
    );
    messages.extend(stream(70, vec![insert(70, "7")]));
    messages.push(PgOutput::StreamAbort {
        xid: 50,
        subxid: 51,
    });
    messages.extend(stream(50, vec![insert(50, "4")]));
    assert_eq!(run(&mut a, messages).len(), 0);
    assert_eq!(files_in(temp.path()), 2, "one file per open transaction");

    // The whole of 70 aborts: its file goes.
    run(
        &mut a,
        vec![PgOutput::StreamAbort {
            xid: 70,
            subxid: 70,
        }],
    );
    assert_eq!(files_in(temp.path()), 1);

    let txs = run(
        &mut a,
        vec![PgOutput::StreamCommit {
            xid: 50,
            commit_lsn: Lsn(0x900),
            end_lsn: Lsn(0x930),
            commit_time: 5,
        }],
    );
    let keys: Vec<_> = txs[0]
        .events
        .iter()
        .map(|e| e.pk.as_ref().expect("pk")["id"].clone())
        .collect();
    assert_eq!(keys, [json!("1"), json!("3"), json!("4")]);
    // The aborted subtransaction's actor is gone with it.
    assert!(txs[0]
        .events
        .iter()
        .all(|e| e.app_user.as_deref() == Some("bob")));
    assert_eq!(txs[0].events[2].tx_seq, Some(2));
    assert_eq!(files_in(temp.path()), 0);
    assert_eq!(a.held_bytes(), 0);
    assert!(!a.in_transaction());
}

#[test]
fn a_spill_directory_gone_is_an_error_not_a_dropped_change() {
    let temp = tempfile::tempdir().expect("temp dir");
    let path = temp.path().join("spill");
    let mut a = spilling(&path, 1);
    std::fs::remove_dir(&path).expect("removes");
    a.apply(begin(1)).expect("begin");
    a.apply(relation(vec![col("id", 23, true)], b'd'))
        .expect("relation");
    let error = a
        .apply(PgOutput::Insert {
            xid: None,
            relation: 100,
            new: vec![t("1")],
        })
        .expect_err("cannot spill");
    assert!(matches!(error, AssembleError::Spill(_)), "{error:?}");
    assert!(error.to_string().contains("spill_dir"), "{error}");
}
