#!/usr/bin/env python3
# bench/serve/pg_seq_hours_cost.py: what keeping pgtrail.seq_hours (Postgres
# schema 13) adds to an append. The append runs one more statement per
# batch, postgres/seq_hours.rs `write`: an `insert … on conflict do update`
# of the batch's hours (a batch of 10,000 events at ~330,000 events a day
# spans 1-2 hours). This runs that statement, prepared, STATEMENTS times
# through pgbench against a table of seq_hours's shape already holding a
# month of hours (720 rows), each time widening 2 existing hours, one
# transaction per statement (as an append commits per batch), and prints
# the server's CPU time per statement (pgbench's own clock and the
# backend's utime+stime are both shown; CPU holds on a busy machine) and,
# divided by the batch, per event. Compare with an append's CPU per event
# (bench/store). Indicative.
# Usage: pg_seq_hours_cost.py "PSQL_CONN_ARGS" [STATEMENTS] [BATCH]
#   e.g. pg_seq_hours_cost.py "-h /tmp/pg -p 55491 -U postgres" 20000 10000
import os, re, shlex, subprocess, sys, tempfile

conn = shlex.split(sys.argv[1])
statements = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
pgbin = "/usr/lib/postgresql/15/bin"
db = "seq_hours_cost"
tick = os.sysconf("SC_CLK_TCK")


def psql(database, sql):
    return subprocess.run([f"{pgbin}/psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", *conn,
                           "-d", database, "-c", sql], capture_output=True, text=True,
                          check=True).stdout


psql("postgres", f"drop database if exists {db}")
psql("postgres", f"create database {db}")
psql(db, "create table seq_hours (hour bigint primary key, first_seq bigint not null, "
         "last_seq bigint not null); "
         "insert into seq_hours select h, h * 14000, h * 14000 + 13999 "
         "from generate_series(0, 719) h")
psql(db, "vacuum analyze seq_hours")
# The statement of postgres/seq_hours.rs `write`, on 2 hours of the month.
script = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False)
script.write("\\set h random(0, 718)\n"
             "insert into seq_hours as s (hour, first_seq, last_seq) "
             "select * from unnest(array[:h, :h + 1]::bigint[], "
             "array[:h * 14000, :h * 14000 + 14000]::bigint[], "
             "array[:h * 14000 + 13999, :h * 14000 + 27999]::bigint[]) "
             "on conflict (hour) do update set "
             "first_seq = least(s.first_seq, excluded.first_seq), "
             "last_seq = greatest(s.last_seq, excluded.last_seq);\n")
script.close()
# One client, one connection: its backend's CPU is read before and after
# from /proc through a second session that finds it by application_name.
env = dict(os.environ, PGAPPNAME="seq_hours_cost")
bench = subprocess.Popen([f"{pgbin}/pgbench", "-n", "-M", "prepared", "-c", "1",
                          "-t", str(statements), "-f", script.name, *conn, db],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
pid = None
while pid is None and bench.poll() is None:
    out = psql(db, "select pid from pg_stat_activity where application_name = 'seq_hours_cost'")
    pid = int(out) if out.strip() else None


def cpu(p):
    fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


first = cpu(pid) if pid else None
last = first
while bench.poll() is None:
    try:
        last = cpu(pid)
    except (OSError, TypeError):
        break
output = bench.communicate()[0]
os.unlink(script.name)
latency = re.search(r"latency average = ([\d.]+) ms", output)
print(f"statements: {statements}, batch: {batch} events, load {open('/proc/loadavg').read().split()[0]}")
if latency:
    print(f"latency per statement: {float(latency.group(1)) * 1000:.0f} µs (pgbench, commit included)")
if first is not None and last is not None and last > first:
    per = (last - first) / statements * 1e6
    print(f"server CPU per statement: {per:.0f} µs; per event of a {batch}-event batch: "
          f"{per / batch * 1000:.1f} ns")
else:
    print("server CPU not read (the run ended before its backend was seen)")
psql("postgres", f"drop database {db}")
