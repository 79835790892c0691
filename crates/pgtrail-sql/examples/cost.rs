//! What redaction costs per statement: `cargo run --release -p pgtrail-sql --example cost`.

use std::hint::black_box;
use std::time::Instant;

fn main() {
    let statements = [
        ("DDL, nothing to redact", "ALTER TABLE public.orders ADD COLUMN paid_at timestamptz DEFAULT now()"),
        ("role password", "ALTER ROLE app WITH LOGIN PASSWORD 's3cret' VALID UNTIL '2030-01-01'"),
        ("user mapping", "CREATE USER MAPPING FOR app SERVER remote OPTIONS (user 'bob', password 's3cret')"),
        ("subscription", "CREATE SUBSCRIPTION s CONNECTION 'host=pub user=rep password=s3cret dbname=x' PUBLICATION p WITH (connect = false)"),
        ("DML (--sql)", "UPDATE public.users SET email = 'a@example.com', plan = 'pro' WHERE id = 42 /*app_user='alice'*/"),
    ];
    let rounds = 20_000;
    for (name, sql) in statements {
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(pgtrail_sql::redact_secrets(black_box(sql)));
        }
        let secrets = start.elapsed() / rounds;
        let start = Instant::now();
        for _ in 0..rounds {
            black_box(pgtrail_sql::redact_constants(black_box(sql)));
        }
        let constants = start.elapsed() / rounds;
        println!("{name:<24} redact_secrets {secrets:>8.1?}   redact_constants {constants:>8.1?}");
    }
}
