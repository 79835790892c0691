#!/usr/bin/python3
# bench/store/pg_text_index_cost.py: what the Postgres store's schemas 15
# and 16 change in the cost of appending statements, index by index, like
# for like. Two tables of the events' shape (the columns these indexes
# read), each prefilled with the same statements, then fed the same
# batches, rounds alternating:
#   schema 14: the full-text GIN index over to_tsvector('simple', …) and
#              the GIN index over object_names (text[]), as schema 6 made it;
#   schema 16: the GIN index over pgtrail.sql_index_words(sql, seq) (the
#              functions read from postgres/schema.rs, so they stay the
#              store's) and events_objects (name, seq) as its own table.
# Per round and side: the insert of a batch (what an append waits for),
# then a VACUUM of the table (where GIN's pending list is merged into the
# index: autovacuum's work in production, off the append's path), each as
# wall time and as the backend's CPU (utime+stime from /proc, the server
# on this machine). Prints µs per statement, median and min–max over
# rounds, and schema 16 ÷ schema 14.
# Usage: pg_text_index_cost.py CONNINFO [ROUNDS] [BATCH] [PREFILL]
#   e.g. pg_text_index_cost.py "host=/tmp port=55432 user=postgres" 6 10000 500000
import os, re, statistics, sys, time
import psycopg

conninfo = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
prefill = int(sys.argv[4]) if len(sys.argv) > 4 else 500000
tick = os.sysconf("SC_CLK_TCK")
here = os.path.dirname(os.path.abspath(__file__))
schema_rs = open(os.path.join(here, "../../crates/pgtrail-store/src/postgres/schema.rs")).read()
v16 = re.search(r'const V16_SQL_WORDS: &str = r#"(.*?)"#;', schema_rs, re.S).group(1)
functions = v16[: v16.index("revoke execute")]

db = "text_index_cost"
with psycopg.connect(conninfo, autocommit=True) as admin:
    admin.execute(f"drop database if exists {db}")
    admin.execute(f"create database {db}")
conn = psycopg.connect(conninfo + f" dbname={db}", autocommit=True)
conn.execute("create schema pgtrail")
conn.execute(functions)
conn.execute("""
create table old_events (seq bigint, sql text, object_names text[]);
create index on old_events using gin (
    to_tsvector('simple', regexp_replace(left(sql, 200000), '[^[:alnum:]_]+', ' ', 'g')))
    with (gin_pending_list_limit = 32768) where sql is not null;
create index on old_events using gin (object_names)
    with (gin_pending_list_limit = 32768) where object_names is not null;
create table new_events (seq bigint, sql text);
create index on new_events using gin (pgtrail.sql_index_words(sql, seq))
    with (gin_pending_list_limit = 32768) where sql is not null;
create table new_objects (name text not null, seq bigint not null, primary key (name, seq));
-- The statements of bench/serve's mix: 300 tables, a column, a literal.
create unlogged table staged (seq bigint, sql text, names text[]);
""")
pid = conn.execute("select pg_backend_pid()").fetchone()[0]


def cpu():
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def stage(first, n):
    conn.execute("truncate staged")
    conn.execute("""
        insert into staged
        select s, format('SELECT id, status, balance FROM public.t_%%s WHERE customer_id = $1 LIMIT %%s',
                         lpad((s %% 300)::text, 3, '0'), s %% 100),
               array[format('"public"."t_%%s"', lpad((s %% 300)::text, 3, '0')),
                     format('"t_%%s"', lpad((s %% 300)::text, 3, '0'))]
        from generate_series(%s::bigint, %s::bigint) as s""", (first, first + n - 1))


SIDES = {
    "schema 14": ["insert into old_events select seq, sql, names from staged"],
    "schema 16": ["insert into new_events select seq, sql from staged",
                  "insert into new_objects select unnest(names), seq from staged"],
}
TABLES = {"schema 14": ["old_events"], "schema 16": ["new_events", "new_objects"]}


def timed(statements):
    wall, c = time.perf_counter(), cpu()
    for sql in statements:
        conn.execute(sql)
    return (time.perf_counter() - wall) * 1e6, (cpu() - c) * 1e6


stage(1, prefill)
for side in SIDES:
    timed(SIDES[side])
    for table in TABLES[side]:
        conn.execute(f"vacuum analyze {table}")
next_seq = prefill + 1
results = {side: {"insert": [], "insert cpu": [], "vacuum": [], "vacuum cpu": []} for side in SIDES}
for r in range(rounds):
    stage(next_seq, batch)
    next_seq += batch
    order = list(SIDES) if r % 2 == 0 else list(reversed(SIDES))
    for side in order:
        wall, c = timed(SIDES[side])
        results[side]["insert"].append(wall / batch)
        results[side]["insert cpu"].append(c / batch)
        wall, c = timed([f"vacuum {t}" for t in TABLES[side]])
        results[side]["vacuum"].append(wall / batch)
        results[side]["vacuum cpu"].append(c / batch)
    print(f"round {r + 1}: load {os.getloadavg()[0]:.2f}", flush=True)

print(f"\n{prefill:,} statements prefilled, then {rounds} rounds of {batch:,}; µs per statement, median (min–max)")
print("| measure | schema 14 | schema 16 | 16 ÷ 14 |")
print("| --- | --- | --- | --- |")
for measure in ["insert", "insert cpu", "vacuum", "vacuum cpu"]:
    cells = []
    for side in SIDES:
        v = results[side][measure]
        cells.append(f"{statistics.median(v):.1f} ({min(v):.1f}–{max(v):.1f})")
    ratio = statistics.median(results["schema 16"][measure]) / max(statistics.median(results["schema 14"][measure]), 1e-9)
    print(f"| {measure} | {cells[0]} | {cells[1]} | {ratio:.2f} |")
total = {side: [results[side]["insert"][i] + results[side]["vacuum"][i] for i in range(rounds)] for side in SIDES}
print(f"| insert + vacuum | {statistics.median(total['schema 14']):.1f} | {statistics.median(total['schema 16']):.1f} | "
      f"{statistics.median(total['schema 16']) / statistics.median(total['schema 14']):.2f} |")
sizes = conn.execute("""select pg_total_relation_size('old_events'),
    pg_total_relation_size('new_events') + pg_total_relation_size('new_objects')""").fetchone()
print(f"size after: schema 14 {sizes[0] / 1e6:.0f} MB, schema 16 {sizes[1] / 1e6:.0f} MB (tables and indexes)")
