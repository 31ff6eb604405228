"""Composition root and lifecycle of ``kubeinfer serve``.

Load the model -> build scheduler, servable, metrics -> start HTTP (and metrics, gRPC)
servers -> warm up -> ready. On SIGTERM: readiness false, keep serving for the configured
delay, stop accepting connections, let accepted requests finish, drain the scheduler, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import uvicorn
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from kubeinfer.runtime.batching.batcher import DynamicBatcher
from kubeinfer.runtime.batching.interface import Scheduler
from kubeinfer.runtime.batching.sequence import SequenceBatcher
from kubeinfer.runtime.backends.gpu_metrics import GpuMetrics
from kubeinfer.runtime.errors import ConfigError
from kubeinfer.runtime.metrics import MetricsRenderer
from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.repository import LoadedModel, load_model
from kubeinfer.runtime.servable import Servable
from kubeinfer.runtime.server.app import create_app
from kubeinfer.runtime.server.grpc_service import start_grpc_server, stop_grpc_server
from kubeinfer.runtime.server.http_limits import ConnectionLimits, Shedding, protocol_class
from kubeinfer.runtime.server.infer_route import shed_reply
from kubeinfer.runtime.settings import RuntimeSettings
from kubeinfer.runtime.stats import ModelStats

log = logging.getLogger("kubeinfer.serve")


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run the server's coroutine on uvloop (when installed), as uvicorn would by itself."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_main(main: Coroutine[Any, Any, int], log_level: str, what: str) -> int:
    """The command's process: logging, the event loop, a ConfigError as exit status 1."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run_async(main)
    except ConfigError as exc:
        logging.getLogger("kubeinfer").error("cannot %s: %s", what, exc)
        return 1


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the lifecycle below owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def make_scheduler(loaded: LoadedModel, stats: ModelStats) -> Scheduler:
    if loaded.config.sequence_batching is not None:
        return SequenceBatcher(
            execute=loaded.backend.execute,
            output_names=[o.name for o in loaded.config.output],
            max_batch_size=loaded.config.max_batch_size,
            config=loaded.config.sequence_batching,
            instances=loaded.config.instance_count,
            stats=stats,
            model=loaded.name,
            model_dir=loaded.path.parent.parent,
        )
    return DynamicBatcher(
        execute=loaded.backend.execute,
        output_names=[o.name for o in loaded.config.output],
        max_batch_size=loaded.config.max_batch_size,
        config=loaded.config.dynamic_batching,
        instances=loaded.config.instance_count,
        stats=stats,
        execute_requests=loaded.backend.execute_requests,
        model=loaded.name,
    )


def metrics_endpoint(renderer: MetricsRenderer):
    async def metrics(_request) -> Response:
        return Response(renderer.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics


def connection_limits(settings) -> ConnectionLimits:
    """The HTTP connection limits of ``settings`` (the defaults for fields it lacks)."""
    default = ConnectionLimits()
    return ConnectionLimits(
        **{f: getattr(settings, f, getattr(default, f)) for f in ConnectionLimits.__slots__}
    )


def uvicorn_server(
    app,
    host: str,
    port: int,
    log_level: str,
    limits: ConnectionLimits = ConnectionLimits(),
    shedding: Shedding | None = None,
) -> _Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=protocol_class(limits, shedding),
        lifespan="off",
        access_log=False,
        log_level=log_level,
        backlog=2048,
        timeout_keep_alive=75,
    )
    return _Server(config)


def describe(loaded: LoadedModel, settings: RuntimeSettings) -> str:
    c = loaded.config
    db, sb = c.dynamic_batching, c.sequence_batching
    if sb is not None:
        strategy = "oldest" if sb.oldest is not None else "direct"
        batching = (
            f"sequence batching ({strategy}) max_batch_size={c.max_batch_size} "
            f"idle_us={sb.max_sequence_idle_microseconds or 1_000_000}"
        )
    elif db is not None:
        batching = (
            f"dynamic batching max_batch_size={c.max_batch_size} "
            f"preferred={db.preferred_batch_size or '-'} delay_us={db.max_queue_delay_microseconds} "
            f"max_queue_size={db.default_queue_policy.max_queue_size or 'unbounded'}"
        )
    else:
        batching = f"no batching delay, max_batch_size={c.max_batch_size}"
    return (
        f"model '{loaded.name}' version {loaded.version} backend {loaded.backend_kind} "
        f"({loaded.path}); {batching}; instances={c.instance_count}"
    )


async def serve(settings: RuntimeSettings) -> int:
    loop = asyncio.get_running_loop()
    loaded = await loop.run_in_executor(
        None, load_model, settings.model_repository, settings.model, settings.model_version
    )
    log.info("loaded %s", describe(loaded, settings))
    servable = ModelServable(loaded, make_scheduler)
    gpu = GpuMetrics()  # empty without NVML or a GPU
    metrics = metrics_endpoint(
        MetricsRenderer(servable.stats, servable.pending_count, gpu.render if gpu.available else None)
    )
    app = create_app(
        servable,
        metrics_route=metrics if settings.metrics_port == 0 else None,
        max_body_bytes=settings.max_body_bytes,
    )
    return await run_servers(servable, app, metrics, settings)


async def run_servers(servable: Servable, app, metrics, settings: RuntimeSettings) -> int:
    from starlette.applications import Starlette
    from starlette.routing import Route

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        if signals > 1:
            for s in servers:
                s.force_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    level = settings.log_level.lower()
    limits = connection_limits(settings)
    full = getattr(servable, "queue_full", None)
    shedding = Shedding(full, shed_reply(servable)) if full is not None else None
    http = uvicorn_server(app, settings.host, settings.http_port, level, limits, shedding)
    servers = [http]
    if settings.metrics_port:
        metrics_app = Starlette(routes=[Route("/metrics", metrics)])
        servers.append(uvicorn_server(metrics_app, settings.host, settings.metrics_port, level, limits))
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            log.error("a server failed to start (port in use?)")
            return 1
        await asyncio.sleep(0.01)
    grpc_server = None
    if settings.grpc_port:
        try:
            grpc_server = await start_grpc_server(
                servable, settings.host, settings.grpc_port, settings.max_body_bytes
            )
        except RuntimeError as exc:
            log.error("the gRPC server failed to start: %s", exc)
            for s in servers:
                s.should_exit = True
            await asyncio.gather(*tasks, return_exceptions=True)
            return 1
    log.info(
        "serving HTTP on http://%s:%d, gRPC %s (metrics on %s)",
        settings.host,
        settings.http_port,
        f"on port {settings.grpc_port}" if settings.grpc_port else "off",
        f"port {settings.metrics_port}" if settings.metrics_port else "the HTTP port",
    )
    start = asyncio.create_task(servable.start())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if start.done():
        start.result()  # warm-up failures end the process
        log.info("model '%s' is ready", servable.name)
        await stop_wait
    else:
        start.cancel()
    log.info("shutting down: readiness off, draining for %.1fs", settings.shutdown_delay_seconds)
    servable.mark_unready()
    if settings.shutdown_delay_seconds:
        await asyncio.sleep(settings.shutdown_delay_seconds)
    http.should_exit = True
    await stop_grpc_server(grpc_server)  # meanwhile HTTP stops too; accepted requests finish
    await tasks[0]
    await servable.drain()
    for s in servers[1:]:
        s.should_exit = True
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    final = servable.statistics()["inference_stats"]
    log.info(
        "stopped: %d requests succeeded, %d failed",
        final["success"]["count"],
        final["fail"]["count"],
    )
    return 0
