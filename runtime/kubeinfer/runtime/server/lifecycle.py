"""The lifecycle of one server process, for any servable (a model, the router's ensemble).

Start the HTTP server (and the metrics and gRPC servers), then ``servable.start()`` (load,
warm up): readiness turns on at its end. On SIGTERM: readiness off, keep serving for the
shutdown delay, stop accepting connections, let accepted requests finish, drain the
servable, and log ``stopped: N requests succeeded, M failed``. A second signal stops at
once. With ``reuse_port`` (one of several workers of a pod) every listening socket is
bound with ``SO_REUSEPORT``, so the workers share the ports and the kernel spreads new
connections over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterable

import uvicorn
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.responses import Response

from kubeinfer.runtime.servable import Servable
from kubeinfer.runtime.server.grpc_service import start_grpc_server, stop_grpc_server
from kubeinfer.runtime.server.http_limits import ConnectionLimits, Shedding, protocol_class
from kubeinfer.runtime.server.infer_route import shed_reply

log = logging.getLogger("kubeinfer.serve")

BACKLOG = 2048


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the lifecycle below owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def metrics_endpoint(renderer):
    """``GET /metrics`` from ``renderer.render()`` (bytes in the Prometheus text format)."""

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
        backlog=BACKLOG,
        timeout_keep_alive=75,
        # no X-Forwarded-* rewriting: nothing here reads the client address, and the
        # middleware is one more frame on every request
        proxy_headers=False,
    )
    return _Server(config)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other workers of the pod bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def _serve(server: _Server, reuse_port: bool) -> asyncio.Task:
    if not reuse_port:
        return asyncio.create_task(server.serve())
    config = server.config
    try:
        sockets = [reuse_port_socket(config.host, config.port)]
    except OSError as exc:
        log.error("cannot bind %s:%d: %s", config.host, config.port, exc)

        async def failed() -> None:
            raise exc

        return asyncio.create_task(failed())
    return asyncio.create_task(server.serve(sockets=sockets))


async def run_servers(
    servable: Servable,
    app,
    metrics,
    settings,
    *,
    reuse_port: bool = False,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> int:
    """Serve ``app`` (and ``metrics``, gRPC) per ``settings`` until a signal; exit status."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received = 0

    def on_signal() -> None:
        nonlocal received
        received += 1
        stop.set()
        if received > 1:
            for s in servers:
                s.force_exit = True

    for sig in signals:
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
    tasks = [_serve(s, reuse_port) for s in servers]
    while not all(s.started for s in servers):
        if any(t.done() for t in tasks):
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.error("a server failed to start (port in use?)")
            return 1
        await asyncio.sleep(0.01)
    grpc_server = None
    if settings.grpc_port:
        try:
            grpc_server = await start_grpc_server(
                servable, settings.host, settings.grpc_port, settings.max_body_bytes, reuse_port=reuse_port
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
