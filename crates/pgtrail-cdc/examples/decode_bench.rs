//! Micro-benchmark of the pure path: pgoutput bytes → decoded messages →
//! assembled events, without a database. `cargo run --release --example decode_bench`.

use std::time::Instant;

use bytes::Bytes;
use pgtrail_cdc::assemble::Assembler;
use pgtrail_cdc::pgoutput::Decoder;
use pgtrail_cdc::value::TypeRegistry;

fn message(parts: &[&[u8]]) -> Bytes {
    Bytes::from(parts.concat())
}

fn text(v: &str) -> Vec<u8> {
    let mut out = vec![b't'];
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v.as_bytes());
    out
}

fn main() {
    let rows_per_tx = 1_000u64;
    let transactions = 500u64;
    let relation = message(&[
        b"R",
        &16384u32.to_be_bytes(),
        b"public\0bulk\0d",
        &3u16.to_be_bytes(),
        b"\x01id\0",
        &23u32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        b"\x00n\0",
        &23u32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
        b"\x00note\0",
        &25u32.to_be_bytes(),
        &(-1i32).to_be_bytes(),
    ]);
    let mut decoder = Decoder::new();
    let mut assembler = Assembler::new("bench/db", "db", TypeRegistry::builtin());
    assembler
        .apply(decoder.decode(&relation).expect("relation"))
        .expect("relation applies");
    let inserts: Vec<Bytes> = (0..rows_per_tx)
        .map(|i| {
            message(&[
                b"I",
                &16384u32.to_be_bytes(),
                b"N",
                &3u16.to_be_bytes(),
                &text(&i.to_string()),
                &text("0"),
                &text("c4ca4238a0b923820dcc509a6f75849b"),
            ])
        })
        .collect();
    let started = Instant::now();
    let mut events = 0usize;
    let mut cloned = std::time::Duration::ZERO;
    for t in 0..transactions {
        let begin = message(&[
            b"B",
            &(t * 100).to_be_bytes(),
            &0i64.to_be_bytes(),
            &(t as u32).to_be_bytes(),
        ]);
        assembler
            .apply(decoder.decode(&begin).expect("begin"))
            .expect("begin applies");
        for insert in &inserts {
            assembler
                .apply(decoder.decode(insert).expect("insert"))
                .expect("insert applies");
        }
        let commit = message(&[
            b"C",
            b"\0",
            &(t * 100).to_be_bytes(),
            &(t * 100 + 8).to_be_bytes(),
            &0i64.to_be_bytes(),
        ]);
        let tx = assembler
            .apply(decoder.decode(&commit).expect("commit"))
            .expect("commit applies")
            .expect("a transaction");
        let tx_events = tx.into_events().expect("in memory");
        let clone_started = Instant::now();
        let copy = tx_events.clone();
        cloned += clone_started.elapsed();
        events += copy.len();
    }
    let elapsed = started.elapsed();
    println!(
        "{events} events: {:.0} events/s decoded and assembled ({:.2} µs/event, of which clone {:.2} µs)",
        events as f64 / (elapsed - cloned).as_secs_f64(),
        (elapsed - cloned).as_secs_f64() * 1e6 / events as f64,
        cloned.as_secs_f64() * 1e6 / events as f64
    );
}
