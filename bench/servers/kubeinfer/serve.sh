#!/usr/bin/env bash
# Run kubeinfer in the foreground serving ONE benchmark model (kubeinfer serves one model
# per process): builds a Triton-style model repository under $BENCH_ROOT/kubeinfer/repo
# from the harness's $BENCH_ROOT/models/{mlp,resnet18}.onnx with the peers' settings
# (onnxruntime CPU, 1 intra-op / 1 inter-op thread, dynamic batching max 32 / 2 ms,
# 1 instance), then execs `kubeinfer serve`.
# Usage: serve.sh MODEL   (mlp | resnet18)
# Env: BENCH_ROOT (/tmp/bench), PORT (8100), GRPC_PORT (0 = gRPC off; bench/grpc.sh sets one),
#      BENCH_MAX_BATCH (32), BENCH_MAX_DELAY_US (2000),
#      BENCH_ORT_THREADS (1), KUBEINFER_PYTHON (<repo>/.venv/bin/python),
#      KUBEINFER_SERVE_ARGS (extra arguments for `kubeinfer serve`),
#      BENCH_OUT (when set, the server log is also written to $BENCH_OUT/logs/kubeinfer-MODEL.log)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../../.." && pwd)
MODEL=${1:?usage: serve.sh mlp|resnet18}
ROOT=${BENCH_ROOT:-/tmp/bench}; PORT=${PORT:-8100}; GRPC_PORT=${GRPC_PORT:-0}
MAX_BATCH=${BENCH_MAX_BATCH:-32}; DELAY_US=${BENCH_MAX_DELAY_US:-2000}; THREADS=${BENCH_ORT_THREADS:-1}
PY=${KUBEINFER_PYTHON:-$REPO/.venv/bin/python}
case $MODEL in
  mlp) IN_DIMS="64"; OUT_DIMS="10";;
  resnet18) IN_DIMS="3, 224, 224"; OUT_DIMS="1000";;
  *) echo "unknown model $MODEL" >&2; exit 2;;
esac
[ -f "$ROOT/models/$MODEL.onnx" ] || { echo "missing $ROOT/models/$MODEL.onnx (run the harness's setup.sh)" >&2; exit 1; }
if [ -n "${BENCH_OUT:-}" ] && [ -d "$BENCH_OUT/logs" ]; then
  exec > >(tee "$BENCH_OUT/logs/kubeinfer-$MODEL.log") 2>&1
fi

MREPO=$ROOT/kubeinfer/repo
rm -rf "${MREPO:?}/$MODEL"; mkdir -p "$MREPO/$MODEL/1"
ln -s "$ROOT/models/$MODEL.onnx" "$MREPO/$MODEL/1/model.onnx"
cat > "$MREPO/$MODEL/config.pbtxt" <<CFG
name: "$MODEL"
platform: "onnxruntime_onnx"
max_batch_size: $MAX_BATCH
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ $IN_DIMS ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ $OUT_DIMS ] } ]
dynamic_batching { max_queue_delay_microseconds: $DELAY_US }
instance_group [ { count: 1 kind: KIND_CPU } ]
# Triton onnxruntime backend parameter names; the peers' ortcommon.py settings
parameters { key: "intra_op_thread_count" value: { string_value: "$THREADS" } }
parameters { key: "inter_op_thread_count" value: { string_value: "1" } }
CFG
echo "kubeinfer bench: model $MODEL, repository $MREPO, port $PORT, grpc port $GRPC_PORT (0 = off), python $PY"
cat "$MREPO/$MODEL/config.pbtxt"

export PYTHONPATH="$REPO/runtime${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
# shellcheck disable=SC2086
# loopback only (as every peer), HTTP and gRPC alike; gRPC off unless GRPC_PORT is set (the
# harness's Triton runs with --allow-grpc=false; bench/grpc.sh runs both with gRPC on);
# /metrics on the HTTP port
exec "$PY" -m kubeinfer.cli serve "$MREPO" --model "$MODEL" --host 127.0.0.1 --http-port "$PORT" \
  --grpc-port "$GRPC_PORT" --metrics-port 0 ${KUBEINFER_SERVE_ARGS:-}
