#!/usr/bin/env bash
# Revocation reaching many gateways: `bench/fanout.sh [REVOCATIONS]`
#
# `writ serve --dev` (SQLite, no embedded gateway, one worker thread) on
# core 0; on core 1 the `fanout` tool registers 1, 10 and then 100
# gateway credentials, each following the broker's real revocation feed
# with its own long-poll (what `writ gateway` does), and completes tasks
# one after another (50 a second). A row per gateway count: the time from
# sending `complete` to the revocation reaching each gateway, over every
# (gateway, revocation) pair; revocations that did not arrive within 10 s;
# and the broker's CPU time per revocation, from which the cost of each
# extra gateway follows.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
build
w=target/release/writ
n=${1:-200}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
port=18795
WRIT_LOG=error taskset -c 0 $w serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --no-gateway \
  --data-dir "$dir/writ" --listen 127.0.0.1:$port --worker-threads 1 >/dev/null 2>&1 &
pids+=($!)
broker_pid=$!
wait_for http://127.0.0.1:$port/healthz
export WRIT_ADDR=http://127.0.0.1:$port WRIT_TOKEN=bench-admin
$w tool register bench --audience https://bench.example --scope read >/dev/null

echo "| gateways | revocations | arrival p50 | p99 | max | not arrived | broker CPU per revocation |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
for g in 1 10 100; do
  taskset -c 1 target/release/fanout "$WRIT_ADDR" bench-admin "$g" "$n" "$broker_pid"
done
