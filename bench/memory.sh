#!/usr/bin/env bash
# Memory for N live tokens in the broker: `bench/memory.sh [N...]`
# (default 100000 1000000). Starts `writ serve --dev` (release, one worker
# thread, leases of an hour so nothing lapses), issues task tokens with wrk
# (bench/issuance.lua, 32 connections) until N are live, then reads the
# server's resident memory (now and peak) and the size of its data
# directory. One markdown row per N.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null); }
cargo build --release -q -p writ
w=target/release/writ
counts=("${@:-100000 1000000}")
# shellcheck disable=SC2206
counts=(${counts[*]})
dir=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
echo "| live tokens | issued in | broker RSS | broker peak RSS | data directory |"
echo "|---:|---:|---:|---:|---:|"
for n in "${counts[@]}"; do
  rm -rf "$dir/d"
  port=18792
  WRIT_LOG=error taskset -c 0 $w serve --dev --dev-admin-token bench-admin --no-gateway --data-dir "$dir/d" \
    --listen 127.0.0.1:$port --worker-threads 1 --lease-ttl 3600 >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$port/healthz >/dev/null && break; sleep 0.1; done
  export WRIT_ADDR=http://127.0.0.1:$port WRIT_TOKEN=bench-admin
  jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
  eval "$($w attest demo-agent --join-token "$jt" --export)"
  export WRIT_INSTANCE_TOKEN
  issued() { curl -s "$WRIT_ADDR/metrics" | awk '/^writ_tokens_issued_total/ {print $2}'; }
  start=$(date +%s)
  while [ "$(issued)" -lt "$n" ]; do
    ISSUE=task taskset -c 1 wrk -t1 -c32 -d5s -s bench/issuance.lua "$WRIT_ADDR/v1/tasks" >/dev/null
  done
  secs=$(( $(date +%s) - start ))
  rss=$(awk '/VmRSS/ {printf "%d", $2 / 1024}' /proc/$pid/status)
  peak=$(awk '/VmHWM/ {printf "%d", $2 / 1024}' /proc/$pid/status)
  disk=$(du -sm "$dir/d" | cut -f1)
  printf "| %s (%s issued) | %s s | %s MiB | %s MiB | %s MiB |\n" "$n" "$(issued)" "$secs" "$rss" "$peak" "$disk"
  kill $pid; wait $pid 2>/dev/null || true
done
