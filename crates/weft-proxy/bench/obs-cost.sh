#!/usr/bin/env bash
# What tracing and access logs cost the proxy: /work/shared/bench/proxy-peers.sh (wrk, 64
# connections, proxy pinned to CPU 1) on the same `weft proxy` four ways: plain; spans at 100%
# sampling exported to a local OTLP sink (an nginx answering 200 on 127.0.0.1:18318, on CPU 0);
# a JSON access log to a file; both.
#
# usage: crates/weft-proxy/bench/obs-cost.sh WEFT_BIN [RUNS] [SECONDS]
set -euo pipefail
bin=${1:?usage: obs-cost.sh WEFT_BIN [RUNS] [SECONDS]}
runs=${2:-3} secs=${3:-8}
peers=${PEERS:-/work/shared/bench/proxy-peers.sh}
work=$(mktemp -d)
sink_pid=
cleanup() { [[ -n $sink_pid ]] && kill "$sink_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
cat >"$work/sink.conf" <<CONF
worker_processes 1; daemon off; pid $work/sink.pid; error_log $work/sink.err warn;
events { worker_connections 1024; }
http { access_log off; client_max_body_size 64m; client_body_buffer_size 1m;
  server { listen 127.0.0.1:18318; location / { return 200 "{}"; } } }
CONF
taskset -c 0 nginx -c "$work/sink.conf" & sink_pid=$!
for _ in $(seq 50); do curl -s -o /dev/null -X POST http://127.0.0.1:18318/v1/traces && break; sleep 0.1; done

base=("$bin" proxy --listen 127.0.0.1:18085 --upstream 127.0.0.1:18081 --admin 127.0.0.1:18090)
declare -A extra=(
  [off]=""
  [trace]="--otlp-endpoint http://127.0.0.1:18318"
  [log]="--access-log $work/access.log"
  [both]="--otlp-endpoint http://127.0.0.1:18318 --access-log $work/access.log"
)
# The candidate's counters, read every second while it runs (the last read is kept).
( while true; do curl -s -m 1 http://127.0.0.1:18090/metrics >"$work/m.tmp" 2>/dev/null && [[ -s $work/m.tmp ]] && mv "$work/m.tmp" "$work/m.txt"; sleep 1; done ) &
poller=$!
trap 'kill $poller 2>/dev/null; cleanup' EXIT
for run in $(seq "$runs"); do
  for mode in off trace log both; do
    rm -f "$work/access.log" "$work/m.txt"
    # shellcheck disable=SC2086
    out=$("$peers" -d "$secs" --only none -- "${base[@]}" ${extra[$mode]} 2>&1 | grep -E '^candidate|^direct')
    counts=$(grep -E '^weft_(spans_exported|spans_dropped|access_log_lines|access_log_dropped)_total' "$work/m.txt" 2>/dev/null | tr '\n' ' ' || true)
    echo "run $run $mode: $(grep '^candidate' <<<"$out")   [$(grep '^direct' <<<"$out")] load $(cut -d' ' -f1 /proc/loadavg) $counts"
  done
done
