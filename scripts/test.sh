#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need,
# then runs every gate. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "python packages for the interop tests (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r interop/python/requirements.txt

step "node packages for the interop tests (interop/node, npm ci)"
(cd interop/node && npm ci --silent --no-audit --no-fund)

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo deny: licences, sources, bans (offline; see deny.toml)"
command -v cargo-deny >/dev/null || cargo install --quiet --locked cargo-deny
# cargo deny reads the metadata of every platform's dependencies: fetch them
# all first (the build above fetched this platform's only).
cargo fetch --locked --quiet
cargo deny --offline check licenses bans sources

step "system tools for the deployment tests: curl (a TLS client), systemd-analyze (the unit check)"
missing=""
command -v curl >/dev/null || missing="$missing curl"
command -v systemd-analyze >/dev/null || missing="$missing systemd"
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing
fi

step "PostgreSQL for the store conformance and replica tests (scripts/postgres.sh)"
WRIT_TEST_POSTGRES=$(scripts/postgres.sh)
export WRIT_TEST_POSTGRES
trap 'scripts/postgres.sh stop' EXIT

step "cargo test (unit, store conformance on SQLite and PostgreSQL, end-to-end against the real binary)"
cargo test --workspace --locked

step "fuzzing: ${FUZZ_SECONDS:-30} s a target (cargo fuzz, libFuzzer, on a copy of the corpus)"
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
fuzz_dir=$(mktemp -d)
for target in access_token dpop_proof scope_request api_request mcp_message token_exchange_form authzen_request; do
  cp -r "fuzz/corpus/$target" "$fuzz_dir/$target"
  if (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$fuzz_dir/$target" -- \
        -max_total_time="${FUZZ_SECONDS:-30}" -rss_limit_mb=2048 >"$fuzz_dir/$target.log" 2>&1); then
    printf '%s: %s\n' "$target" "$(grep -E '^Done [0-9]+ runs' "$fuzz_dir/$target.log" | tail -n 1)"
  else
    cat "$fuzz_dir/$target.log"
    echo "fuzz target $target failed (crash inputs are under fuzz/artifacts/$target)"
    exit 1
  fi
done
rm -rf "$fuzz_dir"

step "interop: PyJWT, the MCP Python SDK and MCP servers against a running writ and its gateway"
WRIT_BIN="$PWD/target/debug/writ" .venv/bin/python -m pytest -q interop/python
