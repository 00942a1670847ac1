#!/usr/bin/env bash
# A 10x load step on the demo shop, and how fast the catalog Autoscaler follows it in burst mode
# (target: the needed replicas within 3 s of the step).
#
# Starts `weft up -f examples/shop/` (fresh data dir, non-default ports; bench/lib/platform.sh),
# puts LOW_RPS requests/s on the gateway's /api/home (frontend -> catalog -> pricing, cart) for
# STEADY seconds so the catalog autoscaler's stable window fills (it holds or goes down to its
# minReplicas), then adds STEP_RPS - LOW_RPS more for STEP seconds (the step; both load
# generators open-loop). From before the step to the end, every POLL seconds it records
# `weft get deploy catalog -o json` (spec.replicas, status.readyReplicas) and the catalog
# instances from the api (node, phase, ready), and at the end `weft describe as catalog` and
# the autoscaler's status. The `weft up` process logs the controller's "scaled" lines with
# microsecond times (WEFT_LOG below).
#
# It also sums the catalog sidecars' inbound in-flight requests every 0.25 s (inflight.tsv): the
# load itself, and with the target of 3 per instance, the replicas it needs.
#
# Figures, in seconds after the step (the moment the step's load generator is started):
#   first_up      spec.replicas first above its value at the step
#   burst final   the largest count burst mode wrote (controller log), when spec.replicas got
#                 there and when that many catalog instances were ready
#   spec_final    spec.replicas first at its largest value during the step (burst or stable)
#   ready_final   that many catalog instances ready (not terminating); the verdict uses this
#   and, per instance created during the step: first seen, running, ready. Poll times are
#   when a poll started (its answers come up to ~0.1 s later).
#
#   bench/burst-step.sh [OUT_DIR]       (default /work/bench-logs/autoscale/burst-TIME)
#
# Environment: LOW_RPS [20], STEP_RPS [200], STEADY [25] and STEP [30] seconds, POLL [0.1],
# TARGET [3] seconds; and those of bench/lib/platform.sh (WEFT_BIN_DIR, here defaulting to
# /work/targets/auto/release; API_ADDR [127.0.0.1:27170], GW_ADDR [127.0.0.1:28180];
# QUIET_WAIT, here [60]). Exit 0 when the run completed and met the target.
set -euo pipefail

OUT=${1:-/work/bench-logs/autoscale/burst-$(date +%Y%m%d-%H%M%S)}
LOW_RPS=${LOW_RPS:-20}
STEP_RPS=${STEP_RPS:-200}
STEADY=${STEADY:-25}
STEP=${STEP:-30}
POLL=${POLL:-0.1}
TARGET=${TARGET:-3}
export WEFT_BIN_DIR=${WEFT_BIN_DIR:-/work/targets/auto/release}
export API_ADDR=${API_ADDR:-127.0.0.1:27170}
export GW_ADDR=${GW_ADDR:-127.0.0.1:28180}
export QUIET_WAIT=${QUIET_WAIT:-60}
# The autoscaler's "scaled" lines (with microsecond times) in up.log; everything else as usual.
# (Sidecars and apps started by `weft up` inherit it: warn instead of their default info.)
export WEFT_LOG=${WEFT_LOG:-warn,weft_controllers::autoscaler=info}
RPS=$LOW_RPS
DURATION="$((STEADY + STEP))s"
mkdir -p "$OUT"
# shellcheck source=lib/platform.sh
source "$(dirname "$0")/lib/platform.sh"
STOP_RESULT="not stopped"
POLL_PID=""
INFLIGHT_PID=""
STEP_PID=""
cleanup() {
    local rc=$?
    [[ -n $POLL_PID ]] && kill "$POLL_PID" 2>/dev/null
    [[ -n $INFLIGHT_PID ]] && kill "$INFLIGHT_PID" 2>/dev/null
    [[ -n $STEP_PID ]] && kill "$STEP_PID" 2>/dev/null
    (exit "$rc")
    platform_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in jq curl awk; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 64; }
done

wait_for_quiet
conditions "start"
platform_start

# Every POLL seconds (or as fast as the calls go when they take longer), one line of
# epoch spec.replicas status.readyReplicas into deploy.tsv, and one per catalog instance of
# epoch name node phase ready terminating into instances.tsv.
poll_loop() {
    local t d
    while :; do
        t=$(now)
        d=$(weft get deploy catalog -o json 2>/dev/null | jq -r '"\(.spec.replicas) \(.status.readyReplicas // 0)"' 2>/dev/null || echo "? ?")
        echo "$t $d" >>"$OUT/deploy.tsv"
        instances_json 2>/dev/null |
            jq -r --arg t "$t" '.items[] | select(.spec.deployment == "catalog") |
                "\($t) \(.metadata.name) \(.spec.node // "-") \(.status.phase // "-") \(.status.ready // false) \(.spec.terminating // false)"' \
                >>"$OUT/instances.tsv" 2>/dev/null || true
        # The rest of the period (the calls above take some of it on a busy machine).
        sleep "$(awk -v t="$t" -v n="$(now)" -v p="$POLL" 'BEGIN { d = t + p - n; printf "%.3f", (d > 0 ? d : 0) }')"
    done
}

