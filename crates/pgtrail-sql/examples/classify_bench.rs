//! What the statement analyzer costs per statement, distinct (analyzed:
//! summary parse, tokens, classification, claims, redaction) and repeated
//! (a cache hit), on a mix of realistic statements, in rounds that
//! alternate the two. Then the simple protocol's case: each text new (new
//! literals), its shape cached, against the full analysis of the same
//! texts. Run by `bench/classify/run`.
//!
//! Usage: classify_bench [--rounds R] [--json PATH]

use std::hint::black_box;
use std::time::{Duration, Instant};

use pgtrail_core::config::IdentityConfig;
use pgtrail_sql::{Analyzer, TextPolicy};

/// (name, text): pgbench's statements, an ORM's, session housekeeping, DDL.
fn statements() -> Vec<(&'static str, String)> {
    let rows: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "({i}, 'customer {i}', 'c{i}@example.com', {}.50, now())",
                i * 3
            )
        })
        .collect();
    vec![
        ("pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1".into()),
        ("pgbench update", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2".into()),
        ("pgbench insert", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)".into()),
        ("pgbench begin", "BEGIN;".into()),
        ("orm select join", "SELECT \"users\".\"id\", \"users\".\"email\", \"users\".\"name\", \"orders\".\"total\" FROM \"users\" INNER JOIN \"orders\" ON \"orders\".\"user_id\" = \"users\".\"id\" WHERE \"users\".\"tenant_id\" = $1 AND \"orders\".\"status\" IN ($2, $3) ORDER BY \"users\".\"created_at\" DESC LIMIT $4 OFFSET $5".into()),
        ("orm insert returning", "INSERT INTO \"orders\" (\"user_id\", \"total\", \"status\", \"created_at\") VALUES ($1, $2, $3, $4) RETURNING \"orders\".\"id\"".into()),
        ("orm update commented", "UPDATE \"accounts\" SET \"plan\" = $1, \"updated_at\" = $2 WHERE \"accounts\".\"id\" = $3 /*controller='billing',action='upgrade',user='alice%40example.com'*/".into()),
        ("set_config user", "SELECT set_config('pgtrail.user', 'alice', true)".into()),
        ("cte report", "WITH recent AS (SELECT customer_id, sum(amount) AS total FROM payments WHERE paid_at > now() - interval '30 days' GROUP BY customer_id) SELECT c.name, r.total FROM customers c JOIN recent r ON r.customer_id = c.id WHERE r.total > 1000 ORDER BY r.total DESC".into()),
        ("long insert 100 rows", format!("INSERT INTO customers (id, name, email, balance, created_at) VALUES {}", rows.join(", "))),
        ("ddl", "ALTER TABLE public.orders ADD COLUMN paid_at timestamptz DEFAULT now()".into()),
        ("role password", "ALTER ROLE app WITH LOGIN PASSWORD 's3cret' VALID UNTIL '2030-01-01'".into()),
        // A backslash: read with standard_conforming_strings on and off.
        ("backslash literal", r"SELECT id FROM files WHERE path LIKE 'C:\Users\%' AND owner = $1".into()),
    ]
}

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut rounds = 7u32;
    let mut json_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().and_then(|r| r.parse().ok()).unwrap_or(rounds),
            "--json" => json_path = args.next(),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let identity = IdentityConfig::default();
    let statements = statements();
    let mut analyzer = Analyzer::new(1024, &identity, TextPolicy::Secrets);
    for (_, sql) in &statements {
        analyzer.analyze(sql); // warm the cache for the repeated side
    }
    // Per statement: distinct, repeated, and the parts of distinct.
    let n = statements.len();
    let mut distinct = vec![Vec::new(); n];
    let mut repeated = vec![Vec::new(); n];
    let mut summary = vec![Vec::new(); n];
    let mut redact = vec![Vec::new(); n];
    for round in 0..rounds {
        for (i, (_, sql)) in statements.iter().enumerate() {
            let iterations = if sql.len() > 2000 { 300 } else { 2000 };
            // Alternate which side goes first, so a noisy moment hits both.
            let distinct_side = |a: &Analyzer| {
                per_call(iterations, || {
                    black_box(a.analyze_uncached(black_box(sql)));
                })
            };
            let (d, r) = if round % 2 == 0 {
                let d = distinct_side(&analyzer);
                let r = per_call(iterations * 10, || {
                    black_box(analyzer.analyze(black_box(sql)));
                });
                (d, r)
            } else {
                let r = per_call(iterations * 10, || {
                    black_box(analyzer.analyze(black_box(sql)));
                });
                (distinct_side(&analyzer), r)
            };
            distinct[i].push(d);
            repeated[i].push(r);
            summary[i].push(per_call(iterations, || {
                black_box(
                    pg_query::summary(black_box(sql), pg_query::ParserOptions::DEFAULT, -1).ok(),
                );
            }));
            redact[i].push(per_call(iterations, || {
                black_box(pgtrail_sql::redact_secrets(black_box(sql)));
            }));
        }
    }
    println!(
        "{:<22} {:>7}  {:>22}  {:>18}  {:>12}  {:>16}",
        "statement",
        "bytes",
        "distinct median (range)",
        "repeated (range)",
        "of which summary",
        "redact_secrets alone"
    );
    let mut json = Vec::new();
    let mut all_distinct = Vec::new();
    let mut all_repeated = Vec::new();
    for (i, (name, sql)) in statements.iter().enumerate() {
        let (dmin, dmax) = (
            *distinct[i].iter().min().expect("rounds"),
            *distinct[i].iter().max().expect("rounds"),
        );
        let (rmin, rmax) = (
            *repeated[i].iter().min().expect("rounds"),
            *repeated[i].iter().max().expect("rounds"),
        );
        let d = median(&mut distinct[i]);
        let r = median(&mut repeated[i]);
        let s = median(&mut summary[i]);
        let x = median(&mut redact[i]);
        all_distinct.push(d);
        all_repeated.push(r);
        println!(
            "{name:<22} {:>7}  {:>8.2?} ({:.2?}–{:.2?})  {:>6.0?} ({:.0?}–{:.0?})  {:>12.2?}  {:>16.2?}",
            sql.len(), d, dmin, dmax, r, rmin, rmax, s, x
        );
        json.push(format!(
            "{{\"statement\":\"{name}\",\"bytes\":{},\"distinct_ns\":{},\"distinct_min_ns\":{},\"distinct_max_ns\":{},\"repeated_ns\":{},\"summary_ns\":{},\"redact_secrets_ns\":{}}}",
            sql.len(), d.as_nanos(), dmin.as_nanos(), dmax.as_nanos(), r.as_nanos(), s.as_nanos(), x.as_nanos()
        ));
    }
    println!(
        "median over statements: distinct {:.2?}, repeated {:.0?} ({rounds} rounds; goal: distinct <= 10 µs, repeated ~0)",
        median(&mut all_distinct),
        median(&mut all_repeated)
    );
    let simple = simple_protocol(rounds, &identity);
    json.extend(simple);
    if let Some(path) = json_path {
        let body = format!("[{}]\n", json.join(",\n"));
        if let Err(e) = std::fs::write(&path, body) {
            eprintln!("writing {path}: {e}");
            std::process::exit(2);
        }
    }
}

