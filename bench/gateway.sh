#!/usr/bin/env bash
# Gateway overhead and revocation propagation: `bench/gateway.sh`
#
# Builds in release. A one-thread upstream runs on core 1 with wrk; wrk
# calls it directly and through a gateway (a Bearer tool token: every
# request verified, revocation-checked, decided with Cedar and audited):
# 3 s warm-up, then 15 s at 32 connections and 5 s at 1.
#  - embedded: `writ serve --dev` with its gateway, one worker thread, on
#    core 0 (the broker also records every decision there);
#  - standalone: `writ gateway` alone on core 0, its broker on core 1.
# Then revocation propagation over 200 tasks (embedded), and the embedded
# gateway once more with writ on core 1 beside wrk and the upstream (the
# latency without a wake-up across cores).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
need_wrk
build
w=target/release/writ
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
uport=18799
taskset -c 1 target/release/upstream 127.0.0.1:$uport >/dev/null &
pids+=($!)
export WRIT_TOKEN=bench-admin


# broker CORE PORT [serve args...]: starts a dev broker, registers the tool
# (served by the gateway named $TOOL_GATEWAY, else the embedded one).
broker() {
  local core=$1 port=$2; shift 2
  # The propagation run attests 200 instances from one address, past the
  # default of 120 a minute: no attestation limit here.
  WRIT_LOG=error taskset -c "$core" $w serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --data-dir "$dir/$port" \
    --limit-attest-per-minute 0 --listen 127.0.0.1:$port --worker-threads 1 "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_for http://127.0.0.1:$port/healthz
  export WRIT_ADDR=http://127.0.0.1:$port
  $w tool register bench --audience https://bench.example --scope read --upstream http://127.0.0.1:$uport \
    ${TOOL_GATEWAY:+--gateway "$TOOL_GATEWAY"} >/dev/null
  echo -n "bench-upstream-secret" | $w tool secret set bench --header X-Api-Key >/dev/null
}

# token GATEWAY: a task on bench and a tool token for it, once the gateway serves bench.
token() {
  wait_for "$1/.well-known/oauth-protected-resource/bench"
  local jt; jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
  eval "$($w attest demo-agent --join-token "$jt" --export)"
  eval "$($w task start --intent 'gateway bench' --cap bench:read --ttl 3600 --export)"
  WRIT_TOOL_TOKEN=$($w token exchange --audience bench --scope read --field access_token | tr -d '"')
  export WRIT_TOOL_TOKEN
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $WRIT_TOOL_TOKEN" "$1/bench/x")" = 200 ] \
    || { echo "the gateway refused the bench token"; exit 1; }
}

run() { # LABEL URL CONNECTIONS: 15 s at 32 connections, 5 s at one
  local d=15s
  [ "$3" = 1 ] && d=5s
  printf "| %s | %s " "$1" "$3"; taskset -c 1 wrk -t1 -c"$3" -d$d -s bench/gateway.lua "$2" | tail -1
}

echo "| path | connections | requests | req/s | p50 | p99 | p99.9 | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
broker 0 18790 --gateway-listen 127.0.0.1:18791
token http://127.0.0.1:18791
taskset -c 1 wrk -t1 -c32 -d3s -s bench/gateway.lua http://127.0.0.1:18791/bench/x >/dev/null
for c in 32 1; do
  run "upstream directly" http://127.0.0.1:$uport/x $c
  run "embedded gateway" http://127.0.0.1:18791/bench/x $c
done
taskset -c 1 target/release/propagation http://127.0.0.1:18790 http://127.0.0.1:18791 bench-admin bench 200 > "$dir/propagation.md"

TOOL_GATEWAY=edge broker 1 18890 --no-gateway
gtok=$($w gateway register edge --field token | tr -d '"')
WRIT_LOG=error WRIT_GATEWAY_TOKEN=$gtok taskset -c 0 $w gateway "${NO_LIMITS[@]}" --broker http://127.0.0.1:18890 \
  --listen 127.0.0.1:18891 --spool-dir "$dir/spool" >/dev/null 2>&1 &
pids+=($!)
token http://127.0.0.1:18891
taskset -c 1 wrk -t1 -c32 -d3s -s bench/gateway.lua http://127.0.0.1:18891/bench/x >/dev/null
for c in 32 1; do
  run "standalone gateway" http://127.0.0.1:18891/bench/x $c
done
run "gateway metadata (no auth, no upstream)" http://127.0.0.1:18891/.well-known/oauth-protected-resource/bench 1

# The same calls with writ on core 1, beside wrk and the upstream: no
# request crosses between cores, so the median is the gateway's own work
# (and wrk's and the upstream's, on the same core) without the cost of
# waking a process on the other core, which the rows above pay twice a call.
broker 1 18990 --gateway-listen 127.0.0.1:18991
token http://127.0.0.1:18991
taskset -c 1 wrk -t1 -c32 -d3s -s bench/gateway.lua http://127.0.0.1:18991/bench/x >/dev/null
run "one core for all: embedded gateway" http://127.0.0.1:18991/bench/x 1
run "one core for all: gateway metadata" http://127.0.0.1:18991/.well-known/oauth-protected-resource/bench 1
echo
cat "$dir/propagation.md"
