//! Malformed pgoutput never panics capture: property tests that feed
//! arbitrary bytes and mutated valid messages (truncated at every length,
//! bytes flipped, lengths and counts inflated) to the [`Decoder`], whatever
//! decodes on to the [`Assembler`] (so changes to unknown relations and
//! tuples whose width disagrees with the relation are covered), and random
//! and mutated text to [`crate::value::to_json`] for every kind of column.
//!
//! A seeded generator, not a property-testing crate: a failure names its seed
//! and replays exactly. Case counts keep the module well under a second.

use pgtrail_testkit::fuzz::{cases, mutate, rng};

use super::tests::Msg;
use super::*;
use crate::assemble::Assembler;
use crate::value::{to_json, TypeRegistry};

const TABLE: u32 = 16384;

/// A valid transaction over one table with every column kind, followed by a
/// valid streamed transaction: the messages a mutation starts from.
fn corpus() -> Vec<Vec<u8>> {
    let relation = |m: Msg| {
        m.u32(TABLE)
            .s("public")
            .s("accounts")
            .u8(b'd')
            .u16(4)
            .u8(1)
            .s("id")
            .u32(23)
            .u32(u32::MAX)
            .u8(0)
            .s("balance")
            .u32(1700)
            .u32(0x000A_0006)
            .u8(0)
            .s("tags")
            .u32(1009)
            .u32(u32::MAX)
            .u8(0)
            .s("doc")
            .u32(3802)
            .u32(u32::MAX)
    };
    let row = |m: Msg, id: &str| {
        m.u16(4)
            .text(id)
            .text("12.50")
            .text(r#"{a,"b c",NULL}"#)
            .text(r#"{"k":[1,2]}"#)
    };
    let xid = 731;
    vec![
        Msg::tag(b'B').u64(0x10).u64(99).u32(xid).0,
        Msg::tag(b'O').u64(5).s("node_a").0,
        relation(Msg::tag(b'R')).0,
        Msg::tag(b'Y').u32(70000).s("public").s("mood").0,
        row(Msg::tag(b'I').u32(TABLE).u8(b'N'), "1").0,
        row(row(Msg::tag(b'U').u32(TABLE).u8(b'O'), "1").u8(b'N'), "2").0,
        row(Msg::tag(b'U').u32(TABLE).u8(b'N'), "2").0,
        Msg::tag(b'U')
            .u32(TABLE)
            .u8(b'K')
            .u16(4)
            .text("2")
            .u8(b'n')
            .u8(b'n')
            .u8(b'n')
            .u8(b'N')
            .u16(4)
            .text("3")
            .u8(b'u')
            .u8(b'n')
            .u8(b'n')
            .0,
        row(Msg::tag(b'D').u32(TABLE).u8(b'O'), "3").0,
        Msg::tag(b'T').u32(1).u8(3).u32(TABLE).0,
        Msg::tag(b'M')
            .u8(1)
            .u64(0x20)
            .s("app")
            .u32(2)
            .u8(b'h')
            .u8(b'i')
            .0,
        Msg::tag(b'C').u8(0).u64(0x10).u64(0x38).u64(99).0,
        Msg::tag(b'S').u32(900).u8(1).0,
        relation(Msg::tag(b'R').u32(900)).0,
        row(Msg::tag(b'I').u32(900).u32(TABLE).u8(b'N'), "9").0,
        Msg::tag(b'E').0,
        Msg::tag(b'A').u32(900).u32(901).0,
        Msg::tag(b'c').u32(900).u8(0).u64(0x40).u64(0x48).u64(120).0,
    ]
}

/// Decodes `payloads` in order and applies what decodes, as the consumer
/// does; every error must say something. Returns how many decoded.
fn feed(payloads: &[Vec<u8>]) -> usize {
    let mut decoder = Decoder::new();
    let mut assembler = Assembler::new("fuzz", "db", TypeRegistry::builtin());
    let mut decoded = 0;
    for payload in payloads {
        match decoder.decode(&Bytes::copy_from_slice(payload)) {
            Ok(message) => {
                decoded += 1;
                match assembler.apply(message) {
                    Ok(Some(committed)) => {
                        if let Err(err) = committed.into_events() {
                            assert!(!err.to_string().is_empty());
                        }
                    }
                    Ok(None) => {}
                    Err(err) => assert!(!err.to_string().is_empty()),
                }
            }
            Err(err) => assert!(!err.to_string().is_empty()),
        }
    }
    decoded
}

#[test]
fn the_corpus_is_valid() {
    let corpus = corpus();
    assert_eq!(feed(&corpus), corpus.len(), "every fixture decodes");
}

#[test]
fn every_truncation_of_every_message_fails_cleanly() {
    for valid in corpus() {
        for cut in 0..valid.len() {
            let mut in_stream = Decoder::new();
            in_stream.in_stream = true;
            for decoder in [&mut Decoder::new(), &mut in_stream] {
                if let Err(err) = decoder.decode(&Bytes::copy_from_slice(&valid[..cut])) {
                    assert!(!err.to_string().is_empty());
                }
            }
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic_the_decoder_or_assembler() {
    let mut rng = rng(0x5eed_0011);
    for _ in 0..cases(300) {
        let stream: Vec<Vec<u8>> = (0..8).map(|_| rng.bytes(48)).collect();
        feed(&stream);
    }
}

#[test]
fn mutated_transactions_decode_and_assemble_or_fail_cleanly() {
    let corpus = corpus();
    let mut rng = rng(0x5eed_0012);
    for _ in 0..cases(1000) {
        // The valid stream with a few messages mutated, dropped or repeated,
        // so order errors (Commit without Begin, changes to an unknown
        // relation, rows of the wrong width) reach the assembler too.
        let mut stream = Vec::with_capacity(corpus.len());
        for valid in &corpus {
            match rng.below(10) {
                0 | 1 => stream.push(mutate(&mut rng, valid)),
                2 => {}
                3 => {
                    stream.push(valid.clone());
                    stream.push(valid.clone());
                }
                _ => stream.push(valid.clone()),
            }
        }
        feed(&stream);
    }
}

#[test]
fn tuples_that_disagree_with_the_relation_are_errors() {
    let corpus = corpus();
    let narrow = Msg::tag(b'I').u32(TABLE).u8(b'N').u16(1).text("1").0;
    let wide = Msg::tag(b'I')
        .u32(TABLE)
        .u8(b'N')
        .u16(5)
        .text("1")
        .text("2")
        .text("{}")
        .text("{}")
        .text("x")
        .0;
    for tuple in [narrow, wide] {
        let mut decoder = Decoder::new();
        let mut assembler = Assembler::new("fuzz", "db", TypeRegistry::builtin());
        for payload in [&corpus[0], &corpus[2]] {
            let message = decoder.decode(&Bytes::copy_from_slice(payload));
            assembler
                .apply(message.expect("valid"))
                .expect("Begin and Relation apply");
        }
        let insert = decoder
            .decode(&Bytes::from(tuple))
            .expect("the bytes are well formed");
        let err = assembler.apply(insert).expect_err("width mismatch");
        assert!(err.to_string().contains("columns"), "{err}");
    }
}

#[test]
fn changes_to_an_unknown_relation_are_errors() {
    let corpus = corpus();
    for change in [&corpus[4], &corpus[5], &corpus[8], &corpus[9]] {
        let mut decoder = Decoder::new();
        let mut assembler = Assembler::new("fuzz", "db", TypeRegistry::builtin());
        let begin = decoder.decode(&Bytes::copy_from_slice(&corpus[0]));
        assembler
            .apply(begin.expect("valid"))
            .expect("Begin applies");
        let message = decoder.decode(&Bytes::copy_from_slice(change));
        let err = assembler
            .apply(message.expect("valid"))
            .expect_err("no Relation yet");
        assert!(err.to_string().contains("16384"), "{err}");
    }
}

/// Column types whose text conversion has structure to get wrong.
const TYPES: [u32; 16] = [
    16, 20, 23, 700, 701, 1700, 114, 3802, 1007, 1009, 1231, 199, 3807, 1114, 1184, 17,
];

const SAMPLES: [&str; 14] = [
    "t",
    "-9223372036854775808",
    "1.5e308",
    "-Infinity",
    "123456789012345678901234567890.123456789",
    r#"{"a":[1,{"b":null}],"c":"\u00e9"}"#,
    r#"{1,NULL,"x \"y\"",{2,3}}"#,
    "[0:1]={{1,2},{3,4}}",
    r#"{"\\x00ff",NULL}"#,
    "2024-02-29 23:59:59.999999+00",
    "infinity",
    "[1,10)",
    "\\xdeadbeef",
    "{}",
];

#[test]
fn arbitrary_and_mutated_text_values_convert_without_panicking() {
    let types = TypeRegistry::builtin();
    let mut rng = rng(0x5eed_0013);
    for _ in 0..cases(3000) {
        let bytes = if rng.below(3) == 0 {
            rng.bytes(24)
        } else {
            let sample = SAMPLES[rng.below(SAMPLES.len())];
            mutate(&mut rng, sample.as_bytes())
        };
        let text = String::from_utf8_lossy(&bytes);
        let _ = to_json(types.kind(TYPES[rng.below(TYPES.len())]), &text);
    }
}

#[test]
fn deeply_nested_values_do_not_overflow_the_stack() {
    let types = TypeRegistry::builtin();
    let int_array = types.kind(1007);
    let six = format!("{}1{}", "{".repeat(6), "}".repeat(6));
    assert_eq!(
        to_json(int_array, &six).to_string(),
        "[[[[[[1]]]]]]",
        "Postgres's deepest array converts"
    );
    let deeper = format!("{}1{}", "{".repeat(7), "}".repeat(7));
    assert_eq!(
        to_json(int_array, &deeper),
        serde_json::Value::String(deeper)
    );
    for depth in [100, 100_000] {
        let array = format!("{}1{}", "{".repeat(depth), "}".repeat(depth));
        let json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        for oid in TYPES {
            // Values are kept at any depth now: dropped as capture drops them.
            pgtrail_core::json::drop_deep(to_json(types.kind(oid), &array));
            pgtrail_core::json::drop_deep(to_json(types.kind(oid), &json));
        }
    }
}

#[test]
fn extreme_commit_times_do_not_overflow() {
    let corpus = corpus();
    for commit_time in [i64::MAX, i64::MIN] {
        let mut decoder = Decoder::new();
        let mut assembler = Assembler::new("fuzz", "db", TypeRegistry::builtin());
        let commit = Msg::tag(b'C')
            .u8(0)
            .u64(0x10)
            .u64(0x38)
            .u64(u64::from_be_bytes(commit_time.to_be_bytes()))
            .0;
        for payload in [&corpus[0], &corpus[2], &corpus[4], &commit] {
            let message = decoder.decode(&Bytes::copy_from_slice(payload));
            if let Some(committed) = assembler.apply(message.expect("valid")).expect("applies") {
                let events = committed.into_events().expect("events");
                assert_eq!(
                    events.len(),
                    1,
                    "the change is kept whatever the clock said"
                );
            }
        }
    }
}

#[test]
fn negative_counts_are_errors_not_empty_lists() {
    // Read as zero items, a Truncate would lose its tables and a row its values.
    let cases = [
        Msg::tag(b'T').u32(u32::MAX).u8(0).u32(TABLE).0,
        Msg::tag(b'I').u32(TABLE).u8(b'N').u16(0xffff).0,
        Msg::tag(b'R')
            .u32(TABLE)
            .s("public")
            .s("t")
            .u8(b'd')
            .u16(0x8000)
            .0,
    ];
    for payload in cases {
        let err = Decoder::new()
            .decode(&Bytes::from(payload))
            .expect_err("negative count");
        assert!(err.to_string().contains("negative"), "{err}");
    }
}
