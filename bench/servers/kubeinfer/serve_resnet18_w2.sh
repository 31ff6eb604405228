#!/usr/bin/env bash
# kubeinfer serving the benchmark resnet18 with two worker processes sharing the port
# (`kubeinfer serve --workers 2`: one model, batcher and ORT session per worker).
KUBEINFER_SERVE_ARGS="--workers 2 ${KUBEINFER_SERVE_ARGS:-}" exec "$(dirname "$0")/serve.sh" resnet18
