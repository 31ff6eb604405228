"""``kubeinfer route``: serve an ensemble of models (each behind its own v2 endpoint) as
one v2 model, with the same HTTP server as ``kubeinfer serve``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ensemble", nargs="?",
        help="ensemble definition: YAML/JSON file, or a Triton ensemble config.pbtxt (or its "
        "model directory) (env KUBEINFER_ENSEMBLE)",
    )
    parser.add_argument(
        "--endpoint", action="append", default=[], metavar="MODEL=URL",
        help="where a step model is served, e.g. digits=http://digits:8000 (repeatable)",
    )
    parser.add_argument("--max-inflight", type=int, help="requests executing at once; more get 503")
    parser.add_argument("--connect-timeout-seconds", type=float, help="connect timeout to step models (default 1)")
    parser.add_argument(
        "--step-timeout-seconds", type=float,
        help="seconds a step may take to answer, then 503 naming it (default: the definition's "
        "step_timeout_seconds, 60; a step's own timeout_seconds wins)",
    )
    parser.add_argument(
        "--health-interval-seconds", type=float, help="how often the step models' readiness is polled (default 2)"
    )
    parser.add_argument("--host", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--http-port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, help="gRPC port (default 0: off); served by the runtime's gRPC layer")
    parser.add_argument("--metrics-port", type=int, help="metrics port (default 8002, 0: on the HTTP port)")
    parser.add_argument("--shutdown-delay-seconds", type=float, help="serve this long after SIGTERM before draining")
    parser.add_argument("--log-level", help="debug, info, warning, error")


async def route(settings) -> int:
    from kubeinfer.runtime.server.app import create_app
    from kubeinfer.runtime.server.lifecycle import metrics_endpoint, run_servers
    from kubeinfer.router.client import ClientSettings
    from kubeinfer.router.forwarding import ForwardHeaders
    from kubeinfer.spec.ensemble import build_graph, load_definition
    from kubeinfer.router.readiness import ServerReadiness
    from kubeinfer.router.servable import EnsembleServable
    from kubeinfer.router.stats import EnsembleMetrics

    graph = build_graph(load_definition(settings.ensemble), settings.endpoints, settings.step_timeout_seconds)
    servable = EnsembleServable(
        graph,
        ClientSettings(connect_timeout=settings.connect_timeout_seconds),
        max_inflight=settings.max_inflight,
        health_interval=settings.health_interval_seconds,
    )
    metrics = metrics_endpoint(EnsembleMetrics(servable.stats, servable.pending_count))
    app = create_app(
        servable,
        metrics_route=metrics if settings.metrics_port == 0 else None,
        max_body_bytes=settings.max_body_bytes,
    )
    return await run_servers(servable, ServerReadiness(ForwardHeaders(app), servable.serving), metrics, settings)


def run(args: argparse.Namespace) -> int:
    import sys

    from pydantic import ValidationError

    from kubeinfer.runtime.errors import ConfigError
    from kubeinfer.runtime.server.process import run_main
    from kubeinfer.runtime.settings import cli_overrides
    from kubeinfer.spec.ensemble import parse_endpoints
    from kubeinfer.router.settings import RouterSettings

    overrides = cli_overrides(args, "endpoint")
    try:
        if args.endpoint:
            overrides["endpoints"] = parse_endpoints(args.endpoint)
        settings = RouterSettings(**overrides)
    except (ValidationError, ConfigError) as exc:
        print(f"kubeinfer route: invalid settings: {exc}", file=sys.stderr)
        return 2
    return run_main(route(settings), settings.log_level, "route")
