#!/bin/sh
# pgbench's part of the client matrix: the built-in TPC-B-like script in
# each query mode, a pipelined custom script, a failing one. Timings differ
# between runs, so it prints only what must not: the transactions processed
# and failed, and the database's invariants afterwards. $PGBENCH and $PSQL
# are the programs to run; libpq's PG* variables say where to connect.
set -u
cd "$(dirname "$0")"
pgbench="${PGBENCH:-pgbench}"
psql="${PSQL:-psql}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
check() { "$psql" -X -A -t -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
report() { grep -E '^(query mode|number of clients|number of transactions actually processed|number of failed transactions)' "$1"; }

echo "== init"
"$pgbench" -i -s 1 -q >"$out/init" 2>&1 && echo "init ok" || { echo "init failed"; cat "$out/init"; }
for mode in simple extended prepared; do
  echo "== tpcb-like -M $mode"
  "$pgbench" -n -M "$mode" -c 2 -j 1 -t 40 >"$out/run" 2>&1; echo "exit $?"
  report "$out/run"
  check "SELECT count(*) AS history, (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT sum(delta) FROM pgbench_history) AS balanced FROM pgbench_history"
done

check "CREATE TABLE pipe (id int PRIMARY KEY, hits int NOT NULL); CREATE TABLE counter (n int NOT NULL); INSERT INTO counter VALUES (0); INSERT INTO pipe VALUES (0, 0)"
for mode in extended prepared; do
  echo "== pipeline -M $mode"
  "$pgbench" -n -M "$mode" -c 2 -j 1 -t 30 -f pipeline.sql >"$out/run" 2>&1; echo "exit $?"
  report "$out/run"
  check "SELECT n, (SELECT sum(hits) FROM pipe) AS hits FROM counter"
done

echo "== duplicate key"
"$pgbench" -n -t 1 -f duplicate.sql >"$out/run" 2>&1; echo "exit $?"
grep -o 'ERROR:  duplicate key value violates unique constraint "pipe_pkey"' "$out/run"
