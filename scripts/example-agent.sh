#!/usr/bin/env bash
# Runs an example agent against a throwaway `writ serve --dev` (target/debug/writ
# unless WRIT_BIN says otherwise), with only WRIT_ADDR and WRIT_TOKEN set (and
# WRIT_GATEWAY, since the ports are picked free): scripts/example-agent.sh CMD...
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${WRIT_BIN:-$PWD/target/debug/writ}
dir=$(mktemp -d)
token="writ_admin_example_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
"$bin" serve --dev --dev-admin-token "$token" --data-dir "$dir" \
  --listen 127.0.0.1:0 --gateway-listen 127.0.0.1:0 >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 300); do
  grep -q '^writ listening on ' "$dir/stdout" && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/stderr"; exit 1; }
  sleep 0.1
done
addr=$(grep '^writ listening on ' "$dir/stdout" | awk '{print $NF}')
gateway=$(grep '^gateway listening on ' "$dir/stdout" | awk '{print $NF}')
[ -n "$addr" ] && [ -n "$gateway" ] || { echo "writ serve did not start"; cat "$dir/stderr"; exit 1; }
if ! env -i PATH="$PATH" HOME="${HOME:-/tmp}" WRIT_ADDR="$addr" WRIT_TOKEN="$token" WRIT_GATEWAY="$gateway" \
  timeout 300 "$@"; then
  echo "the example agent failed; writ serve's log:"
  cat "$dir/stderr"
  exit 1
fi
