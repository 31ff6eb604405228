"""``POST /v2/models/{m}[/versions/{v}]/infer`` as a raw ASGI handler.

This is the hot path, so it skips FastAPI's routing, dependency injection and pydantic:
read the body, decode straight into numpy, hand the request to the servable, encode with
orjson. If the client disconnects while the request waits, the request is cancelled, so an
abandoned request never reaches the backend: under uvicorn's httptools protocol the lost
connection says so itself (``http_cycle.watch_disconnect``), elsewhere a watcher task
reads ``http.disconnect``. Under that protocol a response goes out in one write
(``http_cycle.reply_whole``), else as the two ASGI messages.

Under kubeinfer's own protocol (``http_limits``) an infer request of the served model
does not come through ASGI at all: the protocol collects its body and calls the lean
entry ``admit``/``infer`` (``fast_infer``, see ``http_fast``), which answers with the
reply's status, header lines and body. ASGI (``__call__``) serves everything else: other
models, other servers, test clients.
"""

from __future__ import annotations

import asyncio
import logging

from kubeinfer.runtime.errors import InferError, InvalidInput
from kubeinfer.runtime.protocol.rest import decode_request, encode_response, error_body
from kubeinfer.runtime.servable import Servable
from kubeinfer.runtime.server.answers import check_target
from kubeinfer.runtime.server.errors import http_status, message
from kubeinfer.runtime.server.http_cycle import reply_whole, watch_disconnect

log = logging.getLogger(__name__)

# a reply's header lines, encoded once (content-length is added per reply)
_JSON = b"content-type: application/json\r\n"
_RETRY = _JSON + b"retry-after: 1\r\n"  # with 503: not ready, queue full
_HEADER_LEN = b"inference-header-content-length"
#: a binary reply's header lines, up to the value of its JSON header's length
_BINARY = b"content-type: application/octet-stream\r\n" + _HEADER_LEN + b": "


def _error_reply(exc: InferError) -> tuple[int, bytes, bytes]:
    status = http_status(exc)
    return status, _RETRY if status == 503 else _JSON, error_body(message(exc))


def parse_infer_path(path: str) -> tuple[str, str | None] | None:
    """``/v2/models/m/infer`` -> ("m", None); ``.../versions/2/infer`` -> ("m", "2")."""
    parts = path.split("/")
    # ['', 'v2', 'models', m, 'infer'] or ['', 'v2', 'models', m, 'versions', v, 'infer']
    if len(parts) == 5 and parts[1] == "v2" and parts[2] == "models":
        return parts[3], None
    if len(parts) == 7 and parts[1] == "v2" and parts[2] == "models" and parts[4] == "versions":
        return parts[3], parts[5]
    return None


def shed_reply(servable: Servable):
    """For the protocol's load shedding: a finished 503 for an infer request to
    ``servable`` when its queue is full (counted as rejected), else None."""
    prefix = f"/v2/models/{servable.name}/".encode()
    check = getattr(servable, "check_capacity", None) or (lambda: None)

    def reply(url: bytes) -> bytes | None:
        if not url.startswith(prefix) or not url.partition(b"?")[0].endswith(b"/infer"):
            return None
        try:
            check()
        except InferError as exc:
            body = error_body(message(exc))
            return b"".join([
                b"HTTP/1.1 503 Service Unavailable\r\n",
                _RETRY,
                b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body,
            ])
        return None

    return reply


