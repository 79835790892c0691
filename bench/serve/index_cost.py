#!/usr/bin/env python3
# bench/serve/index_cost.py ROWS ROUNDS: what schema 14's indexes cost on
# inserts alone (an upper bound on the append's cost: no sealing, FTS,
# facet summary or objects index, which the append also pays).
import sqlite3, time, os, random, statistics, sys
N=int(sys.argv[1]) if len(sys.argv)>1 else 200000
BASE="""create table events (seq integer primary key, captured_at integer not null, kind text not null, schema_name text, table_name text, pk text, app_user text, db_user text, operation text, failed integer not null, body text not null, row_key integer, app_user_key integer, db_user_key integer) strict;
create index events_captured_at on events (captured_at);
create index events_kind on events (kind, seq);
create index events_failed on events (seq) where failed = 1;
create index events_row on events (seq >> 19, row_key) where row_key is not null;
"""
V13=BASE+"""create index events_app_user on events (app_user_key, captured_at) where app_user_key is not null;
create index events_db_user on events (db_user_key, captured_at) where db_user_key is not null;"""
V14=BASE+"""create index events_app_user on events (app_user_key, seq, captured_at) where app_user_key is not null;
create index events_db_user on events (db_user_key, seq, captured_at) where db_user_key is not null;
create index events_table on events (table_name) where table_name is not null;"""
rng=random.Random(7)
rows=[]
for i in range(1,N+1):
    k=rng.randrange(100); t=rng.randrange(300); u=rng.randrange(300); role=rng.randrange(3)
    rows.append((i,1700000000000000+i*1000,'row_change' if k<70 else 'statement' if k<96 else 'session',
      'public' if k<96 else None, f't_{t:03d}' if k<96 else None, None, f'user{u:03d}@example.com' if role!=2 else None,
      ['app','reporting','etl'][role], 'UPDATE', int(i%40==0), '{"sql":"'+'x'*300+'"}',
      (t*4294967296+rng.randrange(5000)) if k<96 else None, rng.getrandbits(62) if role!=2 else None, 1000+role))
def run(schema, path):
    for s in ("","-wal","-shm"):
        try: os.remove(path+s)
        except FileNotFoundError: pass
    c=sqlite3.connect(path, isolation_level=None)
    c.execute("pragma journal_mode=wal"); c.execute("pragma synchronous=full")
    c.executescript(schema)
    t=time.perf_counter()
    for a in range(0,N,10000):
        c.execute("begin immediate")
        c.executemany("insert into events values (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows[a:a+10000])
        c.execute("commit")
    el=time.perf_counter()-t; c.close()
    for s in ("","-wal","-shm"): os.remove(path+s) if os.path.exists(path+s) else None
    return N/el
r13=[];r14=[]
print("load", open("/proc/loadavg").read().strip())
for r in range(int(sys.argv[2]) if len(sys.argv)>2 else 5):
    order=[(V13,r13),(V14,r14)] if r%2==0 else [(V14,r14),(V13,r13)]
    for schema,acc in order: acc.append(run(schema,"ingest.db"))
ratios=[a/b for a,b in zip(r13,r14)]
print(f"v13 {statistics.median(r13):.0f} rows/s ({min(r13):.0f}-{max(r13):.0f}); v14 {statistics.median(r14):.0f} ({min(r14):.0f}-{max(r14):.0f}); v13/v14 per round median {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})")
print("load", open("/proc/loadavg").read().strip())
