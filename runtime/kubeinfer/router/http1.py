"""A minimal pooled HTTP/1.1 client for the step calls' hot path.

Why not a library here: bench/router_overhead.py measures the step call's transports side
by side, and per call this client costs about a third of the client CPU of aiohttp's
``ClientSession`` and a tenth of httpx's ``AsyncClient`` (grpc.aio's ``ModelInfer`` costs
more than aiohttp); the router pays it on every step. It does only what step calls need:
POST a body with Content-Length over keep-alive connections (a pool per endpoint, at most
``max_connections`` open, callers beyond that wait for one), parse the response with
httptools (the parser uvicorn uses; chunked responses work too), and report failures as
``ConnectError`` (could not connect: fail fast) or ``ConnectionLost``. A connection whose
request was cancelled (a step timeout or deadline, an abandoned request) is closed, never
reused. A request written to a kept-alive connection that the server had closed meanwhile
is sent once more on a new one. httpx remains the client for everything else (metadata,
https endpoints). Tests: tests/router/test_http1.py, against a loopback asyncio server.
"""

from __future__ import annotations

import asyncio
import socket

import httptools


class ConnectError(Exception):
    pass


class ConnectionLost(Exception):
    pass


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.closed = False
        self.keep_alive = True
        self.got_data = False

    # -- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._fail(ConnectionLost(f"connection closed by the server{f': {exc}' if exc else ''}"))

    # -- httptools callbacks -----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        result = (status, self.headers, body)
        self.headers, self.body = {}, []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(result)

    # -- use ---------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: bytes, body) -> tuple[int, dict[bytes, bytes], bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.got_data = False
        self.transport.write(b"".join([head, body]) if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)
        return await self.waiter


class Pool:
    """Keep-alive connections to one ``host:port``."""

    def __init__(
        self, host: str, port: int, connect_timeout: float, max_idle: int = 64, max_connections: int = 256
    ) -> None:
        self.host, self.port = host, port
        self.connect_timeout = connect_timeout
        self.max_idle = min(max_idle, max_connections)
        self._idle: list[_Conn] = []
        #: one per connection in use; a new connection opens only when none is idle, so
        #: at most ``max_connections`` are ever open
        self._slots = asyncio.Semaphore(max_connections)
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(_Conn, self.host, self.port)
        except TimeoutError:
            raise ConnectError(f"connect timeout after {self.connect_timeout}s") from None
        except OSError as exc:
            raise ConnectError(exc.strerror or str(exc)) from None
        return conn

    async def post(self, path: str, body, headers: list[tuple[str, str]]) -> tuple[int, dict[bytes, bytes], bytes]:
        head = b"".join([
            b"POST ", path.encode(), b" HTTP/1.1\r\n", self._host_header,
            b"Content-Length: ", str(len(body)).encode(), b"\r\n",
            *(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers), b"\r\n",
        ])
        async with self._slots:
            return await self._send(head, body)

    async def _send(self, head: bytes, body) -> tuple[int, dict[bytes, bytes], bytes]:
        while self._idle:
            conn = self._idle.pop()
            if conn.closed:
                continue
            try:
                return self._release(conn, await conn.request(head, body))
            except ConnectionLost:
                if conn.got_data:
                    raise
                # the server closed an idle connection as we reused it: once more on a new one
                break
            except BaseException:
                conn.close()
                raise
        conn = await self._connect()
        try:
            return self._release(conn, await conn.request(head, body))
        except BaseException:
            conn.close()
            raise

    def _release(self, conn: _Conn, result):
        if conn.keep_alive and not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()
        return result

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
