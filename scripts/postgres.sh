#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests (installing Debian's
# package first if the machine has none) and prints the URL of its
# superuser. Idempotent: a server already running in the directory is kept.
# `scripts/postgres.sh stop` stops it; `scripts/postgres.sh crash` kills it
# with SIGKILL (the next start recovers).
#
#   WRIT_PG_DIR   where the cluster lives (default /tmp/writ-pg)
#   WRIT_PG_PORT  its port on 127.0.0.1 (default 55432)
#   WRIT_PG_SSL_DIR  a directory with server.crt and server.key (PEM): the
#                 server then also speaks TLS with them (ssl=on)
set -euo pipefail

dir=${WRIT_PG_DIR:-/tmp/writ-pg}
port=${WRIT_PG_PORT:-55432}
password=writ-test

# The newest installed server (a client-only install has no initdb).
find_bin() {
  local initdb
  initdb=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  [ -n "$initdb" ] && dirname "$initdb"
  return 0
}
bin=$(find_bin)
if [ -z "$bin" ]; then
  echo "installing PostgreSQL (Debian package postgresql)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(find_bin)
fi

# The server refuses to run as root: run it as the package's user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  stop)
    as_owner "$bin/pg_ctl" -D "$dir" -m fast stop >/dev/null 2>&1 || true
    exit 0 ;;
  crash)
    # kill -9 of the server and every backend: no shutdown, no checkpoint;
    # the next start recovers from the write-ahead log.
    pid=$(head -n 1 "$dir/postmaster.pid")
    pkill -9 -P "$pid" || true
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    exit 0 ;;
esac

if [ ! -f "$dir/PG_VERSION" ]; then
  rm -rf "$dir"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  pwfile=$(mktemp)
  printf '%s\n' "$password" >"$pwfile"
  chmod 644 "$pwfile"
  as_owner "$bin/initdb" -D "$dir" -U writ --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=scram-sha-256 >"$dir.initdb.log" 2>&1 \
    || { cat "$dir.initdb.log" >&2; exit 1; }
  rm -f "$pwfile"
fi
# TLS: the key must belong to the server's user and be private to it.
ssl_opts=""
if [ -n "${WRIT_PG_SSL_DIR:-}" ]; then
  cp "$WRIT_PG_SSL_DIR/server.crt" "$WRIT_PG_SSL_DIR/server.key" "$dir/"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/server.crt" "$dir/server.key"
  ssl_opts="-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_min_protocol_version=TLSv1.2"
fi
# A cluster that is not running (never started, stopped, or killed) is
# started; after a kill it recovers from its write-ahead log first.
if ! as_owner "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on -c synchronous_commit=on $ssl_opts" \
    start >&2
fi
echo "postgres://writ:$password@127.0.0.1:$port/postgres"
