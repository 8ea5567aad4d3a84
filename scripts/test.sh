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

step "the Python SDK into a venv of its own (.venv-sdk), as its README installs it"
if [ ! -x .venv-sdk/bin/python ]; then
  python3 -m venv .venv-sdk
fi
.venv-sdk/bin/pip install --quiet --disable-pip-version-check './sdk/python[all]' \
  -r examples/agents/python/requirements.txt -r sdk/python/tests/requirements.txt
# The package as it is now, not a build left from an earlier run.
.venv-sdk/bin/pip install --quiet --disable-pip-version-check --no-deps --force-reinstall ./sdk/python

step "node packages for the interop tests (interop/node, npm ci)"
(cd interop/node && npm ci --silent --no-audit --no-fund)

step "playwright-core for the console's browser tests (interop/console, npm ci; the browser is Debian's chromium)"
(cd interop/console && npm ci --silent --no-audit --no-fund)

step "the MCP conformance suite, the MCP TypeScript SDK and Node 22 (interop/mcp-conformance, npm ci)"
(cd interop/mcp-conformance && npm ci --silent --no-audit --no-fund)

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

step "system tools for the deployment tests: curl (a TLS client), systemd-analyze (the unit check), prometheus (scrapes writ in the interop suite), rsyslog with its TLS driver (a receiver of the syslog sink), chromium (the console's browser tests)"
missing=""
command -v curl >/dev/null || missing="$missing curl"
command -v systemd-analyze >/dev/null || missing="$missing systemd"
command -v prometheus >/dev/null || missing="$missing prometheus"
[ -x /usr/sbin/rsyslogd ] || missing="$missing rsyslog"
dpkg -s rsyslog-gnutls >/dev/null 2>&1 || missing="$missing rsyslog-gnutls"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
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

step "interop: Prometheus scraping the broker and gateways; audit sinks into rsyslog (TCP and TLS), a webhook and an OTLP logs receiver; PyJWT, authlib, joserfc, the MCP Python SDK and MCP servers against a running writ and its gateway; the MCP conformance suite and both MCP SDK clients, directly and through the gateway"
WRIT_BIN="$PWD/target/debug/writ" .venv/bin/python -m pytest -q interop/python

step "interop: oauth4webapi and jose (node) against a running writ and its gateway"
WRIT_BIN="$PWD/target/debug/writ" node --test interop/node/stock_clients.test.mjs

step "the operator console in a real browser: Debian's chromium driven by playwright-core against writ serve --dev, and on a seeded fleet of 10,000 tasks and 100,000 audit records (screenshots in interop/console/screenshots/)"
cargo build --locked -p writ-store --example seed_fleet
WRIT_BIN="$PWD/target/debug/writ" node --test interop/console/

step "Python SDK: types (mypy --strict)"
.venv-sdk/bin/mypy --strict sdk/python/src/writ_sdk

step "Python SDK: unit and integration tests (a real writ serve, its gateway, writ node, MCP servers)"
WRIT_BIN="$PWD/target/debug/writ" .venv-sdk/bin/python -m pytest -q sdk/python/tests

step "Python SDK: the example agent against writ serve --dev"
scripts/example-agent.sh .venv-sdk/bin/python examples/agents/python/agent.py

step "TypeScript SDK (sdk/typescript): npm ci, tsc, unit tests, integration suite against writ serve, its gateway, writ node and MCP servers"
(cd sdk/typescript && npm ci --silent --no-audit --no-fund && npm run --silent build && npm test \
  && WRIT_BIN="$PWD/../../target/debug/writ" WRIT_PYTHON="$PWD/../../.venv/bin/python" npm run --silent test:integration)

step "the TypeScript example agent (examples/agents/typescript) against writ serve --dev"
(cd examples/agents/typescript && npm ci --silent --no-audit --no-fund)
scripts/example-agent.sh npm --prefix examples/agents/typescript --silent start
