#!/usr/bin/env bash
# The gRPC cells: Triton's own load generator perf_analyzer against kubeinfer's and Triton's
# gRPC ports (bench/grpc.conf), same models, batching settings and machine as the HTTP run,
# plus the memory of every server process under load (bench/rss.py).
#
# Usage: bench/grpc.sh [--only kubeinfer,triton] [--conf FILE]
# Env: BENCH_ROOT (/tmp/bench; the harness's setup must have run: models, venv-triton)
#      BENCH_OUT (results folder; default $BENCH_ROOT/results/<timestamp>; bench/run.sh passes its own)
#      BENCH_GRPC_CONC (default $BENCH_CONC or 1,8,64)  BENCH_GRPC_MODELS (mlp,resnet18)
#      BENCH_GRPC_WINDOW_MS (5000: perf_analyzer --measurement-interval)
#      BENCH_GRPC_WARMUP_MS (default $BENCH_WARMUP s or 3 s: one discarded perf_analyzer window first)
#      BENCH_GRPC_STABILITY (empty: a fixed length like wrk's -d, 3 windows merged, perf_analyzer's
#        stability rule off; a number, e.g. 10: its rule with that --stability-percentage, up to
#        BENCH_GRPC_TRIALS windows (default 3 when off, 10 when on), "unstable" recorded as a failure)
#      BENCH_MAX_BATCH (32) BENCH_MAX_DELAY_US (2000) BENCH_ORT_THREADS (1): read by the start scripts
#      KUBEINFER_PYTHON, BENCH_HARNESS: as for bench/run.sh
# Output in BENCH_OUT: grpc.jsonl, grpc.md (table), raw/grpc_* (perf_analyzer's text + CSV,
#      /stats after each cell), logs/grpc-*.log, grpc-env.txt, freeze-pa.txt, rss.jsonl + rss.md.
# Every perf_analyzer run is bounded: at most TRIALS windows, under a hard `timeout`.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/.." && pwd)
export BENCH_ROOT=${BENCH_ROOT:-/tmp/bench}; ROOT=$BENCH_ROOT
export BENCH_HARNESS=${BENCH_HARNESS:-$REPO/../shared/bench}
export KUBEINFER_PYTHON=${KUBEINFER_PYTHON:-$REPO/.venv/bin/python}
export PYTHONDONTWRITEBYTECODE=1
CONF=$HERE/grpc.conf; ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --only) ONLY=$2; shift 2;;
    --conf) CONF=$2; shift 2;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
sel_labels=$(awk '!/^[[:space:]]*(#|$)/ {print $1}' "$CONF" | sort -u | while read -r l; do
  if [ -z "$ONLY" ] || [[ ",$ONLY," == *",$l,"* ]]; then echo "$l"; fi; done)
[ -n "$sel_labels" ] || { echo "[grpc] no gRPC target among --only $ONLY ($CONF): nothing to do"; exit 0; }
CONCS=${BENCH_GRPC_CONC:-${BENCH_CONC:-1,8,64}}; MODELS=${BENCH_GRPC_MODELS:-mlp,resnet18}
WINDOW=${BENCH_GRPC_WINDOW_MS:-5000}; WARMUP=${BENCH_GRPC_WARMUP_MS:-$(( ${BENCH_WARMUP:-3} * 1000 ))}
STAB=${BENCH_GRPC_STABILITY:-}
if [ -n "$STAB" ]; then TRIALS=${BENCH_GRPC_TRIALS:-10}; else TRIALS=${BENCH_GRPC_TRIALS:-3}; fi
OUT=${BENCH_OUT:-${BENCH_RESULTS:-$ROOT/results}/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT/raw" "$OUT/logs"
for m in mlp resnet18; do [ -f "$ROOT/models/$m.onnx" ] || { echo "missing $ROOT/models/$m.onnx: run the harness's setup.sh (or bench/run.sh)" >&2; exit 1; }; done

# venv-pa: perf_analyzer (idempotent, like the harness's setup)
PA_VENV=$ROOT/venv-pa; PA_PY=$PA_VENV/bin/python
if ! "$PA_PY" -c 'import tritonclient.grpc' 2>/dev/null || [ ! -x "$PA_VENV/bin/perf_analyzer" ]; then
  echo "[grpc] creating venv-pa from bench/requirements-pa.txt"
  rm -rf "$PA_VENV"
  "$(command -v python3.11 || command -v python3)" -m venv "$PA_VENV" && "$PA_PY" -m pip install -q -r "$HERE/requirements-pa.txt" || { echo "venv-pa failed" >&2; exit 1; }
fi
if ! ldconfig -p | grep 'libb64\.so\.0d' > /dev/null; then
  echo "[grpc] apt-get install libb64-0d (perf_analyzer links it)"
  { apt-get install -y -q libb64-0d || { apt-get update -q && apt-get install -y -q libb64-0d; }; } > "$OUT/logs/grpc-apt.log" 2>&1 || { echo "libb64-0d install failed (see logs/grpc-apt.log)" >&2; exit 1; }
fi
PA_LIB=$("$PA_PY" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))')
PA=(env "LD_LIBRARY_PATH=$PA_LIB" "$PA_VENV/bin/perf_analyzer")
PA_VERSION=$("${PA[@]}" --version 2>&1) || { echo "perf_analyzer does not run: $PA_VERSION" >&2; exit 1; }
"$PA_PY" -m pip freeze 2>/dev/null > "$OUT/freeze-pa.txt" || true
mkdir -p "$ROOT/pa"
for m in mlp resnet18; do "$PA_PY" "$HERE/pa.py" inputs "$ROOT/payloads" "$m" "$ROOT/pa/$m.input.json"; done
{
  echo "grpc load: $PA_VERSION (from the tritonclient $("$PA_PY" -c 'import importlib.metadata as m; print(m.version("tritonclient"))') wheel), -i grpc -a, threads=min(2,conc), conc=$CONCS"
  echo "grpc windows: warm-up ${WARMUP} ms (discarded), then --measurement-interval $WINDOW ms, --max-trials $TRIALS, $( [ -n "$STAB" ] && echo "--stability-percentage $STAB" || echo "stability rule off (fixed length: the last 3 windows merged)"); batch 1, --input-data = the harness's fixed tensor"
} > "$OUT/grpc-env.txt"
cat "$OUT/grpc-env.txt"

