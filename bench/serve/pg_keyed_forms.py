#!/usr/bin/env python3
# bench/serve/pg_keyed_forms.py: the Postgres store's keyed search forms as
# schema 11 asked them and as schema 12 asks them (postgres/query.rs
# filtered_with's SQL, written out with literals), on two databases filled
# by bench/serve/pg_keyed_fill.sql (new=false / new=true): same answers
# asserted; each form's plan and shared buffers touched (EXPLAIN ANALYZE
# BUFFERS: independent of load); then timed ROUNDS times alternating old
# and new (psql \timing, warm cache). Indicative on a busy machine.
# Usage: pg_keyed_forms.py PSQL_CONN_ARGS OLD_DB NEW_DB [ROUNDS]
#   e.g. pg_keyed_forms.py "-h /tmp/pg -p 55432 -U postgres" old11 new12 9
import re, shlex, statistics, subprocess, sys

conn, old_db, new_db = shlex.split(sys.argv[1]), sys.argv[2], sys.argv[3]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 9
COLS = "seq, body, prev_hash, hash"
W7 = "'2026-11-30 00:00:00+00'"; W1 = "'2026-12-06 00:00:00+00'"; W2 = "'2026-12-05 00:00:00+00'"

def single(where, limit=50, cols=COLS):
    return f"select {cols} from pgtrail.events where {where} order by seq desc limit {limit}"

def branch(walk, ordered, bounds, others):
    # An ordered walk's other conditions in coalesce(…, false): query.rs Walk::select.
    parts = [walk] + bounds + ([f"coalesce({' and '.join(others)}, false)"] if ordered and others else others)
    return "from pgtrail.events where " + " and ".join(parts)

def keyed(walks, bounds, others, limit=50, cols=COLS):
    br = [branch(w, o, bounds, others) for w, o in walks]
    if len(br) == 1:
        return f"select {cols} {br[0]} order by seq desc limit {limit}"
    inner = " union all ".join(f"(select * {b} order by seq desc limit {limit})" for b in br)
    return f"select {cols} from ({inner}) as events order by seq desc limit {limit}"

def both(old_key, bounds, others):
    return " and ".join([old_key] + bounds + others)
def user_old(u, bounds=[], others=[]): return single(both(f"(app_user = '{u}' or db_user = '{u}')", bounds, others))
def user_new(u, bounds=[], others=[], limit=50, cols=COLS):
    return keyed([(f"app_user = '{u}'", True), (f"db_user = '{u}' and app_user is distinct from '{u}'", True)], bounds, others, limit, cols)
def own(t, schema): return f"table_name = 't_{t:03d}'" + (f" and schema_name = '{schema}'" if schema else "")
def obj(t, schema): return f"""object_names @> array['{f'"{schema}".' if schema else ''}"t_{t:03d}"']::text[]"""
def table_old(t, schema, bounds=[], others=[]):
    lo = t * 4294967296; hi = lo + 0xffffffff
    return single(both(f"((row_key between {lo} and {hi} and {own(t, schema)}) or {obj(t, schema)})", bounds, others))
def table_new(t, schema, bounds=[], others=[]):
    return keyed([(own(t, schema), True), (f"{obj(t, schema)} and ({own(t, schema)}) is not true", False)], bounds, others)

FACET = "seq, coalesce(app_user, db_user) as actor, source, failed"
W = lambda since, until=None: [f"captured_at >= {since}"] + ([f"captured_at < {until}"] if until else [])
U64, U11 = "user064@example.com", "user011@example.com"
forms = {
    "user:user064": (user_old(U64), user_new(U64)),
    "user:user064 since:7d": (user_old(U64, W(W7)), user_new(U64, W(W7))),
    "table:t_078": (table_old(78, None), table_new(78, None)),
    "table:public.t_078 op:update": (table_old(78, "public", [], ["upper(operation) = upper('update')"]),
                                     table_new(78, "public", [], ["upper(operation) = upper('update')"])),
    "user:nobody (no events)": (user_old("nobody@example.com"), user_new("nobody@example.com")),
    "table:t_999 (no events)": (table_old(999, None), table_new(999, None)),
    "db_user:reporting kind:statement since:1d": (
        single(both("db_user = 'reporting'", W(W1), ["kind = 'statement'"])),
        keyed([("db_user = 'reporting'", True)], W(W1), ["kind = 'statement'"])),
    "db:crm user:user011": (user_old(U11, [], ["(body::json ->> 'database') = 'crm'"]),
                            user_new(U11, [], ["(body::json ->> 'database') = 'crm'"])),
    "table:t_193 since:yesterday": (table_old(193, None, W(W2, W1)), table_new(193, None, W(W2, W1))),
    "facets' rows of user:user064 since:7d (bound 200,000)": (
        single(both(f"(app_user = '{U64}' or db_user = '{U64}')", W(W7), []), 200000, FACET),
        user_new(U64, W(W7), [], 200000, FACET)),
}

def psql(db, sql, *extra):
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", *conn, "-d", db, *extra, "-c", sql],
                         capture_output=True, text=True, check=True)
    return out.stdout

def timed(db, sql):
    out = subprocess.run(
        ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", *conn, "-d", db],
        input=f"\\o /dev/null\n\\timing on\n{sql};\n", capture_output=True, text=True, check=True).stdout
    return float(re.findall(r"Time: ([0-9.]+) ms", out)[-1])

def plan(db, sql):
    text = psql(db, f"explain (analyze, buffers, costs off, timing off, summary off) {sql}")
    top = next(line for line in text.splitlines() if "Buffers:" in line)
    hit = sum(int(x) for x in re.findall(r"hit=(\d+)", top))
    read = sum(int(x) for x in re.findall(r"read=(\d+)", top))
    nodes = sorted(set(re.findall(r"(Index Scan Backward using \w+|Index Scan using \w+|Bitmap Index Scan on \w+|Seq Scan on \w+|Merge Append|Sort)", text)))
    return hit + read, nodes

print("load", open("/proc/loadavg").read().strip())
print("| form | rows | old ms median (min–max) | new ms median (min–max) | old buffers | new buffers |")
print("|---|---|---|---|---|---|")
detail = []
for name, (o, n) in forms.items():
    seq_o = psql(old_db, f"select seq from ({o}) q").split()
    seq_n = psql(new_db, f"select seq from ({n}) q").split()
    # Both fills draw random values: compare each form with itself across
    # the two databases only through its counterpart on the same database.
    same_o = psql(old_db, f"select seq from ({n}) q").split()
    assert seq_o == same_o, (name, "old db", len(seq_o), len(same_o))
    same_n = psql(new_db, f"select seq from ({o}) q").split()
    assert seq_n == same_n, (name, "new db", len(seq_n), len(same_n))
    bo, po = plan(old_db, o); bn, pn = plan(new_db, n)
    to, tn = [], []
    for i in range(rounds):
        sides = [(old_db, o, to), (new_db, n, tn)]
        for db, sql, acc in (sides if i % 2 == 0 else sides[::-1]):
            acc.append(timed(db, sql))
    f = lambda xs: f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"
    print(f"| `{name}` | {len(seq_n)} | {f(to)} | {f(tn)} | {bo} | {bn} |", flush=True)
    detail.append(f"{name}\n  old: {', '.join(po)}\n  new: {', '.join(pn)}")
print("load", open("/proc/loadavg").read().strip())
print("\n".join(detail))
