#!/usr/bin/env bash
# Every benchmark in one command: `bench/run.sh > bench.md`
#
# Sets everything up itself (wrk from Debian, a release build of writ and
# the bench tools, the pinned oidc-provider from npm, `cryptography` in
# .venv), then runs, in order, and prints as one markdown document:
#  1. policy decisions in process at 10 / 100 / 1,000 policies, beside
#     cedar-policy used directly (bench/benches/policy.rs);
#  2. AuthZEN decisions over HTTP (bench/authzen.sh);
#  3. token issuance beside node oidc-provider and the signature ceiling
#     (bench/issuance.sh);
#  4. gateway added latency and throughput beside the upstream called
#     directly, and revocation propagation (bench/gateway.sh);
#  5. memory for 100k and 1M live tokens in the broker and a gateway
#     (bench/memory.sh);
#  6. revocation reaching 1, 10 and 100 gateways (bench/fanout.sh);
#  7. issuance on PostgreSQL with 1, 2 and 3 replicas beside SQLite
#     (bench/replicas.sh);
#  8. what metrics and traces cost on issuance and at the gateway
#     (bench/overhead.sh);
#  9. bytes on disk per issued token and audit record (bench/storage.sh),
#     and a soak at 1,000 tasks a minute with pruning and audit retention
#     on (bench/soak.sh; SOAK_SECS, 120 s by default; one hour for
#     BENCHMARKS.md);
# and, first in the output, the six targets at a glance (bench/summary.py).
# Progress goes to stderr; BENCHMARKS.md keeps the latest output with the
# prose that reads it.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
start=$(date +%s)
say() { echo "[bench/run.sh $(( $(date +%s) - start )) s] $*" >&2; }

say "setting up"
need_wrk
# The peer and the token checker install while writ builds.
(
  (cd bench/oidc && npm ci --silent --no-audit --no-fund)
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -c 'import cryptography' 2>/dev/null || .venv/bin/pip install -q cryptography
  .venv/bin/python -c 'import opentelemetry.proto' 2>/dev/null || .venv/bin/pip install -q opentelemetry-proto
) &
installs=$!
# One build for everything, the in-process bench included: building the
# bench apart (`cargo bench`) would unify features differently and compile
# the dependencies a second time. No debug line tables: nothing here
# profiles, and they cost build time.
policy_bench=$(CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release -q -p writ -p writ-bench --bins --benches \
  --message-format=json | sed -n 's/.*"executable":"\([^"]*\/policy-[^"]*\)".*/\1/p' | tail -n 1)
[ -x "$policy_bench" ] || { echo "bench/run.sh: the policy bench did not build" >&2; exit 1; }
export WRIT_BENCH_BUILT=1
wait "$installs" || { echo "bench/run.sh: installing oidc-provider or cryptography failed" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# section NAME TITLE COMMAND...: runs one section into $out/NAME.md. A
# section that fails says so in its place and the others still run (a
# run is long; one failure should not lose the rest); the run then exits 1.
failed=""
section() {
  local name=$1 title=$2 rc=0; shift 2
  say "$title"
  { echo "## $title"; echo; "$@" || rc=$?; echo; } > "$out/$name.md"
  if [ "$rc" -ne 0 ]; then
    say "$title: FAILED (exit $rc; its error is above)"
    echo "**This section failed (exit $rc); its error went to the run's standard error.**" >> "$out/$name.md"
    echo >> "$out/$name.md"
    failed="$failed $name"
  fi
}
policy_section() {
  "$policy_bench" --bench --warm-up-time 1 --measurement-time 3 2>/dev/null \
    | awk '/^policy_decision/ && !fence {print "\n```"; fence = 1} {print} END {if (fence) print "```"}'
}

section policy "Policy decisions, in process" policy_section
section authzen "AuthZEN decisions over HTTP" bench/authzen.sh
section issuance "Token issuance side by side" bench/issuance.sh
section gateway "Gateway: added latency and throughput, revocation propagation" bench/gateway.sh
section fanout "Revocation reaching 100 gateways" bench/fanout.sh
section replicas "Issuance on PostgreSQL with replicas" bench/replicas.sh
section storage "Storage: bytes on disk per token and audit record" bench/storage.sh
section soak "Soak: 1,000 tasks a minute with pruning and audit retention" bench/soak.sh "${SOAK_SECS:-120}"
section memory "Memory for live tokens" bench/memory.sh
section overhead "Telemetry overhead: metrics and traces" bench/overhead.sh

echo "# writ benchmarks"
echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), \
$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), \
$(. /etc/os-release && echo "$PRETTY_NAME"), $(rustc --version | cut -d' ' -f1-2), \
node $(node --version). Run on $(date -u +%Y-%m-%d)."
echo
echo "## The targets at a glance"
echo
python3 bench/summary.py "$out"
echo
for s in policy authzen issuance gateway fanout replicas storage soak memory overhead; do
  if [ -f "$out/$s.md" ]; then cat "$out/$s.md"; fi
done

echo "The whole run took $(( $(date +%s) - start )) s (\`bench/run.sh\`)."
if [ -n "$failed" ]; then
  echo
  echo "**Sections that failed:$failed.**"
  say "done; sections that failed:$failed"
  exit 1
fi
say "done"
