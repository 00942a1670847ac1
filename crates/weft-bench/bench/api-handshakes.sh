#!/usr/bin/env bash
# The api over TLS: full handshakes for new connections, weft's api server against nginx in the
# same run. Both serve the same ECDSA P-256 certificate over TLS 1.3, and the same client
# (`openssl s_time -new`) opens a new connection for each `GET /healthz`. The figure to read is
# the server's cpu per connection (handshake + one small request), from /proc, since the client
# shares the machine's two cores.
#
#   crates/weft-bench/bench/api-handshakes.sh [WEFT_BIN] [SECONDS] [ROUNDS]
#
# Rounds alternate the order (weft first, then nginx first) so that drift hits both.
set -euo pipefail

weft=${1:-target/release/weft}
secs=${2:-10}
rounds=${3:-3}
[ -x "$weft" ] || { echo "no weft binary at $weft (cargo build --release -p weft)" >&2; exit 64; }
command -v nginx >/dev/null || { echo "nginx is missing (apt-get install nginx)" >&2; exit 69; }
command -v openssl >/dev/null || { echo "openssl is missing (apt-get install openssl)" >&2; exit 69; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  exit 1
}

"$weft" server --listen 127.0.0.1:18443 --data-dir "$work/weft" --audit-log off \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$work/weft.log" 2>&1 &
weft_pid=$!
pids+=("$weft_pid")

cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:18444 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.3;
    ssl_session_cache off;
    ssl_session_tickets off;
    location /healthz { return 200 "ok\n"; }
  }
}
EOF
nginx -c "$work/nginx.conf" -e "$work/nginx-error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_port 18443
wait_port 18444

# utime + stime of a process and its children (nginx's worker), in clock ticks.
ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" | tr '\n' ' '); do
    # Fields 14 and 15 after the command (which may hold spaces) is stripped.
    local rest
    rest=$(sed 's/^.*) //' "/proc/$p/stat")
    total=$((total + $(echo "$rest" | awk '{print $12 + $13}')))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

measure() { # name port pid
  local before after out conns real t0 t1
  before=$(ticks "$3")
  t0=$(date +%s.%N)
  out=$(openssl s_time -connect "127.0.0.1:$2" -new -tls1_3 -time "$secs" -www /healthz \
    -CAfile "$work/cert.pem" 2>&1)
  t1=$(date +%s.%N)
  after=$(ticks "$3")
  conns=$(echo "$out" | awk '/real seconds/ {print $1; exit}')
  real=$(echo "$t1 - $t0" | bc -l)
  if [ -z "$conns" ] || [ "$conns" = 0 ]; then
    echo "$1: s_time made no connection:" >&2
    echo "$out" >&2
    exit 1
  fi
  awk -v n="$1" -v c="$conns" -v r="$real" -v t=$((after - before)) -v hz="$hz" 'BEGIN {
    printf "%-6s %7d connections in %5.1f s: %7.1f/s, server cpu %7.1f us per connection\n",
      n, c, r, c / r, t * 1e6 / hz / c
  }'
}

echo "# $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg), $secs s per side, $rounds rounds"
for r in $(seq 1 "$rounds"); do
  echo "round $r"
  if [ $((r % 2)) = 1 ]; then
    measure weft 18443 "$weft_pid"
    measure nginx 18444 "$nginx_pid"
  else
    measure nginx 18444 "$nginx_pid"
    measure weft 18443 "$weft_pid"
  fi
done
