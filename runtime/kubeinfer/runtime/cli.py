"""``kubeinfer serve``: like ``tritonserver --model-repository``, one model per process."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_repository", nargs="?", help="model repository (env KUBEINFER_MODEL_REPOSITORY)")
    parser.add_argument("--model", help="model to serve (default: the only one in the repository)")
    parser.add_argument("--model-version", type=int, help="version to serve (default: latest)")
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--http-port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 8001, 0 disables)")
    parser.add_argument("--metrics-port", type=int, help="metrics port (default 8002)")
    parser.add_argument("--shutdown-delay-seconds", type=float, help="serve this long after SIGTERM before draining")
    parser.add_argument("--log-level", help="debug, info, warning, error")


def run(args: argparse.Namespace) -> int:
    import sys

    from pydantic import ValidationError

    from kubeinfer.runtime.server.run import run_main, serve
    from kubeinfer.runtime.settings import RuntimeSettings, cli_overrides

    try:
        settings = RuntimeSettings(**cli_overrides(args))
    except ValidationError as exc:
        print(f"kubeinfer serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    return run_main(serve(settings), settings.log_level, "serve")
