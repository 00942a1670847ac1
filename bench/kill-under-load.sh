#!/usr/bin/env bash
# Killing app processes under load (issue 4: the instance is replaced, and the caller sees no
# failed idempotent request).
#
# Starts `weft up -f examples/shop/` (fresh data dir, non-default ports), puts RPS requests/s
# of GET /api/home (idempotent) on the gateway for DURATION with `weft-demo load
# --fail-on-json-errors`, and while it runs `kill -9`s the app process (status.pid) of one
# ready catalog instance at KILL_CATALOG_AT s and of one ready frontend instance at
# KILL_FRONTEND_AT s. Each is then followed through the api every 0.1 s: when it was seen
# not ready, when it ran again (new pid, restarts + 1) and when it was ready again. At the end
# `weft up` is stopped with SIGINT and must exit 0 leaving nothing behind.
#
#   bench/kill-under-load.sh [OUT_DIR]        (default /work/bench-logs/platform/kill-TIME)
#
# Environment: KILL_CATALOG_AT (default 10), KILL_FRONTEND_AT (default 25), and those in
# bench/lib/platform.sh (WEFT_BIN_DIR, API_ADDR, GW_ADDR, RPS, DURATION). Exit 0 when no
# request failed and both instances came back.
set -euo pipefail

OUT=${1:-/work/bench-logs/platform/kill-$(date +%Y%m%d-%H%M%S)}
KILL_CATALOG_AT=${KILL_CATALOG_AT:-10}
KILL_FRONTEND_AT=${KILL_FRONTEND_AT:-25}
mkdir -p "$OUT"
# shellcheck source=lib/platform.sh
source "$(dirname "$0")/lib/platform.sh"
STOP_RESULT="not stopped"
trap platform_cleanup EXIT
trap 'exit 130' INT TERM

RECOVERY=()
# Kills the app of one ready instance of deployment $1 and follows it until ready again.
kill_and_watch() {
    local deploy=$1 inst pid restarts cmd
    read -r inst pid restarts < <(instances_json | jq -r --arg d "$deploy" '
        [.items[] | select(.spec.deployment == $d and .status.ready == true and .status.pid != null)]
        | sort_by(.metadata.name) | .[0] | "\(.metadata.name) \(.status.pid) \(.status.restarts // 0)"')
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
    [[ $cmd == *weft-demo* ]] || { log "pid $pid of $inst is not weft-demo: $cmd"; return 1; }
    local t_kill
    t_kill=$(now)
    kill -9 "$pid"
    log "kill -9 $pid ($inst, $cmd, restarts $restarts) at t=$(rel "$t_kill")s"
    local t_unready="" t_newpid="" t_ready="" state p r ready phase
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        state=$(api "/api/v1/namespaces/default/instances/$inst" | jq -r '"\(.status.pid // "-") \(.status.restarts // 0) \(.status.ready) \(.status.phase)"' 2>/dev/null || echo "gone")
        echo "$(rel "$(now)") $state" >>"$OUT/watch-$deploy.txt"
        read -r p r ready phase <<<"$state"
        [[ $p == gone ]] && { log "$inst is gone (replaced by a new instance?)"; break; }
        [[ -z $t_unready && $ready != true ]] && t_unready=$(now)
        [[ -z $t_newpid && $p != "$pid" && $p != - ]] && t_newpid=$(now)
        if [[ -n $t_newpid && $ready == true && $r -gt $restarts ]]; then
            t_ready=$(now)
            break
        fi
        sleep 0.1
    done
    local d_unready d_newpid d_ready
    d_unready=$([[ -n $t_unready ]] && awk -v a="$t_unready" -v b="$t_kill" 'BEGIN{printf "%.2fs", a-b}' || echo "never seen")
    d_newpid=$([[ -n $t_newpid ]] && awk -v a="$t_newpid" -v b="$t_kill" 'BEGIN{printf "%.2fs", a-b}' || echo "never")
    d_ready=$([[ -n $t_ready ]] && awk -v a="$t_ready" -v b="$t_kill" 'BEGIN{printf "%.2fs", a-b}' || echo "not within 30s")
    local line="$deploy $inst: killed at t=$(rel "$t_kill")s; seen not ready after $d_unready; new pid ($p) after $d_newpid; ready again after $d_ready; restarts $restarts -> $r"
    log "$line"
    RECOVERY+=("$line")
}

wait_for_quiet
conditions "start"
platform_start
logs_follow_start
scrape_sidecars before
load_start
sleep_until "$KILL_CATALOG_AT"
kill_and_watch catalog || RECOVERY+=("catalog: kill failed")
scrape_sidecars after-catalog
sleep_until "$KILL_FRONTEND_AT"
kill_and_watch frontend || RECOVERY+=("frontend: kill failed")
load_rc=0
load_wait || load_rc=$?
scrape_sidecars end

stop_rc=0
platform_stop || stop_rc=$?

summary=$(load_summary)
{
    echo "run: $(basename "$OUT")"
    echo "load: $RPS rps for $DURATION on $LOAD_URL"
    printf '%s\n' "${RECOVERY[@]}"
    echo "result: $summary"
    echo "stop: $STOP_RESULT"
    sed -n '/^most frequent failure messages/,$p' "$OUT/load.txt"
} | tee "$OUT/summary.txt"

failures=$(grep -o 'failures "[^"]*"' <<<"$summary" || true)
recovered=$(printf '%s\n' "${RECOVERY[@]}" | grep -c 'ready again after [0-9]' || true)
[[ $load_rc -eq 0 && $stop_rc -eq 0 && $recovered -eq 2 && $failures == 'failures "-"' ]]