class InferRoute:
    def __init__(self, servable: Servable, fallback, max_body_bytes: int) -> None:
        self.servable = servable
        self.fallback = fallback
        self.max_body_bytes = max_body_bytes
        #: the servable's cheap "queue full?" check, run before the body is read
        self.check_capacity = getattr(servable, "check_capacity", None) or (lambda: None)
        #: the raw request targets the protocol serves itself (``http_fast``)
        self.paths = frozenset({
            f"/v2/models/{servable.name}/infer".encode(),
            f"/v2/models/{servable.name}/versions/{servable.version}/infer".encode(),
        })
        self.too_large = (413, _JSON, error_body(f"request body exceeds {max_body_bytes} bytes"))

    @property
    def fast_infer(self) -> InferRoute:
        """The entry for ``http_fast``: ``paths``, ``max_body_bytes``, ``too_large``,
        ``admit`` and ``infer``."""
        return self

    def admit(self, headers) -> tuple[int, bytes, bytes] | None:
        """Before the body is read: a reply if the request is refused (queue full,
        ``Content-Length`` over the limit), else None."""
        try:
            self.check_capacity()
            for key, value in headers:
                if key == b"content-length":
                    if _int_header(value, "Content-Length") > self.max_body_bytes:
                        return self.too_large
        except InferError as exc:
            return _error_reply(exc)
        return None

    async def infer(self, headers, body: bytes) -> tuple[int, bytes, bytes]:
        """A whole request, answered: decode, the servable, encode (the reply's status,
        header lines and body). Cancelling it while it waits drops the request."""
        try:
            header_length = None
            for key, value in headers:
                if key == _HEADER_LEN:
                    header_length = _int_header(value, "Inference-Header-Content-Length")
            request = decode_request(body, header_length)
            response = await self.servable.infer(request)
            payload, json_length = encode_response(
                response, request, self.servable.labels, self.servable.batched
            )
        except InferError as exc:
            return _error_reply(exc)
        except Exception as exc:  # never let a request take the server down
            log.exception("inference failed")
            return 500, _JSON, error_body(message(exc))
        if json_length is None:
            return 200, _JSON, payload
        return 200, _BINARY + b"%d\r\n" % json_length, payload

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            target = parse_infer_path(scope["path"])
            if target is not None:
                await self.handle(target, scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def handle(self, target, scope, receive, send) -> None:
        """The ASGI way to the same ``admit`` and ``infer``: the body from ``receive()``,
        a disconnect from the connection (or a watcher task), the reply through ``send``."""
        headers = scope["headers"]
        try:
            check_target(self.servable, *target)
            reply = self.admit(headers)
        except InferError as exc:
            reply = _error_reply(exc)
        if reply is None:
            try:
                body = await self._read_body(receive)
            except _TooLarge:
                reply = self.too_large
            except _ClientGone:
                return
            else:
                try:
                    reply = await self._watched(self.infer(headers, body), receive, send)
                except asyncio.CancelledError as exc:
                    if exc.args and exc.args[0] == _GONE:
                        return  # the client is gone; the scheduler dropped its request
                    raise
        await _send(send, *reply)

    async def _watched(self, infer, receive, send):
        """``infer``, cancelled if the client disconnects meanwhile."""
        task = asyncio.current_task()
        if watch_disconnect(send, lambda: task.cancel(_GONE)):
            try:
                return await infer
            finally:
                watch_disconnect(send, None)
        watcher = asyncio.ensure_future(receive())
        watcher.add_done_callback(lambda f: _on_disconnect(f, task))
        try:
            return await infer
        finally:
            watcher.cancel()

    async def _read_body(self, receive) -> bytes:
        chunks = []
        size = 0
        while True:
            message_ = await receive()
            if message_["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message_.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge()
            chunks.append(chunk)
            if not message_.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _TooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


_GONE = "client disconnected"


def _int_header(value: bytes, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"header {name} must be an integer") from None


def _on_disconnect(fut: asyncio.Future, task: asyncio.Task | None) -> None:
    if fut.cancelled() or task is None:
        return
    if fut.exception() is None and fut.result().get("type") == "http.disconnect":
        task.cancel(_GONE)


async def _send(send, status: int, lines: bytes, body: bytes) -> None:
    """A reply (``lines``: encoded header lines, no content-length) in one write, or as
    the two ASGI messages where ``send`` cannot do that."""
    if reply_whole(send, status, lines, body):
        return
    headers = [tuple(line.split(b": ", 1)) for line in lines.split(b"\r\n") if line]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
