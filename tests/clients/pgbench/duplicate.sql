-- Fails with 23505: pgbench aborts the client and exits 2.
INSERT INTO pipe AS mark_pgbench_dup (id, hits) VALUES (0, 1);
