#!/usr/bin/env bash
# kubeinfer beside Triton, MLServer and the naive FastAPI server, in one run, with the
# peer harness of ../shared/bench (setup, correctness check, wrk load, report).
#
# Usage: bench/run.sh [--only kubeinfer,triton,...] [--no-inprocess]
#   every argument and env var of ../shared/bench/run_peers.sh works here too:
#   BENCH_ROOT (/tmp/bench) BENCH_DURATION (10) BENCH_WARMUP (3) BENCH_CONC (1,8,64)
#   BENCH_ORT_THREADS (1) BENCH_MAX_BATCH (32) BENCH_MAX_DELAY_US (2000) BENCH_OUT
# Extra env: BENCH_HARNESS (the harness folder; default <repo>/../shared/bench),
#   KUBEINFER_PYTHON (the interpreter that runs kubeinfer; default <repo>/.venv/bin/python).
# Smoke test (~1 min after setup):
#   BENCH_DURATION=2 BENCH_WARMUP=1 BENCH_CONC=1,8 bench/run.sh --only kubeinfer --no-inprocess
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HARNESS=$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" && pwd)
export BENCH_ROOT=${BENCH_ROOT:-/tmp/bench}
export KUBEINFER_PYTHON=${KUBEINFER_PYTHON:-$REPO/.venv/bin/python}
[ -x "$HARNESS/run_peers.sh" ] || { echo "no harness at $HARNESS (set BENCH_HARNESS)" >&2; exit 2; }
[ -x "$KUBEINFER_PYTHON" ] || { echo "no python at $KUBEINFER_PYTHON (set KUBEINFER_PYTHON)" >&2; exit 2; }

# the harness runs START_COMMAND as "$HARNESS/$cmd": point it at our start scripts
mkdir -p "$BENCH_ROOT/kubeinfer"
CONF=$BENCH_ROOT/kubeinfer/servers.conf
rel=$(realpath --relative-to="$HARNESS" "$HERE/servers/kubeinfer")
sed "s#@KUBEINFER@#$rel#g" "$HERE/servers.conf" > "$CONF"

# fix the results folder here so that the kubeinfer record lands next to the harness's
RESULTS_ROOT=${BENCH_RESULTS:-$BENCH_ROOT/results}
export BENCH_OUT=${BENCH_OUT:-$RESULTS_ROOT/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$BENCH_OUT"
cp "$CONF" "$BENCH_OUT/servers.conf"
{
  echo "kubeinfer commit: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
  echo "kubeinfer tree: $(git -C "$REPO" status --porcelain -- runtime bench 2>/dev/null | wc -l) changed/untracked paths under runtime/ bench/"
  echo "kubeinfer python: $("$KUBEINFER_PYTHON" -V 2>&1) ($KUBEINFER_PYTHON)"
  echo "kubeinfer config: max_batch=${BENCH_MAX_BATCH:-32} max_delay_us=${BENCH_MAX_DELAY_US:-2000} intra_op_thread_count=${BENCH_ORT_THREADS:-1} (logs/kubeinfer-<model>.log)"
} > "$BENCH_OUT/kubeinfer-env.txt"
"$KUBEINFER_PYTHON" -m pip freeze 2>/dev/null > "$BENCH_OUT/freeze-kubeinfer.txt" || true

rc=0
"$HARNESS/run_peers.sh" --conf "$CONF" "$@" || rc=$?
echo; cat "$BENCH_OUT/kubeinfer-env.txt"
exit $rc
