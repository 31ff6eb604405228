"""The infer route under a plain ASGI server (not uvicorn's httptools cycle): replies are
the two ASGI messages and a disconnect is learnt from ``receive()`` by a watcher — the
fallback of ``server/http_cycle``. (Over real connections: integration/test_http_connection.)"""

from __future__ import annotations

import asyncio

import numpy as np
import orjson

from kubeinfer.runtime.server.infer_route import InferRoute
from kubeinfer.runtime.types import InferResponse

BODY = orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]})
SCOPE = {"type": "http", "method": "POST", "path": "/v2/models/m/infer", "headers": []}


class _Servable:
    """The servable seam: ``infer`` doubles its input, or waits for ``release``."""

    name, version, labels, batched = "m", "1", {}, True

    def __init__(self, hold: bool) -> None:
        self.hold = hold
        self.started = asyncio.Event()
        self.cancelled = False

    async def infer(self, request):
        self.started.set()
        if self.hold:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return InferResponse("m", "1", {"OUTPUT0": request.inputs["INPUT0"] * 2})


async def _fallback(scope, receive, send):  # pragma: no cover - never reached here
    raise AssertionError("not an infer request")


async def test_a_reply_is_two_asgi_messages():
    route = InferRoute(_Servable(hold=False), _fallback, max_body_bytes=1 << 20)
    sent = []

    async def receive():
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message):
        sent.append(message)

    await route(SCOPE, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(sent[1]["body"])).encode()
    out = orjson.loads(sent[1]["body"])["outputs"][0]
    assert np.allclose(out["data"], [2, 4])


async def test_a_disconnect_read_from_receive_cancels_the_waiting_request():
    servable = _Servable(hold=True)
    route = InferRoute(servable, _fallback, max_body_bytes=1 << 20)
    gone = asyncio.Event()
    messages = iter([{"type": "http.request", "body": BODY, "more_body": False}])
    sent = []

    async def receive():
        try:
            return next(messages)
        except StopIteration:
            await gone.wait()
            return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    task = asyncio.ensure_future(route(SCOPE, receive, send))
    await servable.started.wait()
    gone.set()
    await asyncio.wait_for(task, 5)  # the route returns: nothing is sent to a gone client
    assert servable.cancelled and sent == []
