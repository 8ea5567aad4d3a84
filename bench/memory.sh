#!/usr/bin/env bash
# Memory for N live tokens in the broker and in a gateway:
# `bench/memory.sh [N,N,...]` (default 100000,1000000).
#
# Starts `writ serve --dev` without its gateway (leases of an hour, so
# nothing lapses) and a standalone `writ gateway` in front of a small
# upstream. target/release/livetokens makes tool tokens by token exchange
# (each one a grant the broker records and keeps live until it expires)
# and calls the gateway once with each (the gateway verifies it and keeps
# it in its verified-token cache); at each N it reads both processes'
# resident memory (now and peak) and the size of the broker's data
# directory. The task token (10 minutes) is renewed by heartbeat, so a
# slow machine still reaches the last count. Memory is what is measured
# here, not speed: the processes
# share both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
counts=${1:-100000,1000000}
build
w=target/release/writ
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT

uport=18699
target/release/upstream 127.0.0.1:$uport >/dev/null &
pids+=($!)
bport=18690
WRIT_LOG=error $w serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --no-gateway --data-dir "$dir/broker" \
  --listen 127.0.0.1:$bport --lease-ttl 3600 >/dev/null 2>&1 &
broker_pid=$!
pids+=("$broker_pid")
wait_for http://127.0.0.1:$bport/healthz
export WRIT_ADDR=http://127.0.0.1:$bport WRIT_TOKEN=bench-admin
$w tool register bench --audience https://bench.example --scope read --upstream http://127.0.0.1:$uport \
  --gateway edge >/dev/null
echo -n "bench-upstream-secret" | $w tool secret set bench --header X-Api-Key >/dev/null
gtok=$($w gateway register edge --field token | tr -d '"')
gport=18691
WRIT_LOG=error WRIT_GATEWAY_TOKEN=$gtok $w gateway "${NO_LIMITS[@]}" --broker http://127.0.0.1:$bport \
  --listen 127.0.0.1:$gport --spool-dir "$dir/spool" >/dev/null 2>&1 &
gateway_pid=$!
pids+=("$gateway_pid")
wait_for "http://127.0.0.1:$gport/.well-known/oauth-protected-resource/bench"
jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
eval "$($w attest demo-agent --join-token "$jt" --export)"
eval "$($w task start --intent 'memory bench' --cap bench:read --ttl 3600 --export)"
target/release/livetokens "$WRIT_ADDR" "http://127.0.0.1:$gport" bench "$WRIT_TASK_TOKEN" \
  "$broker_pid" "$gateway_pid" "$dir/broker" "$counts" "$WRIT_TASK_ID" "$WRIT_INSTANCE_TOKEN"
