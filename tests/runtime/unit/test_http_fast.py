"""The protocol's own infer path (``server/http_fast``) on an in-memory transport: replies
in request order whatever mix of fast and ASGI requests is pipelined, ``Connection:
close`` and HTTP/1.0, ``Expect: 100-continue``, the body limit, and a lost connection
cancelling the request it was waiting for (and never starting the ones queued behind
it). Over real connections: integration/test_http_connection."""

from __future__ import annotations

import asyncio

import orjson
import uvicorn
from uvicorn.server import ServerState

from kubeinfer.runtime.server.http_fast import FastCycle
from kubeinfer.runtime.server.http_limits import ConnectionLimits, protocol_class
from kubeinfer.runtime.server.infer_route import InferRoute
from kubeinfer.runtime.types import InferResponse

PATH = b"/v2/models/m/infer"


def _body(value: float) -> bytes:
    return orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [value, value]}]})


def _request(body: bytes, path: bytes = PATH, extra: bytes = b"", version: bytes = b"1.1", method: bytes = b"POST") -> bytes:
    return (method + b" " + path + b" HTTP/" + version + b"\r\nhost: x\r\n" + extra
            + b"content-length: %d\r\n\r\n" % len(body) + body)


class _Servable:
    """``infer`` doubles INPUT0; a request whose value is in ``hold`` waits for its event."""

    name, version, labels, batched = "m", "1", {}, True

    def __init__(self) -> None:
        self.hold: dict[float, asyncio.Event] = {}
        self.started: list[float] = []
        self.cancelled: list[float] = []
        self.full = False

    def check_capacity(self) -> None:
        if self.full:
            from kubeinfer.runtime.errors import QueueFull

            raise QueueFull("the queue is full")

    async def infer(self, request):
        value = float(request.inputs["INPUT0"][0, 0])
        self.started.append(value)
        if value in self.hold:
            try:
                await self.hold[value].wait()
            except asyncio.CancelledError:
                self.cancelled.append(value)
                raise
        return InferResponse("m", "1", {"OUTPUT0": request.inputs["INPUT0"] * 2})


async def _fallback(scope, receive, send):
    """The ASGI app behind the route: answers the path, after ``/slow`` a pause."""
    if scope["path"] == "/slow":
        await asyncio.sleep(0.05)
    body = scope["path"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data) -> None:
        self.out += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _connect(servable: _Servable, max_body_bytes: int = 1 << 20, keep_alive: float = 5,
             limits: ConnectionLimits = ConnectionLimits()):
    route = InferRoute(servable, _fallback, max_body_bytes)
    config = uvicorn.Config(route, lifespan="off", access_log=False, log_level="warning", proxy_headers=False,
                            timeout_keep_alive=keep_alive)
    config.load()
    proto = protocol_class(limits)(config=config, server_state=ServerState(), app_state={},
                                               _loop=asyncio.get_running_loop())
    transport = _Transport()
    proto.connection_made(transport)
    return proto, transport


def _replies(out: bytes) -> list[tuple[bytes, dict, bytes]]:
    replies = []
    buf = bytes(out)
    while buf:
        head, _, rest = buf.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines)}
        length = int(headers.get(b"content-length", 0))
        replies.append((status, headers, rest[:length]))
        buf = rest[length:]
    return replies


async def _until(check) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not reached")


async def test_the_infer_request_is_served_without_an_asgi_cycle():
    proto, transport = _connect(_Servable())
    proto.data_received(_request(_body(1.5)))
    assert type(proto.cycle) is FastCycle and proto.scope is None
    await _until(lambda: transport.out)
    [(status, headers, body)] = _replies(transport.out)
    assert status == b"HTTP/1.1 200 OK" and headers[b"content-type"] == b"application/json"
    assert b"connection" not in headers and not transport.closed
    assert orjson.loads(body)["outputs"][0]["data"] == [3.0, 3.0]