# Every 0.25 s: the catalog instances' in-flight inbound requests as their sidecars count them
# (what the scraper samples once a second), summed, into inflight.tsv: epoch total instances.
inflight_loop() {
    local t admins total n a v
    while :; do
        t=$(now)
        admins=$(instances_json 2>/dev/null | jq -r '.items[] | select(.spec.deployment == "catalog" and .status.ready == true and .status.sidecarAdmin != null) | .status.sidecarAdmin' 2>/dev/null || true)
        total=0
        n=0
        for a in $admins; do
            v=$(curl -s --max-time 1 "http://$a/metrics" | awk '/^weft_requests_in_flight\{/ && /direction="inbound"/ { s += $NF } END { print s + 0 }') || v=0
            total=$(awk -v a="$total" -v b="${v:-0}" 'BEGIN { print a + b }')
            n=$((n + 1))
        done
        echo "$t $total $n" >>"$OUT/inflight.tsv"
        sleep "$(awk -v t="$t" -v n="$(now)" 'BEGIN { d = t + 0.25 - n; printf "%.3f", (d > 0 ? d : 0) }')"
    done
}

weft get as catalog -o json >"$OUT/as-start.json"
load_start # LOW_RPS for STEADY + STEP seconds
poll_loop &
POLL_PID=$!
inflight_loop &
INFLIGHT_PID=$!
sleep_until "$STEADY"
weft describe as catalog >"$OUT/describe-before-step.txt" 2>&1 || true
conditions "step"
T_STEP=$(now)
"$DEMO_BIN" load --url "$LOAD_URL" --rps "$((STEP_RPS - LOW_RPS))" --duration "${STEP}s" \
    --fail-on-json-errors >"$OUT/load-step.txt" 2>&1 &
STEP_PID=$!
echo "$T_STEP" >"$OUT/t_step"
log "step: +$((STEP_RPS - LOW_RPS)) rps (total $STEP_RPS) at t=$(rel "$T_STEP")s for ${STEP}s"
step_rc=0
wait "$STEP_PID" || step_rc=$?
STEP_PID=""
T_END=$(now)
weft describe as catalog >"$OUT/describe.txt" 2>&1 || true
weft get as catalog -o json >"$OUT/as-end.json" 2>&1 || true
kill "$POLL_PID" "$INFLIGHT_PID" 2>/dev/null || true
wait "$POLL_PID" "$INFLIGHT_PID" 2>/dev/null || true
POLL_PID=""
INFLIGHT_PID=""
load_rc=0
load_wait || load_rc=$?
stop_rc=0
platform_stop || stop_rc=$?