RESULTS=$OUT/grpc.jsonl
CUR_PGID=""; SAMPLER=""
stop_server() {
  [ -n "$CUR_PGID" ] || return 0
  # as the harness: TERM, a second TERM after 15 s, KILL after 25 s; only this process group
  kill -TERM -- "-$CUR_PGID" 2>/dev/null
  for _ in $(seq 30); do kill -0 -- "-$CUR_PGID" 2>/dev/null || break; sleep 0.5; done
  kill -TERM -- "-$CUR_PGID" 2>/dev/null
  for _ in $(seq 20); do kill -0 -- "-$CUR_PGID" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$CUR_PGID" 2>/dev/null && echo "(server process group $CUR_PGID had to be SIGKILLed)"
  wait "$CUR_PGID" 2>/dev/null
  CUR_PGID=""
}
stop_sampler() { [ -n "$SAMPLER" ] && { kill -TERM "$SAMPLER" 2>/dev/null; wait "$SAMPLER" 2>/dev/null; SAMPLER=""; }; return 0; }
trap 'stop_server; stop_sampler' EXIT
trap 'stop_server; stop_sampler; exit 130' INT TERM

wait_ready() { # url models...
  local url=$1; shift
  local deadline=$(( $(date +%s) + 180 ))
  while :; do
    local ok=1
    curl -sf -o /dev/null --max-time 2 "$url/v2/health/ready" || ok=0
    for m in "$@"; do [ $ok = 1 ] && { curl -sf -o /dev/null --max-time 2 "$url/v2/models/$m/ready" || ok=0; }; done
    [ $ok = 1 ] && return 0
    if [ -n "$CUR_PGID" ] && ! kill -0 "$CUR_PGID" 2>/dev/null; then echo "server exited during startup" >&2; return 1; fi
    [ "$(date +%s)" -ge $deadline ] && { echo "not ready after 180 s" >&2; return 1; }
    sleep 1
  done
}

targets=$(awk '!/^[[:space:]]*(#|$)/ {print $1"="$3}' "$CONF" | paste -sd, -)
"$KUBEINFER_PYTHON" "$HERE/rss.py" sample --targets "$targets" --out "$OUT/rss.jsonl" &
SAMPLER=$!

