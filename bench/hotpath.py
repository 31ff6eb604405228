"""Per-request Python cost of kubeinfer's infer path, in process (no sockets, no wrk).

Drives the ASGI app directly with the bench's mlp JSON body at a given concurrency and
reports microseconds of wall time per request, and how much of it the backend took. Cheap
to run on a busy machine (compare runs on the same machine only):

    .venv/bin/python bench/hotpath.py --model-repo examples/models --model mlp -n 20000 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np
import orjson

from kubeinfer.runtime.model import ModelServable
from kubeinfer.runtime.repository import load_model
from kubeinfer.runtime.server.app import create_app
from kubeinfer.runtime.server.run import make_scheduler


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-repo", default="examples/models")
    p.add_argument("--model", default="mlp")
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("-c", type=int, default=64)
    args = p.parse_args()
    loaded = load_model(Path(args.model_repo), args.model)
    servable = ModelServable(loaded, make_scheduler)
    await servable.start()
    app = create_app(servable)
    spec = loaded.config.inputs()[0]
    data = np.random.default_rng(1234).random(spec.shape).round(4).tolist()
    body = orjson.dumps({"inputs": [{"name": spec.name, "shape": [1, *spec.shape], "datatype": spec.datatype, "data": data}]})
    scope = {"type": "http", "method": "POST", "path": f"/v2/models/{args.model}/infer",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    statuses: list[int] = []

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

    await asyncio.gather(*(worker(100) for _ in range(args.c)))  # warm-up
    statuses.clear()
    before = servable.stats.compute_infer.ns
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    await asyncio.gather(*(worker(args.n // args.c) for _ in range(args.c)))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    n = len(statuses)
    assert set(statuses) == {200}, set(statuses)
    infer_us = (servable.stats.compute_infer.ns - before) / 1000 / n
    print(f"{n} requests, concurrency {args.c}: {wall / n * 1e6:.1f} us/request wall, "
          f"{cpu / n * 1e6:.1f} us/request CPU, backend {infer_us:.1f} us/request, "
          f"mean batch {servable.stats.inference_count / max(servable.stats.execution_count, 1):.1f}")
    await servable.drain()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
