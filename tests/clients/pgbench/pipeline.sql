-- A pipelined transaction (pgbench's \startpipeline, extended or prepared).
\set id random(1, 1000)
\startpipeline
INSERT INTO pipe (id, hits) VALUES (:id, 1) ON CONFLICT (id) DO UPDATE SET hits = pipe.hits + 1;
SELECT count(*) FROM pipe;
UPDATE counter AS mark_pgbench_counter SET n = n + 1;
\endpipeline