async def test_pipelined_fast_and_asgi_requests_are_answered_in_order():
    servable = _Servable()
    servable.hold[1.0] = release = asyncio.Event()
    proto, transport = _connect(servable)
    proto.data_received(
        _request(_body(1.0))  # held by the model
        + _request(b"", b"/slow", method=b"GET")  # ASGI, slow
        + _request(_body(2.0))
        + _request(b"{nope")  # 400 from the fast path
        + _request(_body(3.0), b"/v2/models/other/infer")  # another model: the ASGI route, 404
        + _request(_body(4.0), b"/v2/models/m/versions/1/infer")
    )
    await asyncio.sleep(0.01)
    assert transport.out == b"" and servable.started == [1.0]  # the rest waits its turn
    release.set()
    await _until(lambda: len(_replies(transport.out)) == 6)
    replies = _replies(transport.out)
    assert [r[0][9:12] for r in replies] == [b"200", b"200", b"200", b"400", b"404", b"200"]
    assert replies[1][2] == b"/slow" and "other" in orjson.loads(replies[4][2])["error"]
    assert [orjson.loads(replies[i][2])["outputs"][0]["data"][0] for i in (0, 2, 5)] == [2.0, 4.0, 8.0]
    assert servable.started == [1.0, 2.0, 4.0] and not transport.closed


async def test_connection_close_and_http_1_0_close_after_the_reply():
    for extra, version in ((b"connection: close\r\n", b"1.1"), (b"", b"1.0")):
        proto, transport = _connect(_Servable())
        proto.data_received(_request(_body(1.0), extra=extra, version=version))
        await _until(lambda: transport.closed)
        [(status, headers, _)] = _replies(transport.out)
        assert status == b"HTTP/1.1 200 OK" and headers[b"connection"] == b"close"


async def test_expect_100_continue_is_answered_before_the_body():
    proto, transport = _connect(_Servable())
    body = _body(1.0)
    whole = _request(body, extra=b"expect: 100-continue\r\n")
    proto.data_received(whole[: -len(body)])
    assert transport.out == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(body)
    await _until(lambda: b"200 OK" in transport.out)
    # refused before the body: no 100 Continue, 413 at once
    proto, transport = _connect(_Servable(), max_body_bytes=10)
    proto.data_received(whole[: -len(body)])
    [(status, _, error)] = _replies(transport.out)
    assert status.startswith(b"HTTP/1.1 413") and b"exceeds 10 bytes" in error
    proto.data_received(body)  # streams past; the connection serves on
    assert len(_replies(transport.out)) == 1 and not transport.closed


async def test_a_chunked_body_over_the_limit_gets_413_and_a_full_queue_503():
    proto, transport = _connect(_Servable(), max_body_bytes=50)
    head = b"POST " + PATH + b" HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
    proto.data_received(head + b"28\r\n" + b" " * 40 + b"\r\n")
    assert transport.out == b""
    proto.data_received(b"28\r\n" + b" " * 40 + b"\r\n0\r\n\r\n")
    [(status, _, _)] = _replies(transport.out)
    assert status.startswith(b"HTTP/1.1 413")
    servable = _Servable()
    servable.full = True
    proto, transport = _connect(servable)
    proto.data_received(_request(_body(1.0)))
    [(status, headers, _)] = _replies(transport.out)
    assert status.startswith(b"HTTP/1.1 503") and headers[b"retry-after"] == b"1"
    assert servable.started == []


async def test_a_lost_connection_cancels_its_request_and_starts_none_behind_it():
    servable = _Servable()
    servable.hold[1.0] = asyncio.Event()
    proto, transport = _connect(servable)
    proto.data_received(_request(_body(1.0)) + _request(_body(2.0)))
    await _until(lambda: servable.started == [1.0])
    task = proto._running.task
    proto.connection_lost(None)
    await _until(lambda: task.done())
    await asyncio.sleep(0.01)
    assert servable.cancelled == [1.0] and servable.started == [1.0]  # 2.0 never started
    assert transport.out == b"" and not proto.tasks


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout():
    limits = ConnectionLimits(header_timeout_seconds=0.2, body_timeout_seconds=0.2)  # sweeps every 0.05 s
    proto, transport = _connect(_Servable(), keep_alive=0.1, limits=limits)
    for value in (1.0, 2.0):  # a request in time keeps it open
        proto.data_received(_request(_body(value)))
        await _until(lambda: transport.out.count(b"200 OK") == value)
        await asyncio.sleep(0.03)
        assert not transport.closed
    await _until(lambda: transport.closed)
    assert transport.out.count(b"HTTP/1.1") == 2  # closed without a word (no 408)
