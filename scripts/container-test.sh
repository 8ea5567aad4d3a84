#!/usr/bin/env bash
# Builds the container images from Debian packages and the already-built
# binary, starts packaging/container/compose.yaml (PostgreSQL with TLS, two
# broker replicas, a gateway), and runs a first session against it: agent
# and tool registered on one replica, a task started on the other, the
# token verified and ended across them, the audit chain verified.
# Not part of scripts/test.sh (it needs podman and a few minutes).
#
#   WRIT_BIN   the binary to ship (default: target/release/writ, built if absent)
#   SUITE      the Debian suite of the base images (default: bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
step() { printf '\n==> %s\n' "$*"; }

step "tools: podman, podman-compose, mmdebstrap (Debian packages)"
need=""
for t in podman podman-compose mmdebstrap openssl curl; do
  command -v "$t" >/dev/null || need="$need $t"
done
if [ -n "$need" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $need uidmap
fi

bin=${WRIT_BIN:-$root/target/release/writ}
if [ ! -x "$bin" ]; then
  step "building the release binary"
  cargo build --release -p writ
fi
suite=${SUITE:-bookworm}
work=$(mktemp -d)
ctx=$root/packaging/container
cleanup() {
  (cd "$ctx" && podman-compose down -v >/dev/null 2>&1) || true
  rm -rf "$work" "$ctx/tls" "$ctx/secrets"
}
trap cleanup EXIT

step "base images from Debian packages (mmdebstrap $suite), imported into podman"
if ! podman image exists localhost/writ-base:"$suite"; then
  mmdebstrap --variant=minbase --include=ca-certificates "$suite" "$work/base.tar"
  podman import "$work/base.tar" localhost/writ-base:"$suite"
fi
if ! podman image exists localhost/writ-postgres-base:"$suite"; then
  mmdebstrap --variant=minbase --include=postgresql "$suite" "$work/pg.tar"
  podman import "$work/pg.tar" localhost/writ-postgres-base:"$suite"
fi

# Sandboxes without cgroup v2 or with fixed resource limits: crun refuses
# ("cgroups in hybrid mode"), and raising RLIMIT_NPROC is not allowed. Then
# runc, and limits within the current hard ones.
if ! podman run --rm localhost/writ-base:"$suite" true >/dev/null 2>&1; then
  command -v runc >/dev/null || apt-get install -y -qq runc
  cat >"$work/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
  export CONTAINERS_CONF=$work/containers.conf
  echo "note: podman's defaults do not run here; using runc and these limits: $(cat "$work/containers.conf" | tr '\n' ' ')"
  podman run --rm localhost/writ-base:"$suite" true
fi

step "images: writ (the binary copied in) and postgres"
mkdir -p "$work/ctx/empty"
cp "$bin" "$work/ctx/writ"
podman build -q -f "$ctx/Containerfile" --build-arg BASE=localhost/writ-base:"$suite" \
  -t localhost/writ:dev "$work/ctx"
podman build -q -f "$ctx/Containerfile.postgres" --build-arg BASE=localhost/writ-postgres-base:"$suite" \
  -t localhost/writ-postgres:dev "$ctx"
ls -l "$bin" | awk '{print "binary size: " $5 " bytes"}'
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'localhost/writ(-postgres)?:dev'

step "a throwaway CA, certificates, and one master key for both replicas"
mkdir -p "$ctx/tls" "$ctx/secrets"
(
  cd "$ctx/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj /CN=writ-compose-ca 2>/dev/null
  issue() { # name SANs
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf 'subjectAltName=%s\n' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
  }
  issue writ "DNS:broker-1,DNS:broker-2,DNS:gateway,DNS:localhost,IP:127.0.0.1"
  issue server "DNS:postgres"
  rm -f ca.key ./*.csr ./*.ext
  # The writ user (65532) and the postgres user of the image read them.
  chmod 644 ./*.crt ca.pem writ.key server.key
)
: >"$ctx/secrets/gateway.env"
head -c 32 /dev/urandom | base64 >"$ctx/secrets/master.key"
chmod 600 "$ctx/secrets/master.key"
chown 65532:65532 "$ctx/secrets/master.key" 2>/dev/null || true

cd "$ctx"
step "compose up: postgres, broker-1, broker-2"
podman-compose up -d postgres broker-1 broker-2
export WRIT_CA_FILE=$ctx/tls/ca.pem
wait_for() { # url
  for _ in $(seq 1 120); do
    curl -fsS --cacert "$WRIT_CA_FILE" "$1/healthz" >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "not up: $1" >&2; podman-compose logs >&2; return 1
}
wait_for https://localhost:8750
wait_for https://localhost:8760
admin=$(podman-compose logs broker-1 broker-2 2>/dev/null | grep -A1 'Bootstrap admin token' | grep -oE 'writ_admin_[A-Za-z0-9_-]+' | head -n 1)
[ -n "$admin" ] || { echo "no bootstrap admin token in the logs" >&2; podman-compose logs >&2; exit 1; }
export WRIT_TOKEN=$admin
w() { "$bin" "$@"; }
one=https://localhost:8750
two=https://localhost:8760

step "first session: policies, agent and tool on replica 1"
WRIT_ADDR=$one w policy push "$root/examples/policies"
WRIT_ADDR=$one w agent register --file "$root/examples/agents/demo-agent.json"
WRIT_ADDR=$one w tool register --file "$root/examples/tools/tickets.json"
jt=$(WRIT_ADDR=$one w agent join-token demo-agent --field join_token)

step "the gateway, with a credential made on replica 2"
gw_token=$(WRIT_ADDR=$two w gateway register compose-gateway --field token)
printf 'WRIT_GATEWAY_TOKEN=%s\n' "$gw_token" >"$ctx/secrets/gateway.env"
chmod 644 "$ctx/secrets/gateway.env"
podman-compose up -d gateway
wait_for https://localhost:8751

step "attest and start a task on replica 2; inspect and end it on replica 1"
inst=$(WRIT_ADDR=$two w attest demo-agent --join-token "$jt" --field access_token)
started=$(WRIT_ADDR=$two w task start --instance-token "$inst" --intent 'summarise open tickets' --cap tickets:read)
echo "$started"
task=$(printf '%s' "$started" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
task_id=$(printf '%s' "$started" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task_id"])')
WRIT_ADDR=$one w token inspect "$task"
WRIT_ADDR=$one w task complete --instance-token "$inst" "$task_id"
WRIT_ADDR=$one w token inspect "$task" | grep -q '"active": false' \
  && echo "ended on replica 1: the task token is no longer active (replica 1 says so too)"
WRIT_ADDR=$one w --output table agent list
WRIT_ADDR=$one w audit verify
curl -fsS --cacert "$WRIT_CA_FILE" https://localhost:8751/healthz; echo
echo "container test: OK (task $task_id)"
