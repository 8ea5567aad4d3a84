#!/usr/bin/env bash
# Runs a command against a throwaway `writ serve --dev` (broker and embedded
# gateway on free ports, state in a temporary directory), with WRIT_ADDR,
# WRIT_TOKEN (the dev admin credential) and WRIT_GATEWAY set, as the example
# agents expect; stops writ afterwards and exits with the command's status.
#   WRIT_BIN=target/debug/writ scripts/with-dev-writ.sh npm --prefix examples/agents/typescript start
set -euo pipefail
bin=${WRIT_BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/writ}
dir=$(mktemp -d)
token="example-admin-$RANDOM$RANDOM"
"$bin" serve --dev --dev-admin-token "$token" --data-dir "$dir" \
  --listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 >"$dir/stdout.log" 2>"$dir/stderr.log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 600); do
  grep -q '^writ listening on ' "$dir/stdout.log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr.log"; echo "writ serve --dev did not start"; exit 1; }
  sleep 0.1
done
WRIT_ADDR=$(sed -n 's/^writ listening on //p' "$dir/stdout.log")
WRIT_GATEWAY=$(sed -n 's/^gateway listening on //p' "$dir/stdout.log")
[ -n "$WRIT_ADDR" ] || { echo "writ serve --dev did not start"; exit 1; }
export WRIT_ADDR WRIT_GATEWAY WRIT_TOKEN="$token"
"$@"
