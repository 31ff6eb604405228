"""The infer request of the served model, served by the HTTP protocol itself.

Through uvicorn's request cycle an infer request pays for an ASGI scope dict, a
``RequestResponseCycle`` with its ``asyncio.Event``, ``receive()`` messages, the ASGI
dispatch and the route's own path parsing — per request, on a path whose model may take
a few microseconds. When the application offers a ``fast_infer`` entry (the infer route
does), this protocol serves ``POST`` to one of its exact ``paths`` without all that:

* the request's headers are kept as uvicorn parses them, no scope is built;
* when its turn comes (no earlier response due on the connection) the entry's ``admit``
  checks it before its body is read (queue full: ``503``, ``Content-Length`` over the
  limit: ``413``), then ``100 Continue`` goes out if the client expects it;
* the body is collected in the protocol (at most ``max_body_bytes``; the body deadline
  of ``http_limits`` applies as to every request);
* on message complete **one task** runs ``entry.infer(headers, body)`` (decode, the
  servable, encode) and writes the reply — status line, headers, body — in one write,
  with ``connection: close`` and a close for HTTP/1.0, ``Connection: close`` or a
  draining server, exactly as uvicorn's cycle would;
* a lost connection cancels that task, so the scheduler drops the queued request: an
  abandoned request never executes.

Such a request stands in uvicorn's ``cycle`` and ``pipeline`` as a ``FastCycle``, so
pipelined requests — fast or not, in any mix — are answered in order through uvicorn's
own queue, and graceful shutdown waits for the task (it is one of the server's tasks).
Everything else (other paths, methods, models, upgrades, an app without the entry, a
server with ``limit_concurrency`` or an access log) goes through uvicorn's cycle.

The entry (duck-typed; this module does not import the route): ``paths`` (a set of raw
request targets), ``max_body_bytes``, ``too_large`` (a reply), ``admit(headers)`` (a
reply or None) and ``async infer(headers, body)`` (a reply), where a reply is
``(status, header lines without content-length, body)``.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _NoEvent:
    """uvicorn sets its cycle's ``message_event``; a fast request waits on none."""

    __slots__ = ()

    def set(self) -> None:
        pass


class FastCycle:
    """One infer request served by ``FastInferProtocol`` (in uvicorn's cycle's place)."""

    __slots__ = ("headers", "keep_alive", "expect_100", "chunks", "size", "complete",
                 "turn", "too_large", "response_complete", "disconnected", "task")
    message_event = _NoEvent()

    def __init__(self, headers: list, keep_alive: bool, expect_100: bool) -> None:
        self.headers = headers
        self.keep_alive = keep_alive  # uvicorn's shutdown() clears it
        self.expect_100 = expect_100
        self.chunks: list | None = []
        self.size = 0
        self.complete = False  # the whole body is here
        self.turn = False  # no earlier response is due on the connection
        self.too_large = False
        self.response_complete = False
        self.disconnected = False
        self.task: asyncio.Task | None = None


class FastInferProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, serving the app's ``fast_infer`` requests itself."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        entry = getattr(self.app, "fast_infer", None)
        if self.limit_concurrency is not None or self.access_log:
            entry = None  # uvicorn's cycle does those
        self._fast = entry
        self._fast_paths = entry.paths if entry is not None else frozenset()
        self._running: FastCycle | None = None  # the fast request whose turn it is
        self._defaults: tuple[list, bytes] = ([], b"")  # default headers, encoded

    # -- parser callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._fast is None:
            super().on_message_begin()
            return
        self.url = b""  # the scope waits until it is known to be needed
        self.expect_100_continue = False
        self.headers = []

    def on_headers_complete(self) -> None:
        if self._fast is not None:
            parser = self.parser
            if self.url in self._fast_paths and parser.get_method() == b"POST" and not parser.should_upgrade():
                self._fast_request(parser)
                return
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # the scope, as uvicorn builds it
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is not FastCycle:
            super().on_body(body)
            return
        if cycle.response_complete or cycle.too_large:
            return  # answered early (413, 503): the rest of the body streams past
        cycle.size += len(body)
        if cycle.size > self._fast.max_body_bytes:
            cycle.too_large = True
            cycle.chunks = None
            if cycle.turn:
                self._fast_reply(cycle, *self._fast.too_large)
            return
        cycle.chunks.append(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not FastCycle:
            super().on_message_complete()
            return
        if cycle.response_complete or cycle.too_large:
            return
        cycle.complete = True
        if cycle.turn:
            self._fast_start(cycle)

    # -- the fast request ---------------------------------------------------------------
    def _fast_request(self, parser) -> None:
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        cycle = FastCycle(self.headers, keep_alive, self.expect_100_continue)
        existing = self.cycle
        self.cycle = cycle
        if existing is None or existing.response_complete:
            self._fast_turn(cycle)
        else:  # pipelined: after the responses due, as uvicorn queues its cycles
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))

    def _start_asgi_task(self, cycle, app) -> None:
        # uvicorn starts the next pipelined request here
        if type(cycle) is FastCycle:
            self._fast_turn(cycle)
        else:
            super()._start_asgi_task(cycle, app)

    def _fast_turn(self, cycle: FastCycle) -> None:
        cycle.turn = True
        self._running = cycle
        reply = self._fast.too_large if cycle.too_large else self._fast.admit(cycle.headers)
        if reply is not None:
            self._fast_reply(cycle, *reply)
        elif cycle.complete:
            self._fast_start(cycle)
        elif cycle.expect_100 and not self.transport.is_closing():
            self.transport.write(_CONTINUE)

    def _fast_start(self, cycle: FastCycle) -> None:
        chunks = cycle.chunks
        cycle.chunks = None
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        task = self.loop.create_task(self._fast_serve(cycle, body))
        cycle.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _fast_serve(self, cycle: FastCycle, body: bytes) -> None:
        try:
            reply = await self._fast.infer(cycle.headers, body)
            if self.flow.write_paused and not cycle.disconnected:
                await self.flow.drain()
        except asyncio.CancelledError:
            if cycle.disconnected:
                return  # the client is gone; the scheduler dropped its request
            raise
        self._fast_reply(cycle, *reply)

    def _fast_reply(self, cycle: FastCycle, status: int, lines: bytes, body: bytes) -> None:
        cycle.response_complete = True
        if self._running is cycle:
            self._running = None
        if cycle.disconnected:
            return  # as uvicorn: nothing is written to a lost connection
        defaults = self.server_state.default_headers
        if defaults is not self._defaults[0]:  # uvicorn renews the list (date) each second
            self._defaults = (defaults, b"".join(n + b": " + v + b"\r\n" for n, v in defaults))
        keep_alive = cycle.keep_alive
        self.transport.write(b"".join((
            STATUS_LINE[status], self._defaults[1], lines,
            b"content-length: %d\r\n" % len(body),
            b"\r\n" if keep_alive else b"connection: close\r\n\r\n",
            body,
        )))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        running = self._running
        if running is not None and not running.response_complete:
            running.disconnected = True
            if running.task is not None:
                running.task.cancel()
        super().connection_lost(exc)
