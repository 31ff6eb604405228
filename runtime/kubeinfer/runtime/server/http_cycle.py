"""Two shortcuts of the infer route through uvicorn's httptools request cycle.

Measured at 64 connections on ``mlp`` (a 7 µs model), a third of the serving process's
CPU went to the two ``transport.write`` calls per response — status line and headers in
``http.response.start``, then the body — and their header checks; and each waiting
request had a task of its own only to learn of a disconnect (``receive()`` until
``http.disconnect``). With uvicorn's httptools protocol underneath, the route can do
better through the cycle that its ``send`` is bound to:

* ``reply_whole`` writes status line, headers and body in **one** ``transport.write``
  (one syscall, one TCP segment for a small reply) and completes the cycle exactly as
  uvicorn's ``send`` would (keep-alive or close, the next pipelined request, the
  keep-alive timer);
* ``watch_disconnect`` registers a callback that the connection calls when it is lost
  while the response is due (``LimitedHttpToolsProtocol.connection_lost``): no task, no
  event wait per request.

Both answer ``False`` when ``send`` is not such a cycle (another ASGI server, a test
client, a paused transport), and the route then uses plain ASGI. Only the protocol layer
(this module and ``http_limits``) knows uvicorn's internals.
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

#: the attribute of a cycle that holds its disconnect callback
DISCONNECT_CALLBACK = "kubeinfer_on_disconnect"


def _cycle(send) -> RequestResponseCycle | None:
    cycle = getattr(send, "__self__", None)
    return cycle if type(cycle) is RequestResponseCycle else None


def reply_whole(send, status: int, headers: bytes, body: bytes) -> bool:
    """Send a complete response (``headers``: encoded ``name: value\\r\\n`` lines, no
    content-length) in one write; False if ``send`` cannot do that (use ASGI then)."""
    cycle = _cycle(send)
    if cycle is None or cycle.response_started or cycle.flow.write_paused:
        return False
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False  # as uvicorn's send: no "100 Continue" after a reply
    if cycle.disconnected:
        return True  # as uvicorn: nothing is written to a lost connection
    parts = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        parts += (name, b": ", value, b"\r\n")
    parts += (headers, b"content-length: ", b"%d" % len(body), b"\r\n")
    if not cycle.keep_alive:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    cycle.transport.write(b"".join(parts))
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


def watch_disconnect(send, callback: Callable[[], object] | None) -> bool:
    """Have ``callback`` called if the connection is lost before the response is sent
    (None: stop watching); False if ``send`` cannot watch (use ``receive()`` then)."""
    cycle = _cycle(send)
    if cycle is None:
        return False
    setattr(cycle, DISCONNECT_CALLBACK, callback)
    return True


def disconnected(cycle: object | None) -> None:
    """The connection of ``cycle`` is lost: run its disconnect callback, if any and if
    the response was still due."""
    if cycle is None or getattr(cycle, "response_complete", True):
        return
    callback = getattr(cycle, DISCONNECT_CALLBACK, None)
    if callback is not None:
        setattr(cycle, DISCONNECT_CALLBACK, None)
        callback()
