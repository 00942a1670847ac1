#!/usr/bin/env bash
# Scale from zero, end to end: how long the first request to a service at zero instances takes
# through the gateway (target: answered at most 300 ms after it arrived).
#
# Starts `weft up -f examples/serverless/` (fresh data dir, non-default ports), then ROUNDS
# times: waits until the `prices` deployment is at zero and its last instance is gone (the
# autoscaler's 5 s grace without traffic), then times one `curl` through the gateway. Each
# such request is held by the gateway, which asks the api for an instance; the autoscaler
# scales to one, the agent starts the app and its sidecar, readiness passes, the endpoints
# reach the gateway and the held request goes through. Prints every round and the median, p90
# and max; raw output in OUT_DIR.
#
#   bench/scale-from-zero.sh [OUT_DIR]       (default /work/bench-logs/zero/run-TIME)
#
# Environment: ROUNDS [10]; WEFT_BIN_DIR [/work/targets/bench/release] (weft and weft-demo,
# release builds); API_ADDR [127.0.0.1:27270]; GW_ADDR [127.0.0.1:28280].
# Exit 0 when every round answered 200 and the median met the target.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-/work/bench-logs/zero/run-$(date +%Y%m%d-%H%M%S)}
ROUNDS=${ROUNDS:-10}
BIN_DIR=${WEFT_BIN_DIR:-/work/targets/bench/release}
API_ADDR=${API_ADDR:-127.0.0.1:27270}
GW_ADDR=${GW_ADDR:-127.0.0.1:28280}
TARGET_MS=300
mkdir -p "$OUT"
for f in "$BIN_DIR/weft" "$BIN_DIR/weft-demo"; do
    [[ -x $f ]] || { echo "missing $f: cargo build --release -p weft -p weft-demo" >&2; exit 64; }
done
DATA=$(mktemp -d /tmp/weft-bench-zero.XXXXXX)
UP_PID=""
cleanup() {
    if [[ -n $UP_PID ]]; then
        kill -INT "$UP_PID" 2>/dev/null || true
        wait "$UP_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT
weft() { "$BIN_DIR/weft" --data-dir "$DATA" "$@"; }

{
    echo "when: $(date -Is)"
    echo "host: $(uname -srm), $(nproc) cpus, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "binaries: $BIN_DIR"
} | tee "$OUT/conditions.txt"

set -m
# Not through the weft function: $! must be weft itself, which SIGINT stops.
"$BIN_DIR/weft" --data-dir "$DATA" up -f "$REPO/examples/serverless/" --listen "$API_ADDR" --gateway "$GW_ADDR" >"$OUT/up.log" 2>&1 &
UP_PID=$!
set +m
deadline=$((SECONDS + 120))
until grep -q "weft is up" "$OUT/up.log"; do
    kill -0 "$UP_PID" 2>/dev/null || { tail -20 "$OUT/up.log" >&2; exit 1; }
    ((SECONDS < deadline)) || { echo "weft up not up in 120s" >&2; exit 1; }
    sleep 0.2
done

at_zero() {
    local replicas insts
    replicas=$(weft get deploy prices -o json | jq '.spec.replicas')
    insts=$(weft get inst -o json | jq '[.items[] | select(.spec.deployment == "prices")] | length')
    [[ $replicas == 0 && $insts == 0 ]]
}

: >"$OUT/rounds.tsv"
for ((i = 1; i <= ROUNDS; i++)); do
    deadline=$((SECONDS + 60))
    until at_zero; do
        ((SECONDS < deadline)) || { echo "round $i: prices never went back to zero" >&2; exit 1; }
        sleep 0.2
    done
    # Let the gateway see the empty endpoints (a watch event away) before the request.
    sleep 0.5
    read -r code secs < <(curl -s -o "$OUT/body-$i.txt" -w '%{http_code} %{time_total}\n' \
        --max-time 30 "http://$GW_ADDR/api/prices")
    ms=$(awk -v s="$secs" 'BEGIN { printf "%.1f", s * 1000 }')
    printf '%d\t%s\t%s\n' "$i" "$code" "$ms" | tee -a "$OUT/rounds.tsv"
done

weft describe as prices >"$OUT/describe.txt" || true
sort -t$'\t' -k3 -n "$OUT/rounds.tsv" | awk -F'\t' -v n="$ROUNDS" -v target="$TARGET_MS" '
    { ms[NR] = $3; if ($2 != 200) bad++ }
    END {
        med = (n % 2) ? ms[(n + 1) / 2] : (ms[n / 2] + ms[n / 2 + 1]) / 2
        p90 = ms[int(n * 0.9 + 0.999)]
        printf "first request after scale to zero (ms): median %.1f, p90 %.1f, max %.1f, non-200: %d of %d (target median <= %d)\n", med, p90, ms[n], bad + 0, n, target
        exit (bad > 0 || med > target)
    }' | tee "$OUT/summary.txt"
