#!/usr/bin/env bash
# Where a kubeinfer serving process spends its time under load: `kubeinfer serve` on the
# harness's model (bench/servers/kubeinfer/serve.sh), wrk at one concurrency with the
# harness's body, py-spy sampling every worker process meanwhile. Writes the raw stacks
# and a summary (bench/profile_summary.py: self and inclusive shares per function) to OUT.
# A profile, not a measurement: py-spy's sampling slows the process a little.
#
#   bench/profile.sh [OUT]   (default /tmp/bench/profile-<timestamp>)
# Env: MODEL (mlp), ENC (json | bin | grpc: perf_analyzer -i grpc -a from bench/grpc.sh's
#      venv-pa instead of wrk), CONC (64), SECONDS_ (8), WORKERS (1), PORT (8150; gRPC: PORT+10),
#      BENCH_ROOT (/tmp/bench: the harness's setup.sh must have run), KUBEINFER_PYTHON
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/.." && pwd)
ROOT=${BENCH_ROOT:-/tmp/bench}; PY=${KUBEINFER_PYTHON:-$REPO/.venv/bin/python}
MODEL=${MODEL:-mlp}; ENC=${ENC:-json}; CONC=${CONC:-64}; SECS=${SECONDS_:-8}
WORKERS=${WORKERS:-1}; PORT=${PORT:-8150}
OUT=${1:-$ROOT/profile-$(date +%Y%m%d-%H%M%S)}
HARNESS=$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" && pwd)
SPY=$(dirname "$PY")/py-spy
[ -x "$SPY" ] || { echo "py-spy missing: $PY -m pip install py-spy" >&2; exit 2; }
mkdir -p "$OUT"

args=""; [ "$WORKERS" != 1 ] && args="--workers $WORKERS"
GPORT=0; [ "$ENC" = grpc ] && GPORT=$((PORT + 10))
KUBEINFER_SERVE_ARGS="$args --log-level warning" PORT=$PORT GRPC_PORT=$GPORT BENCH_OUT="" \
  setsid "$HERE/servers/kubeinfer/serve.sh" "$MODEL" > "$OUT/server.log" 2>&1 < /dev/null &
leader=$!
trap 'kill -TERM -- -$leader 2>/dev/null || true' EXIT
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$PORT/v2/health/ready" > /dev/null && break; sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/v2/health/ready" > /dev/null || { cat "$OUT/server.log"; exit 1; }

threads=$(( CONC < 2 ? CONC : 2 ))
if [ "$ENC" = grpc ]; then
  PA_PY=$ROOT/venv-pa/bin/python
  [ -x "$ROOT/venv-pa/bin/perf_analyzer" ] || { echo "venv-pa missing: run bench/grpc.sh once" >&2; exit 2; }
  PA_LIB=$("$PA_PY" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))')
  "$PA_PY" "$HERE/pa.py" inputs "$ROOT/payloads" "$MODEL" "$OUT/input.json"
  pa=(timeout -k 5 $((SECS + 60)) env "LD_LIBRARY_PATH=$PA_LIB" "$ROOT/venv-pa/bin/perf_analyzer" -m "$MODEL" -i grpc
      -u "127.0.0.1:$GPORT" -a --max-threads "$threads" -b 1 --concurrency-range "$CONC:$CONC" --input-data "$OUT/input.json")
  "${pa[@]}" --measurement-interval 3000 --max-trials 1 > /dev/null 2>&1 || true  # warm-up
  # three windows over the sampled time (perf_analyzer needs three to report, as in grpc.sh)
  "${pa[@]}" --measurement-interval "$(( (SECS + 2) * 1000 / 3 ))" --max-trials 3 --stability-percentage 1000000 > "$OUT/wrk.txt" 2>&1 &
else
  export BENCH_BODY=$ROOT/payloads/$MODEL.$ENC.body
  [ "$ENC" = bin ] && export BENCH_HLEN=$(cat "$ROOT/payloads/$MODEL.bin.hlen")
  url=http://127.0.0.1:$PORT/v2/models/$MODEL/infer
  wrk -t "$threads" -c "$CONC" -d 3s -s "$HARNESS/wrk_v2.lua" "$url" > /dev/null  # warm-up
  wrk -t "$threads" -c "$CONC" -d "$((SECS + 2))s" --latency -s "$HARNESS/wrk_v2.lua" "$url" > "$OUT/wrk.txt" &
fi
wrk_pid=$!
sleep 1
# every Python process of the server's session (with workers: parent, workers, helper)
pids=$(pgrep -s "$(ps -o sid= -p $leader | tr -d ' ')" python || true)
spies=()
for pid in $pids; do
  "$SPY" record -p "$pid" -d "$SECS" -r 250 -f raw -o "$OUT/stacks-$pid.txt" --nonblocking > /dev/null 2>&1 &
  spies+=($!)
done
wait "${spies[@]}" || true
wait $wrk_pid || echo "load generator rc=$? (see $OUT/wrk.txt)" >&2
"$PY" "$HERE/profile_summary.py" "$OUT"/stacks-*.txt > "$OUT/summary.txt"
{ echo "model=$MODEL enc=$ENC conc=$CONC workers=$WORKERS seconds=$SECS commit=$(git -C "$REPO" rev-parse --short HEAD)"
  grep -E "Requests/sec|Latency|Non-2xx|Throughput|p99 latency|Avg latency" "$OUT/wrk.txt"; cat "$OUT/summary.txt"; } > "$OUT/profile.txt"
cat "$OUT/profile.txt"
