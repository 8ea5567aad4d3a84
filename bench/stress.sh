#!/usr/bin/env bash
# The outside review's denial-of-service attacks, all at once, against a
# legitimate client: `bench/stress.sh [--seconds 60] > stress.md`
#
# Not a test (it is in no test command): a measurement, printed as
# markdown, whose figures SECURITY.md quotes. Builds writ in release, or
# takes the binary in WRIT_BIN (the header says which build ran); sets up
# .venv as the interop tests have it (interop/python/requirements.txt, with
# py-spiffe, and `cryptography`). Then bench/stress.py starts a real
# `writ serve --dev` with its embedded gateway and a real `writ node` for
# one registered node, and for --seconds (60) runs side by side:
#  H4  1,000 half-sent requests held open to each of the broker and the
#      gateway from 127.0.0.2, each reopened when the server closes it;
#  H7  `/v1/attest` flooded from 127.0.0.3 with a throwaway DPoP key and a
#      join token that does not exist in every request;
#  H6  one agent, from 127.0.0.4, opening stdio MCP sessions (bench/mcp_echo.py
#      behind the gateway) as fast as it can, a new task whenever one is full;
#  H2  48 processes whose executables are copies of a Python interpreter
#      padded to 480 MB, asking the node for SVIDs, each a new file for the
#      node to hash (bench/stress_peer.py), as another user when run as root.
# Meanwhile a legitimate client at 127.0.0.1, after --baseline (10) seconds
# alone, keeps asking at a steady rate: health and JWKS from the broker,
# health from the gateway, an agent's whole task (DPoP attestation with a
# join token, task, exchange, a call through the gateway), an MCP session
# with a tools/call as another agent, and an X.509-SVID from the node with
# py-spiffe (the workload's selectors: its uid and its executable). What
# it got, what each attack did and how writ answered are printed, then
# the one line that matters: legitimate requests lost.
#
# Linux only: the roles are told apart by their loopback source addresses
# (127.0.0.x, all of which Linux answers on), and the node attests peers
# through /proc. Other options (--slow, --peers, --exe-mb, --baseline):
# `.venv/bin/python bench/stress.py run --help`. Progress goes to stderr;
# STRESS_KEEP=1 keeps the run's directory (the logs of writ serve and writ
# node, each role's stderr) instead of removing it.
# The machine's other work shows in the latencies: read them beside the
# quiet baseline of the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(uname -s)" = Linux ] || { echo "bench/stress.sh: Linux only (127.0.0.x source addresses, /proc)" >&2; exit 1; }
say() { echo "[bench/stress.sh] $*" >&2; }

if [ -n "${WRIT_BIN:-}" ]; then
  bin=$WRIT_BIN
else
  say "building writ (release)"
  CARGO_PROFILE_RELEASE_DEBUG=false cargo build --release -q -p writ
  bin=${CARGO_TARGET_DIR:-target}/release/writ
fi
[ -x "$bin" ] || { echo "bench/stress.sh: no writ binary at $bin" >&2; exit 1; }
bin=$(realpath "$bin")
case "$(basename "$(dirname "$bin")")" in
  release) build="release build" ;;
  debug) build="debug build (slower than release: compare with the quiet baseline, not with BENCHMARKS.md)" ;;
  *) build="build of unknown profile" ;;
esac

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import spiffe, cryptography' 2>/dev/null \
  || .venv/bin/pip install --quiet --disable-pip-version-check -r interop/python/requirements.txt cryptography

stress=
trap '[ -n "$stress" ] && kill "$stress" 2>/dev/null; wait' EXIT
trap 'exit 130' INT TERM

echo "# writ under H2, H4, H6 and H7 at once"
echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), \
$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), \
$(. /etc/os-release && echo "$PRETTY_NAME"), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start. \
writ $("$bin" --version | awk '{print $NF}'), $build, at $(git rev-parse --short HEAD 2>/dev/null || echo '?'). \
Run on $(date -u +%Y-%m-%d) as $(id -un)."
echo
.venv/bin/python bench/stress.py run --bin "$bin" "$@" &
stress=$!
wait "$stress"
stress=
