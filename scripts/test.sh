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

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, store conformance, end-to-end against the real binary)"
cargo test --workspace --locked

step "interop: PyJWT against a running writ"
WRIT_BIN="$PWD/target/debug/writ" .venv/bin/python -m pytest -q interop/python
