#!/usr/bin/env bash
# Issue 4's agent and scheduler targets, each run several times with raw output kept:
#   create -> ready p99 and memory per sidecar (cargo bench -p weft-agent --bench create_ready,
#   WEFT_BENCH_N instances behind real `weft proxy` sidecars), and placing 100,000 instances onto
#   5,000 nodes (the schedule_bench example, and the criterion bench once).
#
#   bench/platform-benches.sh [OUT_DIR]       (default /work/bench-logs/platform)
#
# Environment: RUNS (default 3), WEFT_BENCH_N (default 200), CARGO_TARGET_DIR (default
# /work/targets/bench), WEFT_BENCH_WEFT (default $CARGO_TARGET_DIR/release/weft), ONLY
# (create_ready, schedule_bench or scheduler: just that one). Before each run it waits (every
# 30 s, at most 20 min) until no proxy benchmark of others runs, and notes the load average.
set -euo pipefail

OUT=${1:-/work/bench-logs/platform}
RUNS=${RUNS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/targets/bench}
export WEFT_BENCH_WEFT=${WEFT_BENCH_WEFT:-$CARGO_TARGET_DIR/release/weft}
export WEFT_BENCH_N=${WEFT_BENCH_N:-200}
ONLY=${ONLY:-}
OTHERS='proxy-peers|sidecar-pair|openloop'
cd "$(dirname "$0")/.."
mkdir -p "$OUT"

quiet() {
    local waited=0
    while pgrep -f "$OTHERS" >/dev/null; do
        if ((waited >= 1200)); then
            echo "contention: others' benchmarks still running after ${waited}s; going ahead"
            return 0
        fi
        sleep 30
        waited=$((waited + 30))
    done
    echo "contention: none (waited ${waited}s for others' benchmarks)"
}

# run NAME COMMAND...: output to $OUT/NAME.txt with the conditions around it.
run() {
    local name=$1
    shift
    {
        quiet
        echo "when: $(date -Is); host: $(uname -srm), $(nproc) cpus"
        echo "loadavg before: $(cut -d' ' -f1-3 /proc/loadavg); rustc/cargo processes of others: $(pgrep -x 'rustc|cargo' | wc -l)"
        echo "command: $*"
        echo "---"
        "$@" 2>&1
        echo "---"
        echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg); others running: $(pgrep -f "$OTHERS" | wc -l)"
    } >"$OUT/$name.txt"
    echo "$name done"
}

if [[ -z $ONLY || $ONLY == create_ready ]]; then
    cargo bench -p weft-agent --bench create_ready --no-run 2>/dev/null
    for i in $(seq "$RUNS"); do
        run "create_ready-run$i" cargo bench -p weft-agent --bench create_ready
    done
fi
if [[ -z $ONLY || $ONLY == schedule_bench ]]; then
    cargo build --release -p weft-controllers --example schedule_bench 2>/dev/null
    for i in $(seq "$RUNS"); do
        run "schedule_bench-run$i" cargo run --release -p weft-controllers --example schedule_bench
    done
fi
if [[ -z $ONLY || $ONLY == scheduler ]]; then
    cargo bench -p weft-controllers --bench scheduler --no-run 2>/dev/null
    run "scheduler-criterion" cargo bench -p weft-controllers --bench scheduler
fi
