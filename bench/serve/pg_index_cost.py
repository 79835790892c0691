#!/usr/bin/env python3
# bench/serve/pg_index_cost.py: what schema 12's indexes cost on inserts
# alone, against schema 11's (an upper bound on the append's cost: no
# sealing, full-text index, facet summary or chain lock, which the append
# also pays). ROWS rows of bench/serve/pg_keyed_fill.sql's shape, copied
# once to a file, are inserted in transactions of 10,000 into a fresh
# empty store table of each schema, the order alternating per round. The
# server backend's CPU time (utime+stime of /proc/PID/stat) per row is the
# figure to read on a busy machine; rows/s beside it.
# Usage: pg_index_cost.py "PSQL_CONN_ARGS" ROWS ROUNDS
import os, re, shlex, statistics, subprocess, sys

conn, rows, rounds = shlex.split(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
here = os.path.dirname(os.path.abspath(__file__))
fill = os.path.join(here, "pg_keyed_fill.sql")
data = f"/tmp/pg_index_cost_{os.getpid()}.copy"
tick = os.sysconf("SC_CLK_TCK")

def psql(db, *args, stdin=None):
    return subprocess.run(["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", *conn, "-d", db, *args],
                          input=stdin, capture_output=True, text=True, check=True).stdout

def fresh(db, new, n):
    psql("postgres", "-c", f"drop database if exists {db}", "-c", f"create database {db}")
    psql(db, "-v", f"n={n}", "-v", f"new={new}", "-f", fill)

fresh("cost_source", "false", rows)
psql("cost_source", "-c", f"\\copy (select * from pgtrail.events order by seq) to '{data}'")
psql("postgres", "-c", "drop database cost_source")

def side(new):
    fresh("cost_target", new, 1)
    psql("cost_target", "-c", "truncate pgtrail.events")
    script = [f"create temp table stage as select * from pgtrail.events with no data;",
              f"\\copy stage from '{data}'",
              "set synchronous_commit = on;",
              "select pg_backend_pid() as pid \\gset",
              "\\set s `cat /proc/:pid/stat`", "\\echo :s",
              "select clock_timestamp() as t0 \\gset"]
    for a in range(0, rows, 10000):
        script.append(f"insert into pgtrail.events select * from stage where seq > {a} and seq <= {a + 10000};")
    script += ["select extract(epoch from clock_timestamp() - :'t0'::timestamptz);", "\\set s `cat /proc/:pid/stat`", "\\echo :s"]
    out = psql("cost_target", stdin="\n".join(script) + "\n").splitlines()
    stats = [l for l in out if re.match(r"^\d+ \(", l)]
    cpu = [sum(int(x) for x in s.rsplit(")", 1)[1].split()[11:13]) / tick for s in stats]
    secs = float([l for l in out if re.match(r"^[0-9.]+$", l)][-1])
    psql("postgres", "-c", "drop database cost_target")
    return (cpu[1] - cpu[0]) * 1e6 / rows, rows / secs

print("load", open("/proc/loadavg").read().strip())
res = {"false": [], "true": []}
for r in range(rounds):
    for new in (("false", "true") if r % 2 == 0 else ("true", "false")):
        res[new].append(side(new))
    o, n = res["false"][-1], res["true"][-1]
    print(f"round {r + 1}: schema 11 {o[0]:.1f} µs CPU/row {o[1]:,.0f} rows/s; "
          f"schema 12 {n[0]:.1f} µs CPU/row {n[1]:,.0f} rows/s; CPU ratio {n[0] / o[0]:.2f}", flush=True)
os.remove(data)
f = lambda xs, fmt: f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
for new, name in (("false", "schema 11"), ("true", "schema 12")):
    print(f"{name}: {f([x[0] for x in res[new]], '{:.1f}')} µs backend CPU per row, "
          f"{f([x[1] for x in res[new]], '{:,.0f}')} rows/s")
ratios = [n[0] / o[0] for o, n in zip(res["false"], res["true"])]
print(f"CPU per row, schema 12 ÷ 11 per round: {f(ratios, '{:.2f}')}")
print("load", open("/proc/loadavg").read().strip())
