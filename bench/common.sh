# Shared by the bench scripts (sourced from the repository root, not run).

# need_wrk: wrk from Debian's packages, installed if missing.
need_wrk() {
  command -v wrk >/dev/null && return
  apt-get install -y wrk >/dev/null 2>&1 || (apt-get update >/dev/null && apt-get install -y wrk >/dev/null)
}

# build: writ and the bench tools in release, unless bench/run.sh has
# already built everything once.
build() {
  [ -n "${WRIT_BENCH_BUILT:-}" ] || cargo build --release -q -p writ -p writ-bench --bins
}

# wait_for URL: until URL answers (10 s at most), or stop the script.
wait_for() {
  for _ in $(seq 100); do curl -sf "$1" >/dev/null && return; sleep 0.1; done
  echo "no answer from $1"
  exit 1
}

# The per-credential, per-client and anonymous rate limits of `writ serve`
# and `writ gateway`, lifted: a load script sends every request of a run
# with one token, which the defaults (1,200 a minute) would refuse with
# 429; a token exchange carries no Authorization header, so it counts
# against the anonymous limit.
NO_LIMITS=(--limit-credential-per-minute 1000000000 --limit-client-per-minute 1000000000
  --limit-anonymous-per-minute 1000000000)
