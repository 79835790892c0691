#!/usr/bin/env python3
# bench/serve/keyed_forms.py: the slow search forms of bench/serve as
# schema 13 asked them and as schema 14 asks them (query::filtered_sql's
# SQL, written out), on synthetic files built by bench/serve/keyed_fill.sql
# (the events columns and the indexes each schema has; no sealing, no
# full-text index): same answers asserted, then each timed 7 times
# alternating old and new. Indicative: warm cache, Python's sqlite3.
# Usage: keyed_forms.py OLD.db NEW.db
import sqlite3, sys, time, statistics
NOW=1702592000000000; W7=NOW-604800*10**6; W1=NOW-86400*10**6
def body_db(): return "(case when json_valid(events.body) then json_extract(events.body, '$.database') end)"
stretch="(seq >> 19) in (with recursive stretch(n) as (select coalesce((select min(seq) from events), 0) >> 19 union all select n + 1 from stretch where n < (select max(seq) from events) >> 19) select n from stretch)"
def old_table(t, schema, extra):
    lo=t*4294967296; hi=lo+0xffffffff
    s = f" and schema_name = '{schema}'" if schema else ""
    so = f" and schema_name = '{schema}'" if schema else ""
    return f"select seq, body from events where seq in (select seq from events where {stretch} and row_key between {lo} and {hi} and table_name = 't_{t:03d}'{s} union select seq from events_objects where table_name = 't_{t:03d}'{so}){extra} order by seq desc limit 50"
def new_branches(walks, common, limit=50):
    br=" union all ".join(f"select seq from (select events.seq from events where {common}{' and ' if common else ''}{w} order by seq desc limit {limit})" for w in walks)
    return f"select seq, body from events where seq in ({br}) order by seq desc limit {limit}"
def new_table(t, schema, extra):
    s = f" and schema_name = '{schema}'" if schema else ""
    return new_branches([f"table_name = 't_{t:03d}'{s}", f"seq in (select seq from events_objects where table_name = 't_{t:03d}'{s})"], extra)
u64="'user064@example.com'"; u11="'user011@example.com'"
forms = {
 "user:user064 since:7d": (
   f"select seq, body from events where (app_user_key = 64 or db_user_key = 64) and (app_user = {u64} or db_user = {u64}) and captured_at >= {W7} order by seq desc limit 50",
   new_branches(["app_user_key = 64","db_user_key = 64"], f"(app_user = {u64} or db_user = {u64}) and +captured_at >= {W7}")),
 "table:public.t_078 op:update": (
   old_table(78,'public'," and operation = 'UPDATE'"),
   new_table(78,'public',"operation = 'UPDATE'")),
 "db_user:reporting kind:statement since:1d": (
   f"select seq, body from events where db_user_key = 1001 and db_user = 'reporting' and kind = 'statement' and captured_at >= {W1} order by seq desc limit 50",
   f"select seq, body from events where db_user = 'reporting' and +kind = 'statement' and +captured_at >= {W1} and db_user_key = 1001 order by seq desc limit 50"),
 "db:crm user:user011": (
   f"select seq, body from events where (app_user_key = 11 or db_user_key = 11) and (app_user = {u11} or db_user = {u11}) and {body_db()} = 'crm' order by seq desc limit 50",
   new_branches(["app_user_key = 11","db_user_key = 11"], f"(app_user = {u11} or db_user = {u11}) and {body_db()} = 'crm'")),
 "facets of user:user064 since:7d (the matches read, bound 200,000)": (
   f"select count(*) from (select seq, body from events where (app_user_key = 64 or db_user_key = 64) and (app_user = {u64} or db_user = {u64}) and captured_at >= {W7} order by +seq desc limit 200000)",
   "select count(*) from (" + new_branches(["app_user_key = 64","db_user_key = 64"], f"(app_user = {u64} or db_user = {u64}) and +captured_at >= {W7}", 200000) + ")"),
 "table:t_193 since:yesterday": (
   old_table(193,None,f" and captured_at >= {W1-86400*10**6} and captured_at < {W1}"),
   new_table(193,None,f"+captured_at >= {W1-86400*10**6} and +captured_at < {W1}")),
}
old=sqlite3.connect(sys.argv[1]); new=sqlite3.connect(sys.argv[2])
for c in (old,new): c.execute("pragma cache_size=-65536"); c.execute("pragma mmap_size=0")
print("load", open("/proc/loadavg").read().strip())
for name,(o,n) in forms.items():
    ro=old.execute(o).fetchall(); rn=new.execute(n).fetchall()
    assert [r[0] for r in ro]==[r[0] for r in rn], (name, len(ro), len(rn))
    to=[];tn=[]
    for i in range(7):
        for conn,sql,acc in ((old,o,to),(new,n,tn)) if i%2==0 else ((new,n,tn),(old,o,to)):
            t=time.perf_counter(); conn.execute(sql).fetchall(); acc.append((time.perf_counter()-t)*1000)
    print(f"| `{name}` | {len(rn)} | {statistics.median(to):.1f} ({min(to):.1f}–{max(to):.1f}) | {statistics.median(tn):.2f} ({min(tn):.2f}–{max(tn):.2f}) |")
print("load", open("/proc/loadavg").read().strip())
