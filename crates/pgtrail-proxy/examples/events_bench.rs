//! What `SessionRecorder::statement` costs per record when its text is
//! already analyzed (the common case: applications repeat their texts), next
//! to the analyzer's cache lookup alone, in rounds alternating the two
//! sides; median and range. Run by `bench/classify/run`.
//!
//! Usage: events_bench [--rounds R]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use pgtrail_core::config::{IdentityConfig, ProxyConfig};
use pgtrail_proxy::{Outcome, Protocol, Recorder, SessionContext, StatementRecord};
use pgtrail_sql::{Analyzer, TextPolicy};
use pgtrail_wire::backend::TransactionStatus;
use pgtrail_wire::frontend::Parameters;

fn record(protocol: Protocol, sql: &str, tag: &str, params: &[&[u8]]) -> StatementRecord {
    let now = SystemTime::now();
    StatementRecord {
        protocol,
        sql: Some(Arc::from(sql)),
        statement: None,
        portal: None,
        params: Parameters {
            formats: Vec::new(),
            values: params
                .iter()
                .map(|p| Some(Bytes::copy_from_slice(p)))
                .collect(),
        },
        command_tag: Some(tag.into()),
        rows: Some(1),
        rows_returned: 1,
        copy_bytes: 0,
        executions: 1,
        outcome: Outcome::Completed,
        started_at: now,
        finished_at: now + Duration::from_micros(80),
        transaction_status: Some(TransactionStatus::Idle),
        backend_pid: Some(4242),
    }
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let mut rounds = 7u32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(rounds),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let identity = IdentityConfig::default();
    let recorder = match Recorder::new(&ProxyConfig::default(), &identity) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let context = Arc::new(SessionContext {
        id: 1,
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
        user: Some("app".into()),
        database: Some("shop".into()),
        application_name: Some("bench".into()),
        backend_pid: Some(4242),
        tls: false,
    });
    let mut session = recorder.session(context);
    let cases = [
        (
            "pgbench select (extended)",
            record(
                Protocol::Extended,
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                "SELECT 1",
                &[b"42"],
            ),
        ),
        (
            "pgbench update (extended)",
            record(
                Protocol::Extended,
                "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
                "UPDATE 1",
                &[b"5", b"42"],
            ),
        ),
        (
            "orm join (simple)",
            record(
                Protocol::Simple { part: 0 },
                "SELECT u.id, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.tenant_id = 7",
                "SELECT 1",
                &[],
            ),
        ),
    ];
    let mut analyzer = Analyzer::new(1024, &identity, TextPolicy::Secrets);
    for (_, r) in &cases {
        let sql = r.sql.as_deref().unwrap_or("");
        session.prepare(sql);
        analyzer.analyze(sql);
    }
    println!(
        "{:<28} {:>24}  {:>24}",
        "record (cache hit)", "statement() median (range)", "analyzer lookup alone"
    );
    for (name, r) in &cases {
        let sql = r.sql.as_deref().unwrap_or("");
        let mut mapped = Vec::new();
        let mut lookup = Vec::new();
        for round in 0..rounds {
            let mut map = || {
                per_call(20_000, || {
                    black_box(session.statement(black_box(r)));
                })
            };
            let mut look = || {
                per_call(20_000, || {
                    black_box(analyzer.analyze(black_box(sql)));
                })
            };
            if round % 2 == 0 {
                mapped.push(map());
                lookup.push(look());
            } else {
                lookup.push(look());
                mapped.push(map());
            }
        }
        mapped.sort();
        lookup.sort();
        println!(
            "{name:<28} {:>9.2?} ({:.2?}–{:.2?})  {:>9.0?} ({:.0?}–{:.0?})",
            mapped[mapped.len() / 2],
            mapped[0],
            mapped[mapped.len() - 1],
            lookup[lookup.len() / 2],
            lookup[0],
            lookup[lookup.len() - 1],
        );
    }
}
