"""Goodput under overload with clients that retry a 503 at once (bounded, loopback only).

Starts ``kubeinfer serve`` on a model whose batches take ``--compute-ms`` of wall time
(a Python-backend model that sleeps: the CPU stays free, as with an accelerator, so the
figure measures what rejections cost the server, not a CPU race with the model), with
``max_queue_size`` bounded. Then, closed loop, keep-alive, raw HTTP/1.1 over asyncio:

1. capacity: ``max_queue_size`` connections, so the queue never overflows (nothing is
   rejected) while the instance is always busy; successful requests per second;
2. overload: ``--overload`` times as many connections, each sending its next request the
   moment it gets any answer (a 503 is retried at once); successful requests per second.

Prints both, the ratio, and the 503s per second; ``--json`` writes them to a file.

    .venv/bin/python bench/overload.py                 # ~25 s
    .venv/bin/python bench/overload.py --duration 10 --overload 10 --compute-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

CONFIG = """
name: "held"
backend: "python"
max_batch_size: {batch}
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 500 default_queue_policy {{ max_queue_size: {queue} }} }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""

MODEL = '''
import time


class TritonPythonModel:
    def execute(self, requests):
        import triton_python_backend_utils as pb_utils
        time.sleep({seconds})
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())])
            for r in requests
        ]
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_repo(root: Path, batch: int, queue: int, compute_ms: float) -> Path:
    model = root / "held"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(CONFIG.format(batch=batch, queue=queue))
    (model / "1" / "model.py").write_text(MODEL.format(seconds=compute_ms / 1000))
    return root


def request_bytes(port: int) -> bytes:
    body = orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]})
    head = (
        f"POST /v2/models/held/infer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(port: int, payload: bytes, stop_at: float, counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts[status] = counts.get(status, 0) + 1
    finally:
        writer.close()


async def load(port: int, connections: int, seconds: float) -> dict[int, int]:
    payload = request_bytes(port)
    counts: dict[int, int] = {}
    stop_at = time.monotonic() + seconds
    await asyncio.gather(*(_connection(port, payload, stop_at, counts) for _ in range(connections)))
    return counts


def measure(duration: float, overload: int, compute_ms: float, batch: int, queue: int) -> dict:
    """Start a server, run both phases, stop it; the figures."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    http_port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        repo = write_repo(Path(tmp), batch, queue, compute_ms)
        log = open(Path(tmp) / "server.log", "wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "kubeinfer.cli", "serve", str(repo), "--host", "127.0.0.1",
             "--http-port", str(http_port), "--grpc-port", "0", "--metrics-port", "0",
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((Path(tmp) / "server.log").read_text())
                time.sleep(0.1)
            held = queue  # at most max_queue_size outstanding: none is ever rejected
            asyncio.run(load(http_port, held, 1.0))  # warm-up
            base = asyncio.run(load(http_port, held, duration))
            over = asyncio.run(load(http_port, held * overload, duration))
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    capacity = base.get(200, 0) / duration
    goodput = over.get(200, 0) / duration
    return {
        "compute_ms": compute_ms, "max_batch_size": batch, "max_queue_size": queue,
        "capacity_connections": held, "overload_connections": held * overload,
        "capacity_rps": round(capacity, 1), "capacity_non_200": sum(v for k, v in base.items() if k != 200),
        "overload_goodput_rps": round(goodput, 1),
        "overload_503_per_s": round(over.get(503, 0) / duration, 1),
        "other_statuses": {k: v for k, v in over.items() if k not in (200, 503)},
        "goodput_ratio": round(goodput / capacity, 3) if capacity else 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    p.add_argument("--overload", type=int, default=10, help="connections, as a multiple of capacity")
    p.add_argument("--compute-ms", type=float, default=10.0, help="wall time per batch")
    p.add_argument("--batch", type=int, default=8, help="max_batch_size")
    p.add_argument("--queue", type=int, default=16, help="max_queue_size")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args()
    figures = measure(args.duration, args.overload, args.compute_ms, args.batch, args.queue)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
