#!/usr/bin/env bash
# Latency a sidecar pair adds: client -> proxy (outbound role) -> proxy (inbound role) -> upstream,
# against the same client calling the upstream directly, at fixed request rates (open loop,
# wrk2-style: latency counted from each request's due time, see examples/openloop.rs).
#
# usage: crates/weft-proxy/bench/sidecar-pair.sh [-d SECONDS] [-r "1000 10000"] [-c CONNECTIONS] [--nginx] [WEFT_BINARY]
#   --nginx also measures the same pair made of two nginx proxies (ports 18184-18185), for scale.
#   WEFT_BINARY defaults to $CARGO_TARGET_DIR/release/weft (or target/release/weft); build it
#   with `cargo build --release -p weft`. The load generator is built here (release example).
#
# Layout on a 2-core machine: upstream (nginx, one worker) and load generator on CPU 0, both
# proxies on CPU 1 (as in ../shared/bench/proxy-peers.sh). Ports 18181-18183.
# Prints, per rate: direct p50/p99, pair p50/p99 and what the pair adds, in microseconds, and
# the pair's CPU microseconds per request (both proxies together).
set -euo pipefail
secs=10 rates="1000 10000" conns=32 with_nginx=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -d) secs=$2; shift 2 ;;
    -r) rates=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    --nginx) with_nginx=1; shift ;;
    -*) echo "unknown flag $1" >&2; exit 64 ;;
    *) break ;;
  esac
done
root=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
weft=${1:-$target/release/weft}
[[ -x $weft ]] || { echo "no weft binary at $weft: run cargo build --release -p weft (or pass its path)" >&2; exit 64; }
command -v nginx >/dev/null || { echo "nginx is needed for the upstream (apt-get install nginx)" >&2; exit 1; }
(cd "$root" && cargo build -q --release -p weft-proxy --example openloop) || { echo "cannot build the load generator" >&2; exit 1; }
gen=$target/release/examples/openloop

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for p in 18181 18182 18183 18184 18185; do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
done
cat >"$work/upstream.conf" <<EOF
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:18181 backlog=4096; location / { return 200 "hello world\n"; } } }
EOF
start() { taskset -c "$1" "${@:2}" >>"$work/log" 2>&1 & pids+=("$!"); }
start 0 nginx -c "$work/upstream.conf"
if [[ $with_nginx == 1 ]]; then
  for hop in "18185 18181 in" "18184 18185 out"; do
    read -r listen to name <<<"$hop"
    cat >"$work/$name.conf" <<EOF
worker_processes 1; daemon off; pid $work/$name.pid; error_log $work/$name.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  upstream up { server 127.0.0.1:$to; keepalive 256; }
  server { listen 127.0.0.1:$listen backlog=4096;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
    start 1 nginx -c "$work/$name.conf"
  done
fi
start 1 "$weft" proxy --listen 127.0.0.1:18183 --upstream 127.0.0.1:18181 --direction inbound
inbound=${pids[-1]}
start 1 "$weft" proxy --listen 127.0.0.1:18182 --upstream 127.0.0.1:18183 --direction outbound
outbound=${pids[-1]}
for p in 18181 18182 18183 $([[ $with_nginx == 1 ]] && echo 18184 18185); do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
curl -sf -o /dev/null http://127.0.0.1:18182/ || { echo "the proxy pair does not answer; log:" >&2; cat "$work/log" >&2; exit 1; }

tck=$(getconf CLK_TCK)
ticks() { local t=0; for p in "$inbound" "$outbound"; do s=($(cut -d' ' -f14,15 "/proc/$p/stat")); t=$((t + s[0] + s[1])); done; echo $t; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k{print $2}'; }
run() { taskset -c 0 "$gen" --addr "$1" --rate "$2" --duration "$secs" --warmup 2 --connections "$conns"; }

printf '%-7s %10s %10s %10s %10s %10s %10s %9s %8s\n' rate direct_p50 direct_p99 pair_p50 pair_p99 added_p50 added_p99 cpu_us/req errors
for rate in $rates; do
  d=$(run 127.0.0.1:18181 "$rate")
  t0=$(ticks)
  p=$(run 127.0.0.1:18182 "$rate")
  t1=$(ticks)
  sent=$(field "$p" sent)
  cpu=$(python3 -c "print(round(($t1-$t0)/$tck*1e6/max($sent,1),2))")
  dp50=$(field "$d" p50_us) dp99=$(field "$d" p99_us) pp50=$(field "$p" p50_us) pp99=$(field "$p" p99_us)
  errs=$(( $(field "$d" errors) + $(field "$p" errors) ))
  printf '%-7s %10s %10s %10s %10s %10s %10s %9s %8s\n' "$rate" "$dp50" "$dp99" "$pp50" "$pp99" \
    $((pp50 - dp50)) $((pp99 - dp99)) "$cpu" "$errs"
  echo "  direct: $d" >&2
  echo "  pair:   $p" >&2
  if [[ $with_nginx == 1 ]]; then
    n=$(run 127.0.0.1:18184 "$rate")
    np50=$(field "$n" p50_us) np99=$(field "$n" p99_us)
    printf '%-7s %10s %10s %10s %10s %10s %10s %9s %8s\n' "(nginx)" "$dp50" "$dp99" "$np50" "$np99" \
      $((np50 - dp50)) $((np99 - dp99)) "-" "$(field "$n" errors)"
    echo "  nginx pair: $n" >&2
  fi
done
echo "(microseconds; open loop, $conns connections, ${secs}s per run after a 2s warm-up; generator lateness in late_p99_us on stderr)"
