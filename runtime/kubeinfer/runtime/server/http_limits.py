"""Per-connection limits on top of uvicorn's httptools protocol.

httptools (llhttp) has no cap on request headers and uvicorn sets no read deadline, so a
client could grow the process with endless header lines or hold a file descriptor by
sending slowly. This protocol class, handed to uvicorn as its ``http`` implementation,
adds three limits per connection:

* **header size**: at most ``max_header_bytes`` of request line and headers; beyond it
  the client gets ``431 Request Header Fields Too Large`` and the connection is closed.
  Bytes received while a request's headers are incomplete are counted as they arrive
  (so one endless header line is cut off too); the chunk that completes them is measured
  exactly only when it could be over the limit.
* **header deadline**: the request line and headers must arrive within
  ``header_timeout_seconds`` of the connection (or, on a kept-alive connection, of the
  request's first byte); otherwise ``408 Request Timeout`` and close.
* **body deadline**: the body must be complete within ``body_timeout_seconds`` of the
  end of the headers; otherwise the connection is closed (the application sees a
  disconnect and drops the request).

**Load shedding** (optional ``Shedding``): while the servable's queue is full, an infer
request is answered ``503`` straight from the protocol, before its body is read and
without an application task; its body is then skipped by the parser and the connection
stays open. The connection then stops being read (its retry waits in the kernel's socket
buffer) until a request of this server completes — room in the queue — or
``Shedding.retry_after_seconds`` passed. Clients that retry a 503 at once thus cost one
rejection per freed slot instead of spinning the event loop, which would delay the
dispatch of the next batch and starve the requests being served.

Deadlines are plain numbers on the connection, checked by one sweeper task per server
(a few times per timeout) rather than a timer per request: the infer path pays a clock
read, not a timer. Idle kept-alive connections keep uvicorn's ``timeout_keep_alive``,
checked by the same sweeper (uvicorn arms and cancels a timer per response for it).
A malformed request gets ``400`` with a JSON error body, like every other error.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httptools
import orjson

from kubeinfer.runtime.server.http_cycle import disconnected
from kubeinfer.runtime.server.http_fast import FastInferProtocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 32 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 60.0

    @property
    def sweep_seconds(self) -> float:
        return min(1.0, max(0.05, min(self.header_timeout_seconds, self.body_timeout_seconds) / 4))


@dataclass(frozen=True, slots=True)
class Shedding:
    #: whether requests should be shed now (called for every request: keep it cheap)
    overloaded: Callable[[], bool]
    #: the complete response for a request to this URL, or None to serve it as usual
    reply: Callable[[bytes], bytes | None]
    #: the longest a shed connection is left unread (the 503's Retry-After)
    retry_after_seconds: float = 1.0


class _ShedCycle:
    """Stands in for uvicorn's request cycle while a shed request's body streams past."""

    response_complete = True
    message_event = type("_NoEvent", (), {"set": lambda self: None})()


_SHED = _ShedCycle()


class _HeadersTooLarge(Exception):
    pass


def _reply(status: bytes, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return b"".join([
        b"HTTP/1.1 ", status, b"\r\ncontent-type: application/json\r\nconnection: close\r\n",
        b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body,
    ])


class LimitedHttpToolsProtocol(FastInferProtocol):
    """uvicorn's httptools protocol (with the fast infer path of ``http_fast``) under
    ``limits`` (bound by ``protocol_class``)."""

    limits = ConnectionLimits()
    shedding: Shedding | None = None
    _sweeper: asyncio.Task | None = None
    _paused: deque  # connections left unread after a shed request (one deque per server)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._headers_done = False  # the current request's headers are complete
        self._completed_in_feed = False
        self._pending = 0  # bytes received while the current headers were incomplete
        self._chunk = 0
        self._deadline: float | None = None
        self._paused_until: float | None = None
        self._idle_until: float | None = None  # kept alive without a request until then

    # -- deadlines ----------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline = self.loop.time() + self.limits.header_timeout_seconds
        cls = type(self)
        if cls._sweeper is None or cls._sweeper.done():
            cls._sweeper = self.loop.create_task(_sweep(cls, self.connections))

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        disconnected(cycle)  # a waiting infer request learns of it (http_cycle)

    def resume(self) -> None:
        """Read this connection again after it was left unread for a shed request."""
        self._paused_until = None
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def expire(self) -> None:
        """The deadline passed: 408 while headers are awaited, else just close."""
        self._deadline = None
        if self.transport.is_closing():
            return
        if not self._headers_done:
            log.debug("closing %s: request headers not complete in time", self.client)
            self._close_with(b"408 Request Timeout", "request headers not received in time")
        else:
            log.debug("closing %s: request body not complete in time", self.client)
            self.transport.close()

    # -- data --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        # uvicorn's, plus the header limit and a JSON body for a malformed request
        self._idle_until = None
        self._completed_in_feed = False
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._too_large()
            else:
                self._close_with(b"400 Bad Request", f"invalid HTTP request: {exc}")
            return
        if not self._headers_done and not self.transport.is_closing():
            # a chunk that also ended a request's headers was measured in the callback
            self._pending = 0 if self._completed_in_feed else self._pending + len(data)
            if self._pending > self.limits.max_header_bytes:
                self._too_large()

    def _too_large(self) -> None:
        limit = self.limits.max_header_bytes
        self._close_with(b"431 Request Header Fields Too Large", f"request headers exceed {limit} bytes")

    def _close_with(self, status: bytes, message: str) -> None:
        self._deadline = None
        self.transport.write(_reply(status, message))
        self.transport.close()

    # -- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        if self._deadline is None:  # a new request on a kept-alive connection
            self._deadline = self.loop.time() + self.limits.header_timeout_seconds

    def on_headers_complete(self) -> None:
        self._headers_done = self._completed_in_feed = True
        limit = self.limits.max_header_bytes
        if self._pending + self._chunk > limit:  # only then can the headers be too large
            size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
            if size > limit:
                raise _HeadersTooLarge()
        self._pending = 0
        self._deadline = self.loop.time() + self.limits.body_timeout_seconds
        shedding = self.shedding
        if shedding is not None and shedding.overloaded() and self._shed(shedding):
            return
        super().on_headers_complete()

    def _shed(self, shedding: Shedding) -> bool:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False  # a response is still due on this connection: keep the order
        reply = shedding.reply(self.url)
        if reply is None:
            return False
        self.cycle = _SHED
        self.transport.write(reply)
        if not self.parser.should_keep_alive():
            self.transport.close()
        self._next_request()
        self.transport.pause_reading()
        self._paused_until = self.loop.time() + shedding.retry_after_seconds
        self._paused.append(self)
        return True

    def _next_request(self) -> None:
        # uvicorn's on_response_complete (start the next pipelined request), with the
        # keep-alive timeout as a deadline for the sweeper instead of a timer
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self.flow.resume_reading()
            if self.pipeline:
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_until = self.loop.time() + self.timeout_keep_alive

    def on_response_complete(self) -> None:
        self._next_request()
        # a served request is done: room for one more, so one shed connection is read again
        paused = self._paused
        while paused:
            conn = paused.popleft()
            if conn._paused_until is not None:
                conn.resume()
                break

    def on_message_complete(self) -> None:
        self._deadline = None
        super().on_message_complete()


async def _sweep(cls: type[LimitedHttpToolsProtocol], connections: set) -> None:
    """Expire connections past their deadline, read shed ones again after their
    Retry-After; ends when the server has no connection left."""
    loop = asyncio.get_running_loop()
    interval = cls.limits.sweep_seconds
    while connections:
        await asyncio.sleep(interval)
        now = loop.time()
        if cls._paused:
            cls._paused = deque(c for c in cls._paused if c._paused_until is not None)
        for conn in list(connections):
            deadline = getattr(conn, "_deadline", None)
            if deadline is not None and now >= deadline:
                conn.expire()
            idle_until = getattr(conn, "_idle_until", None)
            if idle_until is not None and now >= idle_until:
                conn._idle_until = None
                conn.timeout_keep_alive_handler()
            paused_until = getattr(conn, "_paused_until", None)
            if paused_until is not None and now >= paused_until:
                conn.resume()


def protocol_class(
    limits: ConnectionLimits, shedding: Shedding | None = None
) -> type[LimitedHttpToolsProtocol]:
    """A protocol class for uvicorn's ``http`` setting, bound to ``limits``."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"limits": limits, "shedding": shedding, "_paused": deque()},
    )