# ---- figures ----------------------------------------------------------------------------
# Seconds after the step of the first deploy.tsv line matching an awk condition on
# $2 (spec.replicas) and $3 (readyReplicas); "-" if none.
after_step() {
    awk -v s="$T_STEP" -v e="$T_END" "\$1 >= s && \$1 <= e && \$2 != \"?\" && ($1) { printf \"%.2f\", \$1 - s; found = 1; exit } END { if (!found) printf \"-\" }" "$OUT/deploy.tsv"
}
r0=$(awk -v s="$T_STEP" '$1 < s && $2 != "?" { r = $2 } END { print r + 0 }' "$OUT/deploy.tsv")
final=$(awk -v s="$T_STEP" -v e="$T_END" '$1 >= s && $1 <= e && $2 != "?" && $2 > m { m = $2 } END { print m + 0 }' "$OUT/deploy.tsv")
first_up=$(after_step "\$2 > $r0")
spec_final=$(after_step "\$2 >= $final")
# Ready catalog instances (not terminating) per poll, after the step.
ready_final=$(awk -v s="$T_STEP" -v e="$T_END" -v want="$final" '
    $1 >= s && $1 <= e { if ($5 == "true" && $6 == "false") n[$1]++; else n[$1] += 0 }
    END { best = ""; for (t in n) if (n[t] >= want && (best == "" || t + 0 < best + 0)) best = t;
          if (best == "") printf "-"; else printf "%.2f", best - s }' "$OUT/instances.tsv")
# Per new instance: first seen, first Running, first ready (seconds after the step).
awk -v s="$T_STEP" '
    { name = $2 }
    !(name in seen) { seen[name] = $1; order[++n] = name }
    $4 == "Running" && !(name in run) { run[name] = $1 }
    $5 == "true" && !(name in ready) { ready[name] = $1 }
    END {
        for (i = 1; i <= n; i++) {
            x = order[i]
            if (seen[x] < s) continue
            printf "instance %s: seen %.2f, running %s, ready %s\n", x, seen[x] - s,
                (x in run) ? sprintf("%.2f", run[x] - s) : "-", (x in ready) ? sprintf("%.2f", ready[x] - s) : "-"
        }
    }' "$OUT/instances.tsv" >"$OUT/new-instances.txt"
# The controller's scale events, seconds after the step (tracing's RFC 3339 UTC times).
t_step_iso=$(date -u -d "@$T_STEP" +%Y-%m-%dT%H:%M:%S.%6NZ)
grep -a 'scaled' "$OUT/up.log" | sed 's/\x1b\[[0-9;]*m//g' | while read -r ts rest; do
    secs=$(( $(date -u -d "$ts" +%s%N) - $(date -u -d "$t_step_iso" +%s%N) ))
    printf '%+.3fs %s\n' "$(awk -v n="$secs" 'BEGIN { print n / 1e9 }')" "$rest"
done >"$OUT/scaled.txt" || true

# Poll resolution, and the in-flight load before and during the step (after the first 5 s).
poll_stats=$(awk 'NR > 1 { d = $1 - p; s += d; if (d > m) m = d } { p = $1 } END { printf "%d polls, every %.3f s on average, at most %.3f s apart", NR, s / (NR - 1), m }' "$OUT/deploy.tsv")
inflight_before=$(awk -v s="$T_STEP" '$1 < s && $1 >= s - 10 { t += $2; n++ } END { printf "%.2f", n ? t / n : 0 }' "$OUT/inflight.tsv")
inflight_step=$(awk -v s="$T_STEP" -v e="$T_END" '$1 >= s + 5 && $1 <= e { t += $2; n++ } END { printf "%.2f", n ? t / n : 0 }' "$OUT/inflight.tsv")
needed=$(awk -v c="$inflight_step" -v t=3 'BEGIN { n = c / t; r = int(n); if (r < n) r++; print (r < 1 ? 1 : r) }')
# The largest count burst mode set during the step (the controller's "scaled ... reason=burst"
# lines), and when the deployment got there; the largest above may come later, in stable mode.
burst_final=$(awk '$1 ~ /^\+/ && /reason=burst/ { for (i = 1; i <= NF; i++) if ($i ~ /^to=/) { v = substr($i, 4) + 0; if (v > m) m = v } } END { print m + 0 }' "$OUT/scaled.txt")
burst_spec="-"
burst_ready="-"
if ((burst_final > 0)); then
    burst_spec=$(after_step "\$2 >= $burst_final")
    burst_ready=$(awk -v s="$T_STEP" -v e="$T_END" -v want="$burst_final" '
        $1 >= s && $1 <= e { if ($5 == "true" && $6 == "false") n[$1]++; else n[$1] += 0 }
        END { best = ""; for (t in n) if (n[t] >= want && (best == "" || t + 0 < best + 0)) best = t;
              if (best == "") printf "-"; else printf "%.2f", best - s }' "$OUT/instances.tsv")
fi
met=no
[[ $ready_final != - ]] && awk -v a="$ready_final" -v t="$TARGET" 'BEGIN { exit !(a <= t) }' && met=yes
{
    echo "run: $(basename "$OUT")"
    echo "load: $LOW_RPS rps for ${STEADY}s, then $STEP_RPS rps for ${STEP}s on $LOAD_URL"
    echo "catalog replicas at the step: $r0; largest during the step: $final"
    echo "catalog in flight (sidecars, summed): $inflight_before in the 10 s before the step, $inflight_step from 5 s after it (needs $needed at target 3)"
    echo "poll: $poll_stats"
    echo "burst mode went up to $burst_final: spec.replicas there after ${burst_spec}s, $burst_final ready after ${burst_ready}s"
    echo "first scale-up: ${first_up}s; spec.replicas at $final: ${spec_final}s; $final ready: ${ready_final}s (target ${TARGET}s: $met)"
    cat "$OUT/new-instances.txt"
    echo "controller scale events (relative to the step):"
    sed 's/^/  /' "$OUT/scaled.txt"
    echo "decisions (weft describe as catalog, newest first):"
    sed -n '/^Scaling decisions/,$p' "$OUT/describe.txt" | tail -n +2 | sed 's/^/  /'
    echo "load: low $(load_summary)"
    echo "load: step $(OUT=$OUT; grep '^total:' "$OUT/load-step.txt" || echo 'no total line')"
    echo "load exit codes: low $load_rc, step $step_rc"
    grep -h 'loadavg' "$OUT/conditions.txt" | sed 's/^/conditions: /'
    echo "stop: $STOP_RESULT"
} | tee "$OUT/summary.txt"

[[ $stop_rc -eq 0 && $met == yes ]]
