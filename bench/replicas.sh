#!/usr/bin/env bash
# Task issuance on the distributed engine: `bench/replicas.sh [SECONDS]`
#
# Task-token issuance (Bearer instance token, decision + durable audit) at
# 32 connections:
#  - SQLite, one `writ serve --dev` (the embedded engine), for reference;
#  - PostgreSQL (Debian's server, a throwaway cluster of its own, every
#    session `synchronous_commit = on`) with 1, 2 and 3 replicas of
#    `writ serve`, each with one worker thread, sharing the master key and
#    issuer; one wrk per replica, the 32 connections split between them.
# This machine has two cores for everything (replicas, PostgreSQL and
# wrk), so each row also gives the CPU seconds each part used and the
# issuance per CPU-second of the whole system: the per-core figure, and
# which part bounds the rate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
need_wrk
build
w=target/release/writ
secs=${1:-10}
dir=$(mktemp -d)
pids=()
# A cluster of its own (outside $dir: the server may run as another user).
export WRIT_PG_DIR=/tmp/writ-bench-pg-$$ WRIT_PG_PORT=18432
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  scripts/postgres.sh stop >/dev/null 2>&1 || true
  rm -rf "$dir" "$WRIT_PG_DIR" "$WRIT_PG_DIR.initdb.log"
}
trap cleanup EXIT
export WRIT_TOKEN=bench-admin
hz=$(getconf CLK_TCK)

ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
# The cluster's server and its backends.
pg_pids() {
  [ -f "$WRIT_PG_DIR/postmaster.pid" ] || return 0
  local pm; pm=$(head -n 1 "$WRIT_PG_DIR/postmaster.pid")
  echo "$pm" $(pgrep -P "$pm")
}

# replica PORT [args]: one `writ serve --dev` with one worker thread.
replica() {
  local port=$1; shift
  WRIT_LOG=error $w serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --no-gateway \
    --listen 127.0.0.1:$port --worker-threads 1 --limit-attest-per-minute 0 "$@" >"$dir/serve-$port.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$port/healthz"
}

# load LABEL PORT...: wrk against each replica at once, 32 connections split.
load() {
  local label=$1; shift
  local n=$# c=$((32 / $#)) port out=() brokers=() b0 p0 total=0
  for port in "$@"; do brokers+=("$(pgrep -f "listen 127.0.0.1:$port" | head -n 1)"); done
  for port in "$@"; do wrk -t1 -c"$c" -d2s -s bench/issuance.lua "http://127.0.0.1:$port/v1/tasks" >/dev/null & done
  wait_wrk
  b0=$(ticks "${brokers[@]}"); p0=$(ticks $(pg_pids))
  for port in "$@"; do
    wrk -t1 -c"$c" -d"${secs}s" -s bench/issuance.lua "http://127.0.0.1:$port/v1/tasks" > "$dir/wrk-$port" &
  done
  wait_wrk
  local b1 p1; b1=$(ticks "${brokers[@]}"); p1=$(ticks $(pg_pids))
  for port in "$@"; do
    total=$(awk -v t="$total" -F' [|] ' '{print t + $1}' < <(tail -n 1 "$dir/wrk-$port"))
  done
  local errors; errors=$(for port in "$@"; do tail -n 1 "$dir/wrk-$port" | awk -F' [|] ' '{print $5}'; done | paste -sd+ | bc)
  awk -v l="$label" -v n="$n" -v r="$total" -v b=$((b1 - b0)) -v p=$((p1 - p0)) -v hz="$hz" -v s="$secs" -v e="$errors" \
    'BEGIN { cpu = (b + p) / hz; printf "| %s | %d | %.0f | %.1f s | %.1f s | %.0f | %d |\n", l, n, r, b / hz, p / hz, r * s / (cpu > 0 ? cpu : 1), e }'
}
wait_wrk() { while pgrep -x wrk >/dev/null; do sleep 0.2; done; }

attest() { # PORT: an instance token from that broker, in WRIT_INSTANCE_TOKEN
  local jt
  jt=$(WRIT_ADDR=http://127.0.0.1:$1 $w agent join-token demo-agent --field join_token | tr -d '"')
  WRIT_INSTANCE_TOKEN=$(WRIT_ADDR=http://127.0.0.1:$1 $w attest demo-agent --join-token "$jt" --field access_token | tr -d '"')
  export WRIT_INSTANCE_TOKEN
  WRIT_ADDR=http://127.0.0.1:$1 $w tool list >/dev/null
}

echo "| store | replicas | tasks/s | replicas' CPU | PostgreSQL's CPU | tasks per CPU-second (writ + database) | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
export ISSUE=task
replica 18760 --data-dir "$dir/sqlite"
attest 18760
load "SQLite (embedded)" 18760
kill "${pids[@]}"; wait 2>/dev/null || true; pids=()

url=$(scripts/postgres.sh)
common=(--store "$url" --master-key-file "$dir/master.key" --issuer http://writ.bench.test)
replica 18761 --data-dir "$dir/r1" "${common[@]}"
attest 18761
load "PostgreSQL" 18761
replica 18762 --data-dir "$dir/r2" "${common[@]}"
load "PostgreSQL" 18761 18762
replica 18763 --data-dir "$dir/r3" "${common[@]}"
load "PostgreSQL" 18761 18762 18763