/// pgbench's TPC-B statements as `-M simple` sends them, `{}` standing for
/// the literals that change every time.
const SIMPLE: &[(&str, &str)] = &[
    ("simple select", "SELECT abalance FROM pgbench_accounts WHERE aid = {};"),
    ("simple update accounts", "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {};"),
    ("simple update tellers", "UPDATE pgbench_tellers SET tbalance = tbalance + {} WHERE tid = {};"),
    ("simple insert history", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ({}, {}, {}, {}, CURRENT_TIMESTAMP);"),
    ("simple orm insert", "INSERT INTO \"orders\" (\"user_id\", \"total\", \"status\") VALUES ({}, '{}.50', 'paid {}') RETURNING \"orders\".\"id\""),
];

/// Per statement of [`SIMPLE`]: what a text with new literals costs, full
/// analysis against a shape hit, in alternating rounds; the JSON rows.
fn simple_protocol(rounds: u32, identity: &IdentityConfig) -> Vec<String> {
    const TEXTS: usize = 2000;
    println!(
        "\n{:<24} {:>26}  {:>24}",
        "new literals each time", "full analysis (range)", "shape hit (range)"
    );
    let mut json = Vec::new();
    let mut all_full = Vec::new();
    let mut all_shape = Vec::new();
    for (name, template) in SIMPLE {
        let texts: Vec<String> = (0..TEXTS)
            .map(|i| {
                template
                    .split("{}")
                    .enumerate()
                    .map(|(k, part)| {
                        if k == 0 {
                            part.to_string()
                        } else {
                            format!("{}{part}", 1 + (i * 7919 + k * 104_729) % 99_991)
                        }
                    })
                    .collect()
            })
            .collect();
        let mut analyzer = Analyzer::new(1024, identity, TextPolicy::Secrets);
        analyzer.analyze(&texts[0]);
        let (mut full, mut shape) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which side goes first, so a noisy moment hits both.
            let full_first = round % 2 == 0;
            if full_first {
                full.push(per_text(&texts, |sql| {
                    black_box(analyzer.analyze_uncached(sql));
                }));
            }
            shape.push(per_text(&texts, |sql| {
                black_box(analyzer.analyze(sql));
            }));
            if !full_first {
                full.push(per_text(&texts, |sql| {
                    black_box(analyzer.analyze_uncached(sql));
                }));
            }
        }
        let (fmin, fmax) = (
            *full.iter().min().expect("rounds"),
            *full.iter().max().expect("rounds"),
        );
        let (smin, smax) = (
            *shape.iter().min().expect("rounds"),
            *shape.iter().max().expect("rounds"),
        );
        let f = median(&mut full);
        let s = median(&mut shape);
        all_full.push(f);
        all_shape.push(s);
        println!(
            "{name:<24} {f:>10.2?} ({fmin:.2?}–{fmax:.2?})  {s:>10.2?} ({smin:.2?}–{smax:.2?})"
        );
        json.push(format!(
            "{{\"statement\":\"{name}\",\"full_ns\":{},\"full_min_ns\":{},\"full_max_ns\":{},\"shape_hit_ns\":{},\"shape_hit_min_ns\":{},\"shape_hit_max_ns\":{}}}",
            f.as_nanos(), fmin.as_nanos(), fmax.as_nanos(), s.as_nanos(), smin.as_nanos(), smax.as_nanos()
        ));
        let (hits, misses) = analyzer.stats();
        assert_eq!(
            misses, 1,
            "{name}: every text but the first is a shape hit ({hits} hits)"
        );
    }
    println!(
        "median over statements: full {:.2?}, shape hit {:.2?} ({rounds} rounds of {TEXTS} texts)",
        median(&mut all_full),
        median(&mut all_shape)
    );
    json
}

/// The time per text of `f` over `texts`.
fn per_text(texts: &[String], mut f: impl FnMut(&str)) -> Duration {
    let start = Instant::now();
    for sql in texts {
        f(black_box(sql));
    }
    start.elapsed() / texts.len() as u32
}
