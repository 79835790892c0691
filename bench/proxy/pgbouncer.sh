# Sourced by bench/proxy/run and bench/proxy/cpu: the one PgBouncer both
# measure against (session mode, trust toward the throwaway cluster).
# start_pgbouncer WORK SERVER_PORT LISTEN_PORT PGBIN [PREFIX…]: writes
# WORK/pgbouncer.ini (the database `bench`; its log and pid file in WORK),
# starts PgBouncer as a daemon through PREFIX (e.g. `runuser -u postgres
# --`, since PgBouncer refuses to run as root; `taskset -c N`) and waits
# until it answers. Its pid is then in WORK/pgbouncer.pid.
start_pgbouncer() {
    local work=$1 server_port=$2 listen_port=$3 pgbin=$4 program
    shift 4
    program=$(command -v pgbouncer)
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
    if [[ $(id -u) == 0 ]]; then chown postgres "$work/pgbouncer.ini"; fi
    "$@" "$program" -d -q "$work/pgbouncer.ini"
    for _ in $(seq 1 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$listen_port" -d bench && break; sleep 0.1; done
}
