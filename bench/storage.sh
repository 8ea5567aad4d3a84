#!/usr/bin/env bash
# Bytes on disk per issued token, per audit record and per task:
# `bench/storage.sh [N]` (default 2000 tasks).
#
# Starts `writ serve --dev` (SQLite, no gateway), attests demo-agent, and
# runs N tasks (each started and completed at once: one task token, its
# audit records, one revocation). SQLite's dbstat table gives the bytes of
# each table with its indexes before and after; the differences over the
# rows added are the figures. Nothing is pruned during the run (tokens
# outlive it); bench/soak.sh shows what pruning and retention keep.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
n=${1:-2000}
build
w=target/release/writ
# One agent credential sends every request: lift the per-credential and
# per-client limits (bench/common.sh's NO_LIMITS on main).
limits=(--limit-credential-per-minute 1000000000 --limit-client-per-minute 1000000000)
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT

port=18695
WRIT_LOG=error $w serve --dev --dev-admin-token bench-admin --no-gateway --data-dir "$dir" \
  --listen 127.0.0.1:$port "${limits[@]}" >/dev/null 2>&1 &
pids+=($!)
wait_for http://127.0.0.1:$port/healthz
export WRIT_ADDR=http://127.0.0.1:$port WRIT_TOKEN=bench-admin WRIT_BIN=$w
jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
eval "$($w attest demo-agent --join-token "$jt" --export)"
before=$(python3 bench/storage_stat.py "$dir/writ.db")
python3 bench/storage_load.py "$WRIT_ADDR" "$n" 0 0 3600 >/dev/null
after=$(python3 bench/storage_stat.py "$dir/writ.db")
python3 - "$n" "$before" "$after" <<'PY'
import json, sys
n, b, a = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
def d(t, k):
    return a.get(t, {}).get(k, 0) - b.get(t, {}).get(k, 0)
print("| what (SQLite, %d tasks) | rows added | bytes on disk each |" % n)
print("|---|---:|---:|")
for label, t in (("issued token (grants row + indexes)", "grants"),
                 ("audit record (audit row + key)", "audit"),
                 ("task (tasks row + indexes)", "tasks"),
                 ("revocation", "revocations")):
    rows = d(t, "rows")
    print("| %s | %d | %s |" % (label, rows, ("%.0f" % (d(t, "bytes") / rows)) if rows else "-"))
print("| whole database per task (pages in use) | %d | %.0f |" % (n, d("_file", "used") / n))
per = lambda t: d(t, "bytes") / max(d(t, "rows"), 1)
print()
print("<!-- summary: %.0f B per issued token, %.0f B per audit record, %.1f KiB per task kept (SQLite); see the soak for what retention keeps -->"
      % (per("grants"), per("audit"), d("_file", "used") / n / 1024))
PY
