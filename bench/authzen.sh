#!/usr/bin/env bash
# AuthZEN decision throughput over HTTP: `bench/authzen.sh`
# Builds writ in release, starts `writ serve --dev` (SQLite, every decision
# audited durably) pinned to core 0, and drives it with wrk from core 1:
# 3 s warm-up, then 32 connections for 15 s, then 1 connection for 5 s.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
need_wrk
build
dir=$(mktemp -d)
port=18790
taskset -c 0 target/release/writ serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --no-gateway --data-dir "$dir" \
  --listen 127.0.0.1:$port --worker-threads 1 >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
wait_for http://127.0.0.1:$port/healthz
url=http://127.0.0.1:$port/access/v1/evaluation
taskset -c 1 wrk -t1 -c32 -d3s -s bench/authzen.lua "$url" >/dev/null
echo "| connections | requests | req/s | p50 | p99 | p99.9 | errors |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
printf "| 32 "; taskset -c 1 wrk -t1 -c32 -d15s -s bench/authzen.lua "$url" | tail -1
printf "| 1 "; taskset -c 1 wrk -t1 -c1 -d5s -s bench/authzen.lua "$url" | tail -1
# The bound of a lone client: each decision waits for one durable commit.
secs=$(dd if=/dev/zero of="$dir/dsync" bs=4k count=1000 oflag=dsync 2>&1 | awk -F', ' '/copied/ {split($3, a, " "); print a[1]}')
echo
awk -v s="$secs" 'BEGIN {printf "Bound, same disk: %.0f synchronous 4 KiB writes/s (`dd oflag=dsync`), %.0f µs each: a lone client waits for at least one per decision.\n", 1000 / s, s * 1000}'
