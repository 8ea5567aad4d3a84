#!/usr/bin/env bash
# A soak with pruning and audit retention on: `bench/soak.sh [SECONDS]
# [TASKS_PER_MINUTE] [RETENTION_SECONDS]` (defaults 60, 1000, 60).
#
# Starts `writ serve --dev` (SQLite, no gateway) with ended tasks kept
# RETENTION seconds and audit records archived past RETENTION seconds
# (checkpoints, hence archive steps, every 10 s), then runs tasks at the
# given rate (each started and completed at once, with a lifetime of 60 s)
# and samples, every tenth of the run: the broker's resident memory, the
# database file (with its WAL) and the pages in use, the rows of grants,
# tasks, revocations, instances and audit, and the archive directory
# (the load attests a new instance every 10 minutes; instances live 15). Past the
# retention (revocations: past their token's expiry and five minutes),
# memory and the database stay flat while the archive grows with history.
# BENCHMARKS.md's figure is one hour (`bench/soak.sh 3600`).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
secs=${1:-60}
rate=${2:-1000}
keep=${3:-60}
build
w=target/release/writ
# One agent credential sends every request: lift the per-credential and
# per-client limits (bench/common.sh's NO_LIMITS on main).
limits=(--limit-credential-per-minute 1000000000 --limit-client-per-minute 1000000000)
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT

port=${SOAK_PORT:-18696}
WRIT_LOG=error $w serve --dev --dev-admin-token bench-admin --no-gateway --data-dir "$dir" \
  --listen 127.0.0.1:$port "${limits[@]}" --task-retention-secs "$keep" \
  --audit-retention-secs "$keep" --audit-checkpoint-secs 10 >/dev/null 2>&1 &
broker=$!
pids+=("$broker")
wait_for http://127.0.0.1:$port/healthz
export WRIT_ADDR=http://127.0.0.1:$port WRIT_TOKEN=bench-admin WRIT_BIN=$w
jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
eval "$($w attest demo-agent --join-token "$jt" --export)"
python3 bench/storage_load.py "$WRIT_ADDR" 0 "$rate" "$secs" 60 >"$dir/tasks" &
load=$!
pids+=("$load")

step=$(( secs / 10 )); [ "$step" -ge 1 ] || step=1
echo "| s | RSS MiB | db+wal MiB | pages in use MiB | grants | tasks | revocations | instances | audit rows | archive MiB |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
sample() {
  local rss file stat
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$broker/status")
  file=$(( $(stat -c %s "$dir/writ.db") + $(stat -c %s "$dir/writ.db-wal" 2>/dev/null || echo 0) ))
  stat=$(python3 bench/storage_stat.py "$dir/writ.db")
  python3 - "$1" "$rss" "$file" "$stat" "$(du -sb "$dir/audit-archive" 2>/dev/null | cut -f1)" <<'PY'
import json, sys
t, rss, file, s, arch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5] or 0)
mib = lambda b: "%.1f" % (b / 1048576)
rows = lambda n: s.get(n, {}).get("rows", 0)
print("| %s | %s | %s | %s | %d | %d | %d | %d | %d | %s |" % (t, mib(rss * 1024), mib(file), mib(s["_file"]["used"]),
      rows("grants"), rows("tasks"), rows("revocations"), rows("instances"), rows("audit"), mib(arch)))
PY
}
start=$(date +%s)
while kill -0 "$load" 2>/dev/null; do
  sleep "$step"
  sample $(( $(date +%s) - start ))
done
echo "tasks run: $(cat "$dir/tasks")"
