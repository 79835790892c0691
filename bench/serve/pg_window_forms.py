#!/usr/bin/env python3
# bench/serve/pg_window_forms.py: the Postgres store's search forms with a
# time window, as schema 12 asked them and as schema 13 asks them (the same
# SQL plus the window's `seq` range read from pgtrail.seq_hours, as
# postgres/query.rs filtered_with writes them, with literals), on ONE
# database of schema 13 (bench/serve's store, kept with serve_bench
# --pg-dir): same answers asserted; each form's plan and shared buffers
# touched (EXPLAIN ANALYZE BUFFERS: independent of load); then timed ROUNDS
# times alternating old and new (psql \timing, warm cache). The new side's
# time includes its read of seq_hours (a second statement). Indicative on
# a busy machine.
# Usage: pg_window_forms.py PSQL_CONN_ARGS DB [ROUNDS]
#   e.g. pg_window_forms.py "-h /tmp/pgwindow/pg -p 55491 -U postgres" serve_02bd9b2c 9
import re, shlex, statistics, subprocess, sys

conn, db = shlex.split(sys.argv[1]), sys.argv[2]
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 9
PSQL = "/usr/lib/postgresql/15/bin/psql"
COLS = "seq, body, prev_hash, hash"
LIMIT = 51
# bench/serve's fixed now is 2026-12-06T12:00:00Z.
W7, W1, W2H, YESTERDAY = ("'2026-11-29 12:00:00+00'", "'2026-12-05 12:00:00+00'",
                          "'2026-12-06 10:00:00+00'", "'2026-12-05 00:00:00+00'")
U64 = "user064@example.com"


def psql(sql):
    out = subprocess.run([PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1", *conn, "-d", db, "-c", sql],
                         capture_output=True, text=True, check=True)
    return out.stdout


def seq_range(since):
    # postgres/seq_hours.rs `window`: the hours from since's on.
    lo, hi = psql(f"select min(first_seq), max(last_seq) from pgtrail.seq_hours "
                  f"where hour >= floor(extract(epoch from timestamptz {since}) / 3600)::bigint").split("|")
    return [f"seq >= {lo}", f"seq <= {hi}"]


def range_sql(since):
    return (f"select min(first_seq), max(last_seq) from pgtrail.seq_hours "
            f"where hour >= floor(extract(epoch from timestamptz {since}) / 3600)::bigint "
            f"and hour <= 9223372036854775807")


def single(conditions, times, seq_bounds):
    # No key: schema 12 reads the window by its time index and sorts;
    # schema 13 walks the window's seq range with every other condition,
    # the times included, in coalesce(…, false) (query.rs, only_the_chain).
    if seq_bounds:
        conditions = [f"coalesce({' and '.join(conditions + times)}, false)"] + seq_bounds
    else:
        conditions = conditions + times
    return f"select {COLS} from pgtrail.events where {' and '.join(conditions)} order by seq desc limit {LIMIT}"


def walk(key, bounds, others, ordered=True):
    parts = [key] + bounds
    if others:
        parts += [f"coalesce({' and '.join(others)}, false)"] if ordered else others
    return "from pgtrail.events where " + " and ".join(parts)


def keyed(walks, bounds, others):
    branches = [walk(k, bounds, others, ordered) for k, ordered in walks]
    if len(branches) == 1:
        return f"select {COLS} {branches[0]} order by seq desc limit {LIMIT}"
    inner = " union all ".join(f"(select * {b} order by seq desc limit {LIMIT})" for b in branches)
    return f"select {COLS} from ({inner}) as events order by seq desc limit {LIMIT}"


# name: (since, function of (times, seq bounds) → SQL)
forms = {
    "user:user064 since:7d": (W7, lambda t, b: keyed(
        [(f"app_user = '{U64}'", True), (f"db_user = '{U64}' and app_user is distinct from '{U64}'", True)], t + b, [])),
    "db_user:reporting kind:statement since:1d": (W1, lambda t, b: keyed(
        [("db_user = 'reporting'", True)], t + b, ["kind = 'statement'"])),
    "ip:10.0.4.0/24 since:2h": (W2H, lambda t, b: single(
        ["pgtrail.client_inet(body::json ->> 'client_addr') <<= '10.0.4.0/24'::text::inet"], t, b)),
    "failed since:7d": (W7, lambda t, b: single(["failed"], t, b)),
    "-user:app op:delete since:1d": (W1, lambda t, b: single(
        ["db_user is distinct from 'app'", "upper(operation) = upper('delete')"], t, b)),
    "table:t_193 since:yesterday": (YESTERDAY, lambda t, b: keyed(
        [("table_name = 't_193'", True),
         ("""object_names @> array['"t_193"']::text[] and (table_name = 't_193') is not true""", False)], t + b, [])),
}


def timed(sqls):
    script = "\\o /dev/null\n\\timing on\n" + "".join(f"{s};\n" for s in sqls)
    out = subprocess.run([PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1", *conn, "-d", db],
                         input=script, capture_output=True, text=True, check=True).stdout
    return sum(float(t) for t in re.findall(r"Time: ([0-9.]+) ms", out)[-len(sqls):])


def plan(sql):
    text = psql(f"explain (analyze, buffers, costs off, timing off, summary off) {sql}")
    top = next(line for line in text.splitlines() if "Buffers:" in line)
    touched = sum(int(x) for x in re.findall(r"(?:hit|read)=(\d+)", top))
    nodes = sorted(set(re.findall(r"(Index Scan Backward using \w+|Index Scan using \w+|"
                                  r"Bitmap Index Scan on \w+|Seq Scan on \w+|Sort)", text)))
    return touched, nodes


print("load", open("/proc/loadavg").read().strip())
print("| form | rows | schema 12 ms median (min–max) | schema 13 ms median (min–max) | buffers 12 | buffers 13 |")
print("| --- | --- | --- | --- | --- | --- |")
detail = []
for name, (since, sql_of) in forms.items():
    window = [f"captured_at >= {since}"]
    old, new = sql_of(window, []), sql_of(window, seq_range(since))
    seq_o, seq_n = psql(f"select seq from ({old}) q").split(), psql(f"select seq from ({new}) q").split()
    assert seq_o == seq_n, (name, len(seq_o), len(seq_n))
    bo, po = plan(old)
    bn, pn = plan(new)
    to, tn = [], []
    for i in range(rounds):
        sides = [([old], to), ([range_sql(since), new], tn)]
        for sqls, acc in (sides if i % 2 == 0 else sides[::-1]):
            acc.append(timed(sqls))
    f = lambda xs: f"{statistics.median(xs):.1f} ({min(xs):.1f}–{max(xs):.1f})"
    print(f"| `{name}` | {len(seq_n)} | {f(to)} | {f(tn)} | {bo} | {bn} |", flush=True)
    detail.append(f"{name}\n  12: {', '.join(po)}\n  13: {', '.join(pn)}")
print("load", open("/proc/loadavg").read().strip())
print("\n".join(detail))
