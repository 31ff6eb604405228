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
    parser.add_argument(
        "--workers", type=int,
        help="serving processes sharing the ports, each with its own copy of the model "
        "(default 1; env KUBEINFER_WORKERS); helps CPU-bound models on multi-core pods",
    )
    parser.add_argument("--log-level", help="debug, info, warning, error")


def run(args: argparse.Namespace) -> int:
    import sys

    from pydantic import ValidationError

    from kubeinfer.runtime.settings import RuntimeSettings, cli_overrides

    try:
        settings = RuntimeSettings(**cli_overrides(args))
    except ValidationError as exc:
        print(f"kubeinfer serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1:
        from kubeinfer.runtime.server.workers import run_workers

        return run_workers(settings)
    from kubeinfer.runtime.server.process import run_main
    from kubeinfer.runtime.server.run import serve

    return run_main(serve(settings), settings.log_level, "serve")
