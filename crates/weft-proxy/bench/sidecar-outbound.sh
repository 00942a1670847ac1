#!/usr/bin/env bash
# The sidecar's outbound path against the plain reverse proxy and HAProxy, in one run, through
# the same load generator and upstream as ../shared/bench/proxy-peers.sh (which cannot send a
# Host header or an absolute-form target). Each proxy is pinned to CPU 1; nginx (upstream) and
# wrk on CPU 0.
#
# usage: crates/weft-proxy/bench/sidecar-outbound.sh [-d SECONDS] [-c CONNECTIONS] [WEFT_BINARY]
#   WEFT_BINARY defaults to $CARGO_TARGET_DIR/release/weft (or target/release/weft).
#
# Rows: direct (upstream alone), haproxy (Host-routed to the upstream), weft-plain (`--listen
# --upstream`), weft-host (a static sidecar: `Host: catalog` on the outbound listener, service
# catalog with the default policy — p2c-ewma, retries, breaker, outlier detection — and one
# endpoint, the upstream), weft-absolute (the same sidecar, `GET http://catalog/ HTTP/1.1` as
# clients honouring HTTP_PROXY send). Prints req/s, p50, p99, proxy CPU microseconds per request
# and peak RSS.
set -euo pipefail
secs=8 conns=64
while [[ $# -gt 0 ]]; do
  case $1 in
    -d) secs=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    -*) echo "unknown flag $1" >&2; exit 64 ;;
    *) break ;;
  esac
done
root=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
weft=${1:-$target/release/weft}
[[ -x $weft ]] || { echo "no weft binary at $weft: run cargo build --release -p weft (or pass its path)" >&2; exit 64; }
for t in nginx haproxy wrk; do command -v $t >/dev/null || { echo "$t is needed (apt-get install nginx haproxy wrk)" >&2; exit 1; }; done
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for p in 18081 18083 18085 18086; do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
done
cat >"$work/upstream.conf" <<EOF2
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:18081 backlog=4096; location / { return 200 "hello world\n"; } } }
EOF2
cat >"$work/haproxy.cfg" <<EOF2
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:18083
  use_backend catalog if { req.hdr(host) -i catalog }
backend catalog
  server s1 127.0.0.1:18081
EOF2
cat >"$work/sidecar.yaml" <<EOF2
outbound: { listen: 127.0.0.1:18086 }
objects:
  - apiVersion: weft/v1
    kind: Service
    metadata: { name: catalog }
    spec: { selector: { deployment: catalog }, ports: [ { name: http, port: 80 } ] }
  - apiVersion: weft/v1
    kind: Endpoints
    metadata: { name: catalog }
    spec: { addresses: [ { instance: catalog-0, ip: 127.0.0.1, ports: { http: 18081 } } ] }
EOF2
echo 'wrk.path = "http://catalog/"' >"$work/absolute.lua"

started=0
start() { taskset -c "$1" "${@:2}" >>"$work/log" 2>&1 & started=$!; pids+=("$started"); }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: catalog' "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "nothing answers on $1" >&2; cat "$work/log" >&2; exit 1; }
start 0 nginx -c "$work/upstream.conf"; wait_port 18081
declare -A pid port
start 1 haproxy -db -f "$work/haproxy.cfg"; pid[haproxy]=$started; port[haproxy]=18083
start 1 "$weft" proxy --listen 127.0.0.1:18085 --upstream 127.0.0.1:18081; pid[weft-plain]=$started; port[weft-plain]=18085
start 1 "$weft" proxy --config "$work/sidecar.yaml"; pid[weft-host]=$started; port[weft-host]=18086
pid[weft-absolute]=${pid[weft-host]}; port[weft-absolute]=18086
pid[direct]=$(cat "$work/up.pid" 2>/dev/null || echo "${pids[0]}"); port[direct]=18081
for p in 18083 18085 18086; do wait_port $p; done

tck=$(getconf CLK_TCK)
printf '%-14s %10s %9s %9s %12s %9s\n' proxy req/s p50 p99 cpu_us/req rss_MB
for n in direct haproxy weft-plain weft-host weft-absolute; do
  args=(-H "Host: catalog")
  [[ $n == weft-absolute ]] && args=(-s "$work/absolute.lua")
  ps="${pid[$n]} $(pgrep -P "${pid[$n]}" | tr '\n' ' ' || true)"
  ticks() { local t=0; for p in $ps; do s=($(cut -d' ' -f14,15 "/proc/$p/stat")); t=$((t + s[0] + s[1])); done; echo $t; }
  t0=$(ticks)
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" --latency "${args[@]}" "http://127.0.0.1:${port[$n]}/")
  t1=$(ticks)
  if grep -q "Non-2xx" <<<"$out"; then echo "$n: non-2xx answers:" >&2; echo "$out" >&2; exit 1; fi
  req=$(awk '/requests in/{print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out"); p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  cpu=$(python3 -c "print(round(($t1-$t0)/$tck*1e6/$req,2))")
  rss=0; for p in $ps; do r=$(awk '/VmHWM/{print $2}' "/proc/$p/status"); rss=$((rss + r)); done
  printf '%-14s %10s %9s %9s %12s %9s\n' "$n" "$rps" "$p50" "$p99" "$cpu" $((rss / 1024))
done
