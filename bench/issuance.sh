#!/usr/bin/env bash
# Token issuance side by side, and its bound: `bench/issuance.sh`
#
# Sets up everything itself (a release build of writ and the bench tools,
# oidc-provider from npm into bench/oidc, wrk from Debian, `cryptography`
# in .venv) and prints markdown tables:
#  - node oidc-provider 9: client credentials, one confidential client
#    (client_secret_basic), JWT access tokens, Ed25519 and ES256;
#  - writ: task-token issuance (Cedar decision, task and grant records and
#    their audit records committed durably before the answer), with a
#    Bearer instance token and with a DPoP-bound one (a fresh proof per
#    request, made ahead by `proofs make` so the client's signing is not
#    counted: every proof is verified, its key matched to the token's
#    `cnf.jkt`, its `ath` checked and its `jti` remembered), token
#    exchange (a tool token for a task token, recorded), introspection
#    (beside oidc-provider's introspection of an opaque token), and
#    `GET /healthz` (its HTTP stack alone: the floor under every row);
#  - the raw signature rate of aws-lc-rs on one thread (the ceiling).
# Each server runs alone on core 0 (writ with one worker thread;
# oidc-provider is single-threaded), wrk on core 1: 3 s warm-up, then 32
# connections for 15 s and 1 connection for 5 s. One token from each
# server is verified with `cryptography` against the server's JWKS.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
need_wrk
build
(cd bench/oidc && npm ci --silent --no-audit --no-fund)
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import cryptography' 2>/dev/null || .venv/bin/pip install -q cryptography
w=target/release/writ
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
export WRIT_TOKEN=bench-admin
secret=bench-client-secret-0123456789abcdef
OIDC_BASIC=$(printf 'bench:%s' "$secret" | base64 -w0)
export OIDC_BASIC

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_mib() { awk '/VmHWM/ {printf "%d", $2 / 1024}' "/proc/$1/status"; }

# row LABEL URL PID CONNECTIONS DURATION: one wrk run and the server's CPU and memory.
row() {
  local before after
  before=$(ticks "$3")
  printf "| %s | %s | " "$1" "$4"
  taskset -c 1 wrk -t1 -c"$4" -d"$5" -s bench/issuance.lua "$2" | tail -n 1
  after=$(ticks "$3")
  printf " | %s s | %s MiB |\n" "$(awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}')" "$(peak_mib "$3")"
}

# measure LABEL URL PID: warm-up, then 32 connections (15 s) and 1 (5 s).
measure() {
  taskset -c 1 wrk -t1 -c32 -d3s -s bench/issuance.lua "$2" >/dev/null
  row "$1" "$2" "$3" 32 15s
  row "$1" "$2" "$3" 1 5s
}

