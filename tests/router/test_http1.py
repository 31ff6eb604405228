"""The router's HTTP/1.1 step client (``router.http1``) against a real loopback server: an
asyncio server whose every connection runs a scripted handler, so each test decides what
the server does (answer, hold, close, answer in chunks) and sees what reached it."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from kubeinfer.router import http1

pytestmark = pytest.mark.timeout(30)


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's body; None when the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    return await reader.readexactly(length)


def answer(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


class Server:
    """Loopback server; ``handler(index, reader, writer)`` runs per connection (index from 0)."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer) -> None:
        index = self.connections
        self.connections += 1
        try:
            await self.handler(index, reader, writer)
        finally:
            writer.close()

    def pool(self, **kw) -> http1.Pool:
        return http1.Pool("127.0.0.1", self.port, 1.0, **kw)


async def echo(server: Server, reader, writer) -> None:
    while (body := await read_request(reader)) is not None:
        server.requests.append(body)
        writer.write(answer(body, b"Inference-Header-Content-Length: 2"))
        await writer.drain()


async def test_keep_alive_reuses_one_connection():
    async with Server(lambda i, r, w: echo(srv, r, w)) as srv:
        pool = srv.pool()
        for n in range(3):
            status, headers, body = await pool.post("/p", b"x%d" % n, [("X-A", "1")])
            assert (status, body) == (200, b"x%d" % n)
            assert headers[b"inference-header-content-length"] == b"2"
        assert srv.connections == 1
        pool.close()


async def test_chunked_reply_is_joined_and_the_connection_kept():
    async def chunked(i, reader, writer):
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with Server(chunked) as srv:
        pool = srv.pool()
        for _ in range(2):
            assert (await pool.post("/p", b"{}", []))[::2] == (200, b"hello chunked world")
        assert srv.connections == 1
        pool.close()


async def test_idle_connection_closed_by_the_server_is_replaced():
    """The server answers one request per connection and closes it (no ``Connection:
    close``): the pool notices and opens a new connection for the next request."""

    async def once(i, reader, writer):
        body = await read_request(reader)
        writer.write(answer(body))
        await writer.drain()

    async with Server(once) as srv:
        pool = srv.pool()
        for n in range(3):
            assert (await pool.post("/p", b"r%d" % n, []))[2] == b"r%d" % n
        assert srv.connections == 3
        pool.close()


async def test_request_on_a_connection_the_server_drops_is_sent_once_more():
    """The server closes a kept-alive connection as the next request arrives on it,
    without answering (its idle timeout racing the reuse): the request goes once more on
    a new connection, and its answer is the caller's."""

    async def drop_second(i, reader, writer):
        body = await read_request(reader)
        srv.requests.append(body)
        if i == 0:
            writer.write(answer(body))
            await writer.drain()
            srv.requests.append(await read_request(reader))  # the reuse: closed unanswered
            return
        writer.write(answer(b"second connection: " + body))
        await writer.drain()
        await read_request(reader)

    async with Server(drop_second) as srv:
        pool = srv.pool()
        assert (await pool.post("/p", b"a", []))[2] == b"a"
        assert (await pool.post("/p", b"b", []))[2] == b"second connection: b"
        assert srv.requests == [b"a", b"b", b"b"] and srv.connections == 2
        pool.close()


async def test_connection_lost_mid_answer_or_on_a_new_connection_is_an_error():
    async def half(i, reader, writer):
        await read_request(reader)
        if i == 0:  # an answer cut short: not retried, whatever the model did is unknown
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            await writer.drain()

    async with Server(half) as srv:
        pool = srv.pool()
        with pytest.raises(http1.ConnectionLost, match="closed by the server"):
            await pool.post("/p", b"a", [])
        with pytest.raises(http1.ConnectionLost, match="closed by the server"):
            await pool.post("/p", b"b", [])  # a fresh connection closed unanswered: no loop
        assert srv.connections == 2
        pool.close()


async def test_malformed_answer_is_connection_lost():
    async def garbage(i, reader, writer):
        await read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with Server(garbage) as srv:
        pool = srv.pool()
        with pytest.raises(http1.ConnectionLost, match="malformed HTTP response"):
            await pool.post("/p", b"a", [])
        pool.close()


async def test_connection_limit_is_enforced():
    """Five concurrent requests through a pool of two connections: three wait, and go
    over the same two connections once those answer."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def hold(i, reader, writer):
        while (body := await read_request(reader)) is not None:
            srv.requests.append(body)
            if len(srv.requests) == 2:
                held.set()
            await release.wait()
            writer.write(answer(body))
            await writer.drain()

    async with Server(hold) as srv:
        pool = srv.pool(max_connections=2)
        calls = [asyncio.create_task(pool.post("/p", b"%d" % n, [])) for n in range(5)]
        await held.wait()
        assert srv.connections == 2 and len(srv.requests) == 2
        release.set()
        results = await asyncio.gather(*calls)
        assert sorted(r[2] for r in results) == [b"0", b"1", b"2", b"3", b"4"]
        assert srv.connections == 2
        pool.close()


async def _never_answers(srv: Server, got: asyncio.Event, eof: list[asyncio.Event]):
    async def handler(i, reader, writer):
        eof.append(asyncio.Event())
        body = await read_request(reader)
        if i == 0:
            got.set()
            await reader.read()  # until the client closes the connection
            eof[i].set()
            return
        writer.write(answer(body))
        await writer.drain()
        await read_request(reader)

    return handler


@pytest.mark.parametrize("how", ["cancelled", "read timeout"])
async def test_abandoned_call_closes_its_connection_and_frees_its_slot(how):
    """A call given up while the server works on it (the request abandoned, or the step's
    timeout spent) closes its connection, which is never reused; with one connection
    allowed, the next call gets a new one at once."""
    got, eof = asyncio.Event(), []
    srv = Server(None)
    srv.handler = await _never_answers(srv, got, eof)
    async with srv:
        pool = srv.pool(max_connections=1)
        if how == "cancelled":
            call = asyncio.create_task(pool.post("/p", b"a", []))
            await got.wait()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.post("/p", b"a", [])
        await asyncio.wait_for(eof[0].wait(), 10)  # the server saw the connection closed
        assert (await pool.post("/p", b"b", []))[2] == b"b"
        assert srv.connections == 2
        pool.close()


async def test_nothing_listening_is_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        pool = http1.Pool("127.0.0.1", port, 1.0)
        with pytest.raises(http1.ConnectError):
            await pool.post("/p", b"a", [])
