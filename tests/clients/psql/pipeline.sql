-- psql 18+: a pipeline with an error in the middle (the server skips to Sync).
\startpipeline
INSERT INTO items (id, name) VALUES ($1, $2) \bind 40 forty \sendpipeline
INSERT INTO items (id, name) VALUES ($1, $2) \bind 40 again \sendpipeline
SELECT $1::int AS skipped \bind 1 \sendpipeline
\endpipeline
