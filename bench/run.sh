#!/usr/bin/env bash
# kubeinfer beside Triton, MLServer, KServe, Ray Serve and the naive FastAPI server, in one
# run, with the peer harness of ../shared/bench (setup, correctness check, wrk load, report),
# then the gRPC cells (bench/grpc.sh: perf_analyzer against kubeinfer and Triton), with the
# memory (VmRSS/VmHWM) of every server process under load recorded throughout (bench/rss.py).
#
# Usage: bench/run.sh [--only kubeinfer,triton,...] [--no-inprocess] [--no-grpc]
#   every argument and env var of ../shared/bench/run_peers.sh works here too:
#   BENCH_ROOT (/tmp/bench) BENCH_DURATION (10) BENCH_WARMUP (3) BENCH_CONC (1,8,64)
#   BENCH_ORT_THREADS (1) BENCH_MAX_BATCH (32) BENCH_MAX_DELAY_US (2000) BENCH_OUT
#   --only also selects the gRPC targets (labels kubeinfer, triton); --no-grpc or BENCH_GRPC=0
#   skips the gRPC step; its own env (BENCH_GRPC_*): see bench/grpc.sh.
# Extra env: BENCH_HARNESS (the harness folder; default <repo>/../shared/bench),
#   KUBEINFER_PYTHON (the interpreter that runs kubeinfer; default <repo>/.venv/bin/python).
# Smoke test (~3 min after setup):
#   BENCH_DURATION=2 BENCH_WARMUP=1 BENCH_CONC=1,8 BENCH_GRPC_WINDOW_MS=2000 \
#     bench/run.sh --only kubeinfer,triton --no-inprocess
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
HARNESS=$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" && pwd)
export BENCH_HARNESS=$HARNESS
export BENCH_ROOT=${BENCH_ROOT:-/tmp/bench}
export KUBEINFER_PYTHON=${KUBEINFER_PYTHON:-$REPO/.venv/bin/python}
[ -x "$HARNESS/run_peers.sh" ] || { echo "no harness at $HARNESS (set BENCH_HARNESS)" >&2; exit 2; }
[ -x "$KUBEINFER_PYTHON" ] || { echo "no python at $KUBEINFER_PYTHON (set KUBEINFER_PYTHON)" >&2; exit 2; }

GRPC=${BENCH_GRPC:-1}; ONLY=""; ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --no-grpc) GRPC=0; shift;;
    --only) ONLY=$2; ARGS+=("$1" "$2"); shift 2;;
    *) ARGS+=("$1"); shift;;
  esac
done

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

# memory of every server process while wrk loads it (the harness's servers.conf ports)
targets=$(awk '!/^[[:space:]]*(#|$)/ {u=$2; sub(/.*:/, "", u); sub(/\/.*/, "", u); print $1"="u}' "$CONF" | paste -sd, -)
PYTHONDONTWRITEBYTECODE=1 "$KUBEINFER_PYTHON" "$HERE/rss.py" sample --targets "$targets" --out "$BENCH_OUT/rss.jsonl" &
SAMPLER=$!
stop_sampler() { [ -n "$SAMPLER" ] && { kill -TERM "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; }; return 0; }
trap stop_sampler EXIT

rc=0
"$HARNESS/run_peers.sh" --conf "$CONF" "${ARGS[@]}" || rc=$?
stop_sampler
if [ "$GRPC" != 0 ]; then
  echo; echo "=== gRPC cells (bench/grpc.sh) ==="
  "$HERE/grpc.sh" ${ONLY:+--only "$ONLY"} || rc=$?
fi
PYTHONDONTWRITEBYTECODE=1 "$KUBEINFER_PYTHON" "$HERE/rss.py" report "$BENCH_OUT/rss.jsonl" > "$BENCH_OUT/rss.md"
echo; echo "results: $BENCH_OUT: results.md (HTTP, the harness)$([ "$GRPC" != 0 ] && echo ", grpc.md (gRPC)"), rss.md (memory)"
[ "$GRPC" != 0 ] || { echo; cat "$BENCH_OUT/rss.md"; }  # grpc.sh has printed it
echo; cat "$BENCH_OUT/kubeinfer-env.txt"
exit $rc