echo "| server: what | connections | req/s | p50 | p99 | p99.9 | errors | server CPU | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
# peer PORT ALG FORMAT: oidc-provider on core 0; sets peer_pid (the shell)
# and node_pid (the server), and OIDC_TOKEN to a token it issued.
peer() {
  (cd bench/oidc && PORT=$1 ALG=$2 FORMAT=$3 exec taskset -c 0 node server.js >/dev/null 2>&1) &
  peer_pid=$!
  pids+=("$peer_pid")
  wait_for "http://127.0.0.1:$1/jwks"
  node_pid=$(pgrep -P "$peer_pid" node || echo "$peer_pid")
  OIDC_TOKEN=$(curl -s -u "bench:$secret" -d grant_type=client_credentials -d scope=read "http://127.0.0.1:$1/token" \
    | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  export OIDC_TOKEN
}
stop_peer() { kill "$peer_pid" 2>/dev/null; wait "$peer_pid" 2>/dev/null || true; }

checks=()
port=18800
for alg in Ed25519 ES256; do
  peer $port $alg jwt
  checks+=("oidc-provider $alg: $(.venv/bin/python bench/verify_token.py "http://127.0.0.1:$port/jwks" "$OIDC_TOKEN")")
  ISSUE=oidc measure "oidc-provider 9: client credentials, $alg" "http://127.0.0.1:$port/token" "$node_pid"
  stop_peer
done

# The peer's introspection: an opaque token in its in-memory store.
peer $port Ed25519 opaque
curl -s -u "bench:$secret" -d "token=$OIDC_TOKEN" "http://127.0.0.1:$port/token/introspection" | grep -q '"active":true' \
  || { echo "oidc-provider does not introspect its token as active"; exit 1; }
ISSUE=oidc-introspect measure "oidc-provider 9: introspection (opaque token, in-memory store)" "http://127.0.0.1:$port/token/introspection" "$node_pid"
stop_peer

port=18790
WRIT_LOG=error taskset -c 0 $w serve --dev --dev-admin-token bench-admin "${NO_LIMITS[@]}" --no-gateway --data-dir "$dir/writ" \
  --listen 127.0.0.1:$port --worker-threads 1 >/dev/null 2>&1 &
writ_pid=$!
pids+=("$writ_pid")
wait_for "http://127.0.0.1:$port/healthz"
export WRIT_ADDR=http://127.0.0.1:$port
jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
eval "$($w attest demo-agent --join-token "$jt" --export)"
eval "$($w task start --intent 'issuance bench' --cap tickets:read --ttl 3600 --export)"
export WRIT_INSTANCE_TOKEN WRIT_TASK_TOKEN
checks+=("writ task token: $(.venv/bin/python bench/verify_token.py "$WRIT_ADDR/.well-known/jwks.json" "$WRIT_TASK_TOKEN")")
ISSUE=task measure "writ: task token (decision + durable audit), EdDSA" "$WRIT_ADDR/v1/tasks" "$writ_pid"
ISSUE=exchange measure "writ: token exchange (recorded), EdDSA" "$WRIT_ADDR/oauth2/token" "$writ_pid"
ISSUE=introspect measure "writ: introspection" "$WRIT_ADDR/oauth2/introspect" "$writ_pid"
ISSUE=health measure "writ: GET /healthz (HTTP alone: no credential, decision or store)" "$WRIT_ADDR/healthz" "$writ_pid"
# Task issuance with a DPoP-bound instance token, last (the task the rows
# above use lives by its lease, and making proofs takes time). Proofs are
# made for each wrk run just before it (each is good for a minute), more
# than the run can use.
target/release/proofs keygen "$dir/dpop.pem"
jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
dpop_instance=$($w --dpop-key "$dir/dpop.pem" attest demo-agent --join-token "$jt" --field access_token | tr -d '"')
proofs() { # COUNT: a file of COUNT fresh proofs for POST /v1/tasks
  taskset -c 1 target/release/proofs make "$dir/dpop.pem" POST "$WRIT_ADDR/v1/tasks" "$dpop_instance" "$1" > "$dir/proofs"
}
proofs 40000
WRIT_INSTANCE_TOKEN=$dpop_instance ISSUE=task-dpop DPOP_PROOFS="$dir/proofs" \
  taskset -c 1 wrk -t1 -c32 -d3s -s bench/issuance.lua "$WRIT_ADDR/v1/tasks" >/dev/null
proofs 300000
WRIT_INSTANCE_TOKEN=$dpop_instance ISSUE=task-dpop DPOP_PROOFS="$dir/proofs" \
  row "writ: task token, DPoP-bound (a fresh proof per request), EdDSA" "$WRIT_ADDR/v1/tasks" "$writ_pid" 32 15s
proofs 60000
WRIT_INSTANCE_TOKEN=$dpop_instance ISSUE=task-dpop DPOP_PROOFS="$dir/proofs" \
  row "writ: task token, DPoP-bound (a fresh proof per request), EdDSA" "$WRIT_ADDR/v1/tasks" "$writ_pid" 1 5s
echo
# The ceiling on core 0 alone: the broker, pinned there too, is stopped
# first (left running after the DPoP rows, it halved the rates below).
kill "$writ_pid" 2>/dev/null; wait "$writ_pid" 2>/dev/null || true
taskset -c 0 target/release/signrate 1
echo
for c in "${checks[@]}"; do echo "- $c"; done
