-- psql's part of the client matrix (crates/pgtrail/tests/clients.rs): run
-- with `psql -X -a -v ON_ERROR_STOP=0 -f suite.sql` in this directory, once
-- against the server and once through `pgtrail proxy`; the outputs must match.
-- Statements whose text holds `mark_psql_*` are looked up in the trail.
\set VERBOSITY default
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);

-- \copy in (COPY FROM STDIN over the simple protocol), then out.
\copy items (id, name) FROM 'items.csv' WITH (FORMAT csv)
\copy (SELECT id, name FROM items ORDER BY id) TO STDOUT WITH (FORMAT csv)
-- A \copy that fails mid-stream: row 3 is already there (23505).
\copy items (id, name) FROM 'items.csv' WITH (FORMAT csv)

-- Marked statements: a write, a read, a failure (unique violation).
INSERT INTO items AS mark_psql_insert (id, name) VALUES (10, 'ten'), (11, 'eleven');
SELECT id, name AS mark_psql_select FROM items WHERE id >= 10 ORDER BY id;
INSERT INTO items AS mark_psql_dup (id, name) VALUES (1, 'again');
UPDATE items AS mark_psql_update SET name = upper(name) WHERE id < 3;

-- Several statements in one Query message, the second one failing.
SELECT 1 AS first \; SELECT 1 / 0 AS second \; SELECT 3 AS never;

-- A transaction that fails and is rolled back.
BEGIN;
DELETE FROM items WHERE id = 11;
SELECT missing_column FROM items;
SELECT 'ignored';
ROLLBACK;
SELECT count(*) AS after_rollback FROM items;

-- \gexec: each row of the result runs as a statement.
SELECT format('INSERT INTO items (id, name) VALUES (%s, %L)', g, 'gexec ' || g)
  FROM generate_series(20, 22) AS g \gexec

-- \watch: psql 15 has no count (`\watch c=N` is psql 16), so the query stops
-- it with an error on its fourth run; tuples only hides the timestamped title.
CREATE SEQUENCE ticks;
\pset tuples_only on
SELECT n AS tick FROM nextval('ticks') AS n WHERE 1 / (4 - n) >= 0 \watch 0.01
\pset tuples_only off

-- \gset and a prepared statement at the SQL level.
SELECT count(*) AS total FROM items \gset
\echo total :total
PREPARE by_id (int) AS SELECT name FROM items WHERE id = $1;
EXECUTE by_id(21);
DEALLOCATE by_id;
EXECUTE by_id(21);

-- \bind (psql 16) and pipelines (psql 18): only with a psql that has them,
-- so a psql 15 run (Debian 12, this project's CI) does not cover them.
SELECT :VERSION_NUM >= 160000 AS has_bind, :VERSION_NUM >= 180000 AS has_pipeline \gset
\if :has_bind
\ir bind.sql
\endif
\if :has_pipeline
\ir pipeline.sql
\endif
SELECT id, name FROM items ORDER BY id;
