# Shared by bench/rollout-under-load.sh and bench/kill-under-load.sh: start `weft up` with the
# demo shop on non-default ports and a fresh data dir, put open-loop load on the gateway,
# read instances from the api, and stop everything (SIGINT, checked) at the end.
#
# Sourced, not run. The caller sets OUT (a directory for raw output) before `platform_start`.
#
# Environment (all optional):
#   WEFT_BIN_DIR  where weft and weft-demo are      [/work/targets/bench/release]
#   API_ADDR      weft up --listen                  [127.0.0.1:27070]
#   GW_ADDR       weft up --gateway                 [127.0.0.1:28080]
#   RPS           load rate                         [200]
#   DURATION      load duration                     [40s]
#   LOAD_PATH     what the load GETs                [/api/home?user=bench]
#   SHOP_DIR      the manifests to run              [examples/shop]
#   QUIET_WAIT    seconds to wait for other benchmarks to finish before starting [1200]

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${WEFT_BIN_DIR:-/work/targets/bench/release}
WEFT_BIN=$BIN_DIR/weft
DEMO_BIN=$BIN_DIR/weft-demo
API_ADDR=${API_ADDR:-127.0.0.1:27070}
GW_ADDR=${GW_ADDR:-127.0.0.1:28080}
RPS=${RPS:-200}
DURATION=${DURATION:-40s}
LOAD_PATH=${LOAD_PATH:-/api/home?user=bench}
LOAD_URL="http://$GW_ADDR$LOAD_PATH"
QUIET_WAIT=${QUIET_WAIT:-1200}
SHOP_DIR=${SHOP_DIR:-$REPO/examples/shop}
# Benchmarks of others on this (shared) machine that would skew ours.
OTHERS='proxy-peers|sidecar-pair|openloop'

DATA=""
UP_PID=""
LOAD_PID=""
COPY_PID=""
T0=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" | tee -a "$OUT/events.log" >&2; }

now() { date +%s.%N; }

# Seconds since T0 (when the load started), 0.01 s resolution.
rel() { awk -v a="$1" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }

# Sleeps until $1 seconds after T0.
sleep_until() {
    local left
    left=$(awk -v at="$1" -v t0="$T0" -v n="$(now)" 'BEGIN { d = t0 + at - n; printf "%.3f", (d > 0 ? d : 0) }')
    sleep "$left"
}

# Waits (every 30 s, at most QUIET_WAIT s) until no benchmark of others runs; notes it.
wait_for_quiet() {
    local waited=0
    while pgrep -f "$OTHERS" >/dev/null; do
        if ((waited >= QUIET_WAIT)); then
            log "contention: other benchmarks still running after ${waited}s, going ahead: $(pgrep -af "$OTHERS" | tr '\n' ';')"
            echo "contention: yes (others' benchmarks running)" >>"$OUT/conditions.txt"
            return 0
        fi
        log "waiting for other benchmarks to finish: $(pgrep -af "$OTHERS" | head -3 | cut -c1-120 | tr '\n' ';')"
        sleep 30
        waited=$((waited + 30))
    done
    ((waited > 0)) && log "others' benchmarks done after ${waited}s"
    echo "contention: none at start (waited ${waited}s)" >>"$OUT/conditions.txt"
}

conditions() {
    {
        echo "when: $(date -Is)"
        echo "host: $(uname -srm), $(nproc) cpus"
        echo "loadavg at $1: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo "others running at $1: $(pgrep -af "$OTHERS" | wc -l)"
        echo "rustc/cargo processes of others at $1: $(pgrep -x 'rustc|cargo' | wc -l)"
    } >>"$OUT/conditions.txt"
}

weft() { "$WEFT_BIN" --data-dir "$DATA" "$@"; }

# curl against the api with the admin token.
api() { curl -sS --max-time 5 -H "Authorization: Bearer $(cat "$DATA/admin.token")" "http://$API_ADDR$1"; }

instances_json() { api /api/v1/namespaces/default/instances; }

# All descendants of a pid (children first found by walking /proc).
descendants() {
    local p
    for p in $(pgrep -P "$1"); do
        echo "$p"
        descendants "$p"
    done
}

platform_start() {
    mkdir -p "$OUT"
    for f in "$WEFT_BIN" "$DEMO_BIN"; do
        [[ -x $f ]] || { echo "missing $f: cargo build --release -p weft -p weft-demo" >&2; exit 64; }
    done
    if curl -s --max-time 1 "http://$API_ADDR/healthz" >/dev/null || curl -s --max-time 1 "http://$GW_ADDR/" >/dev/null; then
        echo "something already listens on $API_ADDR or $GW_ADDR" >&2
        exit 69
    fi
    DATA=$(mktemp -d /tmp/weft-bench-platform.XXXXXX)
    log "data dir $DATA, output $OUT, manifests $SHOP_DIR"
    # Job control: `weft up` gets its own process group, and SIGINT is not ignored by it (bash
    # makes background jobs ignore SIGINT when job control is off).
    set -m
    "$WEFT_BIN" --data-dir "$DATA" up -f "$SHOP_DIR/" --listen "$API_ADDR" \
        --gateway "$GW_ADDR" >"$OUT/up.log" 2>&1 &
    UP_PID=$!
    set +m
    local deadline=$((SECONDS + 240))
    until grep -q "weft is up" "$OUT/up.log"; do
        if ! kill -0 "$UP_PID" 2>/dev/null; then
            log "weft up exited before it was up:"
            tail -20 "$OUT/up.log" >&2
            exit 1
        fi
        ((SECONDS < deadline)) || { log "no banner within 240s"; exit 1; }
        sleep 0.5
    done
    log "weft up is up (pid $UP_PID)"
    # The gateway and the frontends' sidecars learn endpoints by watch: wait until a page comes
    # back whole (200 and no errors), so the run starts from a working shop.
    deadline=$((SECONDS + 60))
    until curl -s --max-time 3 "$LOAD_URL" | jq -e '(.errors | length) == 0' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { log "the shop never answered a whole page"; exit 1; }
        sleep 0.5
    done
    # A few seconds for the probe and the watches to settle.
    sleep 3
    weft get inst -o wide >"$OUT/inst-start.txt"
    log "shop answers whole pages"
}

