#!/bin/sh
# psql's part of the client matrix. $PSQL is the psql to run (the harness
# passes the cluster's); libpq's PG* variables say where to connect.
set -u
cd "$(dirname "$0")"
exec "${PSQL:-psql}" -X -a -v ON_ERROR_STOP=0 -f suite.sql 2>&1
