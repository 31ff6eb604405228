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
    import logging
    import sys

    from pydantic import ValidationError

    from kubeinfer.runtime.errors import ConfigError
    from kubeinfer.runtime.server.run import run_async, serve
    from kubeinfer.runtime.settings import RuntimeSettings

    overrides = {
        k: v
        for k, v in vars(args).items()
        if not k.startswith("_") and k != "command" and v is not None
    }
    try:
        settings = RuntimeSettings(**overrides)
    except ValidationError as exc:
        print(f"kubeinfer serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run_async(serve(settings))
    except ConfigError as exc:
        logging.getLogger("kubeinfer").error("cannot serve: %s", exc)
        return 1