# Starts the load in the background; its output goes to $OUT/load.txt.
load_start() {
    conditions "load start"
    T0=$(now)
    "$DEMO_BIN" load --url "$LOAD_URL" --rps "$RPS" --duration "$DURATION" \
        --fail-on-json-errors >"$OUT/load.txt" 2>&1 &
    LOAD_PID=$!
    log "load: $RPS rps for $DURATION on $LOAD_URL (pid $LOAD_PID)"
}

load_wait() {
    local rc=0
    wait "$LOAD_PID" || rc=$?
    LOAD_PID=""
    conditions "load end"
    log "load done (exit $rc)"
    return "$rc"
}

# Instances' logs are deleted with them: copy the agent's logs dir every 2 s while the run
# lasts, so those of replaced instances stay for reading ($OUT/logs/).
logs_follow_start() {
    mkdir -p "$OUT/logs"
    (while sleep 2; do cp -r --update "$DATA/agent/logs/." "$OUT/logs/" 2>/dev/null || true; done) &
    COPY_PID=$!
}

# Every sidecar's /metrics, into $OUT/metrics-$1/NAME.txt.
scrape_sidecars() {
    local dir="$OUT/metrics-$1" name admin
    mkdir -p "$dir"
    instances_json | jq -r '.items[] | select(.status.sidecarAdmin != null) | "\(.metadata.name) \(.status.sidecarAdmin)"' |
        while read -r name admin; do
            curl -s --max-time 3 "http://$admin/metrics" >"$dir/$name.txt" || true
        done
}

# Stops `weft up` with SIGINT and checks it exits 0 within 150 s and leaves no process behind.
platform_stop() {
    [[ -n $UP_PID ]] || return 0
    weft get inst -o wide >"$OUT/inst-end.txt" 2>&1 || true
    [[ -d $OUT/logs ]] && { cp -r --update "$DATA/agent/logs/." "$OUT/logs/" 2>/dev/null || true; }
    local kids
    kids=$(descendants "$UP_PID" | tr '\n' ' ')
    log "stopping weft up (SIGINT to $UP_PID; $(wc -w <<<"$kids") processes under it)"
    local t rc=0
    t=$(now)
    kill -INT "$UP_PID"
    local deadline=$((SECONDS + 150))
    while kill -0 "$UP_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$UP_PID" 2>/dev/null; then
        log "FAIL: weft up still running 150s after SIGINT"
        STOP_RESULT="did not exit within 150s"
        return 1
    fi
    wait "$UP_PID" || rc=$?
    UP_PID=""
    local left=""
    for p in $kids; do kill -0 "$p" 2>/dev/null && left+="$p "; done
    if [[ $rc -eq 0 && -z $left ]]; then
        STOP_RESULT="exit 0 after $(awk -v a="$(now)" -v b="$t" 'BEGIN{printf "%.1f", a-b}')s, no process left"
    else
        STOP_RESULT="exit $rc after $(awk -v a="$(now)" -v b="$t" 'BEGIN{printf "%.1f", a-b}')s, left behind: ${left:-none}"
    fi
    log "weft up stopped: $STOP_RESULT"
    [[ $rc -eq 0 && -z $left ]]
}

# The trap: whatever happened, nothing of ours keeps running.
platform_cleanup() {
    local rc=$?
    set +e
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
    [[ -n $COPY_PID ]] && kill "$COPY_PID" 2>/dev/null
    if [[ -n $UP_PID ]] && kill -0 "$UP_PID" 2>/dev/null; then
        local kids
        kids=$(descendants "$UP_PID")
        kill -INT "$UP_PID"
        for _ in $(seq 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$UP_PID" $kids 2>/dev/null
    fi
    if [[ -n $DATA && -d $DATA ]]; then
        [[ -d $OUT/logs ]] && tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
        rm -rf "$DATA"
    fi
    exit "$rc"
}

# "total: ..." line of the load generator, as key=value pairs.
load_summary() {
    local line
    line=$(grep '^total:' "$OUT/load.txt" || true)
    [[ -n $line ]] || { echo "no total line"; return; }
    # total: 8000 due, 8000 done, 7998 ok, 199.9 rps over 40.0s; p50 .. p90 .. p99 .. p99.9 .. max ..; failures ...
    local counts p50 p99 max failures
    counts=$(sed -E 's/^total: ([0-9]+) due, ([0-9]+) done, ([0-9]+) ok, ([0-9.]+) rps over ([0-9.]+)s.*/due=\1 done=\2 ok=\3 rps=\4 over=\5s/' <<<"$line")
    p50=$(grep -oP 'p50 \K\S+' <<<"$line")
    p99=$(grep -oP 'p99 \K\S+' <<<"$line")
    max=$(grep -oP 'max \K[^;]+' <<<"$line")
    failures=$(grep -oP '; failures \K.*' <<<"$line")
    echo "$counts p50=$p50 p99=$p99 max=$max failures \"$failures\""
}
