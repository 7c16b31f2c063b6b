#!/usr/bin/env bash
# A throwaway PostgreSQL for the catalog tests (used by `make test`).
#   scripts/test-postgres.sh start   -> prints a SQLAlchemy URL on stdout (nothing when it cannot)
#   scripts/test-postgres.sh stop
# Installs the Debian package when it is missing and apt-get can; says clearly when it skips.
set -u
DIR=${MAAS_TEST_PG_DIR:-/tmp/maas-test-pg}

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start() {
  local bin port sudo=""
  bin=$(pg_bin)
  if [ -z "$bin" ]; then
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    echo "postgres: not installed; trying apt-get install postgresql (about a minute)..." >&2
    { $sudo apt-get install -y -q postgresql || { $sudo apt-get update -q && $sudo apt-get install -y -q postgresql; }; } \
      >"${TMPDIR:-/tmp}/maas-apt-postgres.log" 2>&1
    bin=$(pg_bin)
  fi
  if [ -z "$bin" ]; then
    echo "postgres: SKIPPING the PostgreSQL catalog tests (cannot install postgresql; see ${TMPDIR:-/tmp}/maas-apt-postgres.log)" >&2
    return 0
  fi
  stop >/dev/null 2>&1
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if ! as_pg "$bin/initdb" -D "$DIR/data" -U maas --auth=trust >"$DIR/initdb.log" 2>&1 ||
     ! as_pg "$bin/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-p $port -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null 2>&1; then
    echo "postgres: SKIPPING the PostgreSQL catalog tests (the server did not start; see $DIR)" >&2
    return 0
  fi
  echo "postgres: started on 127.0.0.1:$port (data in $DIR)" >&2
  echo "postgresql+psycopg://maas@127.0.0.1:$port/postgres"
}

stop() {
  local bin
  bin=$(pg_bin)
  if [ -n "$bin" ] && [ -d "$DIR/data" ]; then
    as_pg "$bin/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1
  fi
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
