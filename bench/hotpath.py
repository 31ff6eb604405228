"""Per-request Python cost of kubeinfer's infer path, in process (no sockets, no wrk).

Closed loop at a given concurrency with the bench's mlp JSON body; reports microseconds
of wall and CPU time per request and how much of it the backend took. Two ways in:

* ``--via protocol`` (default): every connection is the server's own HTTP protocol
  (uvicorn's httptools protocol with kubeinfer's limits, exactly as ``kubeinfer serve``
  configures it) on an in-memory transport: raw request bytes in, response bytes out, so
  it counts everything the serving process does per request except the socket syscalls —
  HTTP parsing, the ASGI task, the route, decode, batcher, encode, the reply. The
  "client" (finding a reply's end, sending the next request) costs ~1 µs of it.
* ``--via asgi``: the ASGI app called directly (what this script measured before: no
  HTTP parsing, and the route falls back to plain ASGI, so it pays a disconnect-watcher
  task per request that the protocol path does not).

Cheap to run on a busy machine (compare runs on the same machine only):

    .venv/bin/python bench/hotpath.py --model-repo examples/models --model mlp -n 20000 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
import orjson
import uvicorn
from uvicorn.server import ServerState

from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.repository import load_model
from kubeinfer.runtime.server.app import create_app
from kubeinfer.runtime.server.http_limits import ConnectionLimits, protocol_class
from kubeinfer.runtime.server.run import make_scheduler


class _Transport(asyncio.Transport):
    """In-memory transport of one client connection: each complete reply sends the next
    request until ``left`` requests are done."""

    def __init__(self, request: bytes, left: int, done: asyncio.Future, statuses: list) -> None:
        super().__init__()
        self.request, self.left, self.done, self.statuses = request, left, done, statuses
        self.buf = b""
        self.protocol = None
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data) -> None:
        buf = self.buf + data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            start = buf.find(b"content-length: ", 0, end) + 16
            length = int(buf[start:buf.find(b"\r\n", start)])
            if len(buf) < end + 4 + length:
                break
            self.statuses.append(int(buf[9:12]))
            buf = buf[end + 4 + length:]
            self.left -= 1
            if self.left:
                asyncio.get_running_loop().call_soon(self.protocol.data_received, self.request)
            elif not self.done.done():
                self.done.set_result(None)
        self.buf = buf

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def via_protocol(app, body: bytes, path: str, n: int, c: int, statuses: list) -> None:
    loop = asyncio.get_running_loop()
    # as server/lifecycle.py configures it
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning", proxy_headers=False)
    config.load()
    cls = protocol_class(ConnectionLimits())
    state = ServerState()
    request = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body
    done = []
    for _ in range(c):
        fut = loop.create_future()
        transport = _Transport(request, n // c, fut, statuses)
        proto = cls(config=config, server_state=state, app_state={}, _loop=loop)
        transport.protocol = proto
        proto.connection_made(transport)
        proto.data_received(request)
        done.append((fut, proto))
    await asyncio.gather(*(f for f, _ in done))
    for _, proto in done:
        proto.connection_lost(None)


async def via_asgi(app, body: bytes, path: str, n: int, c: int, statuses: list) -> None:
    scope = {"type": "http", "method": "POST", "path": path,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def one() -> None:
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # never disconnects

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)

    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await asyncio.gather(*(worker(n // c) for _ in range(c)))


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-repo", default="examples/models")
    p.add_argument("--model", default="mlp")
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("-c", type=int, default=64)
    p.add_argument("--via", choices=["protocol", "asgi"], default="protocol")
    args = p.parse_args()
    loaded = load_model(Path(args.model_repo), args.model)
    servable = ModelServable(loaded, make_scheduler)
    await servable.start()
    app = create_app(servable)
    spec = loaded.config.inputs()[0]
    data = np.random.default_rng(1234).random(spec.shape).round(4).tolist()
    body = orjson.dumps({"inputs": [{"name": spec.name, "shape": [1, *spec.shape], "datatype": spec.datatype, "data": data}]})
    path = f"/v2/models/{args.model}/infer"
    run = via_protocol if args.via == "protocol" else via_asgi
    statuses: list[int] = []
    await run(app, body, path, 100 * args.c, args.c, statuses)  # warm-up
    statuses.clear()
    before = servable.stats.compute_infer.ns
    batches0, count0 = servable.stats.execution_count, servable.stats.inference_count
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await run(app, body, path, args.n, args.c, statuses)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    n = len(statuses)
    assert n == args.n // args.c * args.c and set(statuses) == {200}, (n, set(statuses))
    infer_us = (servable.stats.compute_infer.ns - before) / 1000 / n
    batches = servable.stats.execution_count - batches0
    print(f"{n} requests via {args.via}, concurrency {args.c}: {wall / n * 1e6:.1f} us/request wall, "
          f"{cpu / n * 1e6:.1f} us/request CPU, backend {infer_us:.1f} us/request, "
          f"mean batch {(servable.stats.inference_count - count0) / max(batches, 1):.1f}")
    await servable.drain()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