IFS=, read -r -a CLIST <<< "$CONCS"
while read -r label url gport cmd models <&3; do
  case "$label" in ''|\#*) continue;; esac
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$label,"* ]]; then continue; fi
  read -r -a MS <<< "$models"
  sel=(); for m in "${MS[@]}"; do [[ ",$MODELS," == *",$m,"* ]] && sel+=("$m"); done
  [ ${#sel[@]} -gt 0 ] || continue
  echo; echo "=== $label gRPC @ 127.0.0.1:$gport (HTTP $url) ==="
  if [ "$cmd" != "-" ]; then
    if curl -s -o /dev/null --max-time 2 "$url/"; then echo "something already listens on $url; skipping $label" >&2; continue; fi
    port=${url##*:}; port=${port%%/*}
    log=$OUT/logs/grpc-$label-$(IFS=-; echo "${sel[*]}").log
    PORT=$port GRPC_PORT=$gport BENCH_OUT="" setsid "$HERE/$cmd" > "$log" 2>&1 < /dev/null &
    CUR_PGID=$!
  fi
  if ! wait_ready "$url" "${sel[@]}"; then
    for m in "${sel[@]}"; do
      "$PA_PY" "$HERE/pa.py" record --label "$label" --url "127.0.0.1:$gport" --model "$m" --conc 0 --rc 1 \
        --error "server did not become ready (see logs/)" --out "$RESULTS"
    done
    stop_server; continue
  fi
  for m in "${sel[@]}"; do
    ok=0
    for _ in 1 2 3 4 5; do
      if "$PA_PY" "$HERE/pa.py" check "127.0.0.1:$gport" "$m" "$ROOT/payloads" > "$OUT/raw/grpc_${label}_${m}_check.txt" 2>&1; then ok=1; break; fi
      sleep 2
    done
    cat "$OUT/raw/grpc_${label}_${m}_check.txt" | tail -1
    if [ $ok = 0 ]; then
      "$PA_PY" "$HERE/pa.py" record --label "$label" --url "127.0.0.1:$gport" --model "$m" --conc 0 --rc 1 \
        --error "correctness check failed, not load-tested: $(tail -1 "$OUT/raw/grpc_${label}_${m}_check.txt" | cut -c1-200)" --out "$RESULTS"
      continue
    fi
    for c in "${CLIST[@]}"; do
      base=$OUT/raw/grpc_${label}_${m}_c$c
      rm -f "$base.csv"
      common=(-m "$m" -i grpc -u "127.0.0.1:$gport" -a --max-threads $(( c < 2 ? c : 2 )) -b 1
              --concurrency-range "$c:$c" --input-data "$ROOT/pa/$m.input.json")
      # warm-up: one window, discarded (perf_analyzer then exits "unstable": expected)
      if [ "$WARMUP" -gt 0 ]; then
        timeout -k 5 $(( WARMUP / 1000 + 60 )) "${PA[@]}" "${common[@]}" --measurement-interval "$WARMUP" \
          --max-trials 1 > "${base}_warmup.txt" 2>&1 < /dev/null
        # as the harness pauses after its warm-up: let the server finish what is still queued
        "$PA_PY" "$HERE/pa.py" drain "127.0.0.1:$gport" "$m" "$ROOT/payloads"
      fi
      args=("${common[@]}" --measurement-interval "$WINDOW" --max-trials "$TRIALS"
            --stability-percentage "${STAB:-1000000}" -v -f "$base.csv")
      limit=$(( (TRIALS + 2) * WINDOW / 1000 + 60 ))
      echo "perf_analyzer ${args[*]}  (timeout ${limit}s)"
      timeout -k 5 "$limit" "${PA[@]}" "${args[@]}" > "$base.txt" 2>&1 < /dev/null
      rc=$?
      err=""; [ $rc = 124 ] && err="timed out after ${limit}s"
      [ $rc != 0 ] && [ -z "$err" ] && err="perf_analyzer rc=$rc: $(grep -m1 -iE 'error|fail|unstable' "$base.txt" | cut -c1-200)"
      "$PA_PY" "$HERE/pa.py" record --label "$label" --url "127.0.0.1:$gport" --model "$m" --conc "$c" \
        --window-ms "$WINDOW" --rc $rc --error "$err" --csv "$base.csv" --text "$base.txt" \
        --cmd "perf_analyzer ${args[*]}" --out "$RESULTS"
      curl -s --max-time 5 "$url/v2/models/$m/stats" > "${base}_stats.json" || true
    done
  done
  stop_server
  for f in "$OUT"/logs/grpc-"$label"-*.log; do [ -f "$f" ] && { cut -b 1-1000 "$f" > "$f.tmp"; mv "$f.tmp" "$f"; }; done
done 3< "$CONF"
stop_sampler

{ cat "$OUT/grpc-env.txt"; echo; "$PA_PY" "$HERE/pa.py" report "$RESULTS"; } > "$OUT/grpc.md"
"$KUBEINFER_PYTHON" "$HERE/rss.py" report "$OUT/rss.jsonl" > "$OUT/rss.md"
echo; cat "$OUT/grpc.md"; echo; cat "$OUT/rss.md"
echo; echo "gRPC results: $OUT/grpc.md"
