-- psql 16+: the extended protocol from psql (unnamed statement, \bind).
SELECT $1::int + $2::int AS sum \bind 1 2 \g
INSERT INTO items (id, name) VALUES ($1, $2) \bind 30 thirty \g
INSERT INTO items (id, name) VALUES ($1, $2) \bind 30 again \g
