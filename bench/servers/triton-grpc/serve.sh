#!/usr/bin/env bash
# Triton with gRPC on: the harness's servers/triton/serve.sh (same tritonserver binary from
# venv-triton, same model repository from its make_repo.sh, same libraries and PATH), with
# gRPC on 127.0.0.1:GRPC_PORT and HTTP on 127.0.0.1:PORT (health checks). Everything it
# writes lives under $BENCH_ROOT/triton-grpc, so the harness's own copies stay untouched.
# Foreground; the harness's serve.sh is not edited: the few lines are copied here.
# Env: BENCH_ROOT (/tmp/bench), PORT (8000), GRPC_PORT (8001), BENCH_HARNESS
#      (<repo>/../shared/bench), BENCH_MAX_BATCH / BENCH_MAX_DELAY_US (read by make_repo.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../../.." && pwd)
HARNESS=$(cd "${BENCH_HARNESS:-$REPO/../shared/bench}" && pwd)
ROOT=${BENCH_ROOT:-/tmp/bench}; PORT=${PORT:-8000}; GRPC_PORT=${GRPC_PORT:-8001}
VENV=$ROOT/venv-triton
SP=$VENV/lib/python3.11/site-packages
DIST=$SP/pytriton/tritonserver
[ -d "$DIST" ] || { echo "missing $DIST (run the harness's setup.sh)" >&2; exit 1; }
W=$ROOT/triton-grpc
TS=$W/tritonserver              # runnable copy: bin/, backends/python/ + stub, caches/
rm -rf "$TS"; mkdir -p "$TS"
cp -r "$DIST/bin" "$DIST/backends" "$DIST/caches" "$TS/"
cp "$DIST/python_backend_stubs/3.11/triton_python_backend_stub" "$TS/backends/python/"
"$HARNESS/servers/triton/make_repo.sh" "$W/repo" "$ROOT/models" "$HARNESS"
PYLIB=$("$(command -v python3.11 || command -v python3)" -c 'import sysconfig;print(sysconfig.get_config_var("LIBDIR"))' 2>/dev/null || true)
export LD_LIBRARY_PATH="${PYLIB:+$PYLIB:}$SP/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$VENV/bin:$PATH"
export PYTHONNOUSERSITE=1
echo "triton (gRPC on): http 127.0.0.1:$PORT, grpc 127.0.0.1:$GRPC_PORT, repository $W/repo"
# as the harness's serve.sh, except --allow-grpc=true on loopback (default gRPC settings)
exec "$TS/bin/tritonserver" \
  --model-repository="$W/repo" \
  --backend-directory="$TS/backends" \
  --cache-directory="$TS/caches" \
  --http-address=127.0.0.1 --http-port="$PORT" \
  --allow-grpc=true --grpc-address=127.0.0.1 --grpc-port="$GRPC_PORT" \
  --allow-metrics=false --allow-gpu-metrics=false --allow-cpu-metrics=false \
  --strict-readiness=true \
  --exit-on-error=true \
  --log-verbose=0
