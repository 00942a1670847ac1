#!/usr/bin/env bash
# A rolling update of catalog and frontend under steady load through the gateway (issue 4:
# zero failed requests).
#
# Starts `weft up -f examples/shop/` (fresh data dir, non-default ports), waits for the shop to
# answer, puts RPS requests/s on the gateway's /api/home for DURATION with `weft-demo load
# --fail-on-json-errors` (a 200 whose `errors` is not empty, because a call behind the frontend
# failed, counts as a failure), and CHANGE_AT seconds in changes the template of catalog and of
# frontend (an env var, applied with `weft apply`), then waits with `weft rollout status`. At
# the end it stops `weft up` with SIGINT and checks it exits 0 leaving nothing behind.
#
#   bench/rollout-under-load.sh [OUT_DIR]     (default /work/bench-logs/platform/rollout-TIME)
#
# Environment: CHANGE_AT (seconds, default 12); ROLLOUTS (default 1), more rollouts of both,
# ROLLOUT_EVERY (default 8) seconds apart; and those in bench/lib/platform.sh (binaries in
# WEFT_BIN_DIR, ports API_ADDR/GW_ADDR, RPS, DURATION). Exit 0 when the run had no failure.
set -euo pipefail

OUT=${1:-/work/bench-logs/platform/rollout-$(date +%Y%m%d-%H%M%S)}
CHANGE_AT=${CHANGE_AT:-12}
ROLLOUTS=${ROLLOUTS:-1}
ROLLOUT_EVERY=${ROLLOUT_EVERY:-8}
mkdir -p "$OUT"
# shellcheck source=lib/platform.sh
source "$(dirname "$0")/lib/platform.sh"
STOP_RESULT="not stopped"
trap platform_cleanup EXIT
trap 'exit 130' INT TERM

wait_for_quiet
conditions "start"
platform_start
logs_follow_start

# A changed template: the same manifest with one more env var, BENCH_REVISION.
changed() { # FILE REVISION
    sed -E "s/env: \{ LOG: info/env: { BENCH_REVISION: \"$2\", LOG: info/" "$SHOP_DIR/$1.yaml" >"$OUT/$1-rev$2.yaml"
    grep -q BENCH_REVISION "$OUT/$1-rev$2.yaml"
    echo "$OUT/$1-rev$2.yaml"
}

# Seconds between two `now`s, 0.01 s resolution.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

scrape_sidecars before
load_start
sleep "$CHANGE_AT"
ROLLOUT_LINES=()
rollout_ok=yes
for i in $(seq "$ROLLOUTS"); do
    t_apply=$(now)
    weft apply -f "$(changed catalog "$i")" -f "$(changed frontend "$i")" >>"$OUT/events.log" 2>&1
    log "rollout $i: applied changed templates at t=$(rel "$t_apply")s"
    # Both roll at once; each status waits for its own.
    weft rollout status deploy catalog --timeout 2m >>"$OUT/rollout-catalog.txt" 2>&1 &
    rc_pid=$!
    weft rollout status deploy frontend --timeout 2m >>"$OUT/rollout-frontend.txt" 2>&1 &
    rf_pid=$!
    wait "$rc_pid" || rollout_ok="no (catalog, rollout $i)"
    t_catalog=$(now)
    wait "$rf_pid" || rollout_ok="no (frontend, rollout $i)"
    t_done=$(now)
    weft get inst -o wide >"$OUT/inst-after-rollout$i.txt"
    # Old instances drain after the rollout is complete; until when?
    t_drained=""
    for _ in $(seq 600); do
        if ! instances_json | jq -e '[.items[] | select(.spec.terminating == true or .status.phase == "Terminating")] | length > 0' >/dev/null; then
            t_drained=$(now)
            break
        fi
        sleep 0.1
    done
    drained="more than 60s"
    [[ -n $t_drained ]] && drained="$(secs "$t_drained" "$t_apply")s"
    line="rollout $i: applied at t=$(rel "$t_apply")s; catalog complete after $(secs "$t_catalog" "$t_apply")s, both after $(secs "$t_done" "$t_apply")s; old instances gone after $drained"
    log "$line"
    ROLLOUT_LINES+=("$line")
    if ((i < ROLLOUTS)); then
        sleep_until "$(awk -v a="$t_apply" -v b="$T0" -v e="$ROLLOUT_EVERY" 'BEGIN { print a - b + e }')"
    fi
done
load_rc=0
load_wait || load_rc=$?
scrape_sidecars end

stop_rc=0
platform_stop || stop_rc=$?

summary=$(load_summary)
{
    echo "run: $(basename "$OUT")"
    echo "load: $RPS rps for $DURATION on $LOAD_URL"
    printf '%s\n' "${ROLLOUT_LINES[@]}"
    echo "rollouts ok: $rollout_ok"
    echo "result: $summary"
    echo "stop: $STOP_RESULT"
    sed -n '/^most frequent failure messages/,$p' "$OUT/load.txt"
} | tee "$OUT/summary.txt"

failures=$(grep -o 'failures "[^"]*"' <<<"$summary" || true)
[[ $load_rc -eq 0 && $stop_rc -eq 0 && $rollout_ok == yes && $failures == 'failures "-"' ]]
