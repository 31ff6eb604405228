"""The listening gRPC server: streams become calls of a grpc servicer's methods.

The servicer is registered as with grpc (``add_XServicer_to_server(servicer, server)``,
the generated function) so the method table, request parsers and response serializers are
grpc's generated ones; this server only replaces grpc.aio's transport and call machinery.
A handler gets a ``Context`` with the part of ``grpc.aio.ServicerContext`` a servicer uses
(``abort``, ``time_remaining``, ``invocation_metadata``, ``peer``, ``cancelled``).

A client's ``grpc-timeout`` is the call's deadline: when it passes the handler is
cancelled and the client gets ``DEADLINE_EXCEEDED``, as from grpc. Stopping sends GOAWAY
on every connection (no new calls; a client retries elsewhere), lets accepted calls finish
up to the grace period, then cancels the rest.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import grpc

from kubeinfer.runtime.server.grpcwire.connection import Connection, Stream
from kubeinfer.runtime.server.grpcwire.frames import parse_timeout

log = logging.getLogger(__name__)

_OK, _CANCELLED, _UNKNOWN, _DEADLINE, _UNIMPLEMENTED, _INTERNAL = 0, 1, 2, 4, 12, 13
_ENCODINGS = (b"", b"identity", b"gzip", b"deflate")
_END = object()  # the end of a request stream


class AbortError(Exception):
    """Raised by ``Context.abort``: the call ends with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Context:
    __slots__ = ("_conn", "_stream", "_deadline")

    def __init__(self, conn: Connection, stream: Stream, deadline: float | None) -> None:
        self._conn = conn
        self._stream = stream
        self._deadline = deadline

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise AbortError(code, details)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(self._deadline - asyncio.get_running_loop().time(), 0.0)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in self._stream.headers if not k.startswith(b":")
        )

    def peer(self) -> str:
        host, port, *_ = self._conn.transport.get_extra_info("peername") or ("", 0)
        return f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"

    def cancelled(self) -> bool:
        return self._stream.done and self._stream.task is not None and self._stream.task.cancelled()


class _Registry:
    """What ``add_XServicer_to_server`` registers on: the method table."""

    def __init__(self) -> None:
        self.methods: dict[str, grpc.RpcMethodHandler] = {}

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        for name, handler in handlers.items():
            self.methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers) -> None:
        pass  # the same methods, registered above


class GrpcWireServer:
    def __init__(self, register, servicer, max_message_bytes: int) -> None:
        registry = _Registry()
        register(servicer, registry)
        self._methods = {path.encode(): h for path, h in registry.methods.items()}
        self.max_message_bytes = max_message_bytes
        self._connections: set[Connection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        try:
            self._server = await self._loop.create_server(
                self._connection,
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=2048,
            )
        except OSError as exc:
            raise RuntimeError(f"cannot bind {host}:{port}: {exc}") from None
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _connection(self) -> Connection:
        conn = Connection(self, self._closed)
        self._connections.add(conn)
        self._idle.clear()
        return conn

    def _closed(self, conn: Connection) -> None:
        self._connections.discard(conn)
        if not self._connections:
            self._idle.set()

    # -- Calls (connection -> server) -----------------------------------------------
    def open(self, conn: Connection, stream: Stream) -> bool:
        content_type = stream.header(b"content-type") or b""
        if not content_type.startswith(b"application/grpc"):
            conn.refuse(stream, 415)
            return False
        path = stream.header(b":path") or b""
        handler = self._methods.get(path)
        if handler is None:
            conn.answer(stream, _UNIMPLEMENTED, f"Method not found: {path.decode('latin-1')}")
            return False
        stream.encoding = stream.header(b"grpc-encoding") or b""
        if stream.encoding not in _ENCODINGS:
            conn.answer(stream, _UNIMPLEMENTED, f"unsupported grpc-encoding {stream.encoding.decode('latin-1')}")
            return False
        deadline = None
        timeout = stream.header(b"grpc-timeout")
        if timeout is not None:
            seconds = parse_timeout(timeout.decode("latin-1"))
            if seconds is not None:
                deadline = self._loop.time() + seconds
                stream.timer = self._loop.call_at(deadline, self._expire, conn, stream)
        stream.handler = (handler, Context(conn, stream, deadline))
        if handler.request_streaming:
            stream.inbox = asyncio.Queue()
            stream.task = self._loop.create_task(self._streaming(conn, stream))
        return True

    def request(self, conn: Connection, stream: Stream, message: bytes) -> None:
        if stream.inbox is not None:
            stream.inbox.put_nowait(message)
        elif stream.task is not None:
            conn.answer(stream, 13, "more than one request message on a unary call")
        else:  # the one message of a unary call: the call starts
            stream.task = self._loop.create_task(self._unary(conn, stream, message))

    def half_closed(self, conn: Connection, stream: Stream) -> None:
        if stream.inbox is not None:
            stream.inbox.put_nowait(_END)
        elif stream.task is None:
            conn.answer(stream, 13, "a unary call without a request message")

    # -- calls ------------------------------------------------------------------------
    async def _unary(self, conn: Connection, stream: Stream, message: bytes) -> None:
        handler, context = stream.handler
        try:
            request = handler.request_deserializer(message)
        except Exception:  # noqa: BLE001 - as grpc: a request that does not parse
            conn.finish(stream, _INTERNAL, "Exception deserializing request!")
            return
        try:
            response = await handler.unary_unary(request, context)
            conn.send_message(stream, handler.response_serializer(response))
            conn.finish(stream, _OK)
        except BaseException as exc:  # noqa: BLE001 - every outcome becomes a status
            self._failed(conn, stream, exc)

    async def _streaming(self, conn: Connection, stream: Stream) -> None:
        handler, context = stream.handler

        async def requests():
            while (message := await stream.inbox.get()) is not _END:
                yield handler.request_deserializer(message)

        try:
            if handler.response_streaming:
                async for response in handler.stream_stream(requests(), context):
                    conn.send_message(stream, handler.response_serializer(response))
            else:
                response = await handler.stream_unary(requests(), context)
                conn.send_message(stream, handler.response_serializer(response))
            conn.finish(stream, _OK)
        except BaseException as exc:  # noqa: BLE001
            self._failed(conn, stream, exc)

    def _failed(self, conn: Connection, stream: Stream, exc: BaseException) -> None:
        if isinstance(exc, AbortError):
            conn.finish(stream, exc.code.value[0], exc.details)
        elif isinstance(exc, asyncio.CancelledError):
            conn.finish(stream, _CANCELLED, "Cancelled")  # a no-op once the stream is gone
            raise exc
        elif isinstance(exc, Exception):
            log.exception("gRPC method failed", exc_info=exc)
            conn.finish(stream, _UNKNOWN, f"Unexpected {type(exc).__name__}: {exc}")
        else:
            raise exc

    def _expire(self, conn: Connection, stream: Stream) -> None:
        stream.timer = None
        conn.answer(stream, _DEADLINE, "Deadline Exceeded")

    # -- stop -------------------------------------------------------------------------
    async def stop(self, grace: float) -> None:
        """No new connections or calls; accepted calls finish within ``grace`` seconds."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            conn.drain()
        if self._connections:
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except asyncio.TimeoutError:
                log.warning("gRPC calls still running after %.0fs: cancelled", grace)
        for conn in list(self._connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
