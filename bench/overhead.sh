#!/usr/bin/env bash
# What metrics and tracing cost: `bench/overhead.sh [ROUNDS]`
#
# Three brokers side by side (`writ serve --dev`, embedded gateway, one
# worker thread each, all on core 0), the same build, differing only in
# telemetry:
#  - metrics: the default (metrics kept, no tracing);
#  - none: `--no-metrics` (the `metrics` facade's no-op recorder);
#  - metrics+traces: `--otlp-endpoint` to an OTLP/HTTP receiver on core 1
#    (bench/otlp_sink.py, decoding with `opentelemetry-proto`), every
#    request sampled.
# wrk on core 1 measures task-token issuance (32 connections) and a call
# through the gateway to a one-thread upstream (32 connections and 1),
# 5 s each, ROUNDS times (default 5), the three configurations
# interleaved within each round so that a change in the machine's load
# falls on all of them alike. Prints every run, then the median per
# configuration and the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/common.sh
rounds=${1:-5}
need_wrk
build
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import opentelemetry.proto' 2>/dev/null || .venv/bin/pip install -q opentelemetry-proto
w=target/release/writ
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
export WRIT_TOKEN=bench-admin
uport=18699
taskset -c 1 target/release/upstream 127.0.0.1:$uport >/dev/null &
pids+=($!)
sink=18698
taskset -c 1 .venv/bin/python bench/otlp_sink.py $sink &
pids+=($!)
wait_for http://127.0.0.1:$sink/count

# broker NAME PORT [serve args...]: a dev broker on core 0, the bench tool
# behind its gateway (PORT+1), and an instance, task and tool token for it
# in NAME_instance, NAME_tool. The rate limits are lifted (NO_LIMITS).
broker() {
  local name=$1 bp=$2; shift 2
  WRIT_LOG=error taskset -c 0 $w serve --dev --dev-admin-token bench-admin --data-dir "$dir/$name" \
    --listen 127.0.0.1:$bp --gateway-listen 127.0.0.1:$((bp + 1)) --worker-threads 1 \
    "${NO_LIMITS[@]}" "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_for http://127.0.0.1:$bp/healthz
  export WRIT_ADDR=http://127.0.0.1:$bp
  $w tool register bench --audience https://bench.example --scope read --upstream http://127.0.0.1:$uport >/dev/null
  wait_for "http://127.0.0.1:$((bp + 1))/.well-known/oauth-protected-resource/bench"
  tokens "$name"
}

# tokens NAME: a fresh instance, task and tool token on broker NAME (each
# round: a task whose lease lapses is ended, and its tool token with it).
tokens() {
  local name=$1 p=${port[$1]}
  export WRIT_ADDR=http://127.0.0.1:$p
  local jt; jt=$($w agent join-token demo-agent --field join_token | tr -d '"')
  eval "$($w attest demo-agent --join-token "$jt" --export)"
  eval "$($w task start --intent 'overhead bench' --cap bench:read --ttl 3600 --export)"
  local tool; tool=$($w token exchange --audience bench --scope read --field access_token | tr -d '"')
  printf -v "${name}_instance" %s "$WRIT_INSTANCE_TOKEN"
  printf -v "${name}_tool" %s "$tool"
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $tool" "http://127.0.0.1:$((p + 1))/bench/x")" = 200 ] \
    || { echo "the $name gateway refused the bench token"; exit 1; }
}

configs=(metrics none traces)
declare -A port label
port[metrics]=18700; label[metrics]="metrics (default)"
port[none]=18710; label[none]="none (--no-metrics)"
port[traces]=18720; label[traces]="metrics + traces (--otlp-endpoint)"
broker metrics 18700
broker none 18710 --no-metrics
broker traces 18720 --otlp-endpoint http://127.0.0.1:$sink

# one CONFIG WHAT CONNECTIONS: one 5 s wrk run; a row in $dir/runs.
one() {
  local p=${port[$1]} url lua row
  if [ "$2" = issuance ]; then
    url=http://127.0.0.1:$p/v1/tasks
    row=$(ISSUE=task WRIT_INSTANCE_TOKEN=$(eval echo "\$${1}_instance") \
      taskset -c 1 wrk -t1 -c"$3" -d5s -s bench/issuance.lua "$url" | tail -n 1)
  else
    url=http://127.0.0.1:$((p + 1))/bench/x
    row=$(WRIT_TOOL_TOKEN=$(eval echo "\$${1}_tool") \
      taskset -c 1 wrk -t1 -c"$3" -d5s -s bench/gateway.lua "$url" | tail -n 1 | cut -d'|' -f3-7)
  fi
  # req/s | p50 | p99 | p99.9 | errors
  echo "$1|$2|$3|$(echo "$row" | sed 's/ µs//g; s/ //g; s/^|//; s/|$//')" >> "$dir/runs"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for c in "${configs[@]}"; do # warm-up
  one "$c" issuance 32 >/dev/null; one "$c" gateway 32 >/dev/null
done
: > "$dir/runs"
for r in $(seq "$rounds"); do
  for c in "${configs[@]}"; do tokens "$c"; done
  for what in "issuance 32" "gateway 32" "gateway 1"; do
    for c in "${configs[@]}"; do
      # shellcheck disable=SC2086
      one "$c" $what
    done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

echo "Load average (1, 5, 15 min) before: $load_before; after: $load_after. $rounds rounds, interleaved."
echo
echo "| telemetry | what | connections | req/s | p50 | p99 | p99.9 | errors |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for what in "issuance 32" "gateway 32" "gateway 1"; do
  set -- $what
  for c in "${configs[@]}"; do
    # The median of the rounds, column by column.
    awk -F'|' -v c="$c" -v w="$1" -v n="$2" -v l="${label[$c]}" '
      $1 == c && $2 == w && $3 == n { k++; for (i = 4; i <= 8; i++) v[i, k] = $i }
      END {
        printf "| %s | %s | %s |", l, (w == "issuance" ? "task token" : "gateway call"), n
        for (i = 4; i <= 8; i++) {
          for (a = 1; a <= k; a++) s[a] = v[i, a] + 0
          for (a = 1; a <= k; a++) for (b = a + 1; b <= k; b++) if (s[b] < s[a]) { t = s[a]; s[a] = s[b]; s[b] = t }
          m = s[int((k + 1) / 2)]
          printf (i == 4 || i == 8) ? " %d |" : " %d µs |", m
        }
        print ""
      }' "$dir/runs"
  done
done
echo
echo "Spans received by the OTLP receiver: $(curl -s http://127.0.0.1:$sink/count)."
echo
echo "<details><summary>every run (config, what, connections, req/s, p50, p99, p99.9 µs, errors)</summary>"
echo
echo '```'
cat "$dir/runs"
echo '```'
echo "</details>"
