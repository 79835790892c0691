# Sourced by bench/proxy/run and bench/proxy/cpu: the one PgBouncer setup
# both measure against (session mode, trust toward the throwaway cluster).
# write_pgbouncer_ini WORK SERVER_PORT LISTEN_PORT: $WORK/pgbouncer.ini,
# serving the database `bench`, its log and pid file in WORK.
write_pgbouncer_ini() {
    local work=$1 server_port=$2 listen_port=$3
    cat >"$work/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$server_port dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $listen_port
unix_socket_dir =
auth_type = any
pool_mode = session
max_client_conn = 2000
default_pool_size = 64
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
INI
}
